// Package checks runs the hub's data quality checks on a schedule: the
// rules are hub/quality's; this package feeds them what the hub knows of
// each device (hub/fleet) and the readings it keeps in event-time order
// (hub/window), writes the findings to InfluxDB, keeps the checks' state in
// the hub's bbolt file, and hands the open findings to the fleet view.
//
// Each run writes its rows first and then keeps the new state, so a crash
// only rewrites the same rows (they are idempotent).
//
// A run's work follows what the fleet hears, not how many devices it
// knows: a device is checked while it is awake (heard from since it was
// last found offline), and its series only when it was heard from since
// they were last checked. A device offline costs nothing until it is
// heard again. Devices the fleet forgets (silent for the correction
// horizon) have their open findings resolved and their state deleted.
package checks

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/hub/window"
)

// MaxSeriesPerRun bounds the series one run checks, so a run's memory (the
// states and events it holds until they are kept) stays bounded however
// large the fleet; devices take turns.
const MaxSeriesPerRun = 20000

// Writer stores points in InfluxDB (hub/influx.Writer).
type Writer interface {
	Write(ctx context.Context, points []influx.Point) error
}

// Fleet is what the checks need of the hub's fleet view (hub/fleet).
type Fleet interface {
	// Observations returns the observations of the devices heard from (or
	// otherwise changed) since the last call.
	Observations() map[string]*fleet.Obs
	SetFindings(per map[string][]quality.Finding)
	// Forgotten returns the devices the fleet forgot since the last call.
	Forgotten() []string
	// Refusals says what the device limit refused, for the hub's finding.
	Refusals() quality.HubObs
}

// Options configure a Runner.
type Options struct {
	// DB is the hub's bbolt file: the checks keep their state in it, and
	// read the readings of Windows from it.
	DB      *bolt.DB
	Windows *window.Store
	Influx  Writer
	Fleet   Fleet
	// Config sets the checks; nil means the defaults.
	Config *quality.Config
	// Metrics count the findings; nil means NewMetrics(Registerer). (The
	// hub shares them with the pipeline, which counts gap notices' findings.)
	Metrics *Metrics
	// Registerer receives the checks' metrics when Metrics is nil; nil
	// registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Metrics are the checks' counters.
type Metrics struct {
	// Findings counts findings by kind and state change (opened, resolved).
	Findings *prometheus.CounterVec
	// Open is the findings open now, by kind.
	Open *prometheus.GaugeVec
	// Checked is how many devices the last run checked: those awake (not
	// offline); Forgotten counts the devices whose state was deleted.
	Checked   prometheus.Gauge
	Forgotten prometheus.Counter
}

// NewMetrics builds the metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Findings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "freshet_hub_quality_findings_total",
			Help: "Data quality findings by kind and state change (opened, resolved)."}, []string{"kind", "state"}),
		Open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "freshet_hub_quality_open_findings",
			Help: "Data quality findings open now, by kind."}, []string{"kind"}),
		Checked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "freshet_hub_quality_checked_devices",
			Help: "Devices the last quality run checked: those not offline (an offline device is checked again when it is heard)."}),
		Forgotten: prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_quality_forgotten_devices_total",
			Help: "Devices whose quality state was deleted because the hub forgot them (silent for the correction horizon)."}),
	}
	for _, k := range quality.Kinds() {
		m.Findings.WithLabelValues(string(k), quality.StateOpened)
		m.Findings.WithLabelValues(string(k), quality.StateResolved)
		m.Open.WithLabelValues(string(k))
	}
	if reg != nil {
		reg.MustRegister(m.Findings, m.Open, m.Checked, m.Forgotten)
	}
	return m
}

// Count counts one state change of a finding.
func (m *Metrics) Count(k quality.Kind, state string) {
	m.Findings.WithLabelValues(string(k), state).Inc()
}

// The checks keep their state in one bucket:
//
//	"d" 0 device          -> quality.DeviceState (JSON)
//	"s" 0 device 0 sid(4) -> quality.SeriesState (JSON); sid is the window store's series id
//	"h" 0                 -> quality.HubState (JSON): the hub's own findings
var bucket = []byte("quality")

var hubKey = []byte("h\x00")

func deviceKey(device string) []byte { return append([]byte("d\x00"), device...) }

