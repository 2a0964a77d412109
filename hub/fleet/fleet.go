// Package fleet is what the hub knows of each device: its last status
// (state, backlog, sensors), when it was last heard, the seqs it sent, its
// clock offset, recent temperatures, and its open data quality findings.
// The pipeline (hub/ingest) tells it what it sees, the quality checks
// (hub/checks) read its observations and hand it their findings, and the
// fleet page and /api/v1/devices read it.
//
// It lives in memory, bounded by the number of devices.
package fleet

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/protocol"
)

// Bounds of what is kept per device.
const (
	// RecentMax bounds the recent readings kept per series.
	RecentMax = 120
	// RecentSeries bounds the temperature series whose recent readings
	// are kept per device (the first ones seen).
	RecentSeries = 4
	// epochsKept bounds the epochs whose last seq is kept per device.
	epochsKept = 8
	// offsetsKept is how many recent clock offsets the estimate looks at.
	offsetsKept = 16
)

// Options configure a Fleet.
type Options struct {
	// ClockFloor: a batch sealed before it comes from a clock never set
	// (quality.Config.Floor). Zero means quality.DefaultClockFloor.
	ClockFloor time.Time
	// Registerer receives the fleet's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Fleet is the hub's view of every device it heard from. Its methods are
// safe for concurrent use.
type Fleet struct {
	floor   int64
	mu      sync.Mutex
	devices map[string]*device
}

type device struct {
	view     Device // without Series and Findings
	obs      obs
	offsets  []float64
	recent   []*Series
	findings []quality.Finding
}

// obs is what the quality checks need to know beyond the view.
type obs struct {
	lastAlive   int64 // hub ns: last batch or online status
	lastWill    bool  // the broker published its last will since
	haveStatus  bool
	statusTime  int64 // its clock, at its last online status
	backlog     uint64
	backlogBats uint64
	// clock never set: the latest batch was sealed before the floor
	unset         bool
	unsetSince    int64
	unsetReadings int64
	clockSetAt    int64
	intervals     map[string]time.Duration // sensor -> read interval
	// its epoch and last seq sealed, from its last online status, and its
	// settled mark in that epoch (the highest its statuses gave; v2)
	epoch, lastSeq, settled uint64
}

// New returns an empty fleet.
func New(o Options) *Fleet {
	if o.ClockFloor.IsZero() {
		o.ClockFloor = quality.DefaultClockFloor
	}
	f := &Fleet{floor: o.ClockFloor.UnixNano(), devices: map[string]*device{}}
	if o.Registerer != nil {
		o.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "freshet_hub_devices", Help: "Devices the hub has heard from since it started.",
		}, func() float64 { return float64(f.Len()) }))
	}
	return f
}

// Len returns the number of devices known.
func (f *Fleet) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.devices)
}

func (f *Fleet) get(name string) *device {
	d := f.devices[name]
	if d == nil {
		d = &device{view: Device{Device: name, LastSeq: map[string]uint64{}}}
		f.devices[name] = d
	}
	return d
}

// Batch records a batch the pipeline decoded (valid, on its device's topic).
func (f *Fleet) Batch(b *protocol.Batch, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.get(b.Device)
	d.view.LastSeen = now
	o := &d.obs
	o.lastAlive, o.lastWill = now.UnixNano(), false
	for _, se := range b.Series {
		for _, t := range se.Times {
			if t < f.floor {
				o.unsetReadings++
			}
		}
	}
	switch unset := b.SealTime < f.floor; {
	case unset && !o.unset:
		o.unset, o.unsetSince = true, now.UnixNano()
	case !unset && o.unset:
		o.unset, o.clockSetAt = false, now.UnixNano()
	}
	k := epochHex(b.Epoch)
	if b.Seq > d.view.LastSeq[k] {
		d.view.LastSeq[k] = b.Seq
	}
	if len(d.view.LastSeq) > epochsKept { // old epochs: keep a few
		for e := range d.view.LastSeq {
			if e != k {
				delete(d.view.LastSeq, e)
				break
			}
		}
	}
	for i := range b.Series {
		d.addRecent(&b.Series[i])
	}
	off := float64(b.SealTime-now.UnixNano()) / 1e9
	d.offsets = append(d.offsets, off)
	if len(d.offsets) > offsetsKept {
		d.offsets = d.offsets[len(d.offsets)-offsetsKept:]
	}
	// A late batch was sealed long ago: the largest difference (device time
	// minus hub time) comes from a batch sent as soon as it was sealed.
	d.view.ClockOffsetSeconds = slices.Max(d.offsets)
}

