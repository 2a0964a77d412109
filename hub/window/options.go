package window

import (
	"fmt"
	"slices"
	"time"
)

// Options configure a Store. A zero field takes its default.
type Options struct {
	// Sizes are the window sizes. Each must be a positive multiple of one
	// minute that divides one hour or is a multiple of it (1m, 5m, 15m, 1h,
	// 24h ...); duplicates are refused. Default 1m and 1h. Windows are
	// aligned to the Unix epoch: a window starts at t - t mod size.
	Sizes []time.Duration
	// AllowedLateness is how far a device's watermark must pass a window's
	// end before the window closes. Default 2m.
	AllowedLateness time.Duration
	// IdleTimeout closes every window of a device that has sent no batch for
	// this long on the hub's clock. Default 5m.
	IdleTimeout time.Duration
	// CorrectionHorizon is how far behind its device's watermark a reading
	// may be and still be merged (and correct an emitted window); older
	// readings are too late. At least AllowedLateness. Default 72h.
	CorrectionHorizon time.Duration
	// MaxFutureSkew: a reading stamped later than the hub's clock plus this
	// is merged but does not advance the watermark. Default 5m.
	MaxFutureSkew time.Duration
}

// Defaults of Options.
const (
	DefaultAllowedLateness   = 2 * time.Minute
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultCorrectionHorizon = 72 * time.Hour
	DefaultMaxFutureSkew     = 5 * time.Minute
)

// DefaultSizes returns the default window sizes, 1m and 1h.
func DefaultSizes() []time.Duration { return []time.Duration{time.Minute, time.Hour} }

// maxDuration bounds every option, so that sums of a few options and a
// timestamp stay far from int64 overflow (see maxTime).
const maxDuration = 366 * 24 * time.Hour

// withDefaults validates o and returns it with defaults filled in and the
// sizes sorted ascending. Errors name the field.
func (o Options) withDefaults() (Options, error) {
	if len(o.Sizes) == 0 {
		o.Sizes = DefaultSizes()
	} else {
		o.Sizes = slices.Clone(o.Sizes)
	}
	for i, d := range o.Sizes {
		switch {
		case d <= 0 || d > maxDuration:
			return o, fmt.Errorf("%w: Sizes[%d] = %v: must be in (0, %v]", ErrOptions, i, d, maxDuration)
		case d%time.Minute != 0:
			return o, fmt.Errorf("%w: Sizes[%d] = %v: must be a multiple of 1m", ErrOptions, i, d)
		case time.Hour%d != 0 && d%time.Hour != 0:
			return o, fmt.Errorf("%w: Sizes[%d] = %v: must divide 1h or be a multiple of it", ErrOptions, i, d)
		case slices.Contains(o.Sizes[:i], d):
			return o, fmt.Errorf("%w: Sizes[%d] = %v: duplicate", ErrOptions, i, d)
		}
	}
	slices.Sort(o.Sizes)
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"AllowedLateness", &o.AllowedLateness, DefaultAllowedLateness},
		{"IdleTimeout", &o.IdleTimeout, DefaultIdleTimeout},
		{"CorrectionHorizon", &o.CorrectionHorizon, DefaultCorrectionHorizon},
		{"MaxFutureSkew", &o.MaxFutureSkew, DefaultMaxFutureSkew},
	} {
		if *f.v < 0 || *f.v > maxDuration {
			return o, fmt.Errorf("%w: %s = %v: must be in [0, %v]", ErrOptions, f.name, *f.v, maxDuration)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if o.CorrectionHorizon < o.AllowedLateness {
		return o, fmt.Errorf("%w: CorrectionHorizon = %v: must be at least AllowedLateness (%v)", ErrOptions, o.CorrectionHorizon, o.AllowedLateness)
	}
	return o, nil
}