func seriesPrefix(device string) []byte { return append(append([]byte("s\x00"), device...), 0) }

func seriesKey(device string, sid uint32) []byte {
	return binary.BigEndian.AppendUint32(seriesPrefix(device), sid)
}

// deviceOf returns the device a state key belongs to ("" for the hub's).
func deviceOf(k string) string {
	d, _, _ := strings.Cut(k[2:], "\x00")
	return d
}

// Runner runs the checks. Run (or Once, in tests) must be called from one
// goroutine only.
type Runner struct {
	o       Options
	log     *slog.Logger
	metrics *Metrics
	devices map[string]*quality.DeviceState
	// open holds every open finding by state key, for the fleet view and
	// the gauges.
	open map[string][]quality.Finding
	// progress is the event time each device's series were checked up to.
	progress map[string]int64
	// next is where the next run starts its series work (runs are bounded
	// by MaxSeriesPerRun; the rest of the devices wait for the next run).
	next int
	// hub is the state of the hub's own findings.
	hub *quality.HubState
	// obs are the latest observations of the devices awake (checked each
	// run); pending the devices heard from since their series were last
	// checked; forget the devices forgotten and not deleted yet.
	obs     map[string]*fleet.Obs
	pending map[string]bool
	forget  []string
}

// New creates the checks' bucket if needed, loads their state and returns
// a Runner.
func New(o Options) (*Runner, error) {
	if o.DB == nil || o.Windows == nil || o.Influx == nil || o.Fleet == nil {
		return nil, errors.New("checks: DB, Windows, Influx and Fleet are required")
	}
	if o.Config == nil {
		o.Config = &quality.Config{}
	}
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("checks: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(o.Registerer)
	}
	r := &Runner{o: o, log: o.Logger, metrics: o.Metrics, hub: &quality.HubState{},
		devices: map[string]*quality.DeviceState{}, open: map[string][]quality.Finding{}, progress: map[string]int64{},
		obs: map[string]*fleet.Obs{}, pending: map[string]bool{}}
	err := o.DB.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.ForEach(r.load)
	})
	if err != nil {
		return nil, fmt.Errorf("checks: load state: %w", err)
	}
	for name := range r.devices { // the first run looks at every device
		r.obs[name], r.pending[name] = &fleet.Obs{}, true
	}
	return r, nil
}

// Devices calls fn for each device the checks keep state of, with the
// hub's clock when it was last heard alive (Unix ns; 0: never): the hub
// tells its fleet of them at start.
func (r *Runner) Devices(fn func(device string, lastAlive int64)) {
	for name, d := range r.devices {
		fn(name, d.LastAlive)
	}
}

// Metrics returns the checks' counters.
func (r *Runner) Metrics() *Metrics { return r.metrics }

// load reads one persisted state entry (at start).
func (r *Runner) load(k, v []byte) error {
	var open []quality.Finding
	switch {
	case len(k) > 2 && k[0] == 'd' && k[1] == 0:
		d := new(quality.DeviceState)
		if err := json.Unmarshal(v, d); err != nil {
			// Derived state: never worth stopping ingest for. The
			// device starts over (its open findings may be found again).
			r.log.Error("quality state unreadable; starting it over", "device", string(k[2:]), "err", err)
			return nil
		}
		r.devices[string(k[2:])] = d
		open = d.OpenFindings()
	case len(k) > 2 && k[0] == 's' && k[1] == 0:
		s := new(quality.SeriesState)
		if err := json.Unmarshal(v, s); err != nil {
			return nil // logged and started over when the series is next checked
		}
		open = s.OpenFindings()
	case string(k) == string(hubKey):
		h := new(quality.HubState)
		if err := json.Unmarshal(v, h); err != nil {
			r.log.Error("quality state of the hub unreadable; starting it over", "err", err)
			return nil
		}
		r.hub = h
		open = h.OpenFindings()
	}
	if len(open) > 0 {
		r.open[string(k)] = open
	}
	return nil
}

// Run runs the checks every Config.Interval until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	r.publish()
	t := time.NewTicker(time.Duration(r.o.Config.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := r.Once(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("quality checks", "err", err)
			}
		}
	}
}

