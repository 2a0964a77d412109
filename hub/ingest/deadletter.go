package ingest

import (
	"bytes"
	"encoding/binary"
	"slices"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// Refused payloads are kept for inspection in one bucket, oldest first:
//
//	time (8, Unix ns) seq (8) -> topic 0 reason 0 detail 0 payload
var deadBucket = []byte("dead_letters")

// Bounds of a dead letter.
const (
	// DeadLetterPayload bounds the bytes of a refused payload kept.
	DeadLetterPayload = 64 << 10
	// deadLetterDetail bounds its error text.
	deadLetterDetail = 1024
)

// DeadLetter is a refused payload kept for inspection (GET /api/v1/rejections).
type DeadLetter struct {
	Time    time.Time `json:"time"`
	Topic   string    `json:"topic"`
	Reason  string    `json:"reason"`
	Detail  string    `json:"detail"`
	Bytes   int       `json:"bytes"`
	Payload []byte    `json:"payload"` // the first DeadLetterPayload bytes (base64 in JSON)
}

// deadLetter keeps a refused payload; beyond max letters each new one
// evicts the oldest.
func deadLetter(tx *bolt.Tx, r *record, now time.Time, max int) error {
	b := tx.Bucket(deadBucket)
	seq, _ := b.NextSequence()
	k := binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano()))
	k = binary.BigEndian.AppendUint64(k, seq)
	payload := r.msg.Payload()
	if len(payload) > DeadLetterPayload {
		payload = payload[:DeadLetterPayload]
	}
	v := slices.Concat([]byte(r.msg.Topic()), []byte{0}, []byte(r.reason), []byte{0}, []byte(clip(r.detail, deadLetterDetail)), []byte{0}, payload)
	if err := b.Put(k, v); err != nil {
		return err
	}
	if seq > uint64(max) {
		if k, _ := b.Cursor().First(); k != nil {
			return b.Delete(k)
		}
	}
	return nil
}

// DeadLetters returns up to limit refused payloads, newest first.
func (p *Pipeline) DeadLetters(limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := p.o.DB.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(deadBucket).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			parts := bytes.SplitN(v, []byte{0}, 4)
			if len(parts) != 4 || len(k) != 16 {
				continue
			}
			out = append(out, DeadLetter{Time: time.Unix(0, int64(binary.BigEndian.Uint64(k))), Topic: string(parts[0]),
				Reason: string(parts[1]), Detail: string(parts[2]), Bytes: len(parts[3]), Payload: bytes.Clone(parts[3])})
		}
		return nil
	})
	return out, err
}

// clip cuts s to at most n bytes, at a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
