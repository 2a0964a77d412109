package window

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// sendRegular sends one temperature series every step from t0 for dur, in
// batches of per readings, each merged at the hub time of its last reading
// plus lag, and records the batches in orc.
func sendRegular(e *env, orc *oracle, dev string, t0 time.Time, step, dur time.Duration, per int, lag time.Duration, f func(int) float64) time.Time {
	n := int(dur / step)
	var wall time.Time
	for i := 0; i < n; i += per {
		m := min(per, n-i)
		ts, vs := regular(t0.Add(time.Duration(i)*step).UnixNano(), step, m, func(j int) float64 { return f(i + j) })
		b := e.batch(dev, floatSeries("bme280-0x76", "temperature", "C", nil, ts, vs))
		wall = time.Unix(0, ts[m-1]).Add(lag)
		e.merge(b, wall)
		orc.apply(b, nil)
	}
	return wall
}

func temp(i int) float64 { return 20 + math.Sin(float64(i)/97) + float64(i%7)/100 }

// TestLateCorrection: readings six hours late correct the windows already
// emitted (Correction set, counted once per window); a reading beyond the
// horizon is too late and merged nowhere; an identical re-send reopens nothing.
func TestLateCorrection(t *testing.T) {
	e := newEnv(t, Options{})
	orc := newOracle()
	out := emitted{}
	t0 := testBase
	wall := sendRegular(e, orc, "late", t0, 10*time.Second, 8*time.Hour, 30, time.Second, temp)
	e.drain(wall, 100, out)

	// Readings at +5 s in 10 minutes of hour 1, 6 h behind the watermark,
	// and one 73 h behind it.
	ts, vs := regular(t0.Add(time.Hour+5*time.Second).UnixNano(), 10*time.Second, 60, func(i int) float64 { return -float64(i) })
	ts, vs = append(ts, t0.Add(8*time.Hour-73*time.Hour).UnixNano()), append(vs, 99)
	late := e.batch("late", floatSeries("bme280-0x76", "temperature", "C", nil, ts, vs))
	st := e.merge(late, wall)
	orc.apply(late, func(t int64) bool { return t >= t0.UnixNano() })
	if want := (MergeStats{Merged: 60, TooLate: 1, Corrections: 11}); st != want {
		t.Fatalf("late batch: %+v, want %+v (10 minute windows and their hour)", st, want)
	}
	fixed := e.drain(wall, 100, out)
	if len(fixed) != 11 {
		t.Fatalf("%d windows re-emitted, want 11", len(fixed))
	}
	for _, a := range fixed {
		if !a.Correction || a.Start < t0.Add(time.Hour).UnixNano() || a.Start >= t0.Add(2*time.Hour).UnixNano() {
			t.Errorf("re-emitted %v+%v correction=%v", time.Unix(0, a.Start).UTC(), a.Size, a.Correction)
		}
	}
	compareWindows(t, out, orc.windows(DefaultSizes()), func(id winID) bool { return id.start+int64(id.size) <= wall.UnixNano()-int64(2*time.Minute) })

	// The same late batch again: nothing changes, nothing to emit.
	if st := e.merge(late, wall); st.Corrections != 0 || st.TooLate != 1 {
		t.Errorf("re-send: %+v", st)
	}
	if aggs := e.due(wall, 100); len(aggs) != 0 {
		t.Errorf("re-send made %d windows due", len(aggs))
	}
}

// TestBacklogPerDevice: a device sending a backlog five hours old neither
// holds back another device's windows nor has its own closed by the other's
// watermark.
func TestBacklogPerDevice(t *testing.T) {
	e := newEnv(t, Options{})
	now := testBase.Add(30 * time.Minute)
	orc := newOracle()
	sendRegular(e, orc, "backlog", now.Add(-5*time.Hour), time.Second, 10*time.Minute, 100, 5*time.Hour, temp)
	sendRegular(e, orc, "live", now.Add(-10*time.Minute), time.Second, 10*time.Minute, 100, 0, temp)
	got := map[string][]int64{}
	for _, a := range e.due(now, 1000) {
		if a.Size != time.Minute {
			t.Errorf("%s: %v window %v due", a.Device, a.Size, time.Unix(0, a.Start).UTC())
		}
		got[a.Device] = append(got[a.Device], a.Start)
	}
	// Each device's watermark is its last reading (minute 10 minus 1 s):
	// minutes 0..6 end at least 2 m before it.
	for dev, first := range map[string]time.Time{"backlog": now.Add(-5 * time.Hour), "live": now.Add(-10 * time.Minute)} {
		if len(got[dev]) != 7 || got[dev][0] != first.UnixNano() || got[dev][6] != first.Add(6*time.Minute).UnixNano() {
			t.Errorf("%s: due minutes %v, want 7 from %v", dev, got[dev], first)
		}
	}
}

