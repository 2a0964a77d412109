package protocol

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Column encodings inside the msgpack bin fields of a series (all integers
// are zigzag varints as in encoding/binary.AppendVarint):
//
//	times:  precision p (1 byte, 0..9: units of 10^p ns), t0 in units,
//	        then delta-of-delta of each following time (first delta as is).
//	        A regular 1 Hz series costs 1 byte per timestamp.
//	int and scaled float values: v0, then the delta to each following value.
//	raw float values: 8 bytes each, IEEE 754 little endian.
//	bool values: a bitmap, least significant bit first, spare bits zero.
//
// Deltas wrap modulo 2^64 on both sides, so any int64 sequence round-trips.

// timePrecision returns the largest p in 0..9 such that every t is a multiple of 10^p ns.
func timePrecision(times []int64) uint8 {
	p := uint8(9)
	for _, t := range times {
		for p > 0 && t%int64(pow10[p]) != 0 {
			p--
		}
		if p == 0 {
			break
		}
	}
	return p
}

func appendTimes(dst []byte, times []int64) []byte {
	p := timePrecision(times)
	unit := int64(pow10[p])
	dst = append(dst, p)
	var prev, prevDelta int64
	for i, t := range times {
		u := t / unit
		if i == 0 {
			dst = binary.AppendVarint(dst, u)
		} else {
			d := u - prev
			dst = binary.AppendVarint(dst, d-prevDelta)
			prevDelta = d
		}
		prev = u
	}
	return dst
}

// timesSize is len(appendTimes(nil, times)) without building it.
func timesSize(times []int64) int {
	p := timePrecision(times)
	unit := int64(pow10[p])
	n := 1
	var prev, prevDelta int64
	for i, t := range times {
		u := t / unit
		if i == 0 {
			n += varintLen(u)
		} else {
			d := u - prev
			n += varintLen(d - prevDelta)
			prevDelta = d
		}
		prev = u
	}
	return n
}

func varintLen(v int64) int {
	ux := uint64(v) << 1
	if v < 0 {
		ux = ^ux
	}
	n := 1
	for ux >= 0x80 {
		ux >>= 7
		n++
	}
	return n
}

// decodeTimes fills dst (len n) from col, checking every time against l.
func decodeTimes(col []byte, dst []int64, l *Limits) error {
	if len(col) < 1 {
		return fmt.Errorf("%w: empty time column", ErrMalformed)
	}
	p := col[0]
	if p > maxExp {
		return fmt.Errorf("%w: time precision %d", ErrMalformed, p)
	}
	unit := int64(pow10[p])
	lo, hi := l.MinTime/unit, l.MaxTime/unit
	pos := 1
	var prev, delta int64
	for i := range dst {
		v, k := binary.Varint(col[pos:])
		if k <= 0 {
			return fmt.Errorf("%w: time column truncated at reading %d", ErrMalformed, i)
		}
		pos += k
		var u int64
		if i == 0 {
			u = v
		} else {
			delta += v
			u = prev + delta
		}
		// The unit bounds keep u*unit from overflowing; then the exact check.
		if u < lo || u > hi || u*unit < l.MinTime || u*unit > l.MaxTime {
			return fmt.Errorf("%w: reading %d at %d×10^%d ns, allowed %d..%d ns", ErrTimeRange, i, u, p, l.MinTime, l.MaxTime)
		}
		prev = u
		dst[i] = u * unit
	}
	if pos != len(col) {
		return fmt.Errorf("%w: %d trailing bytes in time column", ErrMalformed, len(col)-pos)
	}
	return nil
}

func appendDeltas(dst []byte, vals []int64) []byte {
	var prev int64
	for _, v := range vals {
		dst = binary.AppendVarint(dst, v-prev)
		prev = v
	}
	return dst
}

// appendScaled encodes floats at resolution 10^e as deltas of scaled integers.
func appendScaled(dst []byte, vals []float64, e int8) ([]byte, error) {
	var prev int64
	for i, v := range vals {
		n, ok := scale(v, e)
		if !ok {
			return dst, fmt.Errorf("%w: value %d (%g) does not fit at resolution 1e%d", ErrResolution, i, v, e)
		}
		dst = binary.AppendVarint(dst, n-prev)
		prev = n
	}
	return dst, nil
}

func appendRawFloats(dst []byte, vals []float64) []byte {
	for _, v := range vals {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
	}
	return dst
}

func appendBools(dst []byte, vals []bool) []byte {
	var cur byte
	for i, v := range vals {
		if v {
			cur |= 1 << (i % 8)
		}
		if i%8 == 7 {
			dst = append(dst, cur)
			cur = 0
		}
	}
	if len(vals)%8 != 0 {
		dst = append(dst, cur)
	}
	return dst
}

func decodeBools(col []byte, dst []bool) error {
	if len(col) != (len(dst)+7)/8 {
		return fmt.Errorf("%w: bool column of %d bytes for %d readings", ErrMalformed, len(col), len(dst))
	}
	for i := range dst {
		dst[i] = col[i/8]&(1<<(i%8)) != 0
	}
	if r := len(dst) % 8; r != 0 && col[len(col)-1]>>r != 0 {
		return fmt.Errorf("%w: spare bits set in bool column", ErrMalformed)
	}
	return nil
}
