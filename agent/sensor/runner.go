package sensor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"

	"github.com/freshet-iot/freshet/protocol"
)

// Sensor is a configured sensor and its open Source. The caller owns the
// Source: it closes it after Run has returned.
type Sensor struct {
	Config Config
	Source Source
}

// RunnerOptions tune a Runner. The zero value of every field means its default.
type RunnerOptions struct {
	// Logger receives read failures (the first of a run of failures, then at
	// most one line per LogEvery per sensor) and recoveries. Nil discards.
	Logger *slog.Logger
	// Now stamps the readings. Default time.Now. Intervals, timeouts and
	// backoff run on package time's timers (which testing/synctest fakes).
	Now func() time.Time
	// MinBackoff is the wait before retrying a failed read; it doubles with
	// every further failure. Default 1s.
	MinBackoff time.Duration
	// MaxBackoff caps the wait between retries; the sensor's interval caps
	// it too. Default 1m.
	MaxBackoff time.Duration
	// LogEvery is the least time between two failure lines of one sensor
	// that keeps failing. Default 1m.
	LogEvery time.Duration
	// Metrics, if not nil, receives freshet_agent_sensor_reads_total{sensor}
	// and freshet_agent_sensor_errors_total{sensor,reason}, every reason
	// from zero.
	Metrics *metrics.Set
}

// Runner defaults.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
	DefaultLogEvery   = time.Minute
	// readGrace is how long a stopping sensor waits for its read in flight
	// to notice the cancellation before abandoning it.
	readGrace = time.Second
	// lateGrace is how long a read past its timeout may take to return its
	// own error before the runner gives up on it.
	lateGrace = 100 * time.Millisecond
	// maxLastError bounds SensorStatus.LastError, in bytes.
	maxLastError = 256
)

// Runner reads every sensor on its own interval and hands the readings to a
// sink. A failing sensor is counted, logged without flooding and retried
// with capped exponential backoff; it never holds up the other sensors.
type Runner struct {
	sensors []*sensorRun
	sink    func([]protocol.Reading)
	sinkMu  sync.Mutex
	log     *slog.Logger
	now     func() time.Time
	opts    RunnerOptions
	started atomic.Bool
}

// sensorRun is one sensor's state.
type sensorRun struct {
	cfg      Config
	src      Source
	labels   []protocol.Label
	interval time.Duration
	timeout  time.Duration

	mu      sync.Mutex // guards the counters, which Status reads
	reads   uint64
	errors  uint64
	lastErr string

	readsTotal  *metrics.Counter            // nil without Metrics
	errorsTotal map[string]*metrics.Counter // by reason

	// Owned by the sensor's goroutine.
	inflight <-chan readResult // a read that timed out and has not returned
	failures int               // consecutive failed reads
	lastLog  time.Time
}

type readResult struct {
	vals []Value
	err  error
}

// NewRunner validates every sensor's config (filling defaults into the
// runner's copy) and returns a runner that hands each sample to sink, as
// readings stamped with the time the read started. Sink calls never overlap;
// the slice passed is the sink's, but the Labels slices in it are shared and
// must not be modified.
func NewRunner(sensors []Sensor, sink func([]protocol.Reading), opts RunnerOptions) (*Runner, error) {
	if sink == nil {
		return nil, errors.New("sensor: nil sink")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.LogEvery <= 0 {
		opts.LogEvery = DefaultLogEvery
	}
	r := &Runner{sink: sink, log: opts.Logger, now: opts.Now, opts: opts}
	seen := make(map[string]bool, len(sensors))
	for _, s := range sensors {
		c := s.Config
		if err := c.Validate(); err != nil {
			return nil, err
		}
		if s.Source == nil {
			return nil, fmt.Errorf("sensor %q: nil Source", c.Name)
		}
		if seen[c.Name] {
			return nil, &ConfigError{Sensor: c.Name, Key: "name", Err: errors.New("used by another sensor")}
		}
		seen[c.Name] = true
		var labels []protocol.Label
		for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
			labels = append(labels, protocol.Label{Key: k, Value: c.Labels[k]})
		}
		r.sensors = append(r.sensors, &sensorRun{
			cfg: c, src: s.Source, labels: labels,
			interval: time.Duration(c.Interval), timeout: time.Duration(c.Timeout),
		})
	}
	if opts.Metrics != nil {
		if err := r.register(opts.Metrics); err != nil {
			return nil, fmt.Errorf("sensor: register metrics: %w", err)
		}
	}
	return r, nil
}

