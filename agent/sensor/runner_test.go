package sensor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/freshet-iot/freshet/protocol"
)

// fakeSource runs read for each call (numbered from 1) and counts the calls.
type fakeSource struct {
	read func(ctx context.Context, call int) ([]Value, error)

	mu    sync.Mutex
	calls int
}

func (f *fakeSource) Read(ctx context.Context) ([]Value, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.mu.Unlock()
	return f.read(ctx, n)
}

func (f *fakeSource) Close() error { return nil }

func (f *fakeSource) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func celsius(v float64) []Value {
	return []Value{{Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01, Float: v}}
}

// sample is what the sink saw of one reading: sensor, seconds after the
// start of the test on the injected clock, metric.
type sample struct {
	sensor string
	at     float64
	metric string
}

// sinkRecorder collects readings; the runner never calls it concurrently,
// but the test reads it from its own goroutine.
type sinkRecorder struct {
	mu   sync.Mutex
	base time.Time
	got  []sample
	all  []protocol.Reading
}

func (s *sinkRecorder) sink(rs []protocol.Reading) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		s.got = append(s.got, sample{r.Sensor, float64(r.Time-s.base.UnixNano()) / 1e9, r.Metric})
		s.all = append(s.all, r)
	}
}

func (s *sinkRecorder) times(sensor string) []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []float64
	for _, x := range s.got {
		if x.sensor == sensor {
			out = append(out, x.at)
		}
	}
	return out
}

// logRecorder is a slog.Handler that keeps the records.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

// count returns how many records with msg mention sensor.
func (h *logRecorder) count(msg, sensor string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		r.Attrs(func(a slog.Attr) bool {
			if r.Message == msg && a.Key == "sensor" && a.Value.String() == sensor {
				n++
			}
			return true
		})
	}
	return n
}

// cfg is the config of a fake sensor: type exec, which takes any metric.
func cfg(name string, interval time.Duration) Config {
	return Config{Name: name, Type: TypeExec, Command: []string{"/bin/true"}, Interval: Duration(interval)}
}

func statusOf(t *testing.T, r *Runner, name string) protocol.SensorStatus {
	t.Helper()
	for _, s := range r.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %s", name)
	return protocol.SensorStatus{}
}

// errorCounts parses the set's exposition with Prometheus's own parser and
// returns freshet_agent_sensor_reads_total by sensor and
// freshet_agent_sensor_errors_total by sensor/reason.
func errorCounts(t *testing.T, set *metrics.Set) (reads, errs map[string]float64) {
	t.Helper()
	metrics.ExposeMetadata(true) // TYPE lines, as the agent writes them
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatal(err)
	}
	reads, errs = map[string]float64{}, map[string]float64{}
	for _, mf := range mfs {
		if mf.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s is a %v, want a counter", mf.GetName(), mf.GetType())
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			switch mf.GetName() {
			case "freshet_agent_sensor_reads_total":
				reads[l["sensor"]] = m.GetCounter().GetValue()
			case "freshet_agent_sensor_errors_total":
				errs[l["sensor"]+"/"+l["reason"]] = m.GetCounter().GetValue()
			}
		}
	}
	return reads, errs
}

