// Package emit writes the hub's window aggregates: every Interval it takes
// the closed and corrected windows from the window state (hub/window),
// writes their aggregates to InfluxDB (an idempotent overwrite: same series
// and window start), and then marks them emitted. It also evicts window
// state past the correction horizon.
//
// # The window state is a cache
//
// InfluxDB's raw rows are the shared truth; the window state is this hub's
// copy of the readings it applied itself. Several hubs may share a fleet,
// and a hub may restart on an empty or old data dir, so another hub (or
// this hub's lost state) may hold readings of a window. The ledger says
// where (ledger.Custody): readings this hub lacks below its latest run of
// seqs are stamped at or before SharedBefore, and a status says the device
// went on elsewhere when its settled mark is above the seqs this hub
// applied, or when it said nothing was waiting and this hub did not apply
// its last seq (the mark lags behind seqs settled out of order). A window
// that may be shared is rebuilt before it is emitted:
// its raw rows are read back from InfluxDB (InfluxQL) and merged into the
// window state (window.Store.Hydrate), and the aggregate is computed from
// them. Because other hubs may be writing the same window at the same
// moment, every rebuilt window is verified again VerifyAfter later (its raw
// rows and the aggregate stored in InfluxDB read back) and rewritten if it
// differs. A window this hub holds whole is emitted from its state alone.
//
// A crash between the write and the mark only writes the same aggregates
// again.
package emit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/hub/window"
)

// Defaults and bounds.
const (
	// DefaultInterval is how often closed windows are looked for.
	DefaultInterval = time.Second
	// DefaultVerifyAfter is how long after a rebuilt window was written it
	// is verified again.
	DefaultVerifyAfter = 30 * time.Second
	// DefaultAuditSpan is Options.AuditSpan's default.
	DefaultAuditSpan = 2 * time.Hour
	// DueBatch bounds the windows one pass takes from the window state
	// and writes in one InfluxDB request (before its batching).
	DueBatch = 5000
	// VerifyBatch bounds the windows one pass verifies.
	VerifyBatch = 500
	// MaxVerifyRewrites bounds the rewrites of one window by verification:
	// beyond it something keeps overwriting it, which is logged and counted.
	MaxVerifyRewrites = 5
	// evictInterval is how often state past the horizon is evicted.
	evictInterval = time.Minute
)

// Writer stores points in InfluxDB (hub/influx.Writer).
type Writer interface {
	Write(ctx context.Context, points []influx.Point) error
}

// Reader reads rows back from InfluxDB (hub/influx.Reader).
type Reader interface {
	Read(ctx context.Context, ranges []influx.SeriesRange, fields []string) ([]influx.Rows, error)
	CountDevice(ctx context.Context, device string, start, end int64) ([]influx.SeriesCount, error)
}

// Statuses tell what a device's last status said of its seqs (hub/fleet).
type Statuses interface {
	Seqs(device string) (fleet.Seqs, bool)
}

// Options configure an Emitter.
type Options struct {
	DB      *bolt.DB // holds the window state and the ledger
	Windows *window.Store
	Influx  Writer
	// Reader reads raw rows and aggregates back. Required.
	Reader Reader
	// Statuses, if set, tell when a device went on at another hub.
	Statuses Statuses
	// Interval: how often closed windows are written. Default DefaultInterval.
	Interval time.Duration
	// VerifyAfter: how long after it was written a rebuilt window is
	// verified. Default DefaultVerifyAfter.
	VerifyAfter time.Duration
	// AuditSpan: when a device comes to this hub after another held it,
	// the readings of this span of event time before it came are compared
	// with InfluxDB's raw rows, and what the other hub applied is taken in
	// (its windows may never have been written if it stopped or lost its
	// state). Default DefaultAuditSpan; the hub sets the largest window
	// size plus the allowed lateness and the idle timeout.
	AuditSpan time.Duration
	// AuditEvery bounds how often one device is audited. Default DefaultVerifyAfter.
	AuditEvery time.Duration
	// Registerer receives the emitter's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Metrics are the emitter's counters.
type Metrics struct {
	// Aggregates counts window aggregates written (corrections included).
	Aggregates prometheus.Counter
	// Rebuilt counts windows rebuilt from InfluxDB's raw rows before they
	// were written, because another hub may hold some of their readings.
	Rebuilt prometheus.Counter
	// RebuildChanged counts rebuilt windows whose readings the raw rows changed.
	RebuildChanged prometheus.Counter
	// Verified counts verifications by result: same, rebuilt (the raw rows
	// changed the readings; written again), rewritten (InfluxDB held another
	// aggregate; written again), gone (evicted), given_up.
	Verified *prometheus.CounterVec
	// Audits counts devices audited after they came from another hub;
	// Adopted the readings the audits took in from InfluxDB.
	Audits, Adopted prometheus.Counter
}

// NewMetrics builds the metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Aggregates: prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_aggregates_written_total",
			Help: "Window aggregates written (corrections included)."}),
		Rebuilt: prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_windows_rebuilt_total",
			Help: "Windows rebuilt from InfluxDB's raw rows before they were written, because another hub (or lost state) may hold some of their readings."}),
		RebuildChanged: prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_windows_rebuild_changed_total",
			Help: "Rebuilt windows whose readings InfluxDB's raw rows changed."}),
		Verified: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "freshet_hub_windows_verified_total",
			Help: "Rebuilt windows verified again later, by result: same, rebuilt, rewritten, gone, given_up."}, []string{"result"}),
	}
	m.Audits = prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_device_audits_total",
		Help: "Devices whose recent readings were compared with InfluxDB's raw rows after they came from another hub."})
	m.Adopted = prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_readings_adopted_total",
		Help: "Readings another hub applied that audits took in from InfluxDB, so that their windows are written."})
	for _, r := range []string{verifySame, verifyRebuilt, verifyRewritten, verifyGone, verifyGivenUp} {
		m.Verified.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Aggregates, m.Rebuilt, m.RebuildChanged, m.Verified, m.Audits, m.Adopted)
	}
	return m
}

