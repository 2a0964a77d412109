package quality

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// DeviceObs is what the hub knows of a device now (in memory since the
// hub started; zero values where it has heard nothing).
type DeviceObs struct {
	Device string
	Now    int64 // the hub's clock, Unix ns
	// LastAlive is the hub's clock at the device's last batch or online
	// status; 0 if not heard since the hub started.
	LastAlive int64
	// LastWill: the broker published the device's last will (connection
	// lost) after LastAlive.
	LastWill bool
	// Backlog is the readings waiting on its disk at its last status.
	Backlog uint64
	// ClockOffset is the device clock minus the hub's in seconds, from
	// fresh batches; OffsetKnown is false while it cannot be judged (no
	// batch yet, or a backlog being delivered: old batches say nothing).
	ClockOffset float64
	OffsetKnown bool
	// ClockUnset: its latest batch was sealed before the clock floor;
	// UnsetSince is the hub's clock when that was first seen, UnsetReadings
	// counts readings stamped before the floor since then, ClockSetAt the
	// hub's clock at the first batch sealed after the floor.
	ClockUnset    bool
	UnsetSince    int64
	UnsetReadings int64
	ClockSetAt    int64
	// Limits: what the hub's per-device limits did to it (limit.go).
	Limits DeviceLimits
}

// DeviceState is the checks' state for one device, kept between runs.
type DeviceState struct {
	LastAlive int64    `json:"last_alive"`
	Open      findings `json:"open,omitempty"`
}

// Check updates the device findings from what the hub knows now.
func (d *DeviceState) Check(c *Config, o *DeviceObs, emit func(Event)) {
	d.LastAlive = max(d.LastAlive, o.LastAlive)
	base := Finding{Device: o.Device}

	// Offline: heard since it went quiet resolves; silence opens.
	after := int64(c.OfflineAfter)
	if f := d.Open.get(Offline); f != nil {
		if d.LastAlive > f.Opened {
			f.Count = int64(o.Backlog)
			f.Detail = fmt.Sprintf("back at %s; %d readings waiting on its disk", fmtTime(d.LastAlive), o.Backlog)
			d.Open.resolve(Offline, d.LastAlive, emit)
		}
	} else if d.LastAlive > 0 && o.Now-d.LastAlive > after {
		// Opened when it became offline by definition: the same time
		// however often the check runs or the hub restarts.
		f := base
		f.Kind, f.Opened, f.Count = Offline, d.LastAlive+after, int64(o.Backlog)
		how := ""
		if o.LastWill {
			how = "; the broker reported its connection lost"
		}
		f.Detail = fmt.Sprintf("nothing heard since %s%s; its readings wait on its disk until it is back", fmtTime(d.LastAlive), how)
		d.Open.open(f, emit)
	}

	// Clock never set.
	if f := d.Open.get(ClockUnset); f != nil {
		f.Count = max(f.Count, o.UnsetReadings)
		if !o.ClockUnset && o.ClockSetAt > 0 {
			f.Detail = fmt.Sprintf("%d readings stamped before %s; clock set at %s (hub time)", f.Count, c.Floor().Format(time.DateOnly), fmtTime(o.ClockSetAt))
			d.Open.resolve(ClockUnset, o.ClockSetAt, emit)
		}
	} else if o.ClockUnset {
		f := base
		f.Kind, f.Opened, f.Count = ClockUnset, o.UnsetSince, o.UnsetReadings
		f.Detail = fmt.Sprintf("stamps readings before %s: its clock was never set (no RTC, no NTP yet)", c.Floor().Format(time.DateOnly))
		d.Open.open(f, emit)
	}

	d.checkLimits(o, emit)

	// Clock offset, judged only on a set clock and fresh batches.
	limit := time.Duration(c.ClockMaxOffset).Seconds()
	if c.ClockMaxOffset < 0 || o.ClockUnset || !o.OffsetKnown {
		return
	}
	off := o.ClockOffset
	if f := d.Open.get(ClockOffset); f != nil {
		if math.Abs(off) <= limit {
			d.Open.resolve(ClockOffset, o.Now, emit)
		} else if math.Abs(off) > math.Abs(f.Value) {
			f.Value = off
		}
	} else if math.Abs(off) > limit {
		f := base
		f.Kind, f.Opened, f.Value = ClockOffset, o.Now, off
		f.Detail = fmt.Sprintf("device clock %+.0f s from the hub's (limit %g s)", off, limit)
		d.Open.open(f, emit)
	}
}

// DroppedEvents returns the opened and resolved events of one gap notice:
// readings the agent dropped, first..last in event time.
func DroppedEvents(device string, readings uint64, first, last int64) []Event {
	f := Finding{Kind: Dropped, Device: device, Opened: first, Count: int64(readings),
		Detail: fmt.Sprintf("the agent dropped %d readings stamped %s..%s under its disk bound", readings, fmtTime(first), fmtTime(last))}
	var out []Event
	fs := findings{}
	fs.open(f, func(e Event) { out = append(out, e) })
	fs.resolve(Dropped, last, func(e Event) { out = append(out, e) })
	return out
}

// Clone returns a deep copy.
func (d *DeviceState) Clone() *DeviceState {
	c := *d
	c.Open = slices.Clone(d.Open)
	return &c
}

// OpenFindings returns the open findings.
func (d *DeviceState) OpenFindings() []Finding { return slices.Clone(d.Open) }

// OpenFindings returns the open findings.
func (s *SeriesState) OpenFindings() []Finding { return slices.Clone(s.Open) }

// Equal reports whether d and o hold the same state.
func (d *DeviceState) Equal(o *DeviceState) bool {
	return d.LastAlive == o.LastAlive && slices.Equal(d.Open, o.Open)
}

// Dormant reports whether nothing can change for the device until the hub
// hears from it again: it is offline (or was never heard alive). Every
// device finding but offline's opening follows what the hub hears, and
// offline is open; the checks skip a dormant device until then.
func (d *DeviceState) Dormant() bool { return d.LastAlive == 0 || d.Open.get(Offline) != nil }
