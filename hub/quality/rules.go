package quality

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/freshet-iot/freshet/internal/cfgfile"
)

// Config is the quality section of the hub's config. The zero value is
// valid: every threshold has a default.
type Config struct {
	// Interval is how often the checks run. Default 5s.
	Interval cfgfile.Duration `yaml:"interval"`
	// OfflineAfter: a device not heard from (no batch, no online status)
	// for this long is offline. An agent sends its status every minute
	// while connected (mqtt.status_interval), so the default 3m is three
	// missed heartbeats.
	OfflineAfter cfgfile.Duration `yaml:"offline_after"`
	// ClockMaxOffset: a device clock further than this from the hub's is a
	// finding. Default 2m. Negative turns the check off.
	ClockMaxOffset cfgfile.Duration `yaml:"clock_max_offset"`
	// ClockFloor: readings stamped before this date come from a clock that
	// was never set (a gateway without a real-time clock before NTP).
	// Default 2020-01-01.
	ClockFloor string `yaml:"clock_floor"`
	// Metrics overrides the defaults per metric name.
	Metrics map[string]Rule `yaml:"metrics"`
	// Sensors overrides per sensor; later entries win over earlier ones.
	Sensors []SensorRule `yaml:"sensors"`
}

// Rule holds series thresholds; a field left out inherits (from the
// metric's defaults, then the metric's rule, then matching sensor rules).
type Rule struct {
	// Min and Max bound the values (the operating or physical range).
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
	// MaxRate is the fastest plausible change, in units per second,
	// between two consecutive readings; 0 turns the check off.
	MaxRate *float64 `yaml:"max_rate"`
	// StuckAfter: the same value for this long is stuck (with at least
	// StuckMinCount readings); 0 turns it off. Default 2h.
	StuckAfter *cfgfile.Duration `yaml:"stuck_after"`
	// StuckCount: the same value this many times in a row is stuck; 0
	// (the default) turns it off.
	StuckCount *int `yaml:"stuck_count"`
	// SilentIntervals: a series with no reading for this many expected
	// intervals is silent; 0 turns it off. Default 3.
	SilentIntervals *float64 `yaml:"silent_intervals"`
	// Interval is the expected interval between readings. Default: the
	// sensor's interval from the agent's status, else the series' typical
	// spacing.
	Interval *cfgfile.Duration `yaml:"interval"`
}

// SensorRule applies Rule to the series matching every non-empty field.
type SensorRule struct {
	Device string `yaml:"device"`
	Sensor string `yaml:"sensor"`
	Metric string `yaml:"metric"`
	Rule   `yaml:",inline"`
}

// Limits are the thresholds resolved for one series.
type Limits struct {
	Min, Max        float64 // -Inf, +Inf when unset
	MaxRate         float64 // units per second; 0 off
	StuckAfter      time.Duration
	StuckCount      int64
	SilentIntervals float64
	Interval        time.Duration // 0: from status or data
}

// Defaults.
const (
	DefaultInterval        = 5 * time.Second
	DefaultOfflineAfter    = 3 * time.Minute
	DefaultClockMaxOffset  = 2 * time.Minute
	DefaultStuckAfter      = 2 * time.Hour
	DefaultSilentIntervals = 3
	// StuckMinCount: a value repeated fewer times is never stuck by
	// duration alone (a sensor read hourly repeats by chance).
	StuckMinCount = 10
)

// DefaultClockFloor is 2020-01-01: no freshet reading was taken before.
var DefaultClockFloor = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// metricDefaults are the built-in ranges and rates: the physical range the
// agents also enforce (agent/sensor.DefaultRange), and the fastest change
// a real environment makes between two readings.
func metricDefaults(metric, unit string) Limits {
	l := Limits{Min: math.Inf(-1), Max: math.Inf(1), StuckAfter: DefaultStuckAfter, SilentIntervals: DefaultSilentIntervals}
	switch {
	case metric == "temperature" && unit == "C":
		l.Min, l.Max, l.MaxRate = -60, 125, 5
	case metric == "humidity" && unit == "%":
		l.Min, l.Max, l.MaxRate = 0, 100, 20
	case metric == "pressure" && unit == "hPa":
		l.Min, l.Max, l.MaxRate = 300, 1100, 5
	}
	return l
}

