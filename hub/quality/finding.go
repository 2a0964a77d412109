package quality

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Kind names what a finding is about.
type Kind string

// The kinds of finding. Series kinds are checked in event time, device
// kinds on the hub's clock.
const (
	// Offline (device): nothing heard for OfflineAfter; readings wait on its disk.
	Offline Kind = "offline"
	// ClockUnset (device): it stamps readings before ClockFloor (no RTC, no NTP yet).
	ClockUnset Kind = "clock_unset"
	// ClockOffset (device): its clock is more than ClockMaxOffset from the hub's.
	ClockOffset Kind = "clock_offset"
	// Dropped (device): readings the agent reported it dropped under its disk bound.
	Dropped Kind = "dropped"
	// Limit (device, or the hub's own with no device): a limit of the hub's
	// config (limits) refused a device's batches or forgot its epochs, or
	// refused new devices (see limit.go).
	Limit Kind = "limit"
	// Silent (series): no reading for SilentIntervals expected intervals
	// while its device makes progress; resolved with the missing count.
	Silent Kind = "silent"
	// Stuck (series): the same value for StuckAfter or StuckCount readings.
	Stuck Kind = "stuck"
	// OutOfRange (series): values outside Min..Max.
	OutOfRange Kind = "out_of_range"
	// Rate (series): consecutive readings changing faster than MaxRate per second.
	Rate Kind = "rate"
)

// Kinds lists every kind, device kinds first.
func Kinds() []Kind {
	return []Kind{Offline, ClockUnset, ClockOffset, Dropped, Limit, Silent, Stuck, OutOfRange, Rate}
}

// Finding is one finding, open or resolved.
type Finding struct {
	Kind   Kind   `json:"kind"`
	Device string `json:"device"`
	Sensor string `json:"sensor,omitempty"` // series findings only
	Metric string `json:"metric,omitempty"`
	// Opened and Resolved (0 while open) are Unix ns. Series findings are
	// in event time: when the condition started and ended (stuck resolves
	// just after its last equal reading). Device findings are on the hub's
	// clock: offline opens OfflineAfter after the device was last heard,
	// clock_offset when the hub notices, clock_unset when the first unset
	// batch arrives; they resolve when it hears otherwise.
	Opened   int64 `json:"opened"`
	Resolved int64 `json:"resolved,omitempty"`
	// Value: the stuck value, the most extreme value out of range, the
	// fastest rate (units/s), the clock offset (s); 0 for the others.
	Value float64 `json:"value"`
	// Count: readings stuck, out of range, too fast, missing (silent),
	// stamped before the clock was set, dropped; for offline, the readings
	// waiting on its disk at its last status.
	Count  int64  `json:"count"`
	Detail string `json:"detail"`
}

// Open reports whether the finding is still open.
func (f *Finding) Open() bool { return f.Resolved == 0 }

// Event is a change of a finding's state.
type Event struct {
	Finding
	// State is "opened" or "resolved"; Time is Opened or Resolved.
	State string
	Time  int64
}

// Event states.
const (
	StateOpened   = "opened"
	StateResolved = "resolved"
)

// findings is the open findings of one device or series, at most one per kind.
type findings []Finding

func (fs *findings) get(k Kind) *Finding {
	for i := range *fs {
		if (*fs)[i].Kind == k {
			return &(*fs)[i]
		}
	}
	return nil
}

func (fs *findings) open(f Finding, emit func(Event)) *Finding {
	*fs = append(*fs, f)
	emit(Event{Finding: f, State: StateOpened, Time: f.Opened})
	return &(*fs)[len(*fs)-1]
}

// resolve closes the open finding of kind k at t (after its opening).
func (fs *findings) resolve(k Kind, t int64, emit func(Event)) {
	i := slices.IndexFunc(*fs, func(f Finding) bool { return f.Kind == k })
	if i < 0 {
		return
	}
	f := (*fs)[i]
	f.Resolved = max(t, f.Opened+1)
	*fs = slices.Delete(*fs, i, i+1)
	emit(Event{Finding: f, State: StateResolved, Time: f.Resolved})
}

func fmtTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

func fmtDur(ns int64) string {
	d := time.Duration(ns)
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	return d.String()
}

func fmtVal(v float64, unit string) string {
	s := fmt.Sprintf("%g", v)
	if unit != "" {
		s += " " + unit
	}
	return s
}

func worse(old, v, lo, hi float64) float64 {
	if math.Abs(v-clamp(v, lo, hi)) > math.Abs(old-clamp(old, lo, hi)) {
		return v
	}
	return old
}

func clamp(v, lo, hi float64) float64 { return min(max(v, lo), hi) }
