package protocol_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/freshet-iot/freshet/protocol"
	"github.com/freshet-iot/freshet/protocol/prototest"
)

// randomBatch builds a valid batch of random shape from r.
func randomBatch(r *rand.Rand) *protocol.Batch {
	b := &protocol.Batch{
		Device: fmt.Sprintf("dev-%d", r.IntN(1000)), Epoch: r.Uint64() | 1, Seq: 1 + r.Uint64N(1<<40),
		SealTime: r.Int64N(protocol.DefaultMaxTime),
	}
	if r.IntN(4) == 0 {
		b.Gap = &protocol.Gap{Readings: 1 + r.Uint64N(1<<40), FirstTime: r.Int64N(1 << 60)}
		b.Gap.LastTime = b.Gap.FirstTime + r.Int64N(1<<40)
		for range r.IntN(4) {
			first := 1 + r.Uint64N(b.Seq)
			if first < b.Seq {
				b.Gap.AddRange(protocol.SeqRange{First: first, Last: first + r.Uint64N(b.Seq-first)})
			}
		}
	}
	for range r.IntN(6) {
		b.Series = append(b.Series, randomSeries(r))
	}
	if len(b.Series) == 0 && b.Gap == nil {
		b.Series = append(b.Series, randomSeries(r))
	}
	return b
}

func randomSeries(r *rand.Rand) protocol.Series {
	s := protocol.Series{Sensor: fmt.Sprintf("s%d", r.IntN(5)), Metric: fmt.Sprintf("m-%d", r.IntN(5)), Type: protocol.ValueType(r.IntN(4))}
	if r.IntN(2) == 0 {
		s.Unit = []string{"C", "%", "hPa", "°C", "m/s²"}[r.IntN(5)]
	}
	for i := range r.IntN(3) {
		s.Labels = append(s.Labels, protocol.Label{Key: fmt.Sprintf("k%d", i), Value: fmt.Sprintf("v %d", r.IntN(9))})
	}
	n := 1 + r.IntN(300)
	// Times: regular, jittered, or arbitrary, at a random precision.
	t := r.Int64N(protocol.DefaultMaxTime / 2)
	step := int64(math.Pow10(r.IntN(10)))
	t -= t % step
	for range n {
		s.Times = append(s.Times, t)
		switch r.IntN(3) {
		case 0:
			t += step
		case 1:
			t += step * (r.Int64N(5) - 1)
		default:
			t = r.Int64N(protocol.DefaultMaxTime)
		}
		t = max(0, min(t, protocol.DefaultMaxTime))
	}
	switch s.Type {
	case protocol.Float:
		if r.IntN(2) == 0 {
			exp := r.IntN(19) - 9
			s.Resolution = protocol.ResolutionFromExp(int8(exp))
			for range n {
				s.Floats = append(s.Floats, decimal(r.Int64N(1<<50)-1<<49, exp))
			}
		} else {
			for range n {
				s.Floats = append(s.Floats, (r.Float64()-0.5)*math.Pow(10, float64(r.IntN(600)-300)))
			}
		}
	case protocol.Int:
		for range n {
			s.Ints = append(s.Ints, int64(r.Uint64()))
		}
	case protocol.Bool:
		for range n {
			s.Bools = append(s.Bools, r.IntN(2) == 0)
		}
	case protocol.String:
		for range n {
			s.Strings = append(s.Strings, fmt.Sprintf("state %d\t✓", r.IntN(100)))
		}
	}
	return s
}

// decimal returns strconv.ParseFloat of the decimal n·10^exp.
func decimal(n int64, exp int) float64 {
	s := strconv.FormatInt(n, 10) + "e" + strconv.Itoa(exp)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic(err)
	}
	return f
}

