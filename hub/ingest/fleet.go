package ingest

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/protocol"
)

// DeviceInfo is the hub's view of one device (GET /api/v1/devices).
type DeviceInfo struct {
	Device   string    `json:"device"`
	LastSeen time.Time `json:"last_seen"`
	// State, Version, Backlog, Dropped come from the agent's retained status.
	State        string           `json:"state,omitempty"`
	AgentVersion string           `json:"agent_version,omitempty"`
	Backlog      protocol.Backlog `json:"backlog"`
	Dropped      uint64           `json:"dropped"`
	ClockSynced  bool             `json:"clock_synced"`
	Notice       string           `json:"notice,omitempty"`
	// LastSeq is the highest seq received per epoch (hex).
	LastSeq map[string]uint64 `json:"last_seq"`
	// Rejections counts refused batches; GapReadings the readings the agent reported dropped.
	Rejections  uint64 `json:"rejections"`
	GapReadings uint64 `json:"gap_readings"`
	// ClockOffset estimates the device clock minus the hub's, from seal
	// times (a batch is sealed and sent at once when the link is up; the
	// smallest recent difference is the best estimate).
	ClockOffsetSeconds float64                 `json:"clock_offset_seconds"`
	Sensors            []protocol.SensorStatus `json:"sensors,omitempty"`
	// Corrections counts windows its late readings reopened; TooLate the
	// readings beyond the correction horizon.
	Corrections uint64 `json:"corrections"`
	TooLate     uint64 `json:"too_late"`
	// Recent holds the latest temperature readings (at most RecentMax), for a sparkline.
	Recent []RecentPoint `json:"recent,omitempty"`
	// Findings are its open data quality findings (device and series).
	Findings []quality.Finding `json:"findings,omitempty"`
}

// RecentPoint is one recent reading.
type RecentPoint struct {
	T int64   `json:"t"` // Unix ns
	V float64 `json:"v"`
}

// RecentMax bounds DeviceInfo.Recent.
const RecentMax = 120

// fleet tracks devices in memory; it is bounded by the number of devices.
type fleet struct {
	mu      sync.Mutex
	devices map[string]*DeviceInfo
	offsets map[string][]float64 // recent offsets, to take the minimum
	obs     map[string]*deviceObs
	floor   int64 // quality.Config.Floor
}

// deviceObs is what the quality checks need to know beyond DeviceInfo.
type deviceObs struct {
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
}

func newFleet(floor time.Time) *fleet {
	return &fleet{devices: map[string]*DeviceInfo{}, offsets: map[string][]float64{}, obs: map[string]*deviceObs{}, floor: floor.UnixNano()}
}

func (f *fleet) get(device string) *DeviceInfo {
	d := f.devices[device]
	if d == nil {
		d = &DeviceInfo{Device: device, LastSeq: map[string]uint64{}}
		f.devices[device] = d
		f.obs[device] = &deviceObs{}
	}
	return d
}

func (f *fleet) batch(b *protocol.Batch, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.get(b.Device)
	d.LastSeen = now
	o := f.obs[b.Device]
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
	if b.Seq > d.LastSeq[k] {
		d.LastSeq[k] = b.Seq
	}
	if len(d.LastSeq) > 8 { // old epochs: keep a few
		for e := range d.LastSeq {
			if e != k {
				delete(d.LastSeq, e)
				break
			}
		}
	}
	for _, se := range b.Series {
		if se.Metric != "temperature" || se.Type != protocol.Float {
			continue
		}
		from := max(0, len(se.Times)-RecentMax) // only the last ones can stay
		for i, t := range se.Times[from:] {
			d.Recent = append(d.Recent, RecentPoint{t, se.Floats[from+i]})
		}
		if len(d.Recent) > RecentMax {
			d.Recent = append(d.Recent[:0], d.Recent[len(d.Recent)-RecentMax:]...)
		}
		break
	}
	off := float64(b.SealTime-now.UnixNano()) / 1e9
	offs := append(f.offsets[b.Device], off)
	if len(offs) > 16 {
		offs = offs[len(offs)-16:]
	}
	f.offsets[b.Device] = offs
	// A late batch was sealed long ago: the largest difference (device time
	// minus hub time) comes from a batch sent as soon as it was sealed.
	d.ClockOffsetSeconds = slices.Max(offs)
}

func (f *fleet) status(s *protocol.Status, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.get(s.Device)
	d.LastSeen = now
	o := f.obs[s.Device]
	if s.State != protocol.StateOnline { // its last will: the broker lost the connection
		o.lastWill = true
		d.State = s.State
		return
	}
	o.lastAlive, o.lastWill, o.haveStatus, o.statusTime = now.UnixNano(), false, true, s.Time
	o.backlog, o.backlogBats = s.Backlog.Readings, s.Backlog.Batches
	if len(s.Sensors) > 0 {
		o.intervals = make(map[string]time.Duration, len(s.Sensors))
		for _, se := range s.Sensors {
			o.intervals[se.Name] = time.Duration(se.Interval)
		}
	}
	d.State, d.AgentVersion, d.Backlog, d.Dropped, d.ClockSynced, d.Notice = s.State, s.AgentVersion, s.Backlog, s.Dropped, s.ClockSynced, s.Notice
	if len(s.Sensors) > 0 {
		d.Sensors = s.Sensors
	}
}

func (f *fleet) merged(device string, ms window.MergeStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.get(device)
	d.Corrections += uint64(ms.Corrections)
	d.TooLate += uint64(ms.TooLate)
}

func (f *fleet) rejection(device string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(device).Rejections++
}

func (f *fleet) gap(device string, readings uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(device).GapReadings += readings
}

// Devices returns a snapshot of every device seen, sorted by id.
func (h *Hub) Devices() []DeviceInfo {
	h.fleet.mu.Lock()
	defer h.fleet.mu.Unlock()
	out := make([]DeviceInfo, 0, len(h.fleet.devices))
	for _, d := range h.fleet.devices {
		c := *d
		c.Recent = slices.Clone(d.Recent)
		c.Findings = slices.Clone(d.Findings)
		c.LastSeq = make(map[string]uint64, len(d.LastSeq))
		for k, v := range d.LastSeq {
			c.LastSeq[k] = v
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b DeviceInfo) int {
		if a.Device < b.Device {
			return -1
		}
		if a.Device > b.Device {
			return 1
		}
		return 0
	})
	return out
}

func epochHex(e uint64) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 16)
	for i := 15; i >= 0; i-- {
		b[i] = digits[e&15]
		e >>= 4
	}
	return string(b)
}

// DeadLetter is a refused payload kept for inspection (GET /api/v1/rejections).
type DeadLetter struct {
	Time    time.Time `json:"time"`
	Topic   string    `json:"topic"`
	Reason  string    `json:"reason"`
	Detail  string    `json:"detail"`
	Bytes   int       `json:"bytes"`
	Payload []byte    `json:"payload"` // the first 64 KiB (base64 in JSON)
}

// DeadLetters returns up to limit refused payloads, newest first.
func (h *Hub) DeadLetters(limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := h.o.DB.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(deadBucket).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			parts := bytes.SplitN(v, []byte{0}, 4)
			if len(parts) != 4 || len(k) != 16 {
				continue
			}
			out = append(out, DeadLetter{Time: time.Unix(0, int64(binary.BigEndian.Uint64(k))), Topic: string(parts[0]),
				Reason: string(parts[1]), Detail: string(parts[2]), Bytes: len(parts[3]), Payload: bytes.Clone(parts[3])})
		}
		return nil
	})
	return out, err
}