// addRecent keeps the latest readings of a temperature series, each
// sensor's apart.
func (d *device) addRecent(se *protocol.Series) {
	if se.Metric != "temperature" || se.Type != protocol.Float {
		return
	}
	i := slices.IndexFunc(d.recent, func(r *Series) bool { return r.Sensor == se.Sensor && r.Unit == se.Unit })
	if i < 0 {
		if len(d.recent) == RecentSeries {
			return
		}
		d.recent = append(d.recent, &Series{Sensor: se.Sensor, Metric: se.Metric, Unit: se.Unit})
		i = len(d.recent) - 1
	}
	r := d.recent[i]
	from := max(0, len(se.Times)-RecentMax) // only the last ones can stay
	for j, t := range se.Times[from:] {
		r.Recent = append(r.Recent, Point{T: t, V: se.Floats[from+j]})
	}
	// A late batch may bring older readings: keep them in time order.
	slices.SortStableFunc(r.Recent, func(a, b Point) int { return cmp.Compare(a.T, b.T) })
	if len(r.Recent) > RecentMax {
		r.Recent = append(r.Recent[:0], r.Recent[len(r.Recent)-RecentMax:]...)
	}
}

// Status records an agent's status (retained, heartbeat or last will).
func (f *Fleet) Status(s *protocol.Status, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.get(s.Device)
	d.view.LastSeen = now
	o := &d.obs
	if s.State != protocol.StateOnline { // its last will: the broker lost the connection
		o.lastWill = true
		d.view.State = s.State
		return
	}
	o.lastAlive, o.lastWill, o.haveStatus, o.statusTime = now.UnixNano(), false, true, s.Time
	if s.Epoch != o.epoch || s.Settled > o.settled {
		o.epoch, o.settled = s.Epoch, s.Settled
	}
	o.lastSeq = s.LastSeq
	o.backlog, o.backlogBats = s.Backlog.Readings, s.Backlog.Batches
	v := &d.view
	v.State, v.AgentVersion, v.ClockSynced, v.Notice = s.State, s.AgentVersion, s.ClockSynced, s.Notice
	v.Backlog = Backlog{Batches: s.Backlog.Batches, Readings: s.Backlog.Readings, Bytes: s.Backlog.Bytes}
	v.Dropped = s.Dropped
	if len(s.Sensors) > 0 {
		o.intervals = make(map[string]time.Duration, len(s.Sensors))
		v.Sensors = make([]Sensor, len(s.Sensors))
		for i, se := range s.Sensors {
			o.intervals[se.Name] = time.Duration(se.Interval)
			v.Sensors[i] = Sensor{Name: se.Name, IntervalSeconds: time.Duration(se.Interval).Seconds(), Reads: se.Reads, Errors: se.Errors, LastError: se.LastError}
		}
	}
}

// Seqs is what a device's last online status says of the seqs of its
// epoch. Every hub sees every status: a hub compares them with the seqs it
// applied itself (ledger.Custody) to tell whether another hub, or its own
// lost state, holds some of the device's readings.
type Seqs struct {
	Epoch uint64
	// LastSeq is the highest seq the agent had sealed in Epoch.
	LastSeq uint64
	// Settled is the agent's settled mark (the highest its statuses in
	// Epoch gave, version 2): every seq up to it was settled by a hub's
	// ack. It is a lower bound only: when hubs settle seqs out of order it
	// can stay below them (an agent forgets a seq settled above its mark
	// once the batch is off its disk) until a later ack raises it, and
	// forever when the agent sends nothing more.
	Settled uint64
	// Idle: the status said nothing was waiting on the agent's disk, so
	// every seq up to LastSeq was settled.
	Idle bool
}

