package protocol

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// DecodeBatch decodes data into dst, reusing dst's slices, and checks every
// field against the codec's limits before allocating for it. On error dst
// holds partial data and must not be used. The returned error wraps one of
// the sentinels in errors.go.
func (c *Codec) DecodeBatch(data []byte, dst *Batch) error {
	v, err := c.open(data, kindBatch, batchFields)
	if err != nil {
		return err
	}
	dst.Version = v
	if dst.Device, err = c.str("device", c.l.MaxNameLen); err != nil {
		return err
	}
	if err := ValidDevice(dst.Device); err != nil {
		return err
	}
	if dst.Epoch, err = c.uint("epoch"); err != nil {
		return err
	}
	if dst.Seq, err = c.uint("seq"); err != nil {
		return err
	}
	if dst.SealTime, err = c.int("seal time"); err != nil {
		return err
	}
	dst.Gap = nil
	if n, err := c.arrayOrNil("gap"); err != nil {
		return err
	} else if n >= 0 {
		if n != 4 {
			return fmt.Errorf("%w: gap of %d fields, want 4", ErrMalformed, n)
		}
		g := new(Gap)
		nr, err := c.array("gap seqs", c.l.MaxAckSeqs, ErrTooManySeqs)
		if err != nil {
			return err
		}
		if nr > 0 {
			g.Seqs = make([]SeqRange, nr)
		}
		for i := range g.Seqs {
			if m, err := c.array("gap seq range", 2, ErrMalformed); err != nil {
				return err
			} else if m != 2 {
				return fmt.Errorf("%w: gap seq range of %d fields, want 2", ErrMalformed, m)
			}
			if g.Seqs[i].First, err = c.uint("gap seq"); err != nil {
				return err
			}
			if g.Seqs[i].Last, err = c.uint("gap seq"); err != nil {
				return err
			}
		}
		if g.Readings, err = c.uint("gap readings"); err != nil {
			return err
		}
		if g.FirstTime, err = c.int("gap time"); err != nil {
			return err
		}
		if g.LastTime, err = c.int("gap time"); err != nil {
			return err
		}
		dst.Gap = g
	}
	dst.Settled, dst.Before = 0, 0
	if v >= 2 {
		if dst.Settled, err = c.uint("settled"); err != nil {
			return err
		}
		if dst.Before, err = c.int("before"); err != nil {
			return err
		}
	}
	ns, err := c.array("series", c.l.MaxSeries, ErrTooManySeries)
	if err != nil {
		return err
	}
	if cap(dst.Series) < ns {
		dst.Series = append(dst.Series[:cap(dst.Series)], make([]Series, ns-cap(dst.Series))...)
	}
	dst.Series = dst.Series[:ns]
	total := 0
	for i := range dst.Series {
		s := &dst.Series[i]
		if err := c.decodeSeries(s, &total); err != nil {
			return fmt.Errorf("series %d: %w", i, err)
		}
	}
	if err := c.close(); err != nil {
		return err
	}
	return dst.validateHeader(&c.l)
}

