package protocol

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Message kinds, the second element of every message. On the wire: never renumber.
const (
	kindBatch  = 1
	kindAck    = 2
	kindStatus = 3
)

// Codec encodes and decodes messages under one set of limits, reusing its
// buffers between calls. A Codec is not safe for concurrent use; give each
// goroutine its own (they are cheap).
type Codec struct {
	l   Limits
	buf bytes.Buffer
	enc *msgpack.Encoder
	col []byte
	r   bytes.Reader
	dec *msgpack.Decoder
	in  []byte // the message being decoded
}

// NewCodec returns a codec enforcing l (zero fields take their defaults).
func NewCodec(l Limits) *Codec {
	c := &Codec{l: l.withDefaults()}
	c.enc = msgpack.NewEncoder(&c.buf)
	c.dec = msgpack.NewDecoder(&c.r)
	return c
}

// Limits returns the codec's limits with defaults filled in.
func (c *Codec) Limits() Limits { return c.l }

// EncodeBatch validates b against the codec's limits and returns its wire
// form in a new slice. Float values of a series with a resolution are rounded
// to it (see Quantize). The result is never longer than MaxMessageBytes.
func (c *Codec) EncodeBatch(b *Batch) ([]byte, error) {
	v, err := version(b.Version)
	if err != nil {
		return nil, err
	}
	if b.Version == 0 {
		c := *b
		c.Version = v
		b = &c
	}
	if err := b.validateHeader(&c.l); err != nil {
		return nil, err
	}
	total := 0
	for i := range b.Series {
		s := &b.Series[i]
		if err := s.validate(&c.l); err != nil {
			return nil, fmt.Errorf("series %d (%s/%s): %w", i, s.Sensor, s.Metric, err)
		}
		total += s.Len()
		if total > c.l.MaxReadings {
			return nil, fmt.Errorf("%w: more than %d", ErrTooManyReadings, c.l.MaxReadings)
		}
	}
	c.buf.Reset()
	e := c.enc
	e.EncodeArrayLen(batchFields[v-1])
	e.EncodeUint(uint64(v))
	e.EncodeUint(kindBatch)
	e.EncodeString(b.Device)
	e.EncodeUint(b.Epoch)
	e.EncodeUint(b.Seq)
	e.EncodeInt(b.SealTime)
	if g := b.Gap; g == nil {
		e.EncodeNil()
	} else {
		e.EncodeArrayLen(4)
		e.EncodeArrayLen(len(g.Seqs))
		for _, r := range g.Seqs {
			e.EncodeArrayLen(2)
			e.EncodeUint(r.First)
			e.EncodeUint(r.Last)
		}
		e.EncodeUint(g.Readings)
		e.EncodeInt(g.FirstTime)
		e.EncodeInt(g.LastTime)
	}
	if v >= 2 {
		e.EncodeUint(b.Settled)
		e.EncodeInt(b.Before)
	}
	e.EncodeArrayLen(len(b.Series))
	for i := range b.Series {
		if err := c.encodeSeries(&b.Series[i]); err != nil {
			return nil, fmt.Errorf("series %d: %w", i, err)
		}
		if c.buf.Len() > c.l.MaxMessageBytes {
			return nil, fmt.Errorf("%w: over %d bytes at series %d", ErrTooLarge, c.l.MaxMessageBytes, i)
		}
	}
	// bytes.Buffer writes cannot fail, so the encoder's errors were all nil.
	return bytes.Clone(c.buf.Bytes()), nil
}

func (c *Codec) encodeSeries(s *Series) error {
	e := c.enc
	e.EncodeArrayLen(9)
	e.EncodeString(s.Sensor)
	e.EncodeString(s.Metric)
	e.EncodeString(s.Unit)
	e.EncodeArrayLen(2 * len(s.Labels))
	for _, l := range s.Labels {
		e.EncodeString(l.Key)
		e.EncodeString(l.Value)
	}
	e.EncodeUint(uint64(s.Type))
	exp, hasRes := int8(0), s.Resolution != 0
	if hasRes {
		exp, _ = ResolutionExp(s.Resolution) // validated
		e.EncodeInt(int64(exp))
	} else {
		e.EncodeNil()
	}
	e.EncodeUint(uint64(len(s.Times)))
	c.col = appendTimes(c.col[:0], s.Times)
	e.EncodeBytes(c.col)
	switch s.Type {
	case Float:
		if hasRes {
			var err error
			if c.col, err = appendScaled(c.col[:0], s.Floats, exp); err != nil {
				return err
			}
		} else {
			c.col = appendRawFloats(c.col[:0], s.Floats)
		}
		e.EncodeBytes(c.col)
	case Int:
		e.EncodeBytes(appendDeltas(c.col[:0], s.Ints))
	case Bool:
		e.EncodeBytes(appendBools(c.col[:0], s.Bools))
	case String:
		e.EncodeArrayLen(len(s.Strings))
		for _, v := range s.Strings {
			e.EncodeString(v)
		}
	}
	return nil
}

// validate checks a series' names, labels, values and times against l.
func (s *Series) validate(l *Limits) error {
	if err := s.validateMeta(l); err != nil {
		return err
	}
	n := len(s.Times)
	if n == 0 {
		return fmt.Errorf("%w: series without readings", ErrMalformed)
	}
	if s.valuesLen() != n {
		return fmt.Errorf("%w: %d times but %d %s values", ErrBadValue, n, s.valuesLen(), s.Type)
	}
	for i, t := range s.Times {
		if t < l.MinTime || t > l.MaxTime {
			return fmt.Errorf("%w: reading %d at %d ns, allowed %d..%d", ErrTimeRange, i, t, l.MinTime, l.MaxTime)
		}
	}
	switch s.Type {
	case Float:
		for i, v := range s.Floats {
			if err := checkFinite(v, i); err != nil {
				return err
			}
		}
	case String:
		for i, v := range s.Strings {
			if err := validText(v, fmt.Sprintf("string value %d", i), l.MaxStringLen); err != nil {
				return err
			}
		}
	}
	return nil
}

// EncodeBatch encodes b with default limits; see Codec.EncodeBatch.
func EncodeBatch(b *Batch) ([]byte, error) { return NewCodec(Limits{}).EncodeBatch(b) }

// DecodeBatch decodes data with default limits; see Codec.DecodeBatch.
func DecodeBatch(data []byte) (*Batch, error) {
	b := new(Batch)
	if err := NewCodec(Limits{}).DecodeBatch(data, b); err != nil {
		return nil, err
	}
	return b, nil
}

// Sizes of msgpack encodings, as vmihailenco/msgpack writes them.
func sizeUint(n uint64) int {
	switch {
	case n <= 127:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

func sizeStr(n int) int {
	switch {
	case n < 32:
		return 1 + n
	case n < 256:
		return 2 + n
	case n <= 0xffff:
		return 3 + n
	}
	return 5 + n
}

func sizeBin(n int) int {
	switch {
	case n < 256:
		return 2 + n
	case n <= 0xffff:
		return 3 + n
	}
	return 5 + n
}

func sizeArray(n int) int {
	switch {
	case n < 16:
		return 1
	case n <= 0xffff:
		return 3
	}
	return 5
}