// Five sensors side by side for a minute of fake time: one healthy, one
// failing every other read, one whose Read never returns, one too slow for
// its timeout, one reporting an implausible temperature. Every count is exact,
// the healthy sensor keeps its rate, and Run returns after cancel.
func TestRunnerIsolatesFailingSensors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := time.Unix(1_700_000_000, 0)
		t0 := time.Now()
		now := func() time.Time { return base.Add(time.Since(t0)) }
		rec := &sinkRecorder{base: base}
		logs := &logRecorder{}
		set := metrics.NewSet()

		release := make(chan struct{})
		steady := &fakeSource{read: func(context.Context, int) ([]Value, error) { return celsius(21.5), nil }}
		flaky := &fakeSource{read: func(_ context.Context, n int) ([]Value, error) {
			if n%2 == 0 {
				return nil, errors.New("i2c: remote I/O error")
			}
			return celsius(20), nil
		}}
		stuck := &fakeSource{read: func(context.Context, int) ([]Value, error) {
			<-release // ignores its context
			return celsius(20), nil
		}}
		slow := &fakeSource{read: func(ctx context.Context, _ int) ([]Value, error) {
			select {
			case <-ctx.Done():
				return nil, errors.New("interrupted")
			case <-time.After(time.Hour):
				return celsius(20), nil
			}
		}}
		hot := &fakeSource{read: func(context.Context, int) ([]Value, error) { return celsius(500), nil }}

		slowCfg := cfg("slow", 5*time.Second)
		slowCfg.Timeout = Duration(time.Second)
		r, err := NewRunner([]Sensor{
			{cfg("steady", time.Second), steady},
			{cfg("flaky", 10*time.Second), flaky},
			{cfg("stuck", 2*time.Second), stuck},
			{slowCfg, slow},
			{cfg("hot", 5*time.Second), hot},
		}, rec.sink, RunnerOptions{Logger: slog.New(logs), Now: now, Metrics: set})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()

		time.Sleep(60*time.Second + 500*time.Millisecond)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}

		// steady: a read every second, 0 through 60.
		wantSteady := make([]float64, 61)
		for i := range wantSteady {
			wantSteady[i] = float64(i)
		}
		if got := rec.times("steady"); !slices.Equal(got, wantSteady) {
			t.Errorf("steady read at %v, want every second", got)
		}
		// flaky: fails at 10, 20, ..., 60; each retry a second later
		// succeeds, and the next read is back on the 10 s grid.
		if got, want := rec.times("flaky"), []float64{0, 11, 21, 31, 41, 51}; !slices.Equal(got, want) {
			t.Errorf("flaky samples at %v, want %v", got, want)
		}
		// stuck: the read at 0 times out at 2 and is given up at 2.1;
		// retries at 3.1, 5.1, ..., 59.1 (backoff 1 s, then capped at the
		// 2 s interval) fail at once, without a second Read on the blocked
		// source.
		// slow: reads at 0, 2, 5, 10, 16, 22, ..., 58 each time out after
		// 1 s; backoff 1, 2, 4, then the 5 s interval.
		// hot: reads at 0, 1, 3, 7, 12, 17, ..., 57, all implausible.
		for _, tc := range []struct {
			name          string
			reads, errors uint64
			reason        string
		}{
			{"steady", 61, 0, ""},
			{"flaky", 12, 6, ReasonIO},
			{"stuck", 30, 30, ReasonTimeout},
			{"slow", 12, 12, ReasonTimeout},
			{"hot", 14, 14, ReasonImplausible},
		} {
			st := statusOf(t, r, tc.name)
			if st.Reads != tc.reads || st.Errors != tc.errors {
				t.Errorf("%s: reads %d errors %d, want %d and %d", tc.name, st.Reads, st.Errors, tc.reads, tc.errors)
			}
			if tc.errors > 0 && st.LastError == "" {
				t.Errorf("%s: no last error", tc.name)
			}
			reads, errs := errorCounts(t, set)
			if reads[tc.name] != float64(tc.reads) {
				t.Errorf("%s: reads_total %g, want %d", tc.name, reads[tc.name], tc.reads)
			}
			for _, reason := range reasons(TypeExec) {
				want := 0.0
				if reason == tc.reason {
					want = float64(tc.errors)
				}
				if got := errs[tc.name+"/"+reason]; got != want {
					t.Errorf("%s: errors_total{reason=%s} %g, want %g", tc.name, reason, got, want)
				}
			}
		}
		if got := rec.times("hot"); len(got) != 0 {
			t.Errorf("implausible samples reached the sink at %v", got)
		}
		if got := stuck.Calls(); got != 1 {
			t.Errorf("stuck source read %d times, want 1 (no read while one is blocked)", got)
		}
		if got := slow.Calls(); got != 12 {
			t.Errorf("slow source read %d times, want 12", got)
		}
		for name, want := range map[string]string{
			"stuck": "previous read has not returned",
			"slow":  "read timed out after 1s: interrupted",
			"hot":   "implausible value: temperature 500 C outside -60..125",
			"flaky": "i2c: remote I/O error",
		} {
			if got := statusOf(t, r, name).LastError; !strings.Contains(got, want) {
				t.Errorf("%s: last error %q, want %q", name, got, want)
			}
		}
		if st := statusOf(t, r, "stuck"); st.Interval != int64(2*time.Second) {
			t.Errorf("stuck: interval %d", st.Interval)
		}

		// Logs: each failure of flaky starts a run of failures (6 lines) and
		// each success ends one (5 lines); stuck and hot fail throughout and
		// log once in the minute. Only the source that ignores its context
		// is abandoned at shutdown.
		for _, tc := range []struct {
			msg, sensor string
			n           int
		}{
			{"sensor read failed", "flaky", 6},
			{"sensor recovered", "flaky", 5},
			{"sensor read failed", "stuck", 1},
			{"sensor read failed", "hot", 1},
			{"sensor read failed", "steady", 0},
			{"sensor read ignores cancellation; abandoning it", "stuck", 1},
			{"sensor read ignores cancellation; abandoning it", "slow", 0},
		} {
			if got := logs.count(tc.msg, tc.sensor); got != tc.n {
				t.Errorf("%q for %s logged %d times, want %d", tc.msg, tc.sensor, got, tc.n)
			}
		}
		close(release) // the abandoned read returns; synctest checks nothing is left
	})
}