// TestIdleTimeout: a quiet device's windows all close after IdleTimeout on
// the hub's clock, not before.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, Options{})
	orc := newOracle()
	wall := sendRegular(e, orc, "quiet", testBase, time.Second, 5*time.Minute+30*time.Second, 60, 0, temp)
	byWM := len(e.due(wall, 1000)) // minutes 0..2: end + 2 m <= 5m29s
	if byWM != 3 {
		t.Errorf("%d windows closed by the watermark, want 3", byWM)
	}
	if n := len(e.due(wall.Add(DefaultIdleTimeout-time.Nanosecond), 1000)); n != byWM {
		t.Errorf("%d windows due just before the idle timeout, want %d", n, byWM)
	}
	out := emitted{}
	e.drain(wall.Add(DefaultIdleTimeout), 4, out)
	if len(out) != 7 { // six minutes and the hour
		t.Errorf("%d windows emitted after the idle timeout, want 7", len(out))
	}
	compareWindows(t, out, orc.windows(DefaultSizes()), nil)

	// A new batch makes the device active again: its open minute waits.
	ts, vs := regular(testBase.Add(5*time.Minute+40*time.Second).UnixNano(), time.Second, 5, temp)
	now := wall.Add(time.Hour)
	e.merge(e.batch("quiet", floatSeries("bme280-0x76", "temperature", "C", nil, ts, vs)), now)
	if aggs := e.due(now, 10); len(aggs) != 0 {
		t.Errorf("active device: %d windows due", len(aggs))
	}
	if aggs := e.due(now.Add(DefaultIdleTimeout), 10); len(aggs) != 2 || !aggs[0].Correction || !aggs[1].Correction {
		t.Errorf("quiet again: %+v, want the corrected minute and hour", aggs)
	}
}

// TestEvictBoundsState: with eviction, state stays near horizon + largest
// size whatever the run length, and late readings inside the horizon still
// give exact aggregates.
func TestEvictBoundsState(t *testing.T) {
	const horizon = 3 * time.Hour
	e := newEnv(t, Options{CorrectionHorizon: horizon})
	orc := newOracle()
	out := emitted{}
	var wall time.Time
	maxData, maxWin := 0, 0
	for h := range 12 {
		wall = sendRegular(e, orc, "long", testBase.Add(time.Duration(h)*time.Hour), 5*time.Second, time.Hour, 60, 0, temp)
		e.drain(wall, 500, out)
		before := e.keyN("data")
		if n := e.evict(wall); h >= 5 && (n == 0 || e.keyN("data") >= before) {
			t.Fatalf("hour %d: evicted %d keys, data %d -> %d", h, n, before, e.keyN("data"))
		}
		maxData, maxWin = max(maxData, e.keyN("data")), max(maxWin, e.keyN("windows"))
	}
	// 3 h horizon + 1 h largest window + a minute of rounding, in minutes.
	if limit := int((horizon+time.Hour)/time.Minute) + 1; maxData > limit || maxWin > limit+5 {
		t.Errorf("state grew to %d blobs and %d window records, bound %d", maxData, maxWin, limit)
	}

	// A correction just inside the horizon re-emits exact windows (the hour
	// one needs minutes before the horizon); just outside it is too late.
	wm := wall // the last reading
	edge := wm.Add(-horizon).UnixNano()
	ts := []int64{edge + int64(2*time.Second), edge - 1}
	late := e.batch("long", floatSeries("bme280-0x76", "temperature", "C", nil, ts, []float64{-40, -50}))
	if st := e.merge(late, wall); st.TooLate != 1 || st.Merged != 1 || st.Corrections != 2 {
		t.Fatalf("late batch: %+v", st)
	}
	orc.apply(late, func(t int64) bool { return t >= edge })
	fixed := e.drain(wall, 10, out)
	if len(fixed) != 2 {
		t.Fatalf("%d windows re-emitted, want 2", len(fixed))
	}
	compareWindows(t, out, orc.windows(DefaultSizes()), func(id winID) bool { return id.start+int64(id.size) <= wm.UnixNano()-int64(2*time.Minute) })
}

