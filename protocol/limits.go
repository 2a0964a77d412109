package protocol

import (
	"fmt"
	"time"
)

// Limits bound what a message may hold. Decoders check every limit before
// allocating for it, so a hostile message costs at most its own size.
// The zero value of a field means its default (see DefaultLimits).
type Limits struct {
	// MaxMessageBytes bounds an encoded message. Default 64 KiB, which fits
	// the payload limits of AWS IoT Core (128 KiB) and Azure IoT Hub (256 KiB).
	MaxMessageBytes int
	// MaxSeries bounds the series in one batch. Default 256.
	MaxSeries int
	// MaxReadings bounds the readings in one batch, over all series. Default 65536.
	MaxReadings int
	// MaxLabels bounds the labels on one series. Default 16.
	MaxLabels int
	// MaxNameLen bounds device ids, sensor, metric, unit and label names and
	// label values, in bytes. Default 64.
	MaxNameLen int
	// MaxStringLen bounds one string value and free-text fields (versions,
	// rejection and error messages), in bytes. Default 1024.
	MaxStringLen int
	// MaxAckSeqs bounds the applied seqs above the high-water mark, and the
	// rejections, in one ack. Default 1024.
	MaxAckSeqs int
	// MinTime and MaxTime bound every timestamp, in Unix nanoseconds.
	// Defaults: 1970-01-01 (a gateway without a real-time clock stamps its
	// first readings in 1970; they must travel so the hub can flag them) and
	// 2200-01-01. Negative timestamps are never allowed.
	MinTime, MaxTime int64
}

// Default limit values.
const (
	DefaultMaxMessageBytes = 64 << 10
	DefaultMaxSeries       = 256
	DefaultMaxReadings     = 1 << 16
	DefaultMaxLabels       = 16
	DefaultMaxNameLen      = 64
	DefaultMaxStringLen    = 1024
	DefaultMaxAckSeqs      = 1024
)

// DefaultMaxTime is 2200-01-01T00:00:00Z in Unix nanoseconds.
var DefaultMaxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// DefaultLimits returns the limits used when none are given.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxMessageBytes, DefaultMaxMessageBytes)
	def(&l.MaxSeries, DefaultMaxSeries)
	def(&l.MaxReadings, DefaultMaxReadings)
	def(&l.MaxLabels, DefaultMaxLabels)
	def(&l.MaxNameLen, DefaultMaxNameLen)
	def(&l.MaxStringLen, DefaultMaxStringLen)
	def(&l.MaxAckSeqs, DefaultMaxAckSeqs)
	if l.MaxTime == 0 {
		l.MaxTime = DefaultMaxTime
	}
	return l
}

// Validate reports a limit set that cannot work.
func (l Limits) Validate() error {
	l = l.withDefaults()
	switch {
	case l.MaxMessageBytes < 512:
		return fmt.Errorf("max message bytes %d: must be at least 512", l.MaxMessageBytes)
	case l.MinTime < 0:
		return fmt.Errorf("min time %d: must not be negative", l.MinTime)
	case l.MaxTime <= l.MinTime:
		return fmt.Errorf("max time %d: must be after min time %d", l.MaxTime, l.MinTime)
	}
	return nil
}
