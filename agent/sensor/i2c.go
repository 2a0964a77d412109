package sensor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/aht20"
	"periph.io/x/devices/v3/bmxx80"
	"periph.io/x/devices/v3/mcp9808"

	"github.com/freshet-iot/freshet/protocol"
)

// chip is what the periph drivers used here have in common.
type chip interface {
	Sense(e *physic.Env) error
	Halt() error
}

var (
	_ chip = (*bmxx80.Dev)(nil)
	_ chip = (*mcp9808.Dev)(nil)
	_ chip = (*aht20.Dev)(nil)
)

// chipSource reads an I²C chip through its periph driver. The driver is
// created on the first read and again after any failed read, so a chip that
// was absent at boot, or lost its configuration in a brown-out, is
// re-detected and re-configured instead of read with stale settings.
type chipSource struct {
	typ     string
	addr    uint16
	bus     i2c.BusCloser
	metrics []metricSpec

	mu  sync.Mutex
	dev chip // nil: not initialised

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func openChip(c Config, env Env, metrics []metricSpec) (*chipSource, error) {
	if env.OpenI2C == nil {
		return nil, errors.New("no I²C bus opener in the environment")
	}
	bus, err := env.OpenI2C(c.Bus)
	if err != nil {
		return nil, fmt.Errorf("open I²C bus %q: %w", c.Bus, err)
	}
	return &chipSource{typ: c.Type, addr: c.Address, bus: bus, metrics: metrics}, nil
}

func (s *chipSource) Read(ctx context.Context) ([]Value, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, errors.New("source closed")
	}
	if s.dev == nil {
		d, err := s.init()
		if err != nil {
			return nil, fmt.Errorf("init %s at 0x%02x: %w", s.typ, s.addr, classifyChipErr(err))
		}
		s.dev = d
	}
	var e physic.Env
	if err := s.dev.Sense(&e); err != nil {
		s.dev = nil
		return nil, fmt.Errorf("read %s at 0x%02x: %w", s.typ, s.addr, classifyChipErr(err))
	}
	vals := make([]Value, len(s.metrics))
	for i, m := range s.metrics {
		var x float64
		switch m.name {
		case "temperature":
			x = e.Temperature.Celsius()
		case "humidity":
			x = float64(e.Humidity) / float64(physic.PercentRH)
		case "pressure":
			x = float64(e.Pressure) / float64(100*physic.Pascal) // hPa
		}
		vals[i] = Value{Metric: m.name, Unit: m.unit, Type: protocol.Float, Resolution: m.res, Float: x}
	}
	return vals, nil
}

// init creates the driver, which probes and configures the chip.
func (s *chipSource) init() (chip, error) {
	switch s.typ {
	case TypeBME280, TypeBMP280:
		opts := bmxx80.DefaultOpts
		if s.typ == TypeBMP280 {
			opts.Humidity = bmxx80.Off
		}
		d, err := bmxx80.NewI2C(s.bus, s.addr, &opts)
		if err != nil {
			return nil, err
		}
		// The driver detects the chip from its id register.
		found, _, _ := strings.Cut(d.String(), "{")
		if found != "BME280" && (s.typ == TypeBME280 || found != "BMP280") {
			return nil, fmt.Errorf("found a %s, not a %s", found, strings.ToUpper(s.typ))
		}
		return d, nil
	case TypeMCP9808:
		return mcp9808.New(s.bus, &mcp9808.Opts{Addr: int(s.addr), Res: mcp9808.Maximum})
	case TypeAHT20:
		opts := aht20.DefaultOpts
		return aht20.NewI2C(s.bus, &opts)
	}
	return nil, fmt.Errorf("no driver for type %q", s.typ)
}

// classifyChipErr marks the drivers' typed timeouts as ErrTimeout; anything
// else stays an I/O error.
func classifyChipErr(err error) error {
	if _, ok := errors.AsType[*aht20.ReadTimeoutError](err); ok {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

// Close halts the chip (a low-power mode where it has one) unless a read is
// stuck on the bus, and closes the bus.
func (s *chipSource) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		var haltErr error
		if s.mu.TryLock() {
			if s.dev != nil {
				haltErr = s.dev.Halt()
				s.dev = nil
			}
			s.mu.Unlock()
		}
		s.closeErr = errors.Join(haltErr, s.bus.Close())
	})
	return s.closeErr
}