// Seqs returns what the device's last online status says of its seqs (ok
// false: no online status yet).
func (f *Fleet) Seqs(device string) (s Seqs, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devices[device]
	if d == nil || !d.obs.haveStatus {
		return Seqs{}, false
	}
	return d.obs.seqs(), true
}

func (o *obs) seqs() Seqs {
	return Seqs{Epoch: o.epoch, LastSeq: o.lastSeq, Settled: o.settled, Idle: o.haveStatus && o.backlog == 0}
}

// Merged records what merging a device's batch did: windows its late
// readings reopened, readings beyond the correction horizon.
func (f *Fleet) Merged(device string, corrections, tooLate int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.get(device)
	d.view.Corrections += uint64(corrections)
	d.view.TooLate += uint64(tooLate)
}

// Rejected records a refused batch.
func (f *Fleet) Rejected(device string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(device).view.Rejections++
}

// Gap records readings the agent reported dropped.
func (f *Fleet) Gap(device string, readings uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(device).view.GapReadings += readings
}

// Devices returns a snapshot of every device, sorted by id.
func (f *Fleet) Devices() []Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Device, 0, len(f.devices))
	for _, d := range f.devices {
		out = append(out, d.copyView())
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Device, b.Device) })
	return out
}

// Device returns one device's view, if the hub has heard from it.
func (f *Fleet) Device(name string) (Device, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[name]
	if !ok {
		return Device{}, false
	}
	return d.copyView(), true
}

// copyView is a copy of the device's view that shares nothing with it.
func (d *device) copyView() Device {
	c := d.view
	c.LastSeq = make(map[string]uint64, len(d.view.LastSeq))
	for k, v := range d.view.LastSeq {
		c.LastSeq[k] = v
	}
	c.Sensors = slices.Clone(d.view.Sensors)
	for _, r := range d.recent {
		s := *r
		s.Recent = slices.Clone(r.Recent)
		if n := len(s.Recent); n > 0 {
			s.Last = s.Recent[n-1].V
		}
		c.Series = append(c.Series, s)
	}
	for _, fd := range d.findings {
		c.Findings = append(c.Findings, findingView(fd))
	}
	return c
}

// Obs is one device's observations for the quality checks.
type Obs struct {
	quality.DeviceObs
	// Seqs are what its last online status said of its seqs (Idle: that
	// nothing was waiting on its disk); StatusTime is that status's time,
	// on its clock.
	Seqs
	StatusTime int64
	// Intervals are its sensors' read intervals from its status.
	Intervals map[string]time.Duration
}

// Observations returns what the quality checks need of every device
// (Device and Now are left for the caller).
func (f *Fleet) Observations() map[string]*Obs {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]*Obs, len(f.devices))
	for name, d := range f.devices {
		o := &d.obs
		s := &Obs{Seqs: o.seqs(), StatusTime: o.statusTime, Intervals: o.intervals}
		s.LastAlive, s.LastWill, s.Backlog = o.lastAlive, o.lastWill, o.backlog
		s.ClockUnset, s.UnsetSince, s.UnsetReadings, s.ClockSetAt = o.unset, o.unsetSince, o.unsetReadings, o.clockSetAt
		// Old batches of a backlog say nothing about the clock: judge it
		// only while little is waiting.
		if len(d.offsets) > 0 && o.haveStatus && o.backlogBats <= 4 {
			s.ClockOffset, s.OffsetKnown = d.view.ClockOffsetSeconds, true
		}
		out[name] = s
	}
	return out
}

// SetFindings replaces every device's open findings.
func (f *Fleet) SetFindings(per map[string][]quality.Finding) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, d := range f.devices {
		d.findings = per[name]
	}
	for name, fs := range per {
		if f.devices[name] == nil {
			f.get(name).findings = fs
		}
	}
}

func epochHex(e uint64) string {
	s := strconv.FormatUint(e, 16)
	return strings.Repeat("0", 16-len(s)) + s
}