// sameBatch is a fast equality (cmp is too slow for thousands of batches)
// that treats nil and empty slices alike.
func sameBatch(a, b *protocol.Batch) bool {
	norm := func(x *protocol.Batch) protocol.Batch {
		y := *x
		y.Series = nil
		for _, s := range x.Series {
			if len(s.Labels) == 0 {
				s.Labels = nil
			}
			if len(s.Floats) == 0 {
				s.Floats = nil
			}
			if len(s.Ints) == 0 {
				s.Ints = nil
			}
			if len(s.Bools) == 0 {
				s.Bools = nil
			}
			if len(s.Strings) == 0 {
				s.Strings = nil
			}
			y.Series = append(y.Series, s)
		}
		return y
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func TestRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	c := protocol.NewCodec(protocol.Limits{})
	var got protocol.Batch // reused across iterations, as the hub does
	for i := range 2000 {
		want := randomBatch(r)
		want.Version = protocol.Version // as decoded
		data, err := c.EncodeBatch(want)
		if errors.Is(err, protocol.ErrTooLarge) {
			continue
		}
		if err != nil {
			t.Fatalf("batch %d: encode: %v", i, err)
		}
		if err := c.DecodeBatch(data, &got); err != nil {
			t.Fatalf("batch %d: decode: %v", i, err)
		}
		if !sameBatch(want, &got) {
			t.Fatalf("batch %d: round trip differs (-want +got):\n%s", i, cmp.Diff(want, &got, equate))
		}
	}
}

// TestResolutionBitExact: a decimal at its resolution travels as a scaled
// integer and comes back as exactly the float64 strconv.ParseFloat gives.
func TestResolutionBitExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 200000 {
		exp := r.IntN(19) - 9
		var n int64
		switch i % 3 {
		case 0:
			n = r.Int64N(100000) - 50000
		case 1:
			n = r.Int64N(1<<53) - 1<<52
		default:
			n = r.Int64N(1 << 53)
		}
		want := decimal(n, exp)
		res := protocol.ResolutionFromExp(int8(exp))
		got, err := protocol.Quantize(want, res)
		if err != nil {
			t.Fatalf("Quantize(%v, %g): %v", want, res, err)
		}
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("%de%d: Quantize gives %v (%x), ParseFloat %v (%x)", n, exp, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	}
	// And through the wire, including the example.
	b := prototest.MinimalBatch()
	b.Series[0].Floats = []float64{21.37, 0.1 + 0.2, -1013.25}
	data, err := protocol.EncodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := protocol.DecodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{21.37, 0.3, -1013.25} {
		if g := got.Series[0].Floats[i]; math.Float64bits(g) != math.Float64bits(want) {
			t.Errorf("value %d = %v, want exactly %v", i, g, want)
		}
	}
}

func TestResolutionExp(t *testing.T) {
	for _, tc := range []struct {
		res  float64
		want int8
		err  bool
	}{{0.01, -2, false}, {1, 0, false}, {100, 2, false}, {1e-9, -9, false}, {1e9, 9, false}, {0.05, 0, true}, {1e10, 0, true}, {-0.1, 0, true}, {0.001, -3, false}} {
		got, err := protocol.ResolutionExp(tc.res)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ResolutionExp(%g) = %d, %v", tc.res, got, err)
		}
		if err != nil && !errors.Is(err, protocol.ErrResolution) {
			t.Errorf("ResolutionExp(%g): error %v is not ErrResolution", tc.res, err)
		}
	}
}

// TestDecodeReuse: a codec and batch reused across different messages give
// the same result as fresh ones (no stale slices leak across decodes).
func TestDecodeReuse(t *testing.T) {
	c := protocol.NewCodec(protocol.Limits{})
	var b protocol.Batch
	for _, f := range []func() *protocol.Batch{prototest.AllTypesBatch, prototest.MinimalBatch, prototest.GapOnlyBatch, prototest.AllTypesBatch} {
		want := prototest.V2(f())
		data, err := c.EncodeBatch(want)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.DecodeBatch(data, &b); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, &b, equate); diff != "" {
			t.Fatalf("reused decode differs:\n%s", diff)
		}
	}
}

func TestReasons(t *testing.T) {
	if got := protocol.Reason(fmt.Errorf("x: %w", protocol.ErrNotFinite)); got != "not_finite" {
		t.Errorf("Reason = %q", got)
	}
	if got := protocol.Reason(errors.New("other")); got != "other" {
		t.Errorf("Reason = %q", got)
	}
	seen := map[string]bool{}
	for _, r := range protocol.Reasons() {
		if seen[r] {
			t.Errorf("duplicate reason %q", r)
		}
		seen[r] = true
	}
}

func TestGapRanges(t *testing.T) {
	var g protocol.Gap
	for _, s := range []uint64{5, 7, 6, 1, 10, 11, 3, 2} {
		g.AddSeq(s)
	}
	want := []protocol.SeqRange{{First: 1, Last: 3}, {First: 5, Last: 7}, {First: 10, Last: 11}}
	if fmt.Sprint(g.Seqs) != fmt.Sprint(want) {
		t.Fatalf("ranges %v, want %v", g.Seqs, want)
	}
	g.AddRange(protocol.SeqRange{First: 4, Last: 9})
	if fmt.Sprint(g.Seqs) != fmt.Sprint([]protocol.SeqRange{{First: 1, Last: 11}}) || g.SeqCount() != 11 {
		t.Fatalf("after bridging: %v (%d seqs)", g.Seqs, g.SeqCount())
	}
	h := protocol.Gap{Seqs: []protocol.SeqRange{{First: 20, Last: 20}}, Readings: 7, FirstTime: 5, LastTime: 9}
	g.Merge(&h)
	g.Merge(&protocol.Gap{Readings: 3, FirstTime: 2, LastTime: 6})
	if g.Readings != 10 || g.FirstTime != 2 || g.LastTime != 9 || len(g.Seqs) != 2 {
		t.Fatalf("merged gap %+v", g)
	}
}