func (r *Runner) register(set *metrics.Set) error {
	reads := func(sensor string) string {
		return fmt.Sprintf("freshet_agent_sensor_reads_total{sensor=%q}", sensor)
	}
	// NewCounter panics on a name taken: check first. A sensor's counters
	// are registered together, so its reads counter stands for all.
	taken := map[string]bool{}
	for _, name := range set.ListMetricNames() {
		taken[name] = true
	}
	for _, s := range r.sensors {
		if taken[reads(s.cfg.Name)] {
			return fmt.Errorf("sensor %q: counters already registered", s.cfg.Name)
		}
	}
	for _, s := range r.sensors {
		s.readsTotal = set.NewCounter(reads(s.cfg.Name))
		s.errorsTotal = make(map[string]*metrics.Counter)
		for _, reason := range reasons(s.cfg.Type) {
			s.errorsTotal[reason] = set.NewCounter(fmt.Sprintf("freshet_agent_sensor_errors_total{sensor=%q,reason=%q}", s.cfg.Name, reason))
		}
	}
	return nil
}

// Run reads the sensors until ctx is done, then returns nil once every
// sensor's goroutine has stopped. A read in flight gets a second to notice
// the cancellation; one that ignores its context longer is abandoned (its
// goroutine ends when the Source's Read finally returns). Run may be called
// once.
func (r *Runner) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("sensor: Runner.Run called twice")
	}
	var wg sync.WaitGroup
	for _, s := range r.sensors {
		wg.Go(func() { r.loop(ctx, s) })
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// loop reads s at start, start+interval, start+2·interval ... skipping ticks
// that pass during a slow read; after a failure it retries with backoff and,
// on success, returns to the next tick of its grid.
func (r *Runner) loop(ctx context.Context, s *sensorRun) {
	defer r.drain(s)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := r.attempt(ctx, s)
		if err != nil && ctx.Err() != nil {
			return // cut short by shutdown: not counted
		}
		if err != nil {
			s.failures++
			r.logFailure(s, err)
			timer.Reset(r.backoff(s.failures, s.interval))
			continue
		}
		if s.failures > 0 {
			r.log.Info("sensor recovered", "sensor", s.cfg.Name, "failed_reads", s.failures)
			s.failures = 0
		}
		timer.Reset(s.interval - time.Since(start)%s.interval)
	}
}

// attempt makes one read, counts it and hands a good sample to the sink.
func (r *Runner) attempt(ctx context.Context, s *sensorRun) error {
	t0 := r.now()
	vals, err := r.read(ctx, s)
	if err != nil && ctx.Err() != nil {
		return err
	}
	if errors.Is(err, ErrNoChange) {
		s.count(nil)
		return nil
	}
	if err == nil {
		err = s.cfg.checkSample(vals)
	}
	s.count(err)
	if err != nil {
		return err
	}
	ts := t0.UnixNano()
	rs := make([]protocol.Reading, len(vals))
	for i, v := range vals {
		ts := ts
		if v.Time != 0 {
			ts = v.Time
		}
		rs[i] = protocol.Reading{
			Sensor: s.cfg.Name, Metric: v.Metric, Unit: v.Unit, Labels: s.labels,
			Type: v.Type, Resolution: v.Resolution, Time: ts,
			Float: v.Float, Int: v.Int, Bool: v.Bool, Str: v.Str,
		}
	}
	r.sinkMu.Lock()
	defer r.sinkMu.Unlock()
	r.sink(rs)
	return nil
}

