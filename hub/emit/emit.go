// Package emit writes the hub's window aggregates: every EmitInterval it
// takes the closed and corrected windows from the window state
// (hub/window), writes their aggregates to InfluxDB (an idempotent
// overwrite: same series and window start), and then marks them emitted.
// It also evicts window state past the correction horizon.
//
// A crash between the write and the mark only writes the same aggregates
// again.
package emit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/hub/window"
)

// Defaults.
const (
	// DefaultInterval is how often closed windows are looked for.
	DefaultInterval = time.Second
	// DueBatch bounds the windows one pass takes from the window state
	// and writes in one InfluxDB request (before its batching).
	DueBatch = 5000
	// evictInterval is how often state past the horizon is evicted.
	evictInterval = time.Minute
)

// Writer stores points in InfluxDB (hub/influx.Writer).
type Writer interface {
	Write(ctx context.Context, points []influx.Point) error
}

// Options configure an Emitter.
type Options struct {
	DB      *bolt.DB // holds the window state
	Windows *window.Store
	Influx  Writer
	// Interval: how often closed windows are written. Default DefaultInterval.
	Interval time.Duration
	// Registerer receives the emitter's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Metrics are the emitter's counters.
type Metrics struct {
	// Aggregates counts window aggregates written (corrections included).
	Aggregates prometheus.Counter
}

// NewMetrics builds the metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Aggregates: prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_aggregates_written_total",
		Help: "Window aggregates written (corrections included)."})}
	if reg != nil {
		reg.MustRegister(m.Aggregates)
	}
	return m
}

// Emitter writes closed windows.
type Emitter struct {
	o       Options
	log     *slog.Logger
	metrics *Metrics
	points  []influx.Point
}

// New returns an Emitter; the window state must be initialized (Store.Init).
func New(o Options) (*Emitter, error) {
	if o.DB == nil || o.Windows == nil || o.Influx == nil {
		return nil, errors.New("emit: DB, Windows and Influx are required")
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Emitter{o: o, log: o.Logger, metrics: NewMetrics(o.Registerer)}, nil
}

// Metrics returns the emitter's counters.
func (e *Emitter) Metrics() *Metrics { return e.metrics }

// Run writes closed windows every Interval and evicts old state, until ctx ends.
func (e *Emitter) Run(ctx context.Context) {
	t := time.NewTicker(e.o.Interval)
	defer t.Stop()
	evict := time.NewTicker(evictInterval)
	defer evict.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-evict.C:
			err := e.o.DB.Update(func(tx *bolt.Tx) error {
				_, err := e.o.Windows.Evict(tx, e.o.Now())
				return err
			})
			if err != nil {
				e.log.Error("evict window state", "err", err)
			}
		case <-t.C:
			for ctx.Err() == nil {
				n, err := e.Once(ctx)
				if err != nil {
					e.log.Error("emit windows", "err", err)
					break
				}
				if n == 0 {
					break
				}
			}
		}
	}
}

// Once writes up to DueBatch due windows and reports how many.
func (e *Emitter) Once(ctx context.Context) (int, error) {
	var aggs []window.Aggregate
	err := e.o.DB.View(func(tx *bolt.Tx) error {
		var err error
		aggs, err = e.o.Windows.Due(tx, e.o.Now(), DueBatch)
		return err
	})
	if err != nil || len(aggs) == 0 {
		return 0, err
	}
	e.points = schema.AggPoints(e.points[:0], aggs)
	if err := e.o.Influx.Write(ctx, e.points); err != nil {
		return 0, err
	}
	if err := e.o.DB.Update(func(tx *bolt.Tx) error { return e.o.Windows.MarkEmitted(tx, aggs) }); err != nil {
		return 0, err
	}
	e.metrics.Aggregates.Add(float64(len(aggs)))
	return len(aggs), nil
}