func (c *Codec) decodeSeries(s *Series, total *int) error {
	if n, err := c.array("series", 9, ErrMalformed); err != nil {
		return err
	} else if n != 9 {
		return fmt.Errorf("%w: series of %d fields, want 9", ErrMalformed, n)
	}
	var err error
	if s.Sensor, err = c.str("sensor", c.l.MaxNameLen); err != nil {
		return err
	}
	if s.Metric, err = c.str("metric", c.l.MaxNameLen); err != nil {
		return err
	}
	if s.Unit, err = c.str("unit", c.l.MaxNameLen); err != nil {
		return err
	}
	nl, err := c.array("labels", 2*c.l.MaxLabels, ErrTooManyLabels)
	if err != nil {
		return err
	}
	if nl%2 != 0 {
		return fmt.Errorf("%w: odd label array of %d", ErrMalformed, nl)
	}
	s.Labels = s.Labels[:0]
	for j := 0; j < nl; j += 2 {
		k, err := c.str("label key", c.l.MaxNameLen)
		if err != nil {
			return err
		}
		v, err := c.str("label value", c.l.MaxNameLen)
		if err != nil {
			return err
		}
		s.Labels = append(s.Labels, Label{k, v})
	}
	t, err := c.uint("value type")
	if err != nil {
		return err
	}
	if t > uint64(String) {
		return fmt.Errorf("%w: value type %d", ErrBadValue, t)
	}
	s.Type = ValueType(t)
	s.Resolution = 0
	var exp int8
	if code, err := c.dec.PeekCode(); err != nil {
		return c.wrap("resolution", err)
	} else if code == msgpcode.Nil {
		c.dec.DecodeNil()
	} else {
		e, err := c.int("resolution")
		if err != nil {
			return err
		}
		if e < -maxExp || e > maxExp {
			return fmt.Errorf("%w: exponent %d outside -9..9", ErrResolution, e)
		}
		exp = int8(e)
		s.Resolution = ResolutionFromExp(exp)
	}
	if err := s.validateMeta(&c.l); err != nil {
		return err
	}
	count, err := c.uint("count")
	if err != nil {
		return err
	}
	if count == 0 {
		return fmt.Errorf("%w: series without readings", ErrMalformed)
	}
	if count > uint64(c.l.MaxReadings-*total) {
		return fmt.Errorf("%w: more than %d", ErrTooManyReadings, c.l.MaxReadings)
	}
	n := int(count)
	*total += n
	col, err := c.bin("time column")
	if err != nil {
		return err
	}
	s.Times = grow(s.Times, n)
	if err := decodeTimes(col, s.Times, &c.l); err != nil {
		return err
	}
	s.Floats, s.Ints, s.Bools, s.Strings = s.Floats[:0], s.Ints[:0], s.Bools[:0], s.Strings[:0]
	if s.Type == String {
		m, err := c.array("string values", n, ErrMalformed)
		if err != nil {
			return err
		}
		if m != n {
			return fmt.Errorf("%w: %d times but %d string values", ErrMalformed, n, m)
		}
		for i := 0; i < n; i++ {
			v, err := c.str("string value", c.l.MaxStringLen)
			if err != nil {
				return err
			}
			if err := validText(v, "string value", c.l.MaxStringLen); err != nil {
				return err
			}
			s.Strings = append(s.Strings, v)
		}
		return nil
	}
	col, err = c.bin("value column")
	if err != nil {
		return err
	}
	switch {
	case s.Type == Bool:
		s.Bools = growT(s.Bools, n)
		return decodeBools(col, s.Bools)
	case s.Type == Int:
		s.Ints = grow(s.Ints, n)
		return decodeInts(col, s.Ints)
	case s.Resolution != 0:
		s.Floats = growT(s.Floats, n)
		return decodeScaled(col, s.Floats, exp)
	default:
		s.Floats = growT(s.Floats, n)
		if len(col) != 8*n {
			return fmt.Errorf("%w: float column of %d bytes for %d readings", ErrMalformed, len(col), n)
		}
		for i := range s.Floats {
			v := math.Float64frombits(binary.LittleEndian.Uint64(col[8*i:]))
			if err := checkFinite(v, i); err != nil {
				return err
			}
			s.Floats[i] = v
		}
		return nil
	}
}

func decodeInts(col []byte, dst []int64) error {
	pos := 0
	var prev int64
	for i := range dst {
		d, k := binary.Varint(col[pos:])
		if k <= 0 {
			return fmt.Errorf("%w: value column truncated at reading %d", ErrMalformed, i)
		}
		pos += k
		prev += d
		dst[i] = prev
	}
	if pos != len(col) {
		return fmt.Errorf("%w: %d trailing bytes in value column", ErrMalformed, len(col)-pos)
	}
	return nil
}

func decodeScaled(col []byte, dst []float64, e int8) error {
	pos := 0
	var prev int64
	for i := range dst {
		d, k := binary.Varint(col[pos:])
		if k <= 0 {
			return fmt.Errorf("%w: value column truncated at reading %d", ErrMalformed, i)
		}
		pos += k
		prev += d
		if prev > maxScaled || prev < -maxScaled {
			return fmt.Errorf("%w: reading %d: scaled value %d beyond 2^53", ErrResolution, i, prev)
		}
		dst[i] = unscale(prev, e)
	}
	if pos != len(col) {
		return fmt.Errorf("%w: %d trailing bytes in value column", ErrMalformed, len(col)-pos)
	}
	return nil
}

