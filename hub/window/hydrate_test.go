package window

import (
	"math"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func (e *env) hydrate(a Aggregate, ts []int64, vs []float64) (Aggregate, bool, bool) {
	e.t.Helper()
	var out Aggregate
	var changed, ok bool
	if err := e.db.Update(func(tx *bolt.Tx) (err error) {
		out, changed, ok, err = e.s.Hydrate(tx, a, ts, vs)
		return err
	}); err != nil {
		e.t.Fatalf("hydrate: %v", err)
	}
	return out, changed, ok
}

// TestHydrateCompletesASharedWindow: two hubs each hold half of a minute
// (the device's batches alternated between them). Hydrated with the raw
// rows of the whole minute, a hub's window gives the whole minute's
// aggregate, bit for bit the oracle's; the hour window over that minute is
// dirty again; the hydrated aggregate is what Recompute gives.
func TestHydrateCompletesASharedWindow(t *testing.T) {
	a, b := newEnv(t, Options{}), newEnv(t, Options{})
	orc := newOracle()
	t0 := testBase.Truncate(time.Hour)
	f := func(i int) float64 { return 20 + float64(i)/100 }
	ts, vs := regular(t0.UnixNano(), time.Second, 120, f)
	first := a.batch("gw-1", floatSeries("bme280", "temperature", "C", nil, ts[:30], vs[:30]))
	second := b.batch("gw-1", floatSeries("bme280", "temperature", "C", nil, ts[30:], vs[30:]))
	wall := t0.Add(3 * time.Minute)
	a.merge(first, wall)
	b.merge(second, wall)
	orc.apply(first, nil)
	orc.apply(second, nil)

	// A has only the first 30 s: idle, its minute is due, partial.
	wall = wall.Add(DefaultIdleTimeout)
	due := a.due(wall, 10)
	var minute Aggregate
	for _, x := range due {
		if x.Size == time.Minute && x.Start == t0.UnixNano() {
			minute = x
		}
	}
	if minute.Count != 30 {
		t.Fatalf("hub A's first minute holds %d readings before the rebuild, want 30: %+v", minute.Count, due)
	}
	h, changed, ok := a.hydrate(minute, ts[:60], vs[:60])
	want := orc.windows(DefaultSizes())
	if !ok || !changed || h.Count != 60 || !sameStats(h, want[idOf(h)]) {
		t.Fatalf("hydrated: ok %v changed %v %+v\nwant %+v", ok, changed, h, want[idOf(h)])
	}
	if h.Version <= minute.Version {
		t.Errorf("version %d after the rebuild, was %d", h.Version, minute.Version)
	}
	var again Aggregate
	a.db.View(func(tx *bolt.Tx) error {
		var found bool
		var err error
		again, found, err = a.s.Recompute(tx, h.ID)
		if err != nil || !found {
			t.Fatalf("recompute: %v %v", found, err)
		}
		return nil
	})
	if !sameStats(again, h) || again.Version != h.Version {
		t.Errorf("recompute %+v, hydrate %+v", again, h)
	}
	// The same rows again change nothing.
	if _, changed, ok := a.hydrate(h, ts[:60], vs[:60]); !ok || changed {
		t.Errorf("second hydrate: ok %v changed %v", ok, changed)
	}
	// Emit everything (the hour with a rebuilt view too): every window
	// equals the oracle's.
	out := emitted{}
	for range 10 {
		aggs := a.due(wall, 10)
		if len(aggs) == 0 {
			break
		}
		var done []Aggregate
		for _, x := range aggs {
			lo, _ := slices.BinarySearch(ts, x.Start)
			hi, _ := slices.BinarySearch(ts, x.Start+int64(x.Size))
			y, _, ok := a.hydrate(x, ts[lo:hi], vs[lo:hi])
			if !ok {
				t.Fatalf("window %+v changed", x)
			}
			done = append(done, y)
		}
		out.write(done)
		a.mark(done)
	}
	compareWindows(t, out, want, nil)
}

// TestHydrateRefusesAChangedWindow: a batch merged between Due and Hydrate
// makes the rebuild give up (the window stays dirty, rebuilt next time).
func TestHydrateRefusesAChangedWindow(t *testing.T) {
	e := newEnv(t, Options{})
	t0 := testBase.Truncate(time.Hour)
	ts, vs := regular(t0.UnixNano(), time.Second, 30, func(i int) float64 { return float64(i) })
	e.merge(e.batch("gw-1", floatSeries("s", "temperature", "", nil, ts, vs)), t0)
	wall := t0.Add(time.Hour)
	due := e.due(wall, 10)
	if len(due) == 0 {
		t.Fatal("nothing due")
	}
	late := e.batch("gw-1", floatSeries("s", "temperature", "", nil, []int64{t0.UnixNano() + 45e9}, []float64{7}))
	e.merge(late, wall)
	for _, x := range due {
		if _, _, ok := e.hydrate(x, ts, vs); ok {
			t.Errorf("window %v+%v hydrated although a batch changed it", x.Start, x.Size)
		}
	}
}

// TestHydrateKeepsWhatOnlyThisHubHolds: raw rows missing a reading this hub
// merged (a read that raced the write) do not remove it; at a timestamp
// held in both, the rows' value wins (another hub's later write).
func TestHydrateKeepsWhatOnlyThisHubHolds(t *testing.T) {
	e := newEnv(t, Options{})
	t0 := testBase.Truncate(time.Hour)
	ts, vs := regular(t0.UnixNano(), time.Second, 10, func(i int) float64 { return float64(i) })
	e.merge(e.batch("gw-1", floatSeries("s", "temperature", "", nil, ts, vs)), t0)
	var minute Aggregate
	for _, x := range e.due(t0.Add(time.Hour), 10) {
		if x.Size == time.Minute {
			minute = x
		}
	}
	rows := slices.Clone(vs[:5])
	rows[0] = 100
	h, changed, ok := e.hydrate(minute, ts[:5], rows)
	if !ok || !changed || h.Count != 10 || h.First != 100 || h.Sum != 100+45 || h.Max != 100 {
		t.Fatalf("%+v ok %v changed %v", h, ok, changed)
	}
	for _, bad := range [][2][]float64{{{1, 2}, {1}}, {{2, 1}, {1, 1}}, {{0}, {math.NaN()}}} {
		var ts []int64
		for _, x := range bad[0] {
			ts = append(ts, t0.UnixNano()+int64(x)*1e9)
		}
		if err := e.db.Update(func(tx *bolt.Tx) error { _, _, _, err := e.s.Hydrate(tx, h, ts, bad[1]); return err }); err == nil {
			t.Errorf("hydrate accepted %v", bad)
		}
	}
}
