package quality

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// SeriesMeta is what the checks know of a series besides its readings.
type SeriesMeta struct {
	Device, Sensor, Metric, Unit string
	Limits                       Limits
	// Interval is the sensor's read interval from the agent's status; 0 if
	// unknown.
	Interval time.Duration
	// Floor: readings stamped before it (Unix ns) come from an unset clock
	// and are not checked.
	Floor int64
}

// SeriesState is the checks' state for one series, kept between runs.
type SeriesState struct {
	// Cursor: readings stamped at or before it have been checked.
	Cursor int64 `json:"cursor"`
	// Last reading checked (Has: there is one since the clock was set).
	Has   bool    `json:"has,omitempty"`
	LastT int64   `json:"last_t,omitempty"`
	LastV float64 `json:"last_v,omitempty"`
	// Last reading within range, for the rate check.
	HasGood bool    `json:"has_good,omitempty"`
	GoodT   int64   `json:"good_t,omitempty"`
	GoodV   float64 `json:"good_v,omitempty"`
	// The run of equal values ending at the last reading.
	RunStart int64 `json:"run_start,omitempty"`
	RunCount int64 `json:"run_count,omitempty"`
	// Spacings are the last few intervals between readings, for the
	// typical interval when neither config nor status give it.
	Spacings []int64  `json:"spacings,omitempty"`
	Open     findings `json:"open,omitempty"`
}

// NewSeriesState returns the state of a series not checked yet.
func NewSeriesState() *SeriesState { return &SeriesState{Cursor: math.MinInt64} }

const maxSpacings = 5

// interval returns the expected interval: configured, from the status, or
// the median of the recent spacings (0 if there are too few).
func (s *SeriesState) interval(m *SeriesMeta) int64 {
	switch {
	case m.Limits.Interval > 0:
		return int64(m.Limits.Interval)
	case m.Interval > 0:
		return int64(m.Interval)
	case len(s.Spacings) >= 3:
		var sp [maxSpacings]int64 // on the stack: this runs for every reading
		n := copy(sp[:], s.Spacings)
		slices.Sort(sp[:n])
		return sp[n/2]
	}
	return 0
}