func grow(s []int64, n int) []int64 { return growT(s, n) }

func growT[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// open starts decoding a message of the given kind, of version 1 or 2
// with want[version-1] fields, checking size, version and kind first so
// their errors take precedence. It returns the version.
func (c *Codec) open(data []byte, kind uint64, want [2]int) (uint8, error) {
	if len(data) > c.l.MaxMessageBytes {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), c.l.MaxMessageBytes)
	}
	c.in = data
	c.r.Reset(data)
	c.dec.Reset(&c.r)
	n, err := c.array("message", 64, ErrMalformed)
	if err != nil {
		return 0, err
	}
	if n < 2 {
		return 0, fmt.Errorf("%w: message of %d fields", ErrMalformed, n)
	}
	v, err := c.uint("version")
	if err != nil {
		return 0, err
	}
	if v < MinVersion || v > Version {
		return 0, fmt.Errorf("%w: version %d (this build speaks %d to %d)", ErrUnknownVersion, v, MinVersion, Version)
	}
	k, err := c.uint("kind")
	if err != nil {
		return 0, err
	}
	if k != kind {
		return 0, fmt.Errorf("%w: kind %d, want %d", ErrUnknownKind, k, kind)
	}
	if w := want[v-1]; n != w {
		return 0, fmt.Errorf("%w: %d fields, want %d for version %d", ErrMalformed, n, w, v)
	}
	return uint8(v), nil
}

func (c *Codec) close() error {
	if c.r.Len() != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, c.r.Len())
	}
	return nil
}

func (c *Codec) wrap(what string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: truncated at %s", ErrMalformed, what)
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
}

func (c *Codec) peek(what string) (byte, error) {
	code, err := c.dec.PeekCode()
	if err != nil {
		return 0, c.wrap(what, err)
	}
	return code, nil
}

func isIntCode(code byte) bool {
	return msgpcode.IsFixedNum(code) || code >= msgpcode.Uint8 && code <= msgpcode.Int64
}

// uint reads a non-negative msgpack integer.
func (c *Codec) uint(what string) (uint64, error) {
	code, err := c.peek(what)
	if err != nil {
		return 0, err
	}
	if !isIntCode(code) {
		return 0, fmt.Errorf("%w: %s: want an integer, got code 0x%02x", ErrMalformed, what, code)
	}
	if code == msgpcode.Uint64 {
		v, err := c.dec.DecodeUint64()
		if err != nil {
			return 0, c.wrap(what, err)
		}
		return v, nil
	}
	v, err := c.dec.DecodeInt64()
	if err != nil {
		return 0, c.wrap(what, err)
	}
	if v < 0 {
		return 0, fmt.Errorf("%w: %s: negative %d", ErrMalformed, what, v)
	}
	return uint64(v), nil
}

// int reads a msgpack integer that fits int64.
func (c *Codec) int(what string) (int64, error) {
	code, err := c.peek(what)
	if err != nil {
		return 0, err
	}
	if !isIntCode(code) {
		return 0, fmt.Errorf("%w: %s: want an integer, got code 0x%02x", ErrMalformed, what, code)
	}
	if code == msgpcode.Uint64 {
		v, err := c.dec.DecodeUint64()
		if err != nil {
			return 0, c.wrap(what, err)
		}
		if v > math.MaxInt64 {
			return 0, fmt.Errorf("%w: %s: %d overflows int64", ErrMalformed, what, v)
		}
		return int64(v), nil
	}
	v, err := c.dec.DecodeInt64()
	if err != nil {
		return 0, c.wrap(what, err)
	}
	return v, nil
}

func (c *Codec) bool(what string) (bool, error) {
	code, err := c.peek(what)
	if err != nil {
		return false, err
	}
	if code != msgpcode.True && code != msgpcode.False {
		return false, fmt.Errorf("%w: %s: want a bool, got code 0x%02x", ErrMalformed, what, code)
	}
	v, _ := c.dec.DecodeBool()
	return v, nil
}

