// Package fleet is what the hub knows of each device: its last status
// (state, backlog, sensors), when it was last heard, the seqs it sent, its
// clock offset, recent temperatures, and its open data quality findings.
// The pipeline (hub/ingest) tells it what it sees, the quality checks
// (hub/checks) read its observations and hand it their findings, and the
// fleet page and /api/v1/devices read it.
//
// It lives in memory, bounded by the number of devices: Options.MaxDevices
// (the hub's limits.devices) refuses a new device while the fleet is full,
// and Forget drops the devices not heard from for the correction horizon.
// It is also the hub's registry of devices: a device the fleet refused
// gets no state anywhere in the hub, and the hub forgets everywhere what
// the fleet forgot.
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
	// MaxDevices bounds the devices the fleet knows: while it knows as
	// many, a batch or status of another device is refused (Admit) and
	// counted (Refusals). 0 sets no bound.
	MaxDevices int
	// Registerer receives the fleet's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Fleet is the hub's view of every device it heard from. Its methods are
// safe for concurrent use.
type Fleet struct {
	floor   int64
	max     int
	mu      sync.Mutex
	devices map[string]*device
	// changed holds the devices whose observations changed since
	// Observations last ran; forgotten the devices Forget dropped since
	// Forgotten last ran.
	changed   map[string]struct{}
	forgotten []string
	refused   refusals
}

// refusals are the batches and statuses MaxDevices refused.
type refusals struct {
	n    int64
	at   int64 // hub ns, the last
	last string
}

type device struct {
	view     Device // without Series and Findings
	obs      obs
	offsets  []float64
	recent   []*Series
	findings []quality.Finding
	// heard is the hub's clock (ns) when the device was last heard: its
	// last batch or online status, or when the fleet learnt of it.
	heard int64
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
	limits        quality.DeviceLimits
	// its epoch and last seq sealed, from its last online status, and its
	// settled mark in that epoch (the highest its statuses gave; v2)
	epoch, lastSeq, settled uint64
}

