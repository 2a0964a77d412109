// Package influx is the hub's InfluxDB writer: it stores raw readings and
// window aggregates through influxdb-client-go/v2, against InfluxDB 2.x and
// Cloud (org, bucket, token) and 1.8+ (bucket "db/rp", token "user:password",
// org ignored).
//
// Write returns only once every point is stored, the data is refused for good,
// the configuration is refused, or the context ends: while InfluxDB is down it
// blocks and retries, holding nothing but the caller's points, so the hub stops
// acking and the backlog stays on the agents.
//
// The client's asynchronous WriteAPI is not used: its Close can hang in Flush
// after failed writes (influxdb-client-go#318), its WritePoint blocks when
// Errors() is not drained (#384), it can panic with "send on closed channel"
// after the server is killed (#405), and it drops batches after a retry limit.
// Writer renders line protocol itself into a reused buffer, batches it, and
// posts each batch through the client's HTTP service (its auth, user agent and
// typed errors) under its own retry loop, straight from that buffer.
package influx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/freshet-iot/freshet/internal/cfgfile"
	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Options.
const (
	DefaultBatchLines = 5000
	DefaultTimeout    = 10 * time.Second
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// Options configure a Writer. Zero values mean the defaults.
type Options struct {
	// URL is InfluxDB's base URL, e.g. http://localhost:8086. Required.
	URL string
	// Org is the 2.x organization; 1.8 ignores it.
	Org string
	// Bucket is the 2.x bucket, or "db/rp" (or "db") for 1.8. Required.
	Bucket string
	// Token is the 2.x API token, or "user:password" for 1.8 with auth.
	Token string
	// TLS configures https; nil means the system roots.
	TLS *tls.Config
	// BatchLines is the number of lines per HTTP write. Default 5000.
	BatchLines int
	// Timeout bounds each HTTP request. Default 10s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries, which doubles
	// per attempt with full jitter. Defaults 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives retries and splits (errors are returned, not logged);
	// nil discards.
	Logger *slog.Logger
	// Registerer receives the freshet_hub_influx_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Stats are the Writer's counters since New.
type Stats struct {
	PointsWritten  uint64 // points in writes InfluxDB accepted
	PointsRejected uint64 // points invalid or in rejected batches
	Retries        uint64 // requests sent again after a transient failure
	Transient      uint64 // requests failed transiently (no response, 408, 429, 5xx)
	Rejected       uint64 // requests refused for their data (400, 413, 422)
	Refused        uint64 // requests refused for the configuration (ErrRefused)
}

// Writer writes points to InfluxDB. Its methods are safe for concurrent use.
type Writer struct {
	o       Options
	log     *slog.Logger
	hc      *http.Client
	client  influxdb2.Client
	http    http2.Service
	url     string    // the write endpoint with org, bucket and precision
	lines   sync.Pool // *Lines
	latency prometheus.Histogram

	closing context.Context // canceled by Close
	cancel  context.CancelCauseFunc
	mu      sync.Mutex
	closed  bool
	active  sync.WaitGroup // Write and Ping calls in flight

	written, pointsRejected, retries, transient, rejected, refused atomic.Uint64
}

// maxPooledBuf keeps a buffer grown by huge lines out of the pool.
const maxPooledBuf = 16 << 20

// New returns a Writer for o. It does not contact InfluxDB; use Ping.
func New(o Options) (*Writer, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	hc := &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     o.TLS,
			TLSHandshakeTimeout: o.Timeout,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		},
		// A redirected POST would come back as a GET; report the 3xx instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	opts := influxdb2.DefaultOptions().SetHTTPClient(hc).SetApplicationName("freshet-hub")
	client := influxdb2.NewClientWithOptions(o.URL, o.Token, opts)
	u, err := url.Parse(client.HTTPService().ServerAPIURL())
	if err == nil {
		u, err = u.Parse("write")
	}
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("influx: url: %w", err)
	}
	// The query the client's own WriteAPIs send (api/write.go: NewService).
	u.RawQuery = url.Values{"org": {o.Org}, "bucket": {o.Bucket}, "precision": {"ns"}}.Encode()
	w := &Writer{
		o: o, log: o.Logger, hc: hc, client: client, http: client.HTTPService(), url: u.String(),
		lines: sync.Pool{New: func() any {
			n := min(o.BatchLines, DefaultBatchLines)
			return &Lines{lineBuf: lineBuf{buf: make([]byte, 0, 128*n), ends: make([]int, 0, n)}}
		}},
	}
	w.closing, w.cancel = context.WithCancelCause(context.Background())
	if o.Registerer != nil {
		if err := w.register(o.Registerer); err != nil {
			client.Close()
			return nil, err
		}
	}
	return w, nil
}