// array reads an array header of at most max elements (else tooMany).
func (c *Codec) array(what string, max int, tooMany error) (int, error) {
	n, err := c.arrayOrNil(what)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%w: %s: want an array, got nil", ErrMalformed, what)
	}
	if n > max {
		return 0, fmt.Errorf("%w: %s: %d, limit %d", tooMany, what, n, max)
	}
	return n, nil
}

// arrayOrNil reads an array header, or nil as -1.
func (c *Codec) arrayOrNil(what string) (int, error) {
	code, err := c.peek(what)
	if err != nil {
		return 0, err
	}
	if code != msgpcode.Nil && !msgpcode.IsFixedArray(code) && code != msgpcode.Array16 && code != msgpcode.Array32 {
		return 0, fmt.Errorf("%w: %s: want an array, got code 0x%02x", ErrMalformed, what, code)
	}
	n, err := c.dec.DecodeArrayLen()
	if err != nil {
		return 0, c.wrap(what, err)
	}
	return n, nil
}

// raw reads the payload of a str (wantStr) or bin header as a sub-slice of
// the input, without copying, after checking it against max.
func (c *Codec) raw(what string, wantStr bool, max int) ([]byte, error) {
	code, err := c.peek(what)
	if err != nil {
		return nil, err
	}
	if wantStr && !msgpcode.IsString(code) || !wantStr && !msgpcode.IsBin(code) {
		kind := map[bool]string{true: "string", false: "bin"}[wantStr]
		return nil, fmt.Errorf("%w: %s: want a %s, got code 0x%02x", ErrMalformed, what, kind, code)
	}
	n, err := c.dec.DecodeBytesLen()
	if err != nil {
		return nil, c.wrap(what, err)
	}
	if n > max {
		return nil, fmt.Errorf("%w: %s of %d bytes, limit %d", ErrStringTooLong, what, n, max)
	}
	if n > c.r.Len() {
		return nil, fmt.Errorf("%w: truncated at %s", ErrMalformed, what)
	}
	pos := len(c.in) - c.r.Len()
	c.r.Seek(int64(n), io.SeekCurrent)
	return c.in[pos : pos+n : pos+n], nil
}

func (c *Codec) str(what string, max int) (string, error) {
	b, err := c.raw(what, true, max)
	return string(b), err
}

func (c *Codec) bin(what string) ([]byte, error) {
	return c.raw(what, false, c.l.MaxMessageBytes)
}

// binOrNil reads a bin of at most max bytes (a copy), or nil.
func (c *Codec) binOrNil(what string, max int) ([]byte, error) {
	code, err := c.peek(what)
	if err != nil {
		return nil, err
	}
	if code == msgpcode.Nil {
		c.dec.Skip()
		return nil, nil
	}
	b, err := c.raw(what, false, max)
	return bytes.Clone(b), err
}

// Peeked is what PeekHeader reads of a batch.
type Peeked struct {
	Version    uint8
	Device     string
	Epoch, Seq uint64
}

// PeekHeader decodes only a batch's version, device, epoch and seq, for
// answering a batch that fails to decode in full (a rejection ack must name
// its seq, in the batch's version). It applies the size, version and kind
// checks, and nothing more.
func (c *Codec) PeekHeader(data []byte) (Peeked, error) {
	var p Peeked
	v, err := c.open(data, kindBatch, batchFields)
	if err != nil {
		return p, err
	}
	p.Version = v
	if p.Device, err = c.str("device", c.l.MaxNameLen); err != nil {
		return p, err
	}
	if err := ValidDevice(p.Device); err != nil {
		return p, err
	}
	if p.Epoch, err = c.uint("epoch"); err != nil {
		return p, err
	}
	if p.Seq, err = c.uint("seq"); err != nil {
		return p, err
	}
	if p.Epoch == 0 || p.Seq == 0 {
		return p, fmt.Errorf("%w: epoch %d seq %d", ErrBadSeq, p.Epoch, p.Seq)
	}
	return p, nil
}
