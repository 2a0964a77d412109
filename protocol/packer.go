package protocol

import (
	"fmt"
	"slices"
)

// Reading is one sensor value at one event time, the unit the packer takes.
type Reading struct {
	Sensor, Metric, Unit string
	Labels               []Label // sorted by key, unique keys
	Type                 ValueType
	Resolution           float64 // for Float: 0 or a power of ten (see Series.Resolution)
	Time                 int64   // Unix ns

	// The value: the field matching Type.
	Float float64
	Int   int64
	Bool  bool
	Str   string
}

// gapSize is the worst-case encoded size of a gap notice with n seq ranges.
func gapSize(n int) int { return sizeArray(4) + sizeArray(n) + n*(1+9+9) + 9 + 9 + 9 }

// Header is the part of a batch that is fixed at sealing.
type Header struct {
	Epoch, Seq uint64
	SealTime   int64
	Gap        *Gap
	// Settled and Before: see Batch.
	Settled uint64
	Before  int64
}

// Packer turns a stream of readings into batches whose encoding never exceeds
// Limits.MaxMessageBytes, series, readings and all. It keeps the exact
// encoded size as readings arrive, so a batch is filled to the limit without
// trial encodings. Batches fill to within the header's worst case (about 85
// bytes, reserved for 9-byte integers and a gap notice). Not safe for
// concurrent use.
type Packer struct {
	device   string
	codec    *Codec
	l        Limits
	reserve  int // worst-case bytes of the batch header, series array header included
	size     int // exact bytes of the series so far
	readings int
	series   []*packSeries
	index    map[seriesID][]int
}

type seriesID struct {
	sensor, metric, unit string
	typ                  ValueType
	res                  float64
}

type packSeries struct {
	s        Series
	exp      int8
	meta     int // bytes of the series array header, names, labels, type, resolution
	prec     uint8
	prevU    int64 // previous time in units of 10^prec ns
	prevD    int64 // previous time delta in units
	timesLen int   // bytes of the time column
	prevV    int64 // previous scaled or int value
	valsLen  int   // bytes of the value column (strings: of the values array)
}