// A sensor that keeps failing backs off 1, 2, 4 ... s up to MaxBackoff (here
// its 60 s interval), logs once a minute, and after recovering reads on its
// grid again.
func TestRunnerBackoffAndRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		rec := &sinkRecorder{base: t0}
		logs := &logRecorder{}
		var mu sync.Mutex
		healthy := false
		src := &fakeSource{read: func(context.Context, int) ([]Value, error) {
			mu.Lock()
			defer mu.Unlock()
			if !healthy {
				return nil, errors.New("no ack from 0x76")
			}
			return celsius(19), nil
		}}
		r, err := NewRunner([]Sensor{{cfg("s", time.Minute), src}}, rec.sink, RunnerOptions{Logger: slog.New(logs)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()

		// Attempts at 0, 1, 3, 7, 15, 31, 63, then every 60 s: 123 ... 543.
		time.Sleep(600*time.Second + 500*time.Millisecond)
		if st := statusOf(t, r, "s"); st.Reads != 15 || st.Errors != 15 {
			t.Errorf("after 600 s: reads %d errors %d, want 15 and 15", st.Reads, st.Errors)
		}
		// Logged at 0, then at 63, 123, ..., 543: a line per minute at most.
		if got := logs.count("sensor read failed", "s"); got != 10 {
			t.Errorf("logged %d failures, want 10", got)
		}

		mu.Lock()
		healthy = true
		mu.Unlock()
		time.Sleep(100 * time.Second) // to 700.5
		cancel()
		<-done
		// The retry at 603 succeeds; then the grid of 60 s from 0: 660.
		if got, want := rec.times("s"), []float64{603, 660}; !slices.Equal(got, want) {
			t.Errorf("samples at %v, want %v", got, want)
		}
		if got := logs.count("sensor recovered", "s"); got != 1 {
			t.Errorf("logged %d recoveries, want 1", got)
		}
	})
}

func TestBackoff(t *testing.T) {
	r := &Runner{opts: RunnerOptions{MinBackoff: time.Second, MaxBackoff: time.Minute}}
	for _, tc := range []struct {
		n        int
		interval time.Duration
		want     time.Duration
	}{
		{1, time.Hour, time.Second},
		{2, time.Hour, 2 * time.Second},
		{6, time.Hour, 32 * time.Second},
		{7, time.Hour, time.Minute},
		{1000, time.Hour, time.Minute},
		{3, 3 * time.Second, 3 * time.Second},
		{1, 500 * time.Millisecond, 500 * time.Millisecond},
	} {
		if got := r.backoff(tc.n, tc.interval); got != tc.want {
			t.Errorf("backoff(%d, %v) = %v, want %v", tc.n, tc.interval, got, tc.want)
		}
	}
}