const (
	verifySame      = "same"
	verifyRebuilt   = "rebuilt"
	verifyRewritten = "rewritten"
	verifyGone      = "gone"
	verifyGivenUp   = "given_up"
)

// The windows to verify, in one bucket:
//
//	at(8, Unix ns) dev(4) sid(4) size(8) start(8) -> rewrites so far (1)
//
// and how far each device was audited:
//
//	device -> audited up to (8, Unix ns event time) at (8, Unix ns hub time)
var (
	verifyBucket = []byte("emit_verify")
	auditBucket  = []byte("emit_audit")
)

// Emitter writes closed windows.
type Emitter struct {
	o       Options
	log     *slog.Logger
	metrics *Metrics
	points  []influx.Point
	// audited caches how far each device was audited (the audit bucket
	// holds the truth); mu guards it (the emitter's goroutine uses it,
	// Forget deletes from it).
	mu      sync.Mutex
	audited map[string]int64
}

// New returns an Emitter and creates its bucket; the window state must be
// initialized (window.Store.Init) and the ledger too (ledger.Init).
func New(o Options) (*Emitter, error) {
	if o.DB == nil || o.Windows == nil || o.Influx == nil || o.Reader == nil {
		return nil, errors.New("emit: DB, Windows, Influx and Reader are required")
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.VerifyAfter <= 0 {
		o.VerifyAfter = DefaultVerifyAfter
	}
	if o.AuditSpan <= 0 {
		o.AuditSpan = DefaultAuditSpan
	}
	if o.AuditEvery <= 0 {
		o.AuditEvery = DefaultVerifyAfter
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	err := o.DB.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{verifyBucket, auditBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("emit: %w", err)
	}
	return &Emitter{o: o, log: o.Logger, metrics: NewMetrics(o.Registerer), audited: map[string]int64{}}, nil
}

// Metrics returns the emitter's counters.
func (e *Emitter) Metrics() *Metrics { return e.metrics }

// Forget deletes what the emitter keeps of a device the hub forgets: how
// far it was audited. (Windows waiting for verification name the window
// store's ids, which a forgotten device's never get again: they are found
// gone and dropped.)
func (e *Emitter) Forget(tx *bolt.Tx, device string) error {
	e.mu.Lock()
	delete(e.audited, device)
	e.mu.Unlock()
	return tx.Bucket(auditBucket).Delete([]byte(device))
}

// Run writes closed windows every Interval, verifies rebuilt ones when
// due, and evicts old state, until ctx ends.
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
			for ctx.Err() == nil {
				n, err := e.Verify(ctx)
				if err != nil {
					e.log.Error("verify windows", "err", err)
					break
				}
				if n < VerifyBatch {
					break
				}
			}
		}
	}
}

// custody says which devices' windows may be shared, from the ledger and
// the devices' statuses.
type custody struct {
	e    *Emitter
	seen map[string]custodyOf
}

type custodyOf struct {
	sharedBefore int64
	moved        bool
}

func (c *custody) of(tx *bolt.Tx, device string) (custodyOf, error) {
	if v, ok := c.seen[device]; ok {
		return v, nil
	}
	l, err := ledger.CustodyOf(tx, device)
	if err != nil {
		return custodyOf{}, err
	}
	v := custodyOf{sharedBefore: l.SharedBefore}
	if c.e.o.Statuses != nil {
		// Its agent has seqs settled that this hub never applied: by its
		// settled mark, or, since the mark lags behind seqs settled out of
		// order, by the last seq it had sealed when nothing was waiting.
		if s, ok := c.e.o.Statuses.Seqs(device); ok && (s.Settled > l.MaxLocal[s.Epoch] || s.Idle && !l.HoldsLast(s.Epoch, s.LastSeq)) {
			v.moved = true
		}
	}
	c.seen[device] = v
	return v, nil
}

