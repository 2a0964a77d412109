package window

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"go.uber.org/goleak"

	"github.com/freshet-iot/freshet/internal/bolttest"

	"github.com/freshet-iot/freshet/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a Store on a temp bbolt file whose consistency is checked at cleanup.
type env struct {
	t   testing.TB
	db  *bolt.DB
	s   *Store
	seq uint64
}

func newEnv(t testing.TB, o Options) *env {
	t.Helper()
	db := bolttest.Open(t, &bolt.Options{NoSync: true, NoFreelistSync: true})
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(s.Init); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, db: db, s: s}
}

func (e *env) merge(b *protocol.Batch, now time.Time) MergeStats {
	e.t.Helper()
	var st MergeStats
	if err := e.db.Update(func(tx *bolt.Tx) (err error) {
		st, err = e.s.Merge(tx, b, now)
		return err
	}); err != nil {
		e.t.Fatalf("merge %s: %v", b.Device, err)
	}
	return st
}

func (e *env) due(now time.Time, limit int) []Aggregate {
	e.t.Helper()
	var out []Aggregate
	if err := e.db.View(func(tx *bolt.Tx) (err error) {
		out, err = e.s.Due(tx, now, limit)
		return err
	}); err != nil {
		e.t.Fatalf("due: %v", err)
	}
	return out
}

func (e *env) mark(aggs []Aggregate) {
	e.t.Helper()
	if err := e.db.Update(func(tx *bolt.Tx) error { return e.s.MarkEmitted(tx, aggs) }); err != nil {
		e.t.Fatalf("mark emitted: %v", err)
	}
}

func (e *env) evict(now time.Time) int {
	e.t.Helper()
	var n int
	if err := e.db.Update(func(tx *bolt.Tx) (err error) {
		n, err = e.s.Evict(tx, now)
		return err
	}); err != nil {
		e.t.Fatalf("evict: %v", err)
	}
	return n
}

// keyN returns the number of keys in one of the store's buckets.
func (e *env) keyN(name string) int {
	var n int
	e.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket([]byte(topBucket)).Bucket([]byte(name)).Stats().KeyN
		return nil
	})
	return n
}

// emitted is what an emitter has written to InfluxDB: the latest aggregate
// per window.
type emitted map[winID]Aggregate

// drain emits and marks everything due at now, limit at a time, and
// returns what this call emitted.
func (e *env) drain(now time.Time, limit int, into emitted) []Aggregate {
	e.t.Helper()
	var all []Aggregate
	for range 1_000_000 {
		aggs := e.due(now, limit)
		if len(aggs) == 0 {
			return all
		}
		into.write(aggs)
		e.mark(aggs)
		all = append(all, aggs...)
	}
	e.t.Fatal("drain does not terminate")
	return nil
}

func (m emitted) write(aggs []Aggregate) {
	for _, a := range aggs {
		m[idOf(a)] = a
	}
}

// winID names a window of a series.
type winID struct {
	dev, sensor, metric, unit, labels string
	size                              time.Duration
	start                             int64
}

func idOf(a Aggregate) winID {
	return winID{a.Device, a.Sensor, a.Metric, a.Unit, labelString(a.Labels), a.Size, a.Start}
}

func labelString(ls []protocol.Label) string {
	var sb strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&sb, "%s=%s,", l.Key, l.Value)
	}
	return sb.String()
}

// oracle holds the distinct readings stored raw: per series, per
// timestamp, the value written last.
type oracle struct {
	pts    map[oracleKey]map[int64]float64
	labels map[oracleKey][]protocol.Label
}

type oracleKey struct{ dev, sensor, metric, unit, labels string }

func newOracle() *oracle {
	return &oracle{pts: map[oracleKey]map[int64]float64{}, labels: map[oracleKey][]protocol.Label{}}
}

// apply records a delivered batch: its numeric readings that pass keep
// (nil: all), the later write winning.
func (o *oracle) apply(b *protocol.Batch, keep func(t int64) bool) {
	for _, r := range b.AppendReadings(nil) {
		if r.Type != protocol.Float && r.Type != protocol.Int || keep != nil && !keep(r.Time) {
			continue
		}
		v := r.Float
		if r.Type == protocol.Int {
			v = float64(r.Int)
		}
		k := oracleKey{b.Device, r.Sensor, r.Metric, r.Unit, labelString(r.Labels)}
		if o.pts[k] == nil {
			o.pts[k], o.labels[k] = map[int64]float64{}, r.Labels
		}
		o.pts[k][r.Time] = v
	}
}