// What the sink receives: the sensor's name and sorted labels, the values'
// metric, unit, type and resolution, one time for the whole sample; bad
// values fail the read with the right reason.
func TestRunnerReadings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		rec := &sinkRecorder{base: t0}
		var mu sync.Mutex
		var next []Value
		var nextErr error
		src := &fakeSource{read: func(context.Context, int) ([]Value, error) {
			mu.Lock()
			defer mu.Unlock()
			if nextErr != nil {
				panic(nextErr.Error())
			}
			return next, nil
		}}
		c := cfg("env", time.Second)
		c.Labels = map[string]string{"room": "kitchen", "floor": "1"}
		c.Plausible = map[string]Range{"level": {Max: new(float64(10))}}
		set := func(v []Value, err error) {
			mu.Lock()
			next, nextErr = v, err
			mu.Unlock()
		}
		// One read per step, at 0, 1, 2 ... s: a success waits for the next
		// second of the grid, a failure retries after the 1 s backoff.
		steps := []struct {
			vals  []Value
			panic error
		}{
			{vals: []Value{
				{Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01, Float: 21.37},
				{Metric: "level", Type: protocol.Int, Int: 7},
				{Metric: "open", Type: protocol.Bool, Bool: true},
				{Metric: "state", Type: protocol.String, Str: "ok"},
			}},
			// implausible
			{vals: []Value{{Metric: "level", Type: protocol.Int, Int: 11}}},
			{vals: []Value{{Metric: "temperature", Unit: "C", Type: protocol.Float, Float: math.NaN()}}},
			{vals: []Value{{Metric: "x", Type: protocol.Float, Float: math.Inf(-1)}}},
			{vals: []Value{{Metric: "x", Type: protocol.Float, Resolution: 0.01, Float: 1e15}}},
			// parse
			{vals: nil},
			{vals: []Value{{Metric: "bad name", Type: protocol.Bool}}},
			{vals: []Value{{Metric: "x", Type: protocol.Bool}, {Metric: "x", Type: protocol.Bool}}},
			{vals: []Value{{Metric: "x", Type: protocol.Int, Resolution: 0.1}}},
			{vals: []Value{{Metric: "x", Type: protocol.Float, Resolution: 0.3}}},
			{vals: []Value{{Metric: "x", Type: protocol.String, Str: "\xff"}}},
			{vals: []Value{{Metric: "x", Unit: "\n", Type: protocol.Bool}}},
			{vals: []Value{{Metric: "x", Type: 9}}},
			// io
			{panic: errors.New("index out of range")},
		}
		ms := metrics.NewSet()
		r, err := NewRunner([]Sensor{{c, src}}, rec.sink, RunnerOptions{Metrics: ms})
		if err != nil {
			t.Fatal(err)
		}
		set(steps[0].vals, nil)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		for i := range steps {
			time.Sleep(time.Second / 2) // read i is done
			if st := statusOf(t, r, "env"); st.Reads != uint64(i+1) || st.Errors != uint64(i) {
				t.Errorf("step %d: reads %d errors %d, want %d and %d (last error %q)", i, st.Reads, st.Errors, i+1, i, st.LastError)
			}
			if i+1 == len(steps) {
				break
			}
			set(steps[i+1].vals, steps[i+1].panic)
			time.Sleep(time.Second / 2)
		}
		_, errs := errorCounts(t, ms)
		if errs["env/implausible"] != 4 || errs["env/parse"] != 8 || errs["env/io"] != 1 || errs["env/timeout"] != 0 {
			t.Errorf("errors by reason: %v, want implausible 4, parse 8, io 1", errs)
		}
		cancel()
		<-done
		if got := statusOf(t, r, "env").LastError; !strings.Contains(got, "source panicked: index out of range") {
			t.Errorf("last error %q", got)
		}

		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.all) != 4 {
			t.Fatalf("sink got %d readings, want the 4 of the first sample only", len(rec.all))
		}
		labels := []protocol.Label{{Key: "floor", Value: "1"}, {Key: "room", Value: "kitchen"}}
		for i, r := range rec.all {
			if r.Sensor != "env" || !slices.Equal(r.Labels, labels) || r.Time != t0.UnixNano() || r.Metric != steps[0].vals[i].Metric {
				t.Errorf("reading %d: %+v", i, r)
			}
		}
		if r := rec.all[0]; r.Unit != "C" || r.Type != protocol.Float || r.Resolution != 0.01 || r.Float != 21.37 {
			t.Errorf("temperature reading %+v", r)
		}
		if r := rec.all[1]; r.Type != protocol.Int || r.Int != 7 {
			t.Errorf("int reading %+v", r)
		}
		if r := rec.all[2]; r.Type != protocol.Bool || !r.Bool {
			t.Errorf("bool reading %+v", r)
		}
		if r := rec.all[3]; r.Type != protocol.String || r.Str != "ok" {
			t.Errorf("string reading %+v", r)
		}
	})
}

