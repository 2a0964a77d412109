package protocol_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/freshet-iot/freshet/protocol"
)

// readingStream yields n random readings over a few series of every type.
func readingStream(r *rand.Rand, n int) []protocol.Reading {
	type kind struct {
		sensor, metric string
		typ            protocol.ValueType
		res            float64
		labels         []protocol.Label
	}
	kinds := []kind{
		{"bme280", "temperature", protocol.Float, 0.01, nil},
		{"bme280", "pressure", protocol.Float, 0.01, []protocol.Label{{Key: "site", Value: "n"}}},
		{"bme280", "pressure", protocol.Float, 0.01, []protocol.Label{{Key: "site", Value: "s"}}},
		{"ina219", "current", protocol.Float, 0, nil},
		{"counter", "pulses", protocol.Int, 0, nil},
		{"door", "open", protocol.Bool, 0, nil},
		{"exec", "state", protocol.String, 0, nil},
	}
	out := make([]protocol.Reading, n)
	t := int64(1_700_000_000) * 1e9
	for i := range out {
		k := kinds[r.IntN(len(kinds))]
		t += int64(r.IntN(3)) * 1e6 * int64(1+r.IntN(1000))
		if r.IntN(50) == 0 {
			t += int64(r.IntN(1000)) // an odd nanosecond: precision drops
		}
		rd := protocol.Reading{Sensor: k.sensor, Metric: k.metric, Type: k.typ, Resolution: k.res, Labels: k.labels, Time: t}
		switch k.typ {
		case protocol.Float:
			rd.Float = 20 + r.NormFloat64()*math.Pow(10, float64(r.IntN(6)))
		case protocol.Int:
			rd.Int = r.Int64N(1000) - int64(r.IntN(2))*math.MaxInt64/2
		case protocol.Bool:
			rd.Bool = r.IntN(2) == 0
		case protocol.String:
			rd.Str = fmt.Sprintf("state-%d", r.IntN(1000))
		}
		out[i] = rd
	}
	return out
}

// TestPackerNeverExceedsLimit packs a long stream under several byte limits:
// every batch fits, is filled until the next reading would not fit, and
// every reading comes out once, in order, with its value as the hub decodes it.
func TestPackerNeverExceedsLimit(t *testing.T) {
	for _, limit := range []int{512, 1500, 16 << 10, 64 << 10} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(limit), 9))
			stream := readingStream(r, 20000)
			l := protocol.Limits{MaxMessageBytes: limit}
			p, err := protocol.NewPacker("gw-1", l)
			if err != nil {
				t.Fatal(err)
			}
			codec := protocol.NewCodec(l)
			var seq uint64
			var out []protocol.Reading
			seal := func(next *protocol.Reading) {
				seq++
				want := p.Len()
				b, data, err := p.Seal(protocol.Header{Epoch: 1, Seq: seq, SealTime: 1})
				if err != nil {
					t.Fatalf("seal %d: %v", seq, err)
				}
				if len(data) > limit {
					t.Fatalf("batch %d is %d bytes, limit %d", seq, len(data), limit)
				}
				var got protocol.Batch
				if err := codec.DecodeBatch(data, &got); err != nil {
					t.Fatalf("batch %d does not decode: %v", seq, err)
				}
				if !sameBatch(b, &got) {
					t.Fatalf("batch %d: the packer's batch differs from what the hub decodes", seq)
				}
				if got.Readings() != want {
					t.Fatalf("batch %d holds %d readings, packer said %d", seq, got.Readings(), want)
				}
				// Tight: the reading that did not fit would have gone over the
				// limit less the header's worst case, which the packer reserves
				// (9-byte seq, seal time, settled mark and before time, a one-range
				// gap notice): 104 bytes for a 4-byte device id, of which this
				// header uses 15 or more.
				if next != nil {
					bigger := with1(&got, next)
					if data2, err := codec.EncodeBatch(bigger); err == nil && len(data2) <= limit-(104-15) {
						t.Fatalf("batch %d sealed at %d bytes but %d would have fitted", seq, len(data), len(data2))
					}
				}
				out = append(out, flatten(&got)...)
			}
			for i := range stream {
				err := p.Add(&stream[i])
				if errors.Is(err, protocol.ErrFull) {
					seal(&stream[i])
					err = p.Add(&stream[i])
				}
				if err != nil {
					t.Fatalf("reading %d: %v", i, err)
				}
			}
			seal(nil)
			if len(out) != len(stream) {
				t.Fatalf("%d readings out, %d in", len(out), len(stream))
			}
			// Per series, order and (quantized) values survive.
			bySeries := map[string][]protocol.Reading{}
			for _, rd := range out {
				bySeries[seriesKey(&rd)] = append(bySeries[seriesKey(&rd)], rd)
			}
			for _, in := range stream {
				k := seriesKey(&in)
				got := bySeries[k][0]
				bySeries[k] = bySeries[k][1:]
				want := in
				if in.Resolution != 0 {
					want.Float, _ = protocol.Quantize(in.Float, in.Resolution)
				}
				if got.Time != want.Time || got.Float != want.Float || got.Int != want.Int || got.Bool != want.Bool || got.Str != want.Str {
					t.Fatalf("series %q: got %+v, want %+v", k, got, want)
				}
			}
			t.Logf("%d readings in %d batches", len(stream), seq)
		})
	}
}

