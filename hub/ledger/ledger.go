// Package ledger records which batches the hub has applied, per (device,
// epoch): the highest seq through which all are settled, plus the settled
// seqs above it. It lives in the hub's bbolt file and changes in the same
// transaction as the window state, so a batch is applied exactly once.
//
// A seq is settled when its batch was applied, refused for good, or named
// dropped by the agent's gap notice.
package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

var bucket = []byte("ledger")

// MaxAbove bounds the settled seqs kept above Through per (device, epoch).
// An agent has at most its in-flight window above its oldest unsettled seq,
// so a device that needs more is misbehaving; its oldest entries are then
// folded into Through (they are settled anyway).
const MaxAbove = 4096

// State is one (device, epoch)'s ledger.
type State struct {
	Through uint64
	Above   []uint64 // sorted, all > Through
}

// Settled reports whether seq is settled.
func (s *State) Settled(seq uint64) bool {
	if seq <= s.Through {
		return true
	}
	_, ok := slices.BinarySearch(s.Above, seq)
	return ok
}

// Settle marks seq settled.
func (s *State) Settle(seq uint64) {
	if s.Settled(seq) {
		return
	}
	i, _ := slices.BinarySearch(s.Above, seq)
	s.Above = slices.Insert(s.Above, i, seq)
	s.compact()
}

// SettleRange marks first..last settled (gap notices). Large ranges below
// or adjacent to Through are folded in directly.
func (s *State) SettleRange(first, last uint64) {
	if first <= s.Through+1 && last > s.Through {
		s.Through = last
		s.compact()
		return
	}
	for q := first; q <= last && q-first < MaxAbove; q++ {
		s.Settle(q)
	}
}

func (s *State) compact() {
	i := 0
	for i < len(s.Above) && s.Above[i] <= s.Through+1 {
		s.Through = max(s.Through, s.Above[i])
		i++
	}
	s.Above = s.Above[i:]
	if len(s.Above) > MaxAbove {
		s.Through = s.Above[len(s.Above)-MaxAbove-1]
		s.Above = s.Above[len(s.Above)-MaxAbove:]
		s.compact()
	}
}

// Ack builds the ack for this state: Through, and the lowest maxSeqs seqs
// of Above (protocol.Limits.MaxAckSeqs).
func (s *State) Ack(device string, epoch uint64, maxSeqs int) *protocol.Ack {
	a := &protocol.Ack{Device: device, Epoch: epoch, Through: s.Through}
	above := s.Above
	if len(above) > maxSeqs {
		above = above[:maxSeqs]
	}
	a.Applied = slices.Clone(above)
	return a
}

// Init creates the ledger's bucket.
func Init(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists(bucket)
	return err
}

func key(device string, epoch uint64) []byte {
	k := make([]byte, 0, len(device)+9)
	k = append(k, device...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, epoch)
}

// Load returns the state of (device, epoch); an unknown pair is empty.
func Load(tx *bolt.Tx, device string, epoch uint64) (State, error) {
	v := tx.Bucket(bucket).Get(key(device, epoch))
	if v == nil {
		return State{}, nil
	}
	return decode(v)
}

// Save stores the state of (device, epoch).
func Save(tx *bolt.Tx, device string, epoch uint64, s State) error {
	return tx.Bucket(bucket).Put(key(device, epoch), encode(s))
}

func encode(s State) []byte {
	b := binary.AppendUvarint(nil, s.Through)
	b = binary.AppendUvarint(b, uint64(len(s.Above)))
	prev := s.Through
	for _, q := range s.Above {
		b = binary.AppendUvarint(b, q-prev)
		prev = q
	}
	return b
}

var errCorrupt = errors.New("ledger: corrupt record")

func decode(b []byte) (State, error) {
	var s State
	var n int
	s.Through, n = binary.Uvarint(b)
	if n <= 0 {
		return s, errCorrupt
	}
	b = b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > MaxAbove {
		return s, errCorrupt
	}
	b = b[n:]
	prev := s.Through
	s.Above = make([]uint64, 0, count)
	for range count {
		d, n := binary.Uvarint(b)
		if n <= 0 || d == 0 {
			return s, errCorrupt
		}
		b = b[n:]
		prev += d
		s.Above = append(s.Above, prev)
	}
	if len(b) != 0 {
		return s, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	return s, nil
}

// Devices calls fn for every (device, epoch) in the ledger.
func Devices(tx *bolt.Tx, fn func(device string, epoch uint64, s State) error) error {
	return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
		if len(k) < 9 || k[len(k)-9] != 0 {
			return errCorrupt
		}
		s, err := decode(v)
		if err != nil {
			return err
		}
		return fn(string(k[:len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), s)
	})
}