// NewPacker returns a packer for device's batches under l.
func NewPacker(device string, l Limits) (*Packer, error) {
	if err := ValidDevice(device); err != nil {
		return nil, err
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	l = l.withDefaults()
	// [version, kind, device, epoch, seq, sealTime, gap, settled, before,
	// series...]: the worst case of every integer is 9 bytes; the gap is
	// reserved with one seq range (see GapReserve for more).
	reserve := sizeArray(batchFields[Version-1]) + 1 + 1 + sizeStr(len(device)) + 9 + 9 + 9 + gapSize(1) + 9 + 9 + sizeArray(l.MaxSeries)
	return &Packer{device: device, codec: NewCodec(l), l: l, reserve: reserve, index: map[seriesID][]int{}}, nil
}

// Len returns the number of readings packed so far.
func (p *Packer) Len() int { return p.readings }

// Size returns an upper bound of the encoded size of the batch so far (exact
// but for the header, which is counted at its worst case).
func (p *Packer) Size() int { return p.reserve + p.size }

// Add appends r to the batch. It returns an error wrapping ErrFull, and adds
// nothing, when r would take the batch over a limit: seal, then add r again.
// Any other error means r itself is invalid (bad name, NaN, time out of
// range, ...) and would never fit; it is refused by the same rules as the
// decoder's, so what the packer takes the hub accepts.
func (p *Packer) Add(r *Reading) error {
	if r.Time < p.l.MinTime || r.Time > p.l.MaxTime {
		return fmt.Errorf("%w: %s/%s at %d ns", ErrTimeRange, r.Sensor, r.Metric, r.Time)
	}
	ps := p.find(r)
	var newSeries *packSeries
	if ps == nil {
		if len(p.series) >= p.l.MaxSeries {
			return fmt.Errorf("%w: %d series", ErrFull, len(p.series))
		}
		var err error
		if newSeries, err = p.newSeries(r); err != nil {
			return err
		}
		ps = newSeries
	}
	if p.readings >= p.l.MaxReadings {
		return fmt.Errorf("%w: %d readings", ErrFull, p.readings)
	}
	// Value first: it can fail validation.
	var scaled int64
	valsLen := ps.valsLen
	switch r.Type {
	case Float:
		if err := checkFinite(r.Float, 0); err != nil {
			return fmt.Errorf("%s/%s: %w", r.Sensor, r.Metric, err)
		}
		if ps.s.Resolution != 0 {
			var ok bool
			if scaled, ok = scale(r.Float, ps.exp); !ok {
				return fmt.Errorf("%w: %s/%s: %g does not fit at resolution %g", ErrResolution, r.Sensor, r.Metric, r.Float, ps.s.Resolution)
			}
			valsLen += varintLen(scaled - ps.prevV)
		} else {
			valsLen += 8
		}
	case Int:
		scaled = r.Int
		valsLen += varintLen(scaled - ps.prevV)
	case Bool:
		valsLen = (ps.s.Len() + 1 + 7) / 8
	case String:
		if err := validText(r.Str, "string value", p.l.MaxStringLen); err != nil {
			return fmt.Errorf("%s/%s: %w", r.Sensor, r.Metric, err)
		}
		valsLen += sizeStr(len(r.Str))
	}
	// Then the time column.
	n := ps.s.Len()
	prec, timesLen := ps.prec, ps.timesLen
	var u, d int64
	if n == 0 {
		prec = timePrecision([]int64{r.Time})
		u = r.Time / int64(pow10[prec])
		timesLen = 1 + varintLen(u)
	} else if r.Time%int64(pow10[prec]) != 0 {
		// A finer precision: recount the column (at most 9 times a series).
		all := append(ps.s.Times, r.Time)
		prec = timePrecision(all)
		timesLen = timesSize(all)
		unit := int64(pow10[prec])
		u, d = r.Time/unit, r.Time/unit-all[n-1]/unit
	} else {
		u = r.Time / int64(pow10[prec])
		d = u - ps.prevU
		timesLen += varintLen(d - ps.prevD)
	}
	before := 0
	if newSeries == nil {
		before = ps.bytes(ps.timesLen, ps.valsLen, n)
	}
	after := ps.bytes(timesLen, valsLen, n+1)
	if p.reserve+p.size-before+after > p.l.MaxMessageBytes {
		if p.readings == 0 {
			return fmt.Errorf("%w: %s/%s: one reading needs %d bytes, limit %d", ErrTooLarge, r.Sensor, r.Metric, p.reserve+after, p.l.MaxMessageBytes)
		}
		return fmt.Errorf("%w: %d bytes", ErrFull, p.reserve+p.size)
	}
	// Commit.
	if newSeries != nil {
		id := r.id()
		p.index[id] = append(p.index[id], len(p.series))
		p.series = append(p.series, newSeries)
	}
	ps.prec, ps.timesLen, ps.prevU, ps.prevD, ps.valsLen = prec, timesLen, u, d, valsLen
	ps.s.Times = append(ps.s.Times, r.Time)
	switch r.Type {
	case Float:
		v := r.Float
		if ps.s.Resolution != 0 {
			v = unscale(scaled, ps.exp) // what the hub will decode
			ps.prevV = scaled
		}
		ps.s.Floats = append(ps.s.Floats, v)
	case Int:
		ps.s.Ints = append(ps.s.Ints, r.Int)
		ps.prevV = scaled
	case Bool:
		ps.s.Bools = append(ps.s.Bools, r.Bool)
	case String:
		ps.s.Strings = append(ps.s.Strings, r.Str)
	}
	p.size += after - before
	p.readings++
	return nil
}

// bytes is the encoded size of the series with the given column sizes and count.
func (ps *packSeries) bytes(timesLen, valsLen, n int) int {
	b := ps.meta + sizeUint(uint64(n)) + sizeBin(timesLen)
	if ps.s.Type == String {
		return b + sizeArray(n) + valsLen
	}
	return b + sizeBin(valsLen)
}

func (r *Reading) id() seriesID {
	return seriesID{r.Sensor, r.Metric, r.Unit, r.Type, r.Resolution}
}

func (p *Packer) find(r *Reading) *packSeries {
	for _, i := range p.index[r.id()] {
		if slices.Equal(p.series[i].s.Labels, r.Labels) {
			return p.series[i]
		}
	}
	return nil
}

func (p *Packer) newSeries(r *Reading) (*packSeries, error) {
	ps := &packSeries{s: Series{
		Sensor: r.Sensor, Metric: r.Metric, Unit: r.Unit, Type: r.Type, Resolution: r.Resolution,
		Labels: slices.Clone(r.Labels),
	}}
	if err := ps.s.validateMeta(&p.l); err != nil {
		return nil, fmt.Errorf("%s/%s: %w", r.Sensor, r.Metric, err)
	}
	ps.meta = sizeArray(9) + sizeStr(len(r.Sensor)) + sizeStr(len(r.Metric)) + sizeStr(len(r.Unit)) +
		sizeArray(2*len(r.Labels)) + sizeUint(uint64(r.Type)) + 1
	for _, l := range r.Labels {
		ps.meta += sizeStr(len(l.Key)) + sizeStr(len(l.Value))
	}
	if r.Resolution != 0 {
		ps.exp, _ = ResolutionExp(r.Resolution) // validated
	}
	return ps, nil
}

// Seal encodes the readings packed so far under h, resets the packer and
// returns the batch and its wire form. The batch's slices belong to the
// caller. Seal with no readings is allowed when h carries a gap notice.
func (p *Packer) Seal(h Header) (*Batch, []byte, error) {
	b := &Batch{Version: Version, Device: p.device, Epoch: h.Epoch, Seq: h.Seq, SealTime: h.SealTime, Gap: h.Gap, Settled: h.Settled, Before: h.Before}
	if extra := 0; h.Gap != nil && len(h.Gap.Seqs) > 1 {
		// More ranges than reserved: they must fit in the room left.
		extra = gapSize(len(h.Gap.Seqs)) - gapSize(1)
		if p.Size()+extra > p.l.MaxMessageBytes {
			return nil, nil, fmt.Errorf("%w: gap notice of %d seq ranges does not fit beside %d bytes of readings", ErrFull, len(h.Gap.Seqs), p.size)
		}
	}
	b.Series = make([]Series, len(p.series))
	for i, ps := range p.series {
		b.Series[i] = ps.s
	}
	data, err := p.codec.EncodeBatch(b)
	if err != nil {
		return nil, nil, err
	}
	if len(data) > p.l.MaxMessageBytes {
		// The accounting above is wrong: refuse rather than send what it promised not to.
		return nil, nil, fmt.Errorf("packer accounting: encoded %d bytes, counted at most %d", len(data), p.Size())
	}
	p.Reset()
	return b, data, nil
}

// Reset drops the readings packed so far.
func (p *Packer) Reset() {
	p.series = nil
	clear(p.index)
	p.size, p.readings = 0, 0
}