func seriesKey(r *protocol.Reading) string {
	return fmt.Sprint(r.Sensor, r.Metric, r.Unit, r.Type, r.Resolution, r.Labels)
}

func flatten(b *protocol.Batch) []protocol.Reading { return b.AppendReadings(nil) }

// with1 returns a copy of b with r appended to its series (or a new one).
func with1(b *protocol.Batch, r *protocol.Reading) *protocol.Batch {
	c := *b
	c.Series = nil
	found := false
	for _, s := range b.Series {
		if !found && s.Sensor == r.Sensor && s.Metric == r.Metric && s.Unit == r.Unit && s.Type == r.Type && s.Resolution == r.Resolution && fmt.Sprint(s.Labels) == fmt.Sprint(r.Labels) {
			found = true
			s.Times = append(append([]int64(nil), s.Times...), r.Time)
			s.Floats = append(append([]float64(nil), s.Floats...), r.Float)
			s.Ints = append(append([]int64(nil), s.Ints...), r.Int)
			s.Bools = append(append([]bool(nil), s.Bools...), r.Bool)
			s.Strings = append(append([]string(nil), s.Strings...), r.Str)
			trim(&s)
		}
		c.Series = append(c.Series, s)
	}
	if !found {
		s := protocol.Series{Sensor: r.Sensor, Metric: r.Metric, Unit: r.Unit, Type: r.Type, Resolution: r.Resolution, Labels: r.Labels,
			Times: []int64{r.Time}, Floats: []float64{r.Float}, Ints: []int64{r.Int}, Bools: []bool{r.Bool}, Strings: []string{r.Str}}
		trim(&s)
		c.Series = append(c.Series, s)
	}
	return &c
}

func trim(s *protocol.Series) {
	if s.Type != protocol.Float {
		s.Floats = nil
	}
	if s.Type != protocol.Int {
		s.Ints = nil
	}
	if s.Type != protocol.Bool {
		s.Bools = nil
	}
	if s.Type != protocol.String {
		s.Strings = nil
	}
}

func TestPackerRefusesBadReadings(t *testing.T) {
	p, err := protocol.NewPacker("gw-1", protocol.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	good := protocol.Reading{Sensor: "s", Metric: "m", Type: protocol.Float, Resolution: 0.1, Time: 1e18, Float: 1.25}
	if err := p.Add(&good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*protocol.Reading)
		err  error
	}{
		{"nan", func(r *protocol.Reading) { r.Float = math.NaN() }, protocol.ErrNotFinite},
		{"inf", func(r *protocol.Reading) { r.Float = math.Inf(1) }, protocol.ErrNotFinite},
		{"huge-at-resolution", func(r *protocol.Reading) { r.Float = 1e300 }, protocol.ErrResolution},
		{"bad-resolution", func(r *protocol.Reading) { r.Resolution = 0.2 }, protocol.ErrResolution},
		{"bad-sensor", func(r *protocol.Reading) { r.Sensor = "a b" }, protocol.ErrBadName},
		{"negative-time", func(r *protocol.Reading) { r.Time = -1 }, protocol.ErrTimeRange},
		{"bad-utf8", func(r *protocol.Reading) { r.Type, r.Resolution, r.Str = protocol.String, 0, "\xff" }, protocol.ErrBadValue},
		{"reserved-label", func(r *protocol.Reading) { r.Labels = []protocol.Label{{Key: "device", Value: "x"}} }, protocol.ErrBadName},
	} {
		r := good
		tc.mod(&r)
		if err := p.Add(&r); !errors.Is(err, tc.err) {
			t.Errorf("%s: Add = %v, want %v", tc.name, err, tc.err)
		}
	}
	if p.Len() != 1 {
		t.Fatalf("refused readings changed the batch: %d readings", p.Len())
	}
	b, _, err := p.Seal(protocol.Header{Epoch: 1, Seq: 1, SealTime: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Series[0].Floats[0]; got != 1.3 && got != 1.2 {
		t.Fatalf("value %v, want 1.25 rounded to 0.1", got)
	}
	if p.Len() != 0 {
		t.Fatal("Seal did not reset the packer")
	}
	// A gap notice alone can be sealed.
	if _, _, err := p.Seal(protocol.Header{Epoch: 1, Seq: 2, SealTime: 1, Gap: &protocol.Gap{Readings: 3}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Seal(protocol.Header{Epoch: 1, Seq: 3, SealTime: 1}); !errors.Is(err, protocol.ErrEmpty) {
		t.Fatalf("empty seal = %v, want ErrEmpty", err)
	}
}

func TestPackerSeriesAndReadingLimits(t *testing.T) {
	p, _ := protocol.NewPacker("gw-1", protocol.Limits{MaxSeries: 2, MaxReadings: 3})
	add := func(metric string) error {
		return p.Add(&protocol.Reading{Sensor: "s", Metric: metric, Type: protocol.Int, Time: 1e18, Int: 1})
	}
	for _, m := range []string{"a", "b"} {
		if err := add(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := add("c"); !errors.Is(err, protocol.ErrFull) {
		t.Fatalf("third series: %v, want ErrFull", err)
	}
	if err := add("a"); err != nil {
		t.Fatal(err)
	}
	if err := add("a"); !errors.Is(err, protocol.ErrFull) {
		t.Fatalf("fourth reading: %v, want ErrFull", err)
	}
}