func TestCheckSampleReasons(t *testing.T) {
	c := cfg("x", time.Second)
	c.Plausible = map[string]Range{"level": {Min: new(float64(0)), Max: new(float64(10))}}
	for _, tc := range []struct {
		vals []Value
		want string
	}{
		{[]Value{{Metric: "level", Type: protocol.Int, Int: 11}}, ReasonImplausible},
		{[]Value{{Metric: "level", Type: protocol.Float, Float: -0.5}}, ReasonImplausible},
		{[]Value{{Metric: "humidity", Unit: "%", Type: protocol.Float, Float: 100.5}}, ReasonImplausible},
		{[]Value{{Metric: "pressure", Unit: "hPa", Type: protocol.Float, Float: 250}}, ReasonImplausible},
		{[]Value{{Metric: "pressure", Unit: "Pa", Type: protocol.Float, Float: 101325}}, ""},
		{[]Value{{Metric: "temperature", Unit: "C", Type: protocol.Float, Float: -60}}, ""},
		{[]Value{{Metric: "temperature", Unit: "C", Type: protocol.Float, Float: 125.01}}, ReasonImplausible},
		{[]Value{{Metric: "level", Type: protocol.Int, Int: 10}}, ""},
		{[]Value{{Metric: "state", Type: protocol.String, Str: strings.Repeat("a", 1025)}}, ReasonParse},
	} {
		if got := Reason(c.checkSample(tc.vals)); got != tc.want {
			t.Errorf("checkSample(%+v) reason %q, want %q", tc.vals, got, tc.want)
		}
	}
}

func TestNewRunnerErrors(t *testing.T) {
	src := &fakeSource{read: func(context.Context, int) ([]Value, error) { return celsius(1), nil }}
	sink := func([]protocol.Reading) {}
	for _, tc := range []struct {
		name    string
		sensors []Sensor
		sink    func([]protocol.Reading)
		want    string
	}{
		{"nil sink", nil, nil, "nil sink"},
		{"duplicate", []Sensor{{cfg("a", time.Second), src}, {cfg("a", time.Minute), src}}, sink, `sensor "a": name: used by another sensor`},
		{"invalid", []Sensor{{Config{Name: "a", Type: TypeBME280}, src}}, sink, `sensor "a": bus: required`},
		{"nil source", []Sensor{{cfg("a", time.Second), nil}}, sink, "nil Source"},
	} {
		if _, err := NewRunner(tc.sensors, tc.sink, RunnerOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewRunner = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}

	set := metrics.NewSet()
	if _, err := NewRunner([]Sensor{{cfg("a", time.Second), src}}, sink, RunnerOptions{Metrics: set}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewRunner([]Sensor{{cfg("a", time.Second), src}}, sink, RunnerOptions{Metrics: set}); err == nil {
		t.Error("a second runner with the same sensor name on the same set: no error")
	}
}

func TestRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, err := NewRunner(nil, func([]protocol.Reading) {}, RunnerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		synctest.Wait()
		if err := r.Run(ctx); err == nil {
			t.Error("second Run: no error")
		}
		select {
		case <-done:
			t.Fatal("Run with no sensors returned before cancel")
		default:
		}
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

func TestBoundText(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	got := boundText(long, maxLastError)
	if len(got) > maxLastError || !strings.HasSuffix(got, "...") || !utf8.ValidString(got) {
		t.Errorf("boundText: %d bytes %q", len(got), got)
	}
	if got := boundText("a\xffb", 10); got != "a?b" {
		t.Errorf("boundText invalid UTF-8 = %q", got)
	}
}
