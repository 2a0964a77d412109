package protocol

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
)

// Ack is the hub's answer on freshet/v1/{device}/ack. A seq is settled,
// and the agent may delete it from its outbox, when seq <= Through or seq is
// in one of Ranges. Settled means stored in InfluxDB and in the hub's
// ledger, or rejected for good (then it is also in Rejected, with the
// reason), or reported dropped by the agent's own gap notice.
//
// Version 1 lists the settled seqs above Through one by one (at most
// Limits.MaxAckSeqs of them); version 2 lists ranges and carries the hub's
// signature (KeyID, Sig; see AckSigner and AckKeys in sign.go).
type Ack struct {
	// Version is the version it was decoded from or is to be encoded in; 0
	// means Version.
	Version uint8
	Device  string
	Epoch   uint64
	// Through is the highest seq such that every seq 1..Through is settled.
	Through uint64
	// Ranges are settled seqs above Through: sorted, disjoint, not adjacent,
	// all above Through+1 (at most Limits.MaxAckSeqs ranges; in version 1 at
	// most that many seqs).
	Ranges []SeqRange
	// Rejected names the batches the hub refused and why (at most MaxAckSeqs).
	Rejected []Rejection
	// KeyID names the hub key that signed the ack, Sig is the Ed25519
	// signature (version 2; both empty when unsigned).
	KeyID string
	Sig   []byte
}

// Rejection tells an agent that the hub refused a batch for good.
type Rejection struct {
	Seq    uint64
	Reason string // a label from Reason, e.g. "not_finite"
	Detail string // the decoder's error text
}

// Settled reports whether the ack lets the agent delete seq.
func (a *Ack) Settled(seq uint64) bool {
	if seq <= a.Through {
		return true
	}
	for _, r := range a.Ranges {
		if seq < r.First {
			return false
		}
		if seq <= r.Last {
			return true
		}
	}
	return false
}

// seqs counts the seqs listed in Ranges.
func (a *Ack) seqs() uint64 {
	n := uint64(0)
	for _, r := range a.Ranges {
		n += r.Last - r.First + 1
	}
	return n
}