// windows computes every window of every series from the definition in
// the package documentation.
func (o *oracle) windows(sizes []time.Duration) map[winID]Aggregate {
	out := map[winID]Aggregate{}
	for id, pts := range o.pts {
		times := slices.Sorted(func(yield func(int64) bool) {
			for t := range pts {
				if !yield(t) {
					return
				}
			}
		})
		for _, size := range sizes {
			for i := 0; i < len(times); {
				start := times[i] - times[i]%int64(size)
				var vals []float64
				for ; i < len(times) && times[i] < start+int64(size); i++ {
					vals = append(vals, pts[times[i]])
				}
				a := oracleAgg(vals)
				a.Device, a.Sensor, a.Metric, a.Unit, a.Labels = id.dev, id.sensor, id.metric, id.unit, o.labels[id]
				a.Size, a.Start = size, start
				out[winID{id.dev, id.sensor, id.metric, id.unit, id.labels, size, start}] = a
			}
		}
	}
	return out
}

func oracleAgg(vals []float64) Aggregate {
	n := float64(len(vals))
	a := Aggregate{Count: int64(len(vals)), First: vals[0], Last: vals[len(vals)-1], Min: math.Inf(1), Max: math.Inf(-1)}
	for _, v := range vals {
		a.Sum += v
		a.Min = min(a.Min, v)
		a.Max = max(a.Max, v)
	}
	a.Mean = a.Sum / n
	var ss float64
	for _, v := range vals {
		ss += float64((v - a.Mean) * (v - a.Mean))
	}
	a.Stddev = math.Sqrt(ss / n)
	return a
}

// sameStats reports whether two aggregates agree bit for bit.
func sameStats(a, b Aggregate) bool {
	bits := func(x Aggregate) [7]uint64 {
		return [7]uint64{math.Float64bits(x.Min), math.Float64bits(x.Max), math.Float64bits(x.Mean), math.Float64bits(x.Sum),
			math.Float64bits(x.First), math.Float64bits(x.Last), math.Float64bits(x.Stddev)}
	}
	return a.Count == b.Count && bits(a) == bits(b) && labelString(a.Labels) == labelString(b.Labels)
}

// compareWindows fails t unless got and want hold the same windows with
// the same statistics; only windows passing filter (nil: all) are compared.
func compareWindows(t *testing.T, got emitted, want map[winID]Aggregate, filter func(winID) bool) {
	t.Helper()
	bad := 0
	for id, w := range want {
		if filter != nil && !filter(id) {
			continue
		}
		g, ok := got[id]
		switch {
		case !ok:
			t.Errorf("window %+v: never emitted", id)
		case !sameStats(g, w):
			t.Errorf("window %+v:\n got %+v\nwant %+v", id, g, w)
		default:
			continue
		}
		if bad++; bad > 10 {
			t.Fatal("too many differences")
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok && (filter == nil || filter(id)) {
			t.Errorf("window %+v emitted, not in the oracle", id)
		}
	}
}

// floatSeries builds a Float series from parallel times and values.
func floatSeries(sensor, metric, unit string, labels []protocol.Label, times []int64, vals []float64) protocol.Series {
	return protocol.Series{Sensor: sensor, Metric: metric, Unit: unit, Labels: labels, Type: protocol.Float, Times: times, Floats: vals}
}

// regular returns n readings of one series every step from t0, value f(i).
func regular(t0 int64, step time.Duration, n int, f func(i int) float64) ([]int64, []float64) {
	ts, vs := make([]int64, n), make([]float64, n)
	for i := range n {
		ts[i], vs[i] = t0+int64(i)*int64(step), f(i)
	}
	return ts, vs
}

func (e *env) batch(dev string, series ...protocol.Series) *protocol.Batch {
	e.seq++
	return &protocol.Batch{Device: dev, Epoch: 1, Seq: e.seq, Series: series}
}

// sortAggs orders aggregates for stable test output.
func sortAggs(aggs []Aggregate) {
	slices.SortFunc(aggs, func(a, b Aggregate) int {
		return cmp.Or(strings.Compare(a.Device, b.Device), strings.Compare(a.Metric, b.Metric), cmp.Compare(a.Size, b.Size), cmp.Compare(a.Start, b.Start))
	})
}
