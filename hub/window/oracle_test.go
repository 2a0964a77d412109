package window

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/protocol"
)

var testBase = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

// fleet generates the batches of several devices: four series each (a
// resolution float, an int, a full-precision float with labels, a bool that
// must be ignored), readings at random millisecond times over span, some
// sharing a timestamp. With rewrites, some batches are sent again with
// other values at the same timestamps (a later write replaces the earlier
// one); exact re-sends are always included.
func fleet(rng *rand.Rand, devices int, span time.Duration, rewrites bool) []*protocol.Batch {
	type reading struct {
		s int
		t int64
		v float64
	}
	var out []*protocol.Batch
	seq := uint64(0)
	for d := range devices {
		dev := fmt.Sprintf("gw-%02d", d)
		var rs []reading
		for s := range 4 {
			first := len(rs)
			for range 300 + rng.IntN(300) {
				r := reading{s, testBase.UnixNano() + rng.Int64N(int64(span/time.Millisecond))*int64(time.Millisecond), value(rng, s)}
				if len(rs) > first && rng.IntN(10) == 0 { // the same point again
					same := rs[first+rng.IntN(len(rs)-first)]
					r.t = same.t
					if !rewrites {
						r.v = same.v
					}
				}
				rs = append(rs, r)
			}
		}
		slices.SortStableFunc(rs, func(a, b reading) int { return cmp.Compare(a.t, b.t) })
		var mine []*protocol.Batch
		for len(rs) > 0 {
			n := min(len(rs), 30+rng.IntN(60))
			seq++
			b := &protocol.Batch{Device: dev, Epoch: 7, Seq: seq}
			ser := []protocol.Series{
				{Sensor: "bme280-0x76", Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01},
				{Sensor: "counter", Metric: "pulses", Labels: []protocol.Label{{Key: "line", Value: "a"}}, Type: protocol.Int},
				{Sensor: "adc", Metric: "voltage", Unit: "V", Labels: []protocol.Label{{Key: "ch", Value: "0"}, {Key: "gain", Value: "2"}}, Type: protocol.Float},
				{Sensor: "door", Metric: "open", Type: protocol.Bool},
			}
			for _, r := range rs[:n] {
				s := &ser[r.s]
				s.Times = append(s.Times, r.t)
				switch s.Type {
				case protocol.Float:
					s.Floats = append(s.Floats, r.v)
				case protocol.Int:
					s.Ints = append(s.Ints, int64(r.v))
				case protocol.Bool:
					s.Bools = append(s.Bools, r.v > 0)
				}
			}
			for _, s := range ser {
				if len(s.Times) > 0 {
					b.Series = append(b.Series, s)
				}
			}
			rs = rs[n:]
			mine = append(mine, b)
		}
		out = append(out, mine...)
		for _, b := range mine {
			switch r := rng.IntN(10); {
			case r == 0:
				out = append(out, resend(b, &seq, nil))
			case r == 1 && rewrites:
				out = append(out, resend(b, &seq, rng))
			}
		}
	}
	return out
}

func value(rng *rand.Rand, series int) float64 {
	switch series {
	case 0:
		return math.Round((21+3*rng.NormFloat64())*100) / 100
	case 1:
		return float64(rng.Int64N(1 << 40))
	case 2:
		return rng.NormFloat64() * math.Pow(10, float64(rng.IntN(12)-4))
	}
	return rng.Float64() - 0.5
}

// resend copies b under a new seq; with rng, about half of the values change.
func resend(b *protocol.Batch, seq *uint64, rng *rand.Rand) *protocol.Batch {
	*seq++
	c := &protocol.Batch{Device: b.Device, Epoch: b.Epoch + 1, Seq: *seq}
	for _, s := range b.Series {
		s.Times, s.Floats, s.Ints, s.Bools = slices.Clone(s.Times), slices.Clone(s.Floats), slices.Clone(s.Ints), slices.Clone(s.Bools)
		for i := range s.Times {
			if rng == nil || rng.IntN(2) == 0 {
				continue
			}
			switch s.Type {
			case protocol.Float:
				s.Floats[i] = value(rng, 2)
			case protocol.Int:
				s.Ints[i] = rng.Int64N(1000)
			}
		}
		c.Series = append(c.Series, s)
	}
	return c
}