// Observe checks one reading. Readings must come in time order, after the
// cursor (the caller reads them so); others are ignored.
func (s *SeriesState) Observe(m *SeriesMeta, t int64, v float64, emit func(Event)) {
	if t <= s.Cursor {
		return
	}
	s.Cursor = t
	if t < m.Floor { // the clock was not set: a device finding, not the series'
		s.Has, s.HasGood = false, false
		return
	}
	l := &m.Limits
	base := Finding{Device: m.Device, Sensor: m.Sensor, Metric: m.Metric}
	iv := s.interval(m)
	if s.Has {
		d := t - s.LastT
		if s.Open.get(Silent) != nil {
			s.Open.get(Silent).Count = missing(d, iv)
			s.Open.resolve(Silent, t, emit)
		} else if l.SilentIntervals > 0 && iv > 0 && float64(d) > l.SilentIntervals*float64(iv) {
			f := base
			f.Kind, f.Opened, f.Count = Silent, s.LastT+iv, missing(d, iv)
			f.Detail = fmt.Sprintf("no reading for %s (expected every %s)", fmtDur(d), fmtDur(iv))
			s.Open.open(f, emit)
			s.Open.resolve(Silent, t, emit)
		}
		if d > 0 {
			s.Spacings = append(s.Spacings, d)
			if len(s.Spacings) > maxSpacings {
				s.Spacings = slices.Delete(s.Spacings, 0, 1)
			}
		}
	}

	// Range.
	out := v < l.Min || v > l.Max
	if f := s.Open.get(OutOfRange); f != nil {
		if out {
			f.Count++
			f.Value = worse(f.Value, v, l.Min, l.Max)
		} else {
			s.Open.resolve(OutOfRange, t, emit)
		}
	} else if out {
		f := base
		f.Kind, f.Opened, f.Value, f.Count = OutOfRange, t, v, 1
		f.Detail = fmt.Sprintf("%s outside %g..%g", fmtVal(v, m.Unit), l.Min, l.Max)
		s.Open.open(f, emit)
	}

	// Rate, between readings within range.
	if !out {
		if s.HasGood && l.MaxRate > 0 && t > s.GoodT {
			rate := math.Abs(v-s.GoodV) / (float64(t-s.GoodT) / 1e9)
			if f := s.Open.get(Rate); f != nil {
				if rate > l.MaxRate {
					f.Count++
					f.Value = max(f.Value, rate)
				} else {
					s.Open.resolve(Rate, t, emit)
				}
			} else if rate > l.MaxRate {
				f := base
				f.Kind, f.Opened, f.Value, f.Count = Rate, t, rate, 1
				f.Detail = fmt.Sprintf("%s to %s in %s: %.3g %s/s, limit %g", fmtVal(s.GoodV, ""), fmtVal(v, m.Unit), fmtDur(t-s.GoodT), rate, m.Unit, l.MaxRate)
				s.Open.open(f, emit)
			}
		}
		s.GoodT, s.GoodV, s.HasGood = t, v, true
	}

	// Stuck.
	if s.Has && v == s.LastV {
		s.RunCount++
	} else {
		// Resolved just after the last equal reading, so that a new run
		// that starts at t and gets stuck opens at a distinct time.
		s.Open.resolve(Stuck, s.LastT+1, emit)
		s.RunStart, s.RunCount = t, 1
	}
	if f := s.Open.get(Stuck); f != nil {
		f.Count = s.RunCount
	} else if l.StuckCount > 0 && s.RunCount >= l.StuckCount ||
		l.StuckAfter > 0 && s.RunCount >= StuckMinCount && t-s.RunStart >= int64(l.StuckAfter) {
		f := base
		f.Kind, f.Opened, f.Value, f.Count = Stuck, s.RunStart, v, s.RunCount
		f.Detail = fmt.Sprintf("%s since %s", fmtVal(v, m.Unit), fmtTime(s.RunStart))
		s.Open.open(f, emit)
	}
	s.LastT, s.LastV, s.Has = t, v, true
}

// Advance moves the cursor to progress, the event time up to which the
// device has delivered everything, and opens Silent if the series has had
// no reading for too long by then.
func (s *SeriesState) Advance(m *SeriesMeta, progress int64, emit func(Event)) {
	if progress <= s.Cursor {
		return
	}
	s.Cursor = progress
	l := &m.Limits
	iv := s.interval(m)
	if !s.Has || s.Open.get(Silent) != nil || l.SilentIntervals <= 0 || iv <= 0 {
		return
	}
	if d := progress - s.LastT; float64(d) > l.SilentIntervals*float64(iv) {
		f := Finding{Kind: Silent, Device: m.Device, Sensor: m.Sensor, Metric: m.Metric, Opened: s.LastT + iv, Count: missing(d, iv)}
		f.Detail = fmt.Sprintf("no reading since %s (expected every %s)", fmtTime(s.LastT), fmtDur(iv))
		s.Open.open(f, emit)
	}
}

// missing is how many readings every iv fit strictly between two readings d apart.
func missing(d, iv int64) int64 {
	if iv <= 0 {
		return 0
	}
	return max(1, int64(math.Round(float64(d)/float64(iv)))-1)
}

// Skip moves the cursor to to without checking the readings up to it: the
// hub does not hold all of them (another hub, or state it lost, holds
// some). Nothing is judged across the skip: an open silence is resolved at
// to, a stuck run ends at its last reading, and the next reading starts
// afresh (no gap, rate or run measured from before).
func (s *SeriesState) Skip(to int64, emit func(Event)) {
	if to <= s.Cursor {
		return
	}
	s.Cursor = to
	s.Open.resolve(Silent, to, emit)
	if s.Has {
		s.Open.resolve(Stuck, s.LastT+1, emit)
	}
	s.Has, s.HasGood = false, false
	s.RunStart, s.RunCount = 0, 0
}