func (o *Options) setDefaults() error {
	u, err := url.Parse(o.URL)
	if err != nil {
		return fmt.Errorf("influx: url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("influx: url %q: want http(s)://host[:port]", cfgfile.Redact(o.URL))
	}
	if o.Bucket == "" {
		return errors.New("influx: bucket is required (\"db/rp\" for InfluxDB 1.8)")
	}
	if o.BatchLines < 0 || o.Timeout < 0 || o.MinBackoff < 0 || o.MaxBackoff < 0 {
		return errors.New("influx: batch lines, timeout and backoffs must not be negative")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if o.BatchLines == 0 {
		o.BatchLines = DefaultBatchLines
	}
	def(&o.Timeout, DefaultTimeout)
	def(&o.MinBackoff, DefaultMinBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	if o.MinBackoff > o.MaxBackoff {
		return fmt.Errorf("influx: min backoff %v above max backoff %v", o.MinBackoff, o.MaxBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (w *Writer) register(r prometheus.Registerer) error {
	counter := func(name, help string, v *atomic.Uint64, labels prometheus.Labels) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v.Load()) })
	}
	const errHelp = "Failed InfluxDB write requests by kind: transient (retried), rejected (bad data), refused (bad configuration)."
	w.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "freshet_hub_influx_write_duration_seconds", Help: "Duration of successful InfluxDB write requests.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
	})
	cs := []prometheus.Collector{
		counter("freshet_hub_influx_points_written_total", "Points InfluxDB accepted.", &w.written, nil),
		counter("freshet_hub_influx_points_rejected_total", "Points invalid or in batches InfluxDB rejected.", &w.pointsRejected, nil),
		counter("freshet_hub_influx_retries_total", "InfluxDB write requests sent again after a transient failure.", &w.retries, nil),
		counter("freshet_hub_influx_write_errors_total", errHelp, &w.transient, prometheus.Labels{"kind": "transient"}),
		counter("freshet_hub_influx_write_errors_total", errHelp, &w.rejected, prometheus.Labels{"kind": "rejected"}),
		counter("freshet_hub_influx_write_errors_total", errHelp, &w.refused, prometheus.Labels{"kind": "refused"}),
		w.latency,
	}
	for i, c := range cs {
		if err := r.Register(c); err != nil {
			for _, d := range cs[:i] {
				r.Unregister(d)
			}
			return fmt.Errorf("influx: register metrics: %w", err)
		}
	}
	return nil
}

// Stats returns the counters.
func (w *Writer) Stats() Stats {
	return Stats{
		PointsWritten: w.written.Load(), PointsRejected: w.pointsRejected.Load(), Retries: w.retries.Load(),
		Transient: w.transient.Load(), Rejected: w.rejected.Load(), Refused: w.refused.Load(),
	}
}

// enter registers a call in flight, unless the Writer is closed.
func (w *Writer) enter() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.active.Add(1)
	return true
}

// Write stores points in batches of Options.BatchLines lines. Points may be in
// any order; writing a point again (same measurement, tags and time)
// overwrites its fields, so retrying a batch that was partly applied is safe.
//
// It returns nil once all are stored. Transient failures (no response,
// timeouts, 408, 429 and 5xx, honouring Retry-After) are retried with capped
// exponential backoff and full jitter until ctx ends or the Writer is closed;
// then it returns the context's cause, wrapped (ErrClosed for Close).
//
// Invalid points (see Point and Field) and batches that InfluxDB refuses for
// their data (400, 422) are skipped, the rest is written, and Write returns a
// *RejectedError counting them. A batch over the server's body size limit
// (413) is split in halves and retried; a single line over it is rejected.
//
// When InfluxDB refuses the configuration (401, 403, 404, other 4xx and 3xx,
// TLS verification), Write returns an error wrapping ErrRefused at once; the
// batches before the failing one were stored.
func (w *Writer) Write(ctx context.Context, points []Point) error {
	l := w.lines.Get().(*Lines)
	defer func() {
		if l.Reset(); cap(l.buf) <= maxPooledBuf {
			w.lines.Put(l)
		}
	}()
	for i := range points {
		l.Add(&points[i])
	}
	return w.WriteLines(ctx, l)
}

// WriteLines stores the points of l, as Write does. l is only read, and
// only until WriteLines returns.
func (w *Writer) WriteLines(ctx context.Context, l *Lines) error {
	if !w.enter() {
		return ErrClosed
	}
	defer w.active.Done()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(w.closing, func() { cancel(ErrClosed) })()

	var rej *RejectedError
	if l.invalid > 0 {
		w.pointsRejected.Add(uint64(l.invalid))
		rej = rej.add(l.invalid, 0, l.first.Error(), l.first)
	}
	for lo := 0; lo < len(l.ends); lo += w.o.BatchLines {
		if err := w.send(ctx, &l.lineBuf, lo, min(lo+w.o.BatchLines, len(l.ends)), &rej); err != nil {
			return err
		}
	}
	if rej != nil {
		return rej
	}
	return nil
}

