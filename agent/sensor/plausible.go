package sensor

import (
	"fmt"
	"math"

	"github.com/freshet-iot/freshet/protocol"
)

// DefaultRange returns the physical range a metric in a unit can take, the
// default plausible range: temperature -60..125 C (what consumer sensors and
// SoCs survive), humidity 0..100 %, pressure 300..1100 hPa (from the Dead
// Sea to above Everest, and storms). Other metrics have no default range, ok
// is false, and only NaN and ±Inf are implausible unless the config sets a
// range.
func DefaultRange(metric, unit string) (lo, hi float64, ok bool) {
	switch {
	case metric == "temperature" && unit == "C":
		return -60, 125, true
	case metric == "humidity" && unit == "%":
		return 0, 100, true
	case metric == "pressure" && unit == "hPa":
		return 300, 1100, true
	}
	return math.Inf(-1), math.Inf(1), false
}

// defaultResolution is the resolution of a known metric in its usual unit, 0
// (send as is) for anything else. The exec source uses it.
func defaultResolution(metric, unit string) float64 {
	if _, _, ok := DefaultRange(metric, unit); ok {
		return 0.01
	}
	return 0
}

// bounds returns the plausible range of metric in unit: the config's
// override, bound by bound, over the default.
func (c *Config) bounds(metric, unit string) (lo, hi float64) {
	lo, hi, _ = DefaultRange(metric, unit)
	if r, ok := c.Plausible[metric]; ok {
		if r.Min != nil {
			lo = *r.Min
		}
		if r.Max != nil {
			hi = *r.Max
		}
	}
	return lo, hi
}

// checkSample checks what a Source returned: well-formed names and values
// (ErrParse otherwise) and plausible numbers (ErrImplausible otherwise). One
// bad value fails the whole sample: the values of one conversion share a bus
// transfer, and a glitch that corrupts one leaves the others suspect.
func (c *Config) checkSample(vals []Value) error {
	if len(vals) == 0 {
		return fmt.Errorf("%w: no values", ErrParse)
	}
	for i, v := range vals {
		if err := checkName(v.Metric); err != nil {
			return fmt.Errorf("%w: value %d: metric name %v", ErrParse, i, err)
		}
		for _, w := range vals[:i] {
			if w.Metric == v.Metric {
				return fmt.Errorf("%w: metric %s twice in one sample", ErrParse, v.Metric)
			}
		}
		if err := checkPrintable(v.Unit, true); err != nil {
			return fmt.Errorf("%w: %s: unit %v", ErrParse, v.Metric, err)
		}
		if v.Resolution != 0 {
			if v.Type != protocol.Float {
				return fmt.Errorf("%w: %s: resolution on a %s value", ErrParse, v.Metric, v.Type)
			}
			if _, err := protocol.ResolutionExp(v.Resolution); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrParse, v.Metric, err)
			}
		}
		var x float64
		switch v.Type {
		case protocol.Float:
			x = v.Float
		case protocol.Int:
			x = float64(v.Int)
		case protocol.Bool:
			continue
		case protocol.String:
			if err := checkText(v.Str); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrParse, v.Metric, err)
			}
			continue
		default:
			return fmt.Errorf("%w: %s: value type %d", ErrParse, v.Metric, v.Type)
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%w: %s is %g", ErrImplausible, v.Metric, x)
		}
		if lo, hi := c.bounds(v.Metric, v.Unit); x < lo || x > hi {
			return fmt.Errorf("%w: %s %g %s outside %g..%g", ErrImplausible, v.Metric, x, v.Unit, lo, hi)
		}
		if v.Type == protocol.Float && v.Resolution != 0 {
			if _, err := protocol.Quantize(x, v.Resolution); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrImplausible, v.Metric, err)
			}
		}
	}
	return nil
}
