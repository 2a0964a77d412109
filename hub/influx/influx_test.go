package influx_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the time of the test points: 2024-05-01T00:00:00Z.
var t0 = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// newWriter returns a Writer on db, closed when t ends; edit adjusts options.
func newWriter(t testing.TB, in *testsvc.Influx, db string, edit func(*influx.Options)) *influx.Writer {
	t.Helper()
	o := influx.Options{URL: in.URL, Bucket: db + "/autogen", Token: in.Token, MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	if edit != nil {
		edit(&o)
	}
	w, err := influx.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// query runs InfluxQL and fails t on error.
func query(t testing.TB, in *testsvc.Influx, db, q string) []testsvc.Series {
	t.Helper()
	s, err := in.Query(db, q)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// count returns how many rows of field v measurement m holds.
func count(t testing.TB, in *testsvc.Influx, db, m string) int64 {
	t.Helper()
	s := query(t, in, db, fmt.Sprintf("SELECT count(v) FROM %q", m))
	if len(s) == 0 {
		return 0
	}
	n, err := s[0].Values[0][1].(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func series(m string, n int, tags ...influx.Tag) []influx.Point {
	ps := make([]influx.Point, n)
	for i := range ps {
		ps[i] = influx.Point{Measurement: m, Tags: tags, Fields: []influx.Field{{Key: "v", Value: float64(i) + 0.5}}, Time: t0 + int64(i)*int64(time.Second)}
	}
	return ps
}

// TestWriter runs the cases that need a healthy influxd, sharing one.
func TestWriter(t *testing.T) {
	in := testsvc.StartInflux(t)
	ctx := context.Background()

	// Values, types and awkward names come back exactly as written.
	t.Run("RoundTrip", func(t *testing.T) {
		db := in.NewDatabase(t)
		w := newWriter(t, in, db, nil)
		const m = "weather station,1"
		tags := []influx.Tag{
			{"bs", `back\slash`}, {"empty", ""}, {"eq", "x=y"}, {"esc", `a\,b\ c\=d`}, {"loc", "north field"},
			{"pair", "a,b"}, {"quote", `say "hi"`}, {"tab", "a\tb"}, {"uni", "Zürich °C"}, {"z key,=x", "v"},
		}
		floats := []float64{0.1, 1.0 / 3, 21.37, -273.15, math.Pi, math.MaxFloat64, -math.MaxFloat64,
			math.SmallestNonzeroFloat64, math.Nextafter(1, 2), 1e21, 1e-7, 123456789012345678, math.Copysign(0, -1), 7}
		ints := []int64{0, -1, 42, math.MaxInt64, math.MinInt64}
		strs := []string{"", `"quoted"`, `back\slash\`, `\\`, "two\nlines", "tab\tand \"mix\\\" ,= x", "ünïcødé"}
		var ps []influx.Point
		for i := range max(len(floats), len(ints), len(strs)) {
			ps = append(ps, influx.Point{Measurement: m, Tags: tags, Time: t0 + int64(i), Fields: []influx.Field{
				{Key: "f", Value: floats[i%len(floats)]}, {Key: "i", Value: ints[i%len(ints)]},
				{Key: "b", Value: i%2 == 0}, {Key: "s", Value: strs[i%len(strs)]}, {Key: "odd key,=", Value: int64(i)},
			}})
		}
		if err := w.Write(ctx, ps); err != nil {
			t.Fatal(err)
		}

		types := map[string]string{}
		for _, row := range query(t, in, db, fmt.Sprintf("SHOW FIELD KEYS FROM %q", m))[0].Values {
			types[row[0].(string)] = row[1].(string)
		}
		if want := map[string]string{"f": "float", "i": "integer", "b": "boolean", "s": "string", "odd key,=": "integer"}; fmt.Sprint(types) != fmt.Sprint(want) {
			t.Errorf("field types %v, want %v", types, want)
		}
		got := query(t, in, db, fmt.Sprintf(`SELECT "f", "i", "b", "s" FROM %q GROUP BY *`, m))
		if len(got) != 1 {
			t.Fatalf("%d series, want 1: %+v", len(got), got)
		}
		wantTags := map[string]string{}
		for _, tg := range tags {
			if tg.Value != "" {
				wantTags[tg.Key] = tg.Value
			}
		}
		if fmt.Sprint(got[0].Tags) != fmt.Sprint(wantTags) {
			t.Errorf("tags\n got %q\nwant %q", got[0].Tags, wantTags)
		}
		if len(got[0].Values) != len(ps) {
			t.Fatalf("%d rows, want %d", len(got[0].Values), len(ps))
		}
		for i, row := range got[0].Values {
			p := ps[i]
			ts, _ := row[0].(json.Number).Int64()
			f, _ := strconv.ParseFloat(string(row[1].(json.Number)), 64)
			n, _ := row[2].(json.Number).Int64()
			wf := p.Fields[0].Value.(float64)
			if ts != p.Time || math.Float64bits(f) != math.Float64bits(wf) || n != p.Fields[1].Value || row[3] != p.Fields[2].Value || row[4] != p.Fields[3].Value {
				t.Errorf("row %d: got %v, want time %d f %v (bits %x) i %v b %v s %q", i, row, p.Time, wf, math.Float64bits(wf), p.Fields[1].Value, p.Fields[2].Value, p.Fields[3].Value)
			}
		}
	})

	// Writing a point again overwrites it: same rows, the last value wins.
	t.Run("Idempotent", func(t *testing.T) {
		db := in.NewDatabase(t)
		w := newWriter(t, in, db, nil)
		ps := series("m", 3, influx.Tag{Key: "device", Value: "gw-1"})
		for range 2 {
			if err := w.Write(ctx, ps); err != nil {
				t.Fatal(err)
			}
		}
		if n := count(t, in, db, "m"); n != 3 {
			t.Fatalf("%d rows after writing 3 points twice, want 3", n)
		}
		ps[1].Fields = []influx.Field{{Key: "v", Value: 99.25}}
		if err := w.Write(ctx, ps[1:2]); err != nil {
			t.Fatal(err)
		}
		got := query(t, in, db, fmt.Sprintf(`SELECT v FROM m WHERE time = %d`, ps[1].Time))
		if v := got[0].Values[0][1]; v != json.Number("99.25") || count(t, in, db, "m") != 3 {
			t.Fatalf("overwritten value is %v, want 99.25 in 3 rows", v)
		}
	})

	t.Run("Batching", func(t *testing.T) {
		db := in.NewDatabase(t)
		w := newWriter(t, in, db, func(o *influx.Options) { o.BatchLines = 1000 })
		if err := w.Write(ctx, series("m", 12345)); err != nil {
			t.Fatal(err)
		}
		if n := count(t, in, db, "m"); n != 12345 {
			t.Fatalf("%d rows, want 12345", n)
		}
		if s := w.Stats(); s.PointsWritten != 12345 || s.Retries != 0 {
			t.Fatalf("stats %+v", s)
		}
	})

	// A field type conflict is rejected without a retry; the other batches are stored.
	t.Run("Rejected", func(t *testing.T) {
		db := in.NewDatabase(t)
		w := newWriter(t, in, db, func(o *influx.Options) { o.BatchLines = 2 })
		if err := w.Write(ctx, series("m", 1)); err != nil {
			t.Fatal(err)
		}
		ps := series("m", 6)[1:]
		ps[2].Fields = []influx.Field{{Key: "v", Value: "not a float"}} // batches: [1 2] [3x 4] [5]
		err := w.Write(ctx, ps)
		var rej *influx.RejectedError
		if !errors.As(err, &rej) || rej.StatusCode != 400 || rej.Points != 2 || !strings.Contains(rej.Message, "field type conflict") {
			t.Fatalf("got %v (%#v), want a RejectedError for a 400 field type conflict on 2 points", err, rej)
		}
		if s := w.Stats(); s.Retries != 0 || s.Transient != 0 || s.Rejected != 1 {
			t.Fatalf("stats %+v: a rejection must not be retried", s)
		}
		// 1.8 stores the rest of a rejected batch (partial write), and every other batch.
		if n := count(t, in, db, "m"); n != 5 {
			t.Fatalf("%d rows, want 5", n)
		}
	})

	// Points line protocol cannot carry are skipped and reported; the rest is stored.
	t.Run("Invalid", func(t *testing.T) {
		db := in.NewDatabase(t)
		w := newWriter(t, in, db, nil)
		ps := series("m", 4)
		ps[1].Fields[0].Value = math.NaN()
		ps[2].Tags = []influx.Tag{{Key: "k", Value: `trailing\`}}
		err := w.Write(ctx, ps)
		var rej *influx.RejectedError
		if !errors.As(err, &rej) || !errors.Is(err, influx.ErrInvalidPoint) || rej.StatusCode != 0 || rej.Points != 2 || !strings.Contains(rej.Message, "point 1") {
			t.Fatalf("got %v, want a RejectedError for 2 invalid points", err)
		}
		if n := count(t, in, db, "m"); n != 2 {
			t.Fatalf("%d rows, want 2", n)
		}
	})

	// WriteLines stores series of bare values, and reports the invalid ones.
	t.Run("Lines", func(t *testing.T) {
		db := in.NewDatabase(t)
		w := newWriter(t, in, db, func(o *influx.Options) { o.BatchLines = 3 })
		var l influx.Lines
		l.Series("temp", []influx.Tag{{Key: "device", Value: "gw 1"}}, "value")
		for i := range 5 {
			l.Decimal(influx.Decimal{Units: 2137 + int64(i), Exp: -2}, t0+int64(i))
		}
		l.Float(math.NaN(), t0+5)
		l.Series("temp", []influx.Tag{{Key: "device", Value: `bad\`}}, "value")
		l.Decimal(influx.Decimal{Units: 1}, t0)
		l.Series("count", nil, "v")
		l.Int(-7, t0)
		err := w.WriteLines(ctx, &l)
		var rej *influx.RejectedError
		if !errors.As(err, &rej) || !errors.Is(err, influx.ErrInvalidPoint) || rej.Points != 2 || !strings.Contains(rej.Message, "point 5") {
			t.Fatalf("got %v, want a RejectedError for 2 invalid points from point 5", err)
		}
		got := query(t, in, db, `SELECT "value" FROM "temp"`)
		if len(got) != 1 || len(got[0].Values) != 5 || got[0].Values[4][1].(json.Number) != "21.41" {
			t.Fatalf("temp: %+v", got)
		}
		if n := count(t, in, db, "count"); n != 1 {
			t.Fatalf("%d count rows, want 1", n)
		}
		if s := w.Stats(); s.PointsWritten != 6 || s.PointsRejected != 2 {
			t.Fatalf("stats %+v", s)
		}
	})

	// A wrong token, or a bucket that does not exist, fails fast with ErrRefused.
	t.Run("Refused", func(t *testing.T) {
		db := in.NewDatabase(t)
		for name, edit := range map[string]func(*influx.Options){
			"token":  func(o *influx.Options) { o.Token = in.User + ":wrong" },
			"bucket": func(o *influx.Options) { o.Bucket = "nosuchdb/autogen" },
		} {
			w := newWriter(t, in, db, edit)
			err := w.Write(ctx, series("m", 3))
			var rej *influx.RejectedError
			if !errors.Is(err, influx.ErrRefused) || errors.As(err, &rej) {
				t.Fatalf("%s: got %v, want ErrRefused and no RejectedError", name, err)
			}
			if s := w.Stats(); s.Retries != 0 || s.Refused != 1 {
				t.Fatalf("%s: stats %+v", name, s)
			}
			t.Logf("%s: %v", name, err)
		}
	})

	// Over the body size limit (25 MB) a batch is split; a single line is rejected.
	t.Run("TooLarge", func(t *testing.T) {
		db := in.NewDatabase(t)
		w := newWriter(t, in, db, nil)
		big := func(i, size int) influx.Point {
			return influx.Point{Measurement: "big", Fields: []influx.Field{{Key: "v", Value: strings.Repeat("x", size)}}, Time: t0 + int64(i)}
		}
		if err := w.Write(ctx, []influx.Point{big(0, 13e6), big(1, 13e6)}); err != nil {
			t.Fatal(err)
		}
		if n := count(t, in, db, "big"); n != 2 {
			t.Fatalf("%d rows, want 2", n)
		}
		err := w.Write(ctx, []influx.Point{big(2, 26e6)})
		var rej *influx.RejectedError
		if !errors.As(err, &rej) || rej.StatusCode != 413 || w.Stats().Retries != 0 {
			t.Fatalf("got %v, want a RejectedError with status 413 and no retry", err)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		db := in.NewDatabase(t)
		reg := prometheus.NewRegistry()
		w := newWriter(t, in, db, func(o *influx.Options) { o.Registerer = reg })
		if err := w.Write(ctx, series("m", 7)); err != nil {
			t.Fatal(err)
		}
		if err := w.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.Metric {
				name := mf.GetName()
				for _, l := range m.Label {
					name += "/" + l.GetValue()
				}
				got[name] = m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			}
		}
		want := map[string]float64{
			"freshet_hub_influx_points_written_total": 7, "freshet_hub_influx_points_rejected_total": 0,
			"freshet_hub_influx_retries_total": 0, "freshet_hub_influx_write_duration_seconds": 1,
			"freshet_hub_influx_write_errors_total/transient": 0, "freshet_hub_influx_write_errors_total/rejected": 0,
			"freshet_hub_influx_write_errors_total/refused": 0,
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("metrics\n got %v\nwant %v", got, want)
		}
		if _, err := influx.New(influx.Options{URL: in.URL, Bucket: db, Registerer: reg}); err == nil {
			t.Fatal("a second Writer on the same registry must fail to register")
		}
	})
}

// TestOutage kills influxd under writers and checks that they block, retry,
// and finish once it is back; that a cancel or Close ends them promptly; and
// that nothing panics or hangs (influxdb-client-go #318, #384, #405).
func TestOutage(t *testing.T) {
	in := testsvc.StartInflux(t)
	db := in.NewDatabase(t)
	w := newWriter(t, in, db, func(o *influx.Options) { o.BatchLines = 100; o.Timeout = 2 * time.Second })
	ctx := context.Background()
	if err := w.Write(ctx, series("warmup", 10)); err != nil {
		t.Fatal(err)
	}
	if err := w.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// retrying waits until w has retried n more times, and fails t if any
	// write in done has returned meanwhile.
	retrying := func(n uint64, done chan error) {
		t.Helper()
		from := w.Stats().Retries
		testsvc.WaitFor(t, 30*time.Second, "retries", func() error {
			if r := w.Stats().Retries; r < from+n {
				return fmt.Errorf("%d retries, want %d", r-from, n)
			}
			return nil
		})
		select {
		case err := <-done:
			t.Fatalf("Write returned while influxd was down: %v", err)
		default:
		}
	}
	result := func(done chan error, within time.Duration) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(within):
			t.Fatalf("Write did not return within %v", within)
			return nil
		}
	}

	// 1. Writers block during the outage and all finish once influxd is back.
	in.Kill()
	if err := w.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded with influxd killed")
	}
	const writers = 4
	done := make(chan error, writers)
	for i := range writers {
		go func() { done <- w.Write(ctx, series(fmt.Sprintf("m%d", i), 1000)) }()
	}
	retrying(2*writers, done)
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	for range writers {
		if err := result(done, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for i := range writers {
		if n := count(t, in, db, fmt.Sprintf("m%d", i)); n != 1000 {
			t.Fatalf("m%d: %d rows, want 1000", i, n)
		}
	}

	// 2. A cancel during an outage ends Write with the context's error.
	in.Kill()
	cctx, cancel := context.WithCancel(ctx)
	done = make(chan error, 1)
	go func() { done <- w.Write(cctx, series("c", 10)) }()
	retrying(2, done)
	cancel()
	if err := result(done, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}

	// 3. Close during an outage, after rejected and failed writes, returns and
	// ends the writes in flight with ErrClosed.
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	bad := series("warmup", 1)
	bad[0].Fields[0].Value = "string into a float field"
	var rej *influx.RejectedError
	if err := w.Write(ctx, bad); !errors.As(err, &rej) {
		t.Fatalf("got %v, want a RejectedError", err)
	}
	in.Kill()
	done = make(chan error, writers)
	for range writers {
		go func() { done <- w.Write(ctx, series("x", 10)) }()
	}
	retrying(writers, done)
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	for range writers {
		if err := result(done, 10*time.Second); !errors.Is(err, influx.ErrClosed) {
			t.Fatalf("got %v, want ErrClosed", err)
		}
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hangs")
	}
	w.Close()
	if err := w.Write(ctx, series("x", 1)); !errors.Is(err, influx.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := w.Ping(ctx); !errors.Is(err, influx.ErrClosed) {
		t.Fatalf("Ping after Close: %v", err)
	}
}

// TestConcurrentKill writes from several goroutines while influxd is killed
// and restarted: no panic, no loss (#405 was a panic in this situation).
func TestConcurrentKill(t *testing.T) {
	in := testsvc.StartInflux(t)
	db := in.NewDatabase(t)
	w := newWriter(t, in, db, func(o *influx.Options) { o.BatchLines = 50 })
	const writers = 4
	var (
		wg      sync.WaitGroup
		stop    = make(chan struct{})
		batches [writers]int
		errs    = make(chan error, writers)
	)
	for i := range writers {
		wg.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-stop:
					batches[i] = j
					return
				default:
				}
				ps := series(fmt.Sprintf("m%d", i), 100)
				for k := range ps {
					ps[k].Time += int64(j) * int64(time.Hour)
				}
				if err := w.Write(context.Background(), ps); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	progress := func(what string, stat func(influx.Stats) uint64, n uint64) {
		t.Helper()
		from := stat(w.Stats())
		testsvc.WaitFor(t, 30*time.Second, what, func() error {
			if got := stat(w.Stats()) - from; got < n {
				return fmt.Errorf("%d, want %d", got, n)
			}
			return nil
		})
	}
	written := func(s influx.Stats) uint64 { return s.PointsWritten }
	progress("writes", written, 1000)
	in.Kill()
	progress("retries", func(s influx.Stats) uint64 { return s.Retries }, writers)
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	progress("writes after the restart", written, 1000)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, b := range batches {
		if n := count(t, in, db, fmt.Sprintf("m%d", i)); n != int64(b*100) {
			t.Fatalf("m%d: %d rows, want %d", i, n, b*100)
		}
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []influx.Options{
		{Bucket: "db/rp"},
		{URL: "localhost:8086", Bucket: "db/rp"},
		{URL: "ftp://h", Bucket: "db/rp"},
		{URL: "http://h:8086"},
		{URL: "http://h:8086", Bucket: "b", BatchLines: -1},
		{URL: "http://h:8086", Bucket: "b", MinBackoff: time.Minute, MaxBackoff: time.Second},
	} {
		if w, err := influx.New(o); err == nil {
			w.Close()
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}
