package protocol

import (
	"fmt"
	"math"
	"strings"
)

// Version is the wire protocol version this package writes; it reads
// MinVersion to Version. Version 2 added to a batch the agent's settled
// mark and its Before time, acks of seq ranges signed by the hub, and the
// settled mark to the status (README.md, "Wire protocol").
const Version = 2

// MinVersion is the oldest version this package reads and writes.
const MinVersion = 1

// Fields of each message per version (1, 2), the length of its array.
var (
	batchFields  = [2]int{8, 10}
	ackFields    = [2]int{7, 9}
	statusFields = [2]int{13, 14}
)

// version returns the version a message with v in its Version field is
// encoded in (0 means Version) or an error.
func version(v uint8) (uint8, error) {
	switch {
	case v == 0:
		return Version, nil
	case v < MinVersion || v > Version:
		return 0, fmt.Errorf("%w: version %d (this build speaks %d to %d)", ErrUnknownVersion, v, MinVersion, Version)
	}
	return v, nil
}

// ValueType is the type of every value in a series.
type ValueType uint8

// Value types. The numbers are on the wire: never renumber.
const (
	Float  ValueType = 0
	Int    ValueType = 1
	Bool   ValueType = 2
	String ValueType = 3
)

func (t ValueType) String() string {
	switch t {
	case Float:
		return "float"
	case Int:
		return "int"
	case Bool:
		return "bool"
	case String:
		return "string"
	}
	return fmt.Sprintf("ValueType(%d)", uint8(t))
}