// TestRTCLessBoot: readings stamped 1970, then the present: the 1970
// windows close and are emitted, later 1970 readings are too late, and
// eviction removes them, all without walking 56 years of empty windows.
func TestRTCLessBoot(t *testing.T) {
	e := newEnv(t, Options{})
	orc := newOracle()
	now := testBase
	start := time.Now()
	ts, vs := regular(0, time.Second, 300, temp)
	boot := e.batch("rtcless", floatSeries("bme280-0x76", "temperature", "C", nil, ts, vs))
	e.merge(boot, now)
	orc.apply(boot, nil)
	sendRegular(e, orc, "rtcless", now.Add(-2*time.Minute), time.Second, 2*time.Minute, 60, 0, temp)

	out := emitted{}
	e.drain(now, 7, out)
	var old []Aggregate
	for _, a := range out {
		if a.Start < int64(time.Hour) {
			old = append(old, a)
		}
	}
	sortAggs(old)
	if len(old) != 6 || old[5].Size != time.Hour || old[5].Count != 300 || old[0].Count != 60 || old[0].Start != 0 {
		t.Fatalf("1970 windows: %+v", old)
	}
	compareWindows(t, out, orc.windows(DefaultSizes()), func(id winID) bool { return id.start < int64(time.Hour) })

	if st := e.merge(e.batch("rtcless", floatSeries("bme280-0x76", "temperature", "C", nil, []int64{int64(10 * time.Second)}, []float64{1})), now); st.TooLate != 1 || st.Merged != 0 {
		t.Errorf("late 1970 reading: %+v", st)
	}
	if n := e.evict(now); n != 5+6 {
		t.Errorf("evicted %d keys, want the 5 blobs and 6 window records of 1970", n)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestStaleMark: a window changed between Due and MarkEmitted stays dirty
// and comes back with a new version.
func TestStaleMark(t *testing.T) {
	e := newEnv(t, Options{Sizes: []time.Duration{time.Minute}})
	ts, vs := regular(testBase.UnixNano(), time.Second, 30, temp)
	e.merge(e.batch("d", floatSeries("s", "m", "", nil, ts, vs)), testBase)
	later := testBase.Add(time.Hour)
	first := e.due(later, 10)
	if len(first) != 1 || first[0].Count != 30 || first[0].Version != 1 || first[0].Correction {
		t.Fatalf("first due: %+v", first)
	}
	e.merge(e.batch("d", floatSeries("s", "m", "", nil, []int64{ts[0] + 1}, []float64{7})), testBase)
	e.mark(first)
	again := e.due(later, 10)
	if len(again) != 1 || again[0].Count != 31 || again[0].Version != 2 {
		t.Fatalf("after a stale mark: %+v", again)
	}
	e.mark(again)
	if n := len(e.due(later, 10)); n != 0 {
		t.Errorf("%d windows due after marking", n)
	}
	e.mark(again) // marking twice is harmless
}

// TestSeriesIdentity: labels in any order, type and resolution changes map
// to one series; bool and string series are ignored; ints aggregate as
// float64; a later duplicate in one batch wins.
func TestSeriesIdentity(t *testing.T) {
	e := newEnv(t, Options{Sizes: []time.Duration{time.Minute}})
	t0 := testBase.UnixNano()
	ab := []protocol.Label{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}
	ba := []protocol.Label{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}}
	b := e.batch("d",
		protocol.Series{Sensor: "s", Metric: "m", Labels: ab, Type: protocol.Int, Times: []int64{t0, t0 + 1, t0 + 1}, Ints: []int64{1 << 60, 5, 6}},
		protocol.Series{Sensor: "s", Metric: "m", Labels: ba, Type: protocol.Float, Resolution: 0.1, Times: []int64{t0 + 2}, Floats: []float64{0.5}},
		protocol.Series{Sensor: "s", Metric: "flag", Type: protocol.Bool, Times: []int64{t0}, Bools: []bool{true}},
		protocol.Series{Sensor: "s", Metric: "msg", Type: protocol.String, Times: []int64{t0 + 3*int64(time.Minute)}, Strings: []string{"x"}},
	)
	if st := e.merge(b, testBase); st.Merged != 4 {
		t.Errorf("merge: %+v", st)
	}
	aggs := e.due(testBase, 10) // the string reading moved the watermark to minute 3
	if len(aggs) != 1 {
		t.Fatalf("due: %+v", aggs)
	}
	a := aggs[0]
	if a.Count != 3 || a.First != float64(1<<60) || a.Last != 0.5 || a.Min != 0.5 || labelString(a.Labels) != "a=1,b=2," {
		t.Errorf("aggregate %+v", a)
	}
	want := oracleAgg([]float64{1 << 60, 6, 0.5})
	if want.Labels = a.Labels; !sameStats(a, want) {
		t.Errorf("aggregate %+v, want %+v", a, want)
	}
}

// TestFutureSkew: a reading stamped beyond the hub's clock plus the skew is
// merged and counted but does not close anything.
func TestFutureSkew(t *testing.T) {
	e := newEnv(t, Options{})
	t0 := testBase.UnixNano()
	future := testBase.Add(DefaultMaxFutureSkew + time.Hour).UnixNano()
	st := e.merge(e.batch("d", floatSeries("s", "m", "", nil, []int64{t0, future}, []float64{1, 2})), testBase)
	if st.Future != 1 || st.Merged != 2 {
		t.Errorf("merge: %+v", st)
	}
	if aggs := e.due(testBase, 10); len(aggs) != 0 {
		t.Errorf("a future reading closed %d windows", len(aggs))
	}
	if aggs := e.due(testBase.Add(DefaultIdleTimeout), 10); len(aggs) != 4 {
		t.Errorf("idle: %d windows due, want 4", len(aggs))
	}
}

// TestDueLimitAndFairness: Due honours its limit, and draining reaches
// every device.
func TestDueLimit(t *testing.T) {
	e := newEnv(t, Options{Sizes: []time.Duration{time.Minute}})
	for _, dev := range []string{"a", "b", "c"} {
		ts, vs := regular(testBase.UnixNano(), time.Second, 600, temp)
		e.merge(e.batch(dev, floatSeries("s", "m", "", nil, ts, vs)), testBase.Add(10*time.Minute))
	}
	now := testBase.Add(10 * time.Minute)
	if n := len(e.due(now, 5)); n != 5 {
		t.Errorf("due(5) returned %d", n)
	}
	out := emitted{}
	e.drain(now, 5, out)
	if len(out) != 3*7 {
		t.Errorf("drained %d windows, want 21", len(out))
	}
	if e.keyN("ready") != 0 || e.keyN("quiet") != 3 || e.keyN("dirty") != 9 {
		t.Errorf("indexes: ready %d quiet %d dirty %d", e.keyN("ready"), e.keyN("quiet"), e.keyN("dirty"))
	}
	if _, err := e.s.Due(nil, now, 0); err == nil {
		t.Error("due(0): no error")
	}
}

// TestBadInput: bad batches, corrupt state and a missing Init are errors
// that name what is wrong, never panics.
func TestBadInput(t *testing.T) {
	e := newEnv(t, Options{})
	t0 := testBase.UnixNano()
	for name, b := range map[string]*protocol.Batch{
		"nil":        nil,
		"no device":  {Series: []protocol.Series{floatSeries("s", "m", "", nil, []int64{t0}, []float64{1})}},
		"short":      {Device: "d", Series: []protocol.Series{floatSeries("s", "m", "", nil, []int64{t0, t0 + 1}, []float64{1})}},
		"short ints": {Device: "d", Series: []protocol.Series{{Sensor: "s", Metric: "m", Type: protocol.Int, Times: []int64{t0}}}},
		"nan":        {Device: "d", Series: []protocol.Series{floatSeries("s", "m", "", nil, []int64{t0}, []float64{math.NaN()})}},
		"inf":        {Device: "d", Series: []protocol.Series{floatSeries("s", "m", "", nil, []int64{t0}, []float64{math.Inf(-1)})}},
		"negative":   {Device: "d", Series: []protocol.Series{floatSeries("s", "m", "", nil, []int64{-1}, []float64{1})}},
		"huge":       {Device: "d", Series: []protocol.Series{floatSeries("s", "m", "", nil, []int64{math.MaxInt64}, []float64{1})}},
		"type":       {Device: "d", Series: []protocol.Series{{Sensor: "s", Metric: "m", Type: 9, Times: []int64{t0}}}},
	} {
		err := e.db.Update(func(tx *bolt.Tx) error { _, err := e.s.Merge(tx, b, testBase); return err })
		if !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: %v, want ErrBadBatch", name, err)
		}
	}

	// A corrupt blob: Due and a Merge into that minute fail with ErrCorrupt.
	e.merge(e.batch("d", floatSeries("s", "m", "", nil, []int64{t0}, []float64{1})), testBase)
	if err := e.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(topBucket)).Bucket([]byte("data")).Put(blobKey(1, 1, t0), []byte{9, 200, 1, 2})
	}); err != nil {
		t.Fatal(err)
	}
	_, err := func() (a []Aggregate, err error) {
		err = e.db.View(func(tx *bolt.Tx) (err error) { a, err = e.s.Due(tx, testBase.Add(time.Hour), 10); return err })
		return a, err
	}()
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("due over a corrupt blob: %v", err)
	}
	err = e.db.Update(func(tx *bolt.Tx) error {
		_, err := e.s.Merge(tx, e.batch("d", floatSeries("s", "m", "", nil, []int64{t0 + 5}, []float64{1})), testBase)
		return err
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("merge into a corrupt blob: %v", err)
	}

	// No Init.
	bare := newEnv(t, Options{})
	if err := bare.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte(topBucket)) }); err != nil {
		t.Fatal(err)
	}
	err = bare.db.Update(func(tx *bolt.Tx) error {
		_, err := bare.s.Merge(tx, bare.batch("d", floatSeries("s", "m", "", nil, []int64{t0}, []float64{1})), testBase)
		return err
	})
	if !errors.Is(err, ErrNotInitialized) {
		t.Errorf("merge without init: %v", err)
	}

	// MarkEmitted of a non-window is an error, of an unknown device a no-op.
	if err := e.db.Update(func(tx *bolt.Tx) error {
		return e.s.MarkEmitted(tx, []Aggregate{{Device: "nobody", Size: time.Minute}})
	}); err != nil {
		t.Errorf("mark unknown device: %v", err)
	}
	if err := e.db.Update(func(tx *bolt.Tx) error {
		return e.s.MarkEmitted(tx, []Aggregate{{Device: "d", Size: time.Second}})
	}); err == nil {
		t.Error("mark a 1 s window: no error")
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string // "" for valid; else a substring of the error
	}{
		{Options{}, ""},
		{Options{Sizes: []time.Duration{time.Hour, 5 * time.Minute, 24 * time.Hour, 90 * time.Minute * 2}}, ""},
		{Options{Sizes: []time.Duration{30 * time.Second}}, "Sizes[0]"},
		{Options{Sizes: []time.Duration{time.Minute, 7 * time.Minute}}, "Sizes[1] = 7m0s: must divide 1h"},
		{Options{Sizes: []time.Duration{90 * time.Minute}}, "Sizes[0]"},
		{Options{Sizes: []time.Duration{time.Minute, time.Minute}}, "duplicate"},
		{Options{Sizes: []time.Duration{-time.Hour}}, "Sizes[0]"},
		{Options{Sizes: []time.Duration{400 * 24 * time.Hour}}, "Sizes[0]"},
		{Options{AllowedLateness: -1}, "AllowedLateness"},
		{Options{IdleTimeout: -time.Second}, "IdleTimeout"},
		{Options{MaxFutureSkew: 1000 * 24 * time.Hour}, "MaxFutureSkew"},
		{Options{CorrectionHorizon: time.Minute}, "CorrectionHorizon"},
	} {
		s, err := New(tc.o)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.o, err)
		case tc.want != "" && (!errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want ErrOptions naming %q", tc.o, err, tc.want)
		case err == nil:
			o := s.Options()
			if len(o.Sizes) == 0 || o.AllowedLateness == 0 || o.IdleTimeout == 0 || o.CorrectionHorizon == 0 || o.MaxFutureSkew == 0 {
				t.Errorf("defaults not filled: %+v", o)
			}
		}
	}
}