// send writes lines [lo, hi) of b, retrying transient failures. It returns
// an error only for ErrRefused and the end of ctx; rejections go to *rej.
func (w *Writer) send(ctx context.Context, b *lineBuf, lo, hi int, rej **RejectedError) error {
	if lo >= hi {
		return nil
	}
	start := 0
	if lo > 0 {
		start = b.ends[lo-1]
	}
	body, n := b.buf[start:b.ends[hi-1]], hi-lo
	for attempt := 0; ; attempt++ {
		err := w.post(ctx, body)
		if err == nil {
			w.written.Add(uint64(n))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("influx: write: %w", context.Cause(ctx))
		}
		o, status, wait := classify(err)
		switch o {
		case tooLarge:
			if n > 1 {
				w.log.Warn("influx: batch too large, splitting it", "lines", n, "bytes", len(body))
				mid := lo + n/2
				if err := w.send(ctx, b, lo, mid, rej); err != nil {
					return err
				}
				return w.send(ctx, b, mid, hi, rej)
			}
			fallthrough
		case rejected:
			w.rejected.Add(1)
			w.pointsRejected.Add(uint64(n))
			*rej = (*rej).add(n, status, message(err), err)
			return nil
		case refused:
			w.refused.Add(1)
			if status == 0 {
				return fmt.Errorf("%w: %w", ErrRefused, err)
			}
			return fmt.Errorf("%w: status %d: %s", ErrRefused, status, message(err))
		}
		w.transient.Add(1)
		if wait == 0 {
			wait = backoff(attempt, w.o.MinBackoff, w.o.MaxBackoff, rand.Int64N)
		}
		w.log.Warn("influx: write failed, retrying", "attempt", attempt+1, "in", wait, "status", status, "err", message(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("influx: write: %w", context.Cause(ctx))
		case <-t.C:
		}
		w.retries.Add(1)
	}
}

// post makes one HTTP write of body.
func (w *Writer) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	start := time.Now()
	src := &bodySource{b: body}
	defer src.detach()
	herr := w.http.DoPostRequest(ctx, w.url, &bodyReader{src: src}, func(req *http.Request) {
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return &bodyReader{src: src}, nil }
	}, func(r *http.Response) error { return r.Body.Close() })
	if herr != nil {
		return herr
	}
	if w.latency != nil {
		w.latency.Observe(time.Since(start).Seconds())
	}
	return nil
}

// bodySource is a request body over a buffer the caller reuses. An HTTP
// transport may still read a request's body after the request returned
// (http.RoundTripper), so post detaches the buffer first: a late read gets
// an error, never the bytes of a later batch.
type bodySource struct {
	mu       sync.Mutex
	b        []byte
	detached bool
}

func (s *bodySource) detach() {
	s.mu.Lock()
	s.b, s.detached = nil, true
	s.mu.Unlock()
}

var errDetached = errors.New("influx: request body read after the request ended")

// bodyReader reads a bodySource from the start; GetBody makes a new one
// when the transport sends the request again.
type bodyReader struct {
	src *bodySource
	off int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.src.mu.Lock()
	defer r.src.mu.Unlock()
	if r.src.detached {
		return 0, errDetached
	}
	if r.off >= len(r.src.b) {
		return 0, io.EOF
	}
	n := copy(p, r.src.b[r.off:])
	r.off += n
	return n, nil
}

func (r *bodyReader) Close() error { return nil }

// HTTPClient returns the writer's HTTP client (its TLS settings), for a
// Reader of the same server.
func (w *Writer) HTTPClient() *http.Client { return w.hc }

// Ping checks that InfluxDB answers (GET /ping, on 1.8 and 2.x alike). It
// does not check the token: Write reports that with ErrRefused.
func (w *Writer) Ping(ctx context.Context) error {
	if !w.enter() {
		return ErrClosed
	}
	defer w.active.Done()
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	defer context.AfterFunc(w.closing, cancel)()
	if _, err := w.client.Ping(ctx); err != nil {
		return fmt.Errorf("influx: ping %s: %w", cfgfile.Redact(w.o.URL), err)
	}
	return nil
}

// Close cancels the calls in flight (they return ErrClosed), waits for them,
// and releases connections. Nothing is buffered, so nothing is flushed and
// Close cannot hang on an unreachable server. Later calls return ErrClosed.
func (w *Writer) Close() {
	w.mu.Lock()
	closed := w.closed
	w.closed = true
	w.mu.Unlock()
	if closed {
		return
	}
	w.cancel(ErrClosed)
	w.active.Wait()
	w.client.Close() // it holds no async WriteAPI, so it does not Flush
	w.hc.CloseIdleConnections()
}
