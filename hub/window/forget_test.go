package window

import (
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

func (e *env) countSeries(b *protocol.Batch) (int, int) {
	e.t.Helper()
	var known, added int
	if err := e.db.View(func(tx *bolt.Tx) (err error) {
		known, added, err = e.s.CountSeries(tx, b)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return known, added
}

// forget reports whether the store forgot the device (or never held it).
func (e *env) forget(device string, before time.Time) bool {
	e.t.Helper()
	var kept bool
	if err := e.db.Update(func(tx *bolt.Tx) (err error) {
		kept, err = e.s.Forget(tx, device, before)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return !kept
}

func stringSeries(sensor, metric string, t int64) protocol.Series {
	return protocol.Series{Sensor: sensor, Metric: metric, Type: protocol.String, Times: []int64{t}, Strings: []string{"ok"}}
}

// TestCountSeries: every series of a device counts, numeric or not, once
// however often it comes and whatever type it carries.
func TestCountSeries(t *testing.T) {
	e := newEnv(t, Options{})
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ts, vs := regular(t0.UnixNano(), time.Second, 3, func(int) float64 { return 21 })
	b := e.batch("gw-1", floatSeries("a", "temperature", "C", nil, ts, vs), floatSeries("a", "temperature", "C", nil, ts, vs),
		stringSeries("a", "state", ts[0]))
	if k, n := e.countSeries(b); k != 0 || n != 2 {
		t.Fatalf("before any batch: known %d, new %d; want 0, 2", k, n)
	}
	e.merge(b, t0)
	if k, n := e.countSeries(b); k != 0 || n != 0 {
		t.Fatalf("known batch: known %d, new %d; want 0, 0", k, n)
	}
	// The string series now carries numbers: still one series.
	num := floatSeries("a", "state", "", nil, ts, vs)
	c := e.batch("gw-1", num, floatSeries("b", "humidity", "%", nil, ts, vs), stringSeries("b", "door", ts[0]))
	if k, n := e.countSeries(c); k != 2 || n != 2 {
		t.Fatalf("two new: known %d, new %d; want 2, 2", k, n)
	}
	e.merge(c, t0)
	if k, n := e.countSeries(e.batch("gw-1", stringSeries("c", "x", ts[0]))); k != 4 || n != 1 {
		t.Fatalf("after: known %d, new %d; want 4, 1", k, n)
	}
	if k, n := e.countSeries(e.batch("gw-2", num)); k != 0 || n != 1 {
		t.Fatalf("another device: known %d, new %d", k, n)
	}
}

// TestForget: a device whose last batch is older than the cut, and whose
// windows are all written, is deleted from every bucket; one with a window
// waiting, or heard since, is kept; a forgotten device comes back afresh.
func TestForget(t *testing.T) {
	e := newEnv(t, Options{})
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		ts, vs := regular(t0.UnixNano(), time.Second, 120, temp)
		e.merge(e.batch(fmt.Sprintf("gw-%d", i), floatSeries("a", "temperature", "C", nil, ts, vs), stringSeries("a", "state", ts[0])), t0)
	}
	later := t0.Add(73 * time.Hour)
	cut := later.Add(-72 * time.Hour)
	if e.forget("gw-0", cut) {
		t.Fatal("forgot a device with windows not written")
	}
	e.drain(t0.Add(time.Hour), 1000, emitted{})
	ts, vs := regular(later.UnixNano(), time.Second, 2, temp)
	e.merge(e.batch("gw-2", floatSeries("a", "temperature", "C", nil, ts, vs)), later)
	if !e.forget("gw-0", cut) || !e.forget("gw-1", cut) || e.forget("gw-2", cut) || !e.forget("gw-9", cut) {
		t.Fatal("forgot the wrong devices")
	}
	var left []string
	e.db.View(func(tx *bolt.Tx) error {
		return e.s.Devices(tx, func(d string, lastWall int64) error { left = append(left, d); return nil })
	})
	if fmt.Sprint(left) != "[gw-2]" {
		t.Fatalf("devices left %v", left)
	}
	for name, want := range map[string]int{"names": 1, "devices": 1, "serieskeys": 1, "series": 1, "others": 1, "ready": 0} {
		if n := e.keyN(name); n != want {
			t.Errorf("%s: %d keys, want %d", name, n, want)
		}
	}
	// gw-2's minutes: two at t0, one at later.
	if n := e.keyN("data"); n != 3 {
		t.Errorf("data: %d keys, want 3", n)
	}
	// gw-0 comes back: a new device, its readings merged and due again.
	ts, vs = regular(t0.UnixNano(), time.Second, 60, temp)
	if st := e.merge(e.batch("gw-0", floatSeries("a", "temperature", "C", nil, ts, vs)), later); st.Merged != 60 || st.TooLate != 0 {
		t.Fatalf("back: %+v", st)
	}
	if k, n := e.countSeries(e.batch("gw-0", stringSeries("a", "state", ts[0]))); k != 1 || n != 1 {
		t.Fatalf("back: known %d, new %d", k, n)
	}
}