// Once runs the checks once: it forgets the devices the fleet forgot,
// runs the device checks of the devices awake (all but those offline and
// not heard since), the series checks of those heard from since their
// series were last checked, and the hub's own. It writes the events to
// InfluxDB, then keeps the new state; on an error nothing is kept and the
// next run repeats the work (the rows are idempotent). It returns the
// number of events.
func (r *Runner) Once(ctx context.Context) (int, error) {
	cfg := r.o.Config
	now := r.o.Now().UnixNano()
	r.forget = append(r.forget, r.o.Fleet.Forgotten()...)
	if len(r.forget) > 0 {
		if err := r.forgetDevices(ctx, now); err != nil {
			return 0, err
		}
	}
	for name, o := range r.o.Fleet.Observations() {
		r.obs[name], r.pending[name] = o, true
	}
	floor := cfg.Floor().UnixNano()
	lateness := int64(r.o.Windows.Options().AllowedLateness)

	var events []quality.Event
	emit := func(e quality.Event) { events = append(events, e) }
	changed := map[string][]byte{}
	devices := map[string]*quality.DeviceState{}
	progress := map[string]int64{}
	var checked, asleep []string // series checked (or nothing to check); devices gone dormant
	names := make([]string, 0, len(r.obs))
	for n := range r.obs {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) > 0 { // start where the last run stopped
		i := r.next % len(names)
		names = append(names[i:], names[:i]...)
	}
	hub := r.hub.Clone()
	hobs := r.o.Fleet.Refusals()
	hobs.Now = now
	hub.Check(&hobs, emit)
	if !hub.Equal(r.hub) {
		v, err := json.Marshal(hub)
		if err != nil {
			return 0, err
		}
		changed[string(hubKey)] = v
	}
	seriesDone, stoppedAt := 0, -1
	err := r.o.DB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for i, name := range names {
			o := r.obs[name]
			o.Device, o.Now = name, now
			old, d := r.devices[name], &quality.DeviceState{}
			if old != nil {
				d = old.Clone()
			}
			d.Check(cfg, &o.DeviceObs, emit)
			if old == nil || !d.Equal(old) {
				v, err := json.Marshal(d)
				if err != nil {
					return err
				}
				changed[string(deviceKey(name))] = v
				devices[name] = d
			}
			if !r.pending[name] { // nothing heard since its series were checked
				if d.Dormant() {
					asleep = append(asleep, name)
				}
				continue
			}

			// Series: up to the device's progress in event time, over
			// what this hub holds of them (see hub/emit: the window state
			// is a cache; where another hub may hold readings, a partial
			// view would find false gaps).
			wm, ok, err := r.o.Windows.Watermark(tx, name)
			if err != nil {
				return err
			}
			cust, err := ledger.CustodyOf(tx, name)
			if err != nil {
				return err
			}
			p := int64(math.MinInt64)
			if ok {
				p = wm - lateness
			}
			// A status that said nothing was waiting moves the device's
			// progress to its time only where this hub applied the last
			// seq the agent had sealed: where another hub applied it, this
			// hub lacks the device's latest readings, whatever the agent's
			// settled mark says (it lags behind seqs settled out of order).
			if o.Idle && o.StatusTime >= floor && cust.HoldsLast(o.Epoch, o.LastSeq) {
				p = max(p, o.StatusTime-lateness)
			}
			if stoppedAt >= 0 {
				continue // its turn comes in the next run
			}
			if p <= r.progress[name] || p < floor {
				checked = append(checked, name)
				if d.Dormant() {
					asleep = append(asleep, name)
				}
				continue
			}
			if seriesDone >= MaxSeriesPerRun {
				stoppedAt = i
				continue
			}
			checked = append(checked, name)
			if d.Dormant() {
				asleep = append(asleep, name)
			}
			progress[name] = p
			err = r.o.Windows.SeriesOf(tx, name, func(se window.Series) error {
				k := seriesKey(name, se.ID)
				s := quality.NewSeriesState()
				if v := b.Get(k); v != nil {
					if err := json.Unmarshal(v, s); err != nil {
						r.log.Error("quality state unreadable; checking the series from its start", "device", name,
							"sensor", se.Sensor, "metric", se.Metric, "err", err)
						s = quality.NewSeriesState()
					}
				}
				if s.Cursor >= p {
					return nil
				}
				seriesDone++
				if s.Cursor < cust.SharedBefore {
					s.Skip(min(p, cust.SharedBefore), emit)
				}
				m := &quality.SeriesMeta{Device: name, Sensor: se.Sensor, Metric: se.Metric, Unit: se.Unit,
					Limits: cfg.For(name, se.Sensor, se.Metric, se.Unit), Interval: o.Intervals[se.Sensor], Floor: floor}
				err := r.o.Windows.Readings(tx, name, se.ID, s.Cursor, p, func(t int64, v float64) { s.Observe(m, t, v, emit) })
				if err != nil {
					return err
				}
				s.Advance(m, p, emit)
				v, err := json.Marshal(s)
				if err != nil {
					return err
				}
				changed[string(k)] = v
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := r.keep(ctx, events, changed, nil); err != nil {
		return 0, err
	}
	// Kept: now the in-memory side follows.
	if stoppedAt >= 0 {
		r.next += stoppedAt
	}
	for n, d := range devices {
		r.devices[n] = d
	}
	for n, p := range progress {
		r.progress[n] = p
	}
	if _, ok := changed[string(hubKey)]; ok {
		r.hub = hub
	}
	for _, n := range checked {
		delete(r.pending, n)
	}
	for _, n := range asleep { // until the fleet hears from it again
		delete(r.obs, n)
	}
	r.metrics.Checked.Set(float64(len(names)))
	return len(events), nil
}

// keep writes the events to InfluxDB, then the changed state (and deletes
// the keys given), and brings the open findings in memory, the metrics and
// the fleet view in line.
func (r *Runner) keep(ctx context.Context, events []quality.Event, changed map[string][]byte, deleted [][]byte) error {
	if len(events) > 0 {
		if err := r.o.Influx.Write(ctx, schema.QualityPoints(nil, events)); err != nil {
			return err
		}
	}
	if len(changed) > 0 || len(deleted) > 0 {
		err := r.o.DB.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			for _, k := range deleted {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			for k, v := range changed {
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, k := range deleted {
		delete(r.open, string(k))
	}
	for k, v := range changed {
		var st struct {
			Open []quality.Finding `json:"open"`
		}
		if err := json.Unmarshal(v, &st); err == nil && len(st.Open) > 0 {
			r.open[k] = st.Open
		} else {
			delete(r.open, k)
		}
	}
	for _, e := range events {
		r.metrics.Count(e.Kind, e.State)
	}
	if len(changed) > 0 || len(deleted) > 0 {
		r.publish()
	}
	return nil
}

// ForgetReason ends the detail of the findings resolved because the hub
// forgot their device.
const ForgetReason = "the hub forgot the device: nothing heard from it for windows.correction_horizon"

// forgetDevices resolves the open findings of the devices in r.forget and
// deletes their state.
func (r *Runner) forgetDevices(ctx context.Context, now int64) error {
	var events []quality.Event
	emit := func(e quality.Event) { events = append(events, e) }
	var keys [][]byte
	err := r.o.DB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, name := range r.forget {
			if k := deviceKey(name); b.Get(k) != nil {
				keys = append(keys, k)
			}
			prefix := seriesPrefix(name)
			c := b.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		quality.Forget(r.open[string(k)], now, ForgetReason, emit)
	}
	if err := r.keep(ctx, events, nil, keys); err != nil {
		return err
	}
	for _, name := range r.forget {
		delete(r.devices, name)
		delete(r.progress, name)
		delete(r.obs, name)
		delete(r.pending, name)
	}
	r.metrics.Forgotten.Add(float64(len(r.forget)))
	r.forget = nil
	return nil
}

// publish hands the open findings to the fleet view and the gauges.
func (r *Runner) publish() {
	per := map[string][]quality.Finding{}
	counts := map[quality.Kind]int{}
	for k, fs := range r.open {
		device := deviceOf(k)
		per[device] = append(per[device], fs...)
		for _, f := range fs {
			counts[f.Kind]++
		}
	}
	for _, fs := range per {
		slices.SortFunc(fs, func(a, b quality.Finding) int {
			return strings.Compare(string(a.Kind)+a.Sensor+a.Metric, string(b.Kind)+b.Sensor+b.Metric)
		})
	}
	r.o.Fleet.SetFindings(per)
	for _, k := range quality.Kinds() {
		r.metrics.Open.WithLabelValues(string(k)).Set(float64(counts[k]))
	}
}