// New returns an empty fleet.
func New(o Options) *Fleet {
	if o.ClockFloor.IsZero() {
		o.ClockFloor = quality.DefaultClockFloor
	}
	f := &Fleet{floor: o.ClockFloor.UnixNano(), max: o.MaxDevices, devices: map[string]*device{}, changed: map[string]struct{}{}}
	if o.Registerer != nil {
		o.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "freshet_hub_devices", Help: "Devices the hub knows: heard from within the correction horizon (limits.devices bounds them).",
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

// admit returns the device, adding it if there is room (nil: refused and
// counted).
func (f *Fleet) admit(name string, now time.Time) *device {
	if d := f.devices[name]; d != nil {
		return d
	}
	if f.max > 0 && len(f.devices) >= f.max {
		f.refused.n++
		f.refused.at, f.refused.last = now.UnixNano(), name
		return nil
	}
	d := &device{view: Device{Device: name, LastSeq: map[string]uint64{}}, heard: now.UnixNano()}
	f.devices[name] = d
	f.changed[name] = struct{}{}
	return d
}

// Admit reports whether the fleet knows the device, adding it if there is
// room. A device refused (the fleet holds MaxDevices) is counted in
// Refusals; the pipeline then leaves its batch unacked, so that it stays
// on the agent's disk until the device is admitted.
func (f *Fleet) Admit(name string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.admit(name, now) != nil
}

// Seed adds a device the hub's state file knows, last heard at heard, so
// that the device limit counts it and Forget finds it after a restart. It
// ignores MaxDevices: what is already stored is known.
func (f *Fleet) Seed(name string, heard time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devices[name]
	if d == nil {
		d = &device{view: Device{Device: name, LastSeen: heard, LastSeq: map[string]uint64{}}, heard: heard.UnixNano()}
		f.devices[name] = d
		f.changed[name] = struct{}{}
	}
	d.heard = max(d.heard, heard.UnixNano())
}

// alive records that the device was heard alive at now.
func (f *Fleet) alive(name string, d *device, now time.Time) {
	d.view.LastSeen = now
	d.heard = max(d.heard, now.UnixNano())
	d.obs.lastAlive, d.obs.lastWill = now.UnixNano(), false
	f.changed[name] = struct{}{}
}

// Batch records a batch the pipeline decoded (valid, on its device's
// topic); a device the fleet has no room for is left out (see Admit).
func (f *Fleet) Batch(b *protocol.Batch, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.admit(b.Device, now)
	if d == nil {
		return
	}
	f.alive(b.Device, d, now)
	o := &d.obs
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

// Status records an agent's status (retained, heartbeat or last will). It
// reports false when the device is new and the fleet has no room for it
// (counted in Refusals; nothing is recorded).
func (f *Fleet) Status(s *protocol.Status, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.admit(s.Device, now)
	if d == nil {
		return false
	}
	o := &d.obs
	if s.State != protocol.StateOnline { // its last will: the broker lost the connection
		d.view.LastSeen = now
		o.lastWill = true
		d.view.State = s.State
		f.changed[s.Device] = struct{}{}
		return true
	}
	f.alive(s.Device, d, now)
	o.haveStatus, o.statusTime = true, s.Time
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
	return true
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

// Applied records a batch the pipeline applied: the windows its late
// readings reopened and its readings beyond the correction horizon. clean
// says no limit bit while applying it (see Limited): a clean batch
// resolves the device's limit finding.
func (f *Fleet) Applied(device string, corrections, tooLate int, clean bool, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devices[device]
	if d == nil {
		return // forgotten meanwhile
	}
	d.view.Corrections += uint64(corrections)
	d.view.TooLate += uint64(tooLate)
	if clean {
		d.obs.limits.CleanAt, d.obs.limits.Hits = now.UnixNano(), 0
		f.changed[device] = struct{}{}
	}
}

// Limited records a per-device limit biting for a device the fleet knows:
// a batch refused (limits.series_per_device) or epochs forgotten
// (limits.epochs_per_device). value is the limit, detail what it did. The
// device is alive all the same.
func (f *Fleet) Limited(device string, value int64, detail string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devices[device]
	if d == nil {
		return
	}
	f.alive(device, d, now)
	l := &d.obs.limits
	l.At, l.Value, l.Detail = now.UnixNano(), value, detail
	l.Hits++
}

// Rejected records a refused batch of a device the fleet knows.
func (f *Fleet) Rejected(device string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.devices[device]; d != nil {
		d.view.Rejections++
	}
}

// Gap records readings the agent reported dropped.
func (f *Fleet) Gap(device string, readings uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.devices[device]; d != nil {
		d.view.GapReadings += readings
	}
}

// Silent returns the devices not heard from since before (no batch, no
// online status), sorted: the hub forgets them in its stored state, then
// here (Forget).
func (f *Fleet) Silent(before time.Time) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	cut := before.UnixNano()
	var out []string
	for name, d := range f.devices {
		if d.heard < cut {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Forget drops those of the devices still not heard from since before,
// returns them, and hands them to the quality checks (Forgotten).
func (f *Fleet) Forget(names []string, before time.Time) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	cut := before.UnixNano()
	var out []string
	for _, name := range names {
		if d := f.devices[name]; d != nil && d.heard < cut {
			out = append(out, name)
			delete(f.devices, name)
			delete(f.changed, name)
		}
	}
	f.forgotten = append(f.forgotten, out...)
	return out
}

// Forgotten returns the devices Forget dropped since the last call.
func (f *Fleet) Forgotten() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.forgotten
	f.forgotten = nil
	return out
}

// Refusals returns what the device limit refused since the fleet was
// made, for the hub's limit finding (Now is left for the caller).
func (f *Fleet) Refusals() quality.HubObs {
	f.mu.Lock()
	defer f.mu.Unlock()
	return quality.HubObs{Devices: len(f.devices), MaxDevices: f.max, Refused: f.refused.n, RefusedAt: f.refused.at, LastRefused: f.refused.last}
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

// Observations returns what the quality checks need of the devices whose
// observations changed since the last call (Device and Now are left for
// the caller): the checks keep the others', so that their work follows
// what the fleet hears, not how many devices it knows.
func (f *Fleet) Observations() map[string]*Obs {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]*Obs, len(f.changed))
	for name := range f.changed {
		delete(f.changed, name)
		d := f.devices[name]
		if d == nil {
			continue
		}
		o := &d.obs
		s := &Obs{Seqs: o.seqs(), StatusTime: o.statusTime, Intervals: o.intervals}
		s.LastAlive, s.LastWill, s.Backlog = o.lastAlive, o.lastWill, o.backlog
		s.ClockUnset, s.UnsetSince, s.UnsetReadings, s.ClockSetAt = o.unset, o.unsetSince, o.unsetReadings, o.clockSetAt
		s.Limits = o.limits
		// Old batches of a backlog say nothing about the clock: judge it
		// only while little is waiting.
		if len(d.offsets) > 0 && o.haveStatus && o.backlogBats <= 4 {
			s.ClockOffset, s.OffsetKnown = d.view.ClockOffsetSeconds, true
		}
		out[name] = s
	}
	return out
}

// SetFindings replaces every device's open findings (devices the fleet
// does not know are left out).
func (f *Fleet) SetFindings(per map[string][]quality.Finding) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, d := range f.devices {
		d.findings = per[name]
	}
}

func epochHex(e uint64) string {
	s := strconv.FormatUint(e, 16)
	return strings.Repeat("0", 16-len(s)) + s
}
