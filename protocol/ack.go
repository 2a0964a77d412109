package protocol

import (
	"bytes"
	"fmt"
	"slices"
)

// Ack is the hub's answer on freshet/v1/{device}/ack. A seq is settled,
// and the agent may delete it from its outbox, when seq <= Through or seq is
// in Applied. Settled means stored in InfluxDB and in the hub's ledger, or
// rejected for good (then it is also in Rejected, with the reason), or
// reported dropped by the agent's own gap notice.
type Ack struct {
	Device string
	Epoch  uint64
	// Through is the highest seq such that every seq 1..Through is settled.
	Through uint64
	// Applied lists settled seqs above Through, ascending (at most MaxAckSeqs).
	Applied []uint64
	// Rejected names the batches the hub refused and why (at most MaxAckSeqs).
	Rejected []Rejection
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
	_, ok := slices.BinarySearch(a.Applied, seq)
	return ok
}

func (a *Ack) validate(l *Limits) error {
	if err := ValidDevice(a.Device); err != nil {
		return err
	}
	if a.Epoch == 0 {
		return fmt.Errorf("%w: epoch 0", ErrBadSeq)
	}
	if len(a.Applied) > l.MaxAckSeqs || len(a.Rejected) > l.MaxAckSeqs {
		return fmt.Errorf("%w: ack lists %d applied and %d rejected seqs, limit %d", ErrTooManySeqs, len(a.Applied), len(a.Rejected), l.MaxAckSeqs)
	}
	prev := a.Through
	for _, s := range a.Applied {
		if s <= prev {
			return fmt.Errorf("%w: applied seq %d not above %d", ErrBadSeq, s, prev)
		}
		prev = s
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
	return nil
}

// EncodeAck validates a and returns its wire form.
func (c *Codec) EncodeAck(a *Ack) ([]byte, error) {
	if err := a.validate(&c.l); err != nil {
		return nil, err
	}
	c.buf.Reset()
	e := c.enc
	e.EncodeArrayLen(7)
	e.EncodeUint(Version)
	e.EncodeUint(kindAck)
	e.EncodeString(a.Device)
	e.EncodeUint(a.Epoch)
	e.EncodeUint(a.Through)
	e.EncodeArrayLen(len(a.Applied))
	for _, s := range a.Applied {
		e.EncodeUint(s)
	}
	e.EncodeArrayLen(len(a.Rejected))
	for _, r := range a.Rejected {
		e.EncodeArrayLen(3)
		e.EncodeUint(r.Seq)
		e.EncodeString(r.Reason)
		e.EncodeString(r.Detail)
	}
	if c.buf.Len() > c.l.MaxMessageBytes {
		return nil, fmt.Errorf("%w: ack of %d bytes", ErrTooLarge, c.buf.Len())
	}
	return bytes.Clone(c.buf.Bytes()), nil
}

// DecodeAck decodes and validates an ack.
func (c *Codec) DecodeAck(data []byte) (*Ack, error) {
	if err := c.open(data, kindAck, 7); err != nil {
		return nil, err
	}
	a := new(Ack)
	var err error
	if a.Device, err = c.str("device", c.l.MaxNameLen); err != nil {
		return nil, err
	}
	if a.Epoch, err = c.uint("epoch"); err != nil {
		return nil, err
	}
	if a.Through, err = c.uint("through"); err != nil {
		return nil, err
	}
	n, err := c.array("applied", c.l.MaxAckSeqs, ErrTooManySeqs)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		a.Applied = make([]uint64, n)
	}
	for i := range a.Applied {
		if a.Applied[i], err = c.uint("applied seq"); err != nil {
			return nil, err
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
	if err := c.close(); err != nil {
		return nil, err
	}
	if err := a.validate(&c.l); err != nil {
		return nil, err
	}
	return a, nil
}