// Validate checks every key and fills in defaults; errors name the key.
func (c *Config) Validate() error {
	bad := func(key, f string, a ...any) error { return fmt.Errorf("quality.%s: %s", key, fmt.Sprintf(f, a...)) }
	if c.Interval == 0 {
		c.Interval = cfgfile.Duration(DefaultInterval)
	}
	if c.Interval < cfgfile.Duration(100*time.Millisecond) {
		return bad("interval", "%v is below 100ms", c.Interval)
	}
	if c.OfflineAfter == 0 {
		c.OfflineAfter = cfgfile.Duration(DefaultOfflineAfter)
	}
	if c.OfflineAfter < 0 {
		return bad("offline_after", "must be positive")
	}
	if c.ClockMaxOffset == 0 {
		c.ClockMaxOffset = cfgfile.Duration(DefaultClockMaxOffset)
	}
	if c.ClockFloor != "" {
		if _, err := time.Parse(time.DateOnly, c.ClockFloor); err != nil {
			return bad("clock_floor", "%q: want a date like 2020-01-01", c.ClockFloor)
		}
	}
	for _, m := range slices.Sorted(maps.Keys(c.Metrics)) {
		r := c.Metrics[m]
		if err := r.validate(); err != nil {
			return bad("metrics."+m+"."+err.key, "%s", err.msg)
		}
	}
	for i, s := range c.Sensors {
		if s.Device == "" && s.Sensor == "" && s.Metric == "" {
			return bad(fmt.Sprintf("sensors[%d]", i), "name at least one of device, sensor, metric")
		}
		if err := s.Rule.validate(); err != nil {
			return bad(fmt.Sprintf("sensors[%d].%s", i, err.key), "%s", err.msg)
		}
	}
	return nil
}

// Floor returns ClockFloor as a time (DefaultClockFloor if unset).
func (c *Config) Floor() time.Time {
	if t, err := time.Parse(time.DateOnly, c.ClockFloor); err == nil {
		return t
	}
	return DefaultClockFloor
}

type ruleErr struct{ key, msg string }

func (r *Rule) validate() *ruleErr {
	finite := func(p *float64) bool { return p == nil || !math.IsNaN(*p) && !math.IsInf(*p, 0) }
	switch {
	case !finite(r.Min):
		return &ruleErr{"min", "must be a finite number"}
	case !finite(r.Max):
		return &ruleErr{"max", "must be a finite number"}
	case r.Min != nil && r.Max != nil && *r.Min > *r.Max:
		return &ruleErr{"max", fmt.Sprintf("%g is below min %g", *r.Max, *r.Min)}
	case r.MaxRate != nil && (!finite(r.MaxRate) || *r.MaxRate < 0):
		return &ruleErr{"max_rate", "must be a number >= 0 (0 turns the check off)"}
	case r.StuckAfter != nil && *r.StuckAfter < 0:
		return &ruleErr{"stuck_after", "must be >= 0 (0 turns it off)"}
	case r.StuckCount != nil && (*r.StuckCount < 0 || *r.StuckCount == 1):
		return &ruleErr{"stuck_count", "must be 0 (off) or at least 2"}
	case r.SilentIntervals != nil && (!finite(r.SilentIntervals) || *r.SilentIntervals != 0 && *r.SilentIntervals < 1.5):
		return &ruleErr{"silent_intervals", "must be 0 (off) or at least 1.5"}
	case r.Interval != nil && *r.Interval <= 0:
		return &ruleErr{"interval", "must be positive"}
	}
	return nil
}

func (r *Rule) apply(l *Limits) {
	if r.Min != nil {
		l.Min = *r.Min
	}
	if r.Max != nil {
		l.Max = *r.Max
	}
	if r.MaxRate != nil {
		l.MaxRate = *r.MaxRate
	}
	if r.StuckAfter != nil {
		l.StuckAfter = time.Duration(*r.StuckAfter)
	}
	if r.StuckCount != nil {
		l.StuckCount = int64(*r.StuckCount)
	}
	if r.SilentIntervals != nil {
		l.SilentIntervals = *r.SilentIntervals
	}
	if r.Interval != nil {
		l.Interval = time.Duration(*r.Interval)
	}
}

// For returns the thresholds of one series: the metric's defaults, the
// metric's rule, then every matching sensor rule in order.
func (c *Config) For(device, sensor, metric, unit string) Limits {
	l := metricDefaults(metric, unit)
	if r, ok := c.Metrics[metric]; ok {
		r.apply(&l)
	}
	for i := range c.Sensors {
		s := &c.Sensors[i]
		if (s.Device == "" || s.Device == device) && (s.Sensor == "" || s.Sensor == sensor) && (s.Metric == "" || s.Metric == metric) {
			s.Rule.apply(&l)
		}
	}
	return l
}