// ParseValueType is the inverse of ValueType.String.
func ParseValueType(s string) (ValueType, error) {
	for t := Float; t <= String; t++ {
		if t.String() == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: value type %q (want float, int, bool or string)", ErrBadValue, s)
}

// Batch is the unit of delivery from an agent to the hub: the readings sealed
// under one (device, epoch, seq).
type Batch struct {
	// Version is the protocol version it was decoded from, or is to be
	// encoded in; 0 means Version.
	Version uint8
	// Device is the agent's id; it must equal the device in the topic.
	Device string
	// Epoch identifies one incarnation of the agent's outbox: a random,
	// non-zero id drawn when the outbox is created. Seqs restart at 1 in a
	// new epoch.
	Epoch uint64
	// Seq numbers the batches of an epoch contiguously from 1.
	Seq uint64
	// SealTime is when the agent sealed the batch, in Unix nanoseconds on the
	// agent's clock (the hub estimates clock offset from it).
	SealTime int64
	// Gap, if not nil, reports readings the agent dropped under its disk bound.
	Gap *Gap
	// Settled (version 2) is the agent's settled mark when it sealed the
	// batch: every seq of Epoch up to it was settled by a hub's ack (any
	// hub's). A hub that has not seen that history starts the epoch's
	// ledger there.
	Settled uint64
	// Before (version 2) bounds the event times of every reading the agent
	// sealed before this batch, in any epoch on its disk (Unix ns): no such
	// reading is later. It is at least the agent's clock when the epoch
	// began. A hub that lacks some earlier seqs knows that the windows they
	// can touch start no later than Before.
	Before int64
	// Series holds the readings, one entry per distinct series.
	Series []Series
}

// Gap is a loss the agent reports: readings it dropped under its disk bound
// and the seqs of the sealed batches that went with them. It covers the
// drops since the previous gap notice, not the whole epoch.
type Gap struct {
	// Seqs lists the dropped batches as sorted, disjoint, non-adjacent
	// ranges below the carrying batch's seq; empty when only readings that
	// were never sealed were dropped.
	Seqs []SeqRange
	// Readings is the exact number of readings dropped, sealed or not.
	Readings uint64
	// FirstTime..LastTime spans the event times of the dropped readings (Unix ns).
	FirstTime, LastTime int64
}

// SeqRange is the inclusive range First..Last.
type SeqRange struct{ First, Last uint64 }

// AddSeq adds seq to the ranges, merging neighbours; it keeps them sorted.
func (g *Gap) AddSeq(seq uint64) { g.AddRange(SeqRange{seq, seq}) }

// AddRange adds r (First <= Last) to the ranges, merging overlaps and neighbours.
func (g *Gap) AddRange(r SeqRange) {
	out := make([]SeqRange, 0, len(g.Seqs)+1)
	placed := false
	for _, x := range g.Seqs {
		switch {
		case x.Last+1 < r.First: // x entirely below r
			out = append(out, x)
		case r.Last+1 < x.First: // x entirely above r
			if !placed {
				out = append(out, r)
				placed = true
			}
			out = append(out, x)
		default: // overlapping or adjacent: absorb x into r
			r.First, r.Last = min(r.First, x.First), max(r.Last, x.Last)
		}
	}
	if !placed {
		out = append(out, r)
	}
	g.Seqs = out
}

// Merge adds everything h reports to g.
func (g *Gap) Merge(h *Gap) {
	for _, r := range h.Seqs {
		g.AddRange(r)
	}
	if h.Readings > 0 {
		if g.Readings == 0 {
			g.FirstTime, g.LastTime = h.FirstTime, h.LastTime
		} else {
			g.FirstTime, g.LastTime = min(g.FirstTime, h.FirstTime), max(g.LastTime, h.LastTime)
		}
	}
	g.Readings += h.Readings
}

// SeqCount returns how many seqs the ranges cover.
func (g *Gap) SeqCount() uint64 {
	n := uint64(0)
	for _, r := range g.Seqs {
		n += r.Last - r.First + 1
	}
	return n
}

// Series is one column group: the readings of one metric of one sensor.
type Series struct {
	Sensor string // e.g. "bme280-0x76"
	Metric string // e.g. "temperature"
	Unit   string // e.g. "C"; may be empty
	// Labels are extra tags for every reading of the series (sorted pairs on the wire).
	Labels []Label
	Type   ValueType
	// Resolution, for a Float series, is 0 (none: values travel as IEEE 754
	// doubles) or a power of ten between 1e-9 and 1e9. With a resolution the
	// values travel as scaled integers and decode to exactly the float64 that
	// strconv.ParseFloat gives for the decimal: 21.37 at 0.01 -> 2137 -> 21.37.
	// Values are rounded to the resolution when encoded.
	Resolution float64
	// Times are the readings' event times in Unix nanoseconds, one per value.
	Times []int64
	// Exactly one of the value slices is used, the one matching Type.
	Floats  []float64
	Ints    []int64
	Bools   []bool
	Strings []string
}

// Label is one key=value tag.
type Label struct{ Key, Value string }

// Len returns the number of readings in the series.
func (s *Series) Len() int { return len(s.Times) }

// Readings returns the number of readings in the batch.
func (b *Batch) Readings() int {
	n := 0
	for i := range b.Series {
		n += len(b.Series[i].Times)
	}
	return n
}

func (s *Series) valuesLen() int {
	switch s.Type {
	case Float:
		return len(s.Floats)
	case Int:
		return len(s.Ints)
	case Bool:
		return len(s.Bools)
	case String:
		return len(s.Strings)
	}
	return -1
}

// Key returns a string that identifies the series within a device:
// sensor, metric, unit, type, resolution and labels.
func (s *Series) Key() string {
	var sb strings.Builder
	sb.WriteString(s.Sensor)
	sb.WriteByte(0)
	sb.WriteString(s.Metric)
	sb.WriteByte(0)
	sb.WriteString(s.Unit)
	fmt.Fprintf(&sb, "\x00%d\x00%g", s.Type, s.Resolution)
	for _, l := range s.Labels {
		sb.WriteByte(0)
		sb.WriteString(l.Key)
		sb.WriteByte('=')
		sb.WriteString(l.Value)
	}
	return sb.String()
}

// pow10 holds the exactly representable powers of ten used by resolutions.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

// maxExp bounds the resolution exponent: 1e-9 .. 1e9.
const maxExp = 9

// ResolutionExp returns e such that res == 10^e, for res a power of ten
// between 1e-9 and 1e9.
func ResolutionExp(res float64) (int8, error) {
	for e := 0; e <= maxExp; e++ {
		if res == pow10[e] {
			return int8(e), nil
		}
		if res == 1/pow10[e] || res == parsedNegPow10[e] {
			return int8(-e), nil
		}
	}
	return 0, fmt.Errorf("%w: %g is not a power of ten between 1e-9 and 1e9", ErrResolution, res)
}

// parsedNegPow10 are the float64s that the literals 1e-0 .. 1e-9 parse to;
// 1/1e3 and 1e-3 can differ in the last bit, and users write the literal.
var parsedNegPow10 = [...]float64{1e-0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9}

// ResolutionFromExp is the inverse of ResolutionExp.
func ResolutionFromExp(e int8) float64 {
	if e >= 0 {
		return pow10[e]
	}
	return parsedNegPow10[-e]
}

// maxScaled bounds a scaled integer so that its conversion to float64 is exact.
const maxScaled = 1<<53 - 1

// scale returns v expressed in units of 10^e, rounded to the nearest unit.
func scale(v float64, e int8) (int64, bool) {
	var f float64
	if e >= 0 {
		f = math.Round(v / pow10[e])
	} else {
		f = math.Round(v * pow10[-e])
	}
	if !(f >= -maxScaled && f <= maxScaled) {
		return 0, false
	}
	n := int64(f)
	// v·10^-e is itself rounded, so for values with 16 significant digits
	// the nearest integer can be one off; prefer the neighbour that decodes
	// back to exactly v, so that a decimal at its resolution is unchanged.
	if unscale(n, e) != v {
		for _, m := range [2]int64{n - 1, n + 1} {
			if m >= -maxScaled && m <= maxScaled && unscale(m, e) == v {
				return m, true
			}
		}
	}
	return n, true
}

// unscale returns the float64 nearest to n * 10^e. For |n| < 2^53 both n and
// 10^|e| (|e| <= 9 < 22) are exact doubles, so one IEEE multiplication or
// division is correctly rounded: the result equals strconv.ParseFloat of the
// decimal n·10^e, bit for bit.
func unscale(n int64, e int8) float64 {
	if e >= 0 {
		return float64(n) * pow10[e]
	}
	return float64(n) / pow10[-e]
}

// Decimal returns v as units of 10^exp, for a value at its resolution
// (exp from ResolutionExp): v is exactly what strconv.ParseFloat gives for
// the decimal text of units·10^exp, so that text stores v bit for bit. ok
// is false if v is not at the resolution.
func Decimal(v float64, exp int8) (units int64, ok bool) {
	n, ok := scale(v, exp)
	if !ok || unscale(n, exp) != v {
		return 0, false
	}
	return n, true
}

// Quantize rounds v to the resolution res (a power of ten, see
// Series.Resolution) exactly as the encoder does, so a caller can know the
// value the hub will receive. A res of 0 returns v unchanged.
func Quantize(v, res float64) (float64, error) {
	if res == 0 {
		return v, nil
	}
	e, err := ResolutionExp(res)
	if err != nil {
		return 0, err
	}
	n, ok := scale(v, e)
	if !ok {
		return 0, fmt.Errorf("%w: %g does not fit at resolution %g", ErrResolution, v, res)
	}
	return unscale(n, e), nil
}

// AppendReadings appends the batch's readings to dst, series by series, and
// returns the extended slice. The readings share the series' label slices.
func (b *Batch) AppendReadings(dst []Reading) []Reading {
	for _, s := range b.Series {
		for i, t := range s.Times {
			r := Reading{Sensor: s.Sensor, Metric: s.Metric, Unit: s.Unit, Labels: s.Labels, Type: s.Type, Resolution: s.Resolution, Time: t}
			switch s.Type {
			case Float:
				r.Float = s.Floats[i]
			case Int:
				r.Int = s.Ints[i]
			case Bool:
				r.Bool = s.Bools[i]
			case String:
				r.Str = s.Strings[i]
			}
			dst = append(dst, r)
		}
	}
	return dst
}