// deliver applies batches in the given order while an emitter runs at
// random points (sometimes losing its mark, sometimes marking after another
// merge), then closes everything and returns what was emitted and the
// oracle of what was accepted. The oracle drops exactly the readings the
// definition calls too late: older than the device's watermark before the
// batch minus the horizon.
func deliver(t *testing.T, e *env, rng *rand.Rand, batches []*protocol.Batch, wall time.Time, evict bool) (emitted, *oracle, MergeStats, int) {
	t.Helper()
	o := e.s.Options()
	out, orc := emitted{}, newOracle()
	wms := map[string]int64{}
	var total MergeStats
	var pending []Aggregate
	evicted := 0
	for i, b := range batches {
		wm, ok := wms[b.Device]
		if !ok {
			wm = math.MinInt64 / 2
		}
		orc.apply(b, func(t int64) bool { return t >= wm-int64(o.CorrectionHorizon) })
		for _, r := range b.AppendReadings(nil) {
			if r.Time <= wall.Add(o.MaxFutureSkew).UnixNano() {
				wm = max(wm, r.Time)
			}
		}
		wms[b.Device] = wm

		st := e.merge(b, wall)
		total.Merged += st.Merged
		total.TooLate += st.TooLate
		total.Corrections += st.Corrections
		total.Future += st.Future
		if pending != nil { // marked after a merge that may have changed them
			e.mark(pending)
			pending = nil
		}
		switch rng.IntN(12) {
		case 0, 1, 2:
			e.drain(wall, 1+rng.IntN(40), out)
		case 3: // written, then the emitter died before marking
			out.write(e.due(wall, 1+rng.IntN(40)))
		case 4: // written, marked only after the next merge
			pending = e.due(wall, 1+rng.IntN(40))
			out.write(pending)
		case 5:
			wall = wall.Add(o.IdleTimeout + time.Second)
		}
		if evict && i%10 == 0 {
			evicted += e.evict(wall)
		}
	}
	e.mark(pending)
	wall = wall.Add(o.IdleTimeout)
	e.drain(wall, 25, out)
	if evict {
		evicted += e.evict(wall)
	}
	return out, orc, total, evicted
}

// TestOracle: whatever the delivery order, duplicates and rewrites, the
// latest emission of every window equals the oracle's aggregate of the
// distinct readings, last write winning, bit for bit.
func TestOracle(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opt   Options
		span  time.Duration
		wall  time.Duration // the hub's clock at the start, from testBase
		evict bool
	}{
		{"defaults", Options{}, 3 * time.Hour, 3 * time.Hour, false},
		// A horizon shorter than the data: readings go too late while
		// eviction runs, and sizes that do not nest (2h, 3h) share blobs.
		{"short-horizon", Options{Sizes: []time.Duration{time.Minute, 5 * time.Minute, time.Hour, 2 * time.Hour, 3 * time.Hour}, CorrectionHorizon: 50 * time.Minute}, 8 * time.Hour, 7 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(4) {
				rng := rand.New(rand.NewPCG(seed, 99))
				batches := fleet(rng, 3, tc.span, true)
				rng.Shuffle(len(batches), func(i, j int) { batches[i], batches[j] = batches[j], batches[i] })
				e := newEnv(t, tc.opt)
				got, orc, st, evicted := deliver(t, e, rng, batches, testBase.Add(tc.wall), tc.evict)
				want := orc.windows(e.s.Options().Sizes)
				compareWindows(t, got, want, nil)
				accepted := 0
				for _, pts := range orc.pts {
					accepted += len(pts)
				}
				if st.Merged < accepted || st.Corrections == 0 {
					t.Errorf("seed %d: stats %+v, %d distinct readings accepted", seed, st, accepted)
				}
				if tc.evict && (st.TooLate == 0 || evicted == 0) {
					t.Errorf("seed %d: %d too late, %d keys evicted with a short horizon", seed, st.TooLate, evicted)
				}
				if !tc.evict && st.TooLate != 0 {
					t.Errorf("seed %d: %d readings too late", seed, st.TooLate)
				}
				t.Logf("seed %d: %d batches, %d windows, %+v, %d keys evicted", seed, len(batches), len(want), st, evicted)
				if t.Failed() {
					t.Fatalf("seed %d failed; %d batches, %d windows", seed, len(batches), len(want))
				}
			}
		})
	}
}

// TestOrderIndependent: the same batches (exact re-sends included, no
// conflicting rewrites) in order, reversed and shuffled give bit-identical
// aggregates, equal to the oracle's.
func TestOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	batches := fleet(rng, 2, 2*time.Hour, false)
	reversed := slices.Clone(batches)
	slices.Reverse(reversed)
	shuffled := slices.Clone(batches)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	var first emitted
	for i, bs := range [][]*protocol.Batch{batches, reversed, shuffled} {
		e := newEnv(t, Options{})
		got, orc, _, _ := deliver(t, e, rand.New(rand.NewPCG(3, uint64(i))), bs, testBase.Add(2*time.Hour), false)
		compareWindows(t, got, orc.windows(DefaultSizes()), nil)
		if first == nil {
			first = got
			continue
		}
		compareWindows(t, got, first, nil)
	}
}