// shared reports whether another hub (or lost state) may hold readings of a.
func (v custodyOf) shared(a *window.Aggregate) bool { return v.moved || a.Start <= v.sharedBefore }

// Once writes up to DueBatch due windows, rebuilding the shared ones first,
// and reports how many it took.
func (e *Emitter) Once(ctx context.Context) (int, error) {
	var aggs, shared []window.Aggregate
	c := &custody{e: e, seen: map[string]custodyOf{}}
	err := e.o.DB.View(func(tx *bolt.Tx) error {
		due, err := e.o.Windows.Due(tx, e.o.Now(), DueBatch)
		if err != nil {
			return err
		}
		for _, a := range due {
			v, err := c.of(tx, a.Device)
			if err != nil {
				return err
			}
			if v.shared(&a) {
				shared = append(shared, a)
			} else {
				aggs = append(aggs, a)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := len(aggs) + len(shared)
	if n == 0 {
		return 0, nil
	}
	rebuilt, err := e.rebuild(ctx, shared)
	if err != nil {
		return 0, err
	}
	aggs = append(aggs, rebuilt...)
	if err := e.write(ctx, aggs); err != nil {
		return 0, err
	}
	err = e.o.DB.Update(func(tx *bolt.Tx) error {
		if err := e.o.Windows.MarkEmitted(tx, aggs); err != nil {
			return err
		}
		at := e.o.Now().Add(e.o.VerifyAfter)
		for _, a := range rebuilt {
			if err := scheduleVerify(tx, at, a.ID, 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	e.metrics.Aggregates.Add(float64(len(aggs)))
	e.metrics.Rebuilt.Add(float64(len(rebuilt)))
	for device, v := range c.seen {
		if err := e.audit(ctx, device, v); err != nil {
			return n, fmt.Errorf("audit %s: %w", device, err)
		}
	}
	return n, nil
}

// rebuild reads the raw rows of the windows back from InfluxDB, merges
// them into the window state, and returns the windows' aggregates from the
// merged readings. A window that changed meanwhile (a batch merged into it)
// is left dirty for the next pass.
func (e *Emitter) rebuild(ctx context.Context, aggs []window.Aggregate) ([]window.Aggregate, error) {
	if len(aggs) == 0 {
		return nil, nil
	}
	rows, err := e.o.Reader.Read(ctx, rawRanges(aggs), []string{"value"})
	if err != nil {
		return nil, fmt.Errorf("read raw rows back: %w", err)
	}
	out := make([]window.Aggregate, 0, len(aggs))
	changed := 0
	err = e.o.DB.Update(func(tx *bolt.Tx) error {
		out, changed = out[:0], 0
		for i, a := range aggs {
			ts, vs := column(rows[i])
			h, diff, ok, err := e.o.Windows.Hydrate(tx, a, ts, vs)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if diff {
				changed++
			}
			out = append(out, h)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.metrics.RebuildChanged.Add(float64(changed))
	return out, nil
}

// Verify verifies up to VerifyBatch rebuilt windows whose time has come,
// and reports how many.
func (e *Emitter) Verify(ctx context.Context) (int, error) {
	type entry struct {
		key      []byte
		rewrites byte
		agg      window.Aggregate
		found    bool
	}
	var es []entry
	now := e.o.Now().UnixNano()
	err := e.o.DB.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(verifyBucket).Cursor()
		for k, v := c.First(); k != nil && len(es) < VerifyBatch; k, v = c.Next() {
			at, id, err := parseVerifyKey(k)
			if err != nil || len(v) != 1 {
				return fmt.Errorf("emit: verify entry %x: %v", k, err)
			}
			if at > now {
				break
			}
			a, found, err := e.o.Windows.Recompute(tx, id)
			if err != nil {
				return err
			}
			es = append(es, entry{key: append([]byte(nil), k...), rewrites: v[0], agg: a, found: found})
		}
		return nil
	})
	if err != nil || len(es) == 0 {
		return 0, err
	}
	var live []window.Aggregate
	for _, x := range es {
		if x.found {
			live = append(live, x.agg)
		}
	}
	var raw, stored []influx.Rows
	if len(live) > 0 {
		if raw, err = e.o.Reader.Read(ctx, rawRanges(live), []string{"value"}); err != nil {
			return 0, fmt.Errorf("read raw rows back: %w", err)
		}
		if stored, err = e.o.Reader.Read(ctx, aggRanges(live), schema.AggFields); err != nil {
			return 0, fmt.Errorf("read aggregates back: %w", err)
		}
	}
	var rewrite []window.Aggregate
	var again []byte // rewrites so far, per rewritten window
	results := map[string]int{}
	err = e.o.DB.Update(func(tx *bolt.Tx) error {
		rewrite, again = rewrite[:0], again[:0]
		clear(results)
		b := tx.Bucket(verifyBucket)
		i := 0
		for _, x := range es {
			if err := b.Delete(x.key); err != nil {
				return err
			}
			if !x.found {
				results[verifyGone]++
				continue
			}
			ts, vs := column(raw[i])
			st := stored[i]
			i++
			h, diff, ok, err := e.o.Windows.Hydrate(tx, x.agg, ts, vs)
			switch {
			case err != nil:
				return err
			case !ok || diff:
				// Changed since, or the raw rows changed it: it is dirty,
				// and its emission will be verified in turn.
				results[verifyRebuilt]++
			case schema.SameAggregate(st.Fields, &h):
				results[verifySame]++
			case x.rewrites >= MaxVerifyRewrites:
				results[verifyGivenUp]++
				e.log.Error("a window keeps being overwritten with another aggregate; giving up on it", "device", h.Device,
					"sensor", h.Sensor, "metric", h.Metric, "size", h.Size, "start", time.Unix(0, h.Start).UTC())
			default:
				results[verifyRewritten]++
				rewrite = append(rewrite, h)
				again = append(again, x.rewrites+1)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(rewrite) > 0 {
		if err := e.write(ctx, rewrite); err != nil {
			return 0, err // the entries are gone: the windows stay as written (logged)
		}
		err := e.o.DB.Update(func(tx *bolt.Tx) error {
			at := e.o.Now().Add(e.o.VerifyAfter)
			for i, a := range rewrite {
				if err := scheduleVerify(tx, at, a.ID, again[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		e.metrics.Aggregates.Add(float64(len(rewrite)))
	}
	for r, n := range results {
		e.metrics.Verified.WithLabelValues(r).Add(float64(n))
	}
	return len(es), nil
}

func (e *Emitter) write(ctx context.Context, aggs []window.Aggregate) error {
	if len(aggs) == 0 {
		return nil
	}
	e.points = schema.AggPoints(e.points[:0], aggs)
	return e.o.Influx.Write(ctx, e.points)
}

// rawRanges names the raw rows of each window.
func rawRanges(aggs []window.Aggregate) []influx.SeriesRange {
	out := make([]influx.SeriesRange, len(aggs))
	for i := range aggs {
		a := &aggs[i]
		out[i] = influx.SeriesRange{Measurement: a.Metric, Tags: schema.AggregateTags(a), Start: a.Start, End: a.Start + int64(a.Size)}
	}
	return out
}

// aggRanges names the stored aggregate of each window.
func aggRanges(aggs []window.Aggregate) []influx.SeriesRange {
	out := make([]influx.SeriesRange, len(aggs))
	for i := range aggs {
		a := &aggs[i]
		out[i] = influx.SeriesRange{Measurement: schema.AggMeasurement(a), Tags: schema.AggregateTags(a), Start: a.Start, End: a.Start + 1}
	}
	return out
}

// column returns a read-back's times and first field.
func column(r influx.Rows) ([]int64, []float64) {
	vs := make([]float64, len(r.Fields))
	ts := r.Times[:0:0]
	for i, f := range r.Fields {
		if math.IsNaN(f[0]) || math.IsInf(f[0], 0) {
			continue // not a number: not a reading the windows keep
		}
		ts = append(ts, r.Times[i])
		vs[len(ts)-1] = f[0]
	}
	return ts, vs[:len(ts)]
}

func verifyKey(at time.Time, id window.WindowID) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 32), uint64(at.UnixNano()))
	k = binary.BigEndian.AppendUint32(k, id.Device)
	k = binary.BigEndian.AppendUint32(k, id.Series)
	k = binary.BigEndian.AppendUint64(k, uint64(id.Size))
	return binary.BigEndian.AppendUint64(k, uint64(id.Start))
}

func parseVerifyKey(k []byte) (int64, window.WindowID, error) {
	if len(k) != 32 {
		return 0, window.WindowID{}, fmt.Errorf("key of %d bytes", len(k))
	}
	be := binary.BigEndian
	return int64(be.Uint64(k)), window.WindowID{Device: be.Uint32(k[8:]), Series: be.Uint32(k[12:]),
		Size: int64(be.Uint64(k[16:])), Start: int64(be.Uint64(k[24:]))}, nil
}

func scheduleVerify(tx *bolt.Tx, at time.Time, id window.WindowID, rewrites byte) error {
	return tx.Bucket(verifyBucket).Put(verifyKey(at, id), []byte{rewrites})
}