// read calls the Source in a goroutine of its own, so that a Read that
// ignores its context costs that one sensor, not the runner: after the
// timeout the read is abandoned, and while it has not returned every further
// attempt fails at once with ErrTimeout (a second Read is never started on
// the same Source).
func (r *Runner) read(ctx context.Context, s *sensorRun) ([]Value, error) {
	if s.inflight != nil {
		select {
		case <-s.inflight: // it returned at last; its result is stale
			s.inflight = nil
		default:
			return nil, fmt.Errorf("%w: the previous read has not returned", ErrTimeout)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	done := make(chan readResult, 1)
	go func() {
		var res readResult
		defer func() {
			if p := recover(); p != nil {
				res = readResult{err: fmt.Errorf("source panicked: %v", p)}
			}
			done <- res
		}()
		res.vals, res.err = s.src.Read(rctx)
	}()
	result := func(res readResult) ([]Value, error) {
		if res.err != nil && rctx.Err() != nil && ctx.Err() == nil && Reason(res.err) != ReasonTimeout {
			res.err = fmt.Errorf("%w after %v: %w", ErrTimeout, s.timeout, res.err)
		}
		return res.vals, res.err
	}
	select {
	case res := <-done:
		return result(res)
	case <-rctx.Done():
	}
	if ctx.Err() == nil {
		// A source that honours its context returns at once, often with a
		// better error (an exec's stderr); give it a moment to.
		t := time.NewTimer(lateGrace)
		defer t.Stop()
		select {
		case res := <-done:
			return result(res)
		case <-t.C:
		}
	}
	s.inflight = done
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: no result after %v", ErrTimeout, s.timeout)
}

// drain gives a read still in flight at shutdown a moment to return.
func (r *Runner) drain(s *sensorRun) {
	if s.inflight == nil {
		return
	}
	t := time.NewTimer(readGrace)
	defer t.Stop()
	select {
	case <-s.inflight:
		s.inflight = nil
	case <-t.C:
		r.log.Warn("sensor read ignores cancellation; abandoning it", "sensor", s.cfg.Name)
	}
}

// backoff is the wait after the n-th consecutive failure: MinBackoff·2^(n-1),
// at most MaxBackoff and the interval.
func (r *Runner) backoff(n int, interval time.Duration) time.Duration {
	limit := min(r.opts.MaxBackoff, interval)
	d := r.opts.MinBackoff
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (r *Runner) logFailure(s *sensorRun, err error) {
	now := time.Now()
	if s.failures > 1 && now.Sub(s.lastLog) < r.opts.LogEvery {
		return
	}
	s.lastLog = now
	r.log.Warn("sensor read failed", "sensor", s.cfg.Name, "reason", Reason(err),
		"consecutive_failures", s.failures, "err", err)
}

func (s *sensorRun) count(err error) {
	s.mu.Lock()
	s.reads++
	if err != nil {
		s.errors++
		s.lastErr = boundText(err.Error(), maxLastError)
	}
	s.mu.Unlock()
	if s.readsTotal != nil {
		s.readsTotal.Inc()
		if err != nil {
			c, ok := s.errorsTotal[Reason(err)]
			if !ok {
				c = s.errorsTotal[ReasonIO]
			}
			c.Inc()
		}
	}
}

// boundText makes s valid UTF-8 of at most n bytes, cut at a rune boundary.
func boundText(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	s = s[:n-3]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}

// Status returns every sensor's counters, in the order given to NewRunner.
// Reads counts read attempts, Errors the failed ones among them; LastError is
// the most recent failure (kept after the sensor recovers), at most 256 bytes.
func (r *Runner) Status() []protocol.SensorStatus {
	out := make([]protocol.SensorStatus, len(r.sensors))
	for i, s := range r.sensors {
		s.mu.Lock()
		out[i] = protocol.SensorStatus{
			Name: s.cfg.Name, Interval: int64(s.interval),
			Reads: s.reads, Errors: s.errors, LastError: s.lastErr,
		}
		s.mu.Unlock()
	}
	return out
}