func (a *Ack) validate(l *Limits) error {
	v, err := version(a.Version)
	if err != nil {
		return err
	}
	if err := ValidDevice(a.Device); err != nil {
		return err
	}
	if a.Epoch == 0 {
		return fmt.Errorf("%w: epoch 0", ErrBadSeq)
	}
	if len(a.Ranges) > l.MaxAckSeqs || len(a.Rejected) > l.MaxAckSeqs || v == 1 && a.seqs() > uint64(l.MaxAckSeqs) {
		return fmt.Errorf("%w: ack lists %d settled ranges and %d rejected seqs, limit %d", ErrTooManySeqs, len(a.Ranges), len(a.Rejected), l.MaxAckSeqs)
	}
	prev := a.Through
	for _, r := range a.Ranges {
		if r.First > r.Last || r.First <= prev+1 {
			return fmt.Errorf("%w: settled range %d..%d not above %d (sorted, disjoint, not adjacent)", ErrBadSeq, r.First, r.Last, prev)
		}
		prev = r.Last
	}
	for _, r := range a.Rejected {
		if r.Seq == 0 {
			return fmt.Errorf("%w: rejected seq 0", ErrBadSeq)
		}
		if err := validName(r.Reason, "rejection reason", l.MaxNameLen); err != nil {
			return err
		}
		if err := validText(r.Detail, "rejection detail", l.MaxStringLen); err != nil {
			return err
		}
	}
	switch {
	case v == 1 && (a.KeyID != "" || len(a.Sig) > 0):
		return fmt.Errorf("%w: version 1 acks are not signed", ErrBadValue)
	case a.KeyID == "" && len(a.Sig) > 0 || a.KeyID != "" && len(a.Sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: signature of %d bytes with key id %q", ErrBadSignature, len(a.Sig), clip(a.KeyID))
	}
	if a.KeyID != "" {
		if err := validName(a.KeyID, "key id", l.MaxNameLen); err != nil {
			return err
		}
	}
	return nil
}

// EncodeAck validates a and returns its wire form (with a.Sig as it is:
// AckSigner.Sign signs).
func (c *Codec) EncodeAck(a *Ack) ([]byte, error) {
	if err := a.validate(&c.l); err != nil {
		return nil, err
	}
	v, _ := version(a.Version)
	c.buf.Reset()
	e := c.enc
	e.EncodeArrayLen(ackFields[v-1])
	e.EncodeUint(uint64(v))
	e.EncodeUint(kindAck)
	e.EncodeString(a.Device)
	e.EncodeUint(a.Epoch)
	e.EncodeUint(a.Through)
	if v == 1 {
		e.EncodeArrayLen(int(a.seqs()))
		for _, r := range a.Ranges {
			for s := r.First; ; s++ {
				e.EncodeUint(s)
				if s == r.Last {
					break
				}
			}
		}
	} else {
		e.EncodeArrayLen(len(a.Ranges))
		for _, r := range a.Ranges {
			e.EncodeArrayLen(2)
			e.EncodeUint(r.First)
			e.EncodeUint(r.Last)
		}
	}
	e.EncodeArrayLen(len(a.Rejected))
	for _, r := range a.Rejected {
		e.EncodeArrayLen(3)
		e.EncodeUint(r.Seq)
		e.EncodeString(r.Reason)
		e.EncodeString(r.Detail)
	}
	if v >= 2 {
		e.EncodeString(a.KeyID)
		if len(a.Sig) == 0 {
			e.EncodeNil()
		} else {
			e.EncodeBytes(a.Sig)
		}
	}
	if c.buf.Len() > c.l.MaxMessageBytes {
		return nil, fmt.Errorf("%w: ack of %d bytes", ErrTooLarge, c.buf.Len())
	}
	return bytes.Clone(c.buf.Bytes()), nil
}

// DecodeAck decodes and validates an ack. It does not check the signature
// (AckKeys.Verify does).
func (c *Codec) DecodeAck(data []byte) (*Ack, error) {
	v, err := c.open(data, kindAck, ackFields)
	if err != nil {
		return nil, err
	}
	a := &Ack{Version: v}
	if a.Device, err = c.str("device", c.l.MaxNameLen); err != nil {
		return nil, err
	}
	if a.Epoch, err = c.uint("epoch"); err != nil {
		return nil, err
	}
	if a.Through, err = c.uint("through"); err != nil {
		return nil, err
	}
	n, err := c.array("settled", c.l.MaxAckSeqs, ErrTooManySeqs)
	if err != nil {
		return nil, err
	}
	if v == 1 {
		// Seqs one by one, each above the last: merged into ranges.
		prev := a.Through
		for range n {
			s, err := c.uint("applied seq")
			if err != nil {
				return nil, err
			}
			if s <= prev {
				return nil, fmt.Errorf("%w: applied seq %d not above %d", ErrBadSeq, s, prev)
			}
			if k := len(a.Ranges); k > 0 && a.Ranges[k-1].Last+1 == s {
				a.Ranges[k-1].Last = s
			} else {
				a.Ranges = append(a.Ranges, SeqRange{s, s})
			}
			prev = s
		}
		if len(a.Ranges) > 0 && a.Ranges[0].First == a.Through+1 {
			a.Through = a.Ranges[0].Last // a v1 hub may list Through+1
			a.Ranges = a.Ranges[1:]
		}
	} else {
		if n > 0 {
			a.Ranges = make([]SeqRange, n)
		}
		for i := range a.Ranges {
			if m, err := c.array("settled range", 2, ErrMalformed); err != nil {
				return nil, err
			} else if m != 2 {
				return nil, fmt.Errorf("%w: settled range of %d fields, want 2", ErrMalformed, m)
			}
			if a.Ranges[i].First, err = c.uint("settled seq"); err != nil {
				return nil, err
			}
			if a.Ranges[i].Last, err = c.uint("settled seq"); err != nil {
				return nil, err
			}
		}
	}
	if n, err = c.array("rejected", c.l.MaxAckSeqs, ErrTooManySeqs); err != nil {
		return nil, err
	}
	if n > 0 {
		a.Rejected = make([]Rejection, n)
	}
	for i := range a.Rejected {
		r := &a.Rejected[i]
		if m, err := c.array("rejection", 3, ErrMalformed); err != nil {
			return nil, err
		} else if m != 3 {
			return nil, fmt.Errorf("%w: rejection of %d fields, want 3", ErrMalformed, m)
		}
		if r.Seq, err = c.uint("rejected seq"); err != nil {
			return nil, err
		}
		if r.Reason, err = c.str("rejection reason", c.l.MaxNameLen); err != nil {
			return nil, err
		}
		if r.Detail, err = c.str("rejection detail", c.l.MaxStringLen); err != nil {
			return nil, err
		}
	}
	if v >= 2 {
		if a.KeyID, err = c.str("key id", c.l.MaxNameLen); err != nil {
			return nil, err
		}
		if a.Sig, err = c.binOrNil("signature", ed25519.SignatureSize); err != nil {
			return nil, err
		}
	}
	if err := c.close(); err != nil {
		return nil, err
	}
	if err := a.validate(&c.l); err != nil {
		return nil, err
	}
	return a, nil
}
