package mcp9808_test

import (
	"errors"
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/physic"
	drv "periph.io/x/devices/v3/mcp9808"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
	"github.com/freshet-iot/freshet/firmware-sim/chip/mcp9808"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func attach(t *testing.T, opts drv.Opts) (*mcp9808.Chip, *chip.Bus, *drv.Dev) {
	t.Helper()
	c := mcp9808.New()
	bus := chip.NewBus("test")
	addr := uint16(opts.Addr)
	if addr == 0 {
		addr = 0x18
	}
	if err := bus.Attach(addr, c); err != nil {
		t.Fatal(err)
	}
	dev, err := drv.New(bus, &opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, bus, dev
}

func celsius(temp physic.Temperature) float64 {
	return float64(temp-physic.ZeroCelsius) / float64(physic.Celsius)
}

func senseC(t *testing.T, dev *drv.Dev) float64 {
	t.Helper()
	temp, err := dev.SenseTemp()
	if err != nil {
		t.Fatal(err)
	}
	return celsius(temp)
}

// TestDriverReadsProgrammedValues: the driver reads the programmed value
// within half the resolution step (0.03125 °C at the default maximum
// resolution).
func TestDriverReadsProgrammedValues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  drv.Opts
		set   float64
		step  float64
		exact float64 // the quantized value the register holds
	}{
		{"cold", drv.DefaultOpts, -40, 0.0625, -40},
		{"just below zero", drv.DefaultOpts, -0.04, 0.0625, -0.0625},
		{"room", drv.DefaultOpts, 21.37, 0.0625, 21.375},
		{"hot", drv.DefaultOpts, 124.99, 0.0625, 125},
		{"high resolution", drv.Opts{Addr: 0x1A, Res: drv.High}, 21.37, 0.125, 21.375},
		{"medium resolution", drv.Opts{Res: drv.Medium}, 21.37, 0.25, 21.25},
		{"low resolution", drv.Opts{Res: drv.Low}, -10.8, 0.5, -11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, dev := attach(t, tc.opts)
			if err := c.Set(tc.set); err != nil {
				t.Fatal(err)
			}
			got := senseC(t, dev)
			if math.Abs(got-tc.set) > tc.step/2 {
				t.Errorf("read %.4f °C, programmed %.4f °C (tolerance %.4f)", got, tc.set, tc.step/2)
			}
			if got != tc.exact {
				t.Errorf("read %.4f °C, want the register value %.4f °C", got, tc.exact)
			}
		})
	}
}

func TestDriverAlerts(t *testing.T) {
	c, _, dev := attach(t, drv.DefaultOpts)
	lower, upper, crit := 10*physic.Celsius+physic.ZeroCelsius, 30*physic.Celsius+physic.ZeroCelsius, 40*physic.Celsius+physic.ZeroCelsius
	for _, tc := range []struct {
		temp float64
		want []string
	}{
		{20, nil},
		{10, nil},
		{30, nil},
		{5, []string{"lower"}},
		{35, []string{"upper"}},
		{40, []string{"critical", "upper"}},
		{45, []string{"critical", "upper"}},
	} {
		if err := c.Set(tc.temp); err != nil {
			t.Fatal(err)
		}
		temp, alerts, err := dev.SenseWithAlerts(lower, upper, crit)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range alerts {
			got = append(got, a.AlertMode)
		}
		if celsius(temp) != tc.temp || !slices.Equal(got, tc.want) {
			t.Errorf("at %v °C: read %.4f °C, alerts %v, want %v", tc.temp, celsius(temp), got, tc.want)
		}
	}
}

func TestRegisters(t *testing.T) {
	c, bus, _ := attach(t, drv.DefaultOpts)
	read := func(reg byte, n int) []byte {
		t.Helper()
		b := make([]byte, n)
		if err := bus.Tx(0x18, []byte{reg}, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		reg  byte
		want []byte
	}{
		{0x06, []byte{0x00, 0x54}}, // manufacturer ID
		{0x07, []byte{0x04, 0x00}}, // device ID, revision
		{0x08, []byte{0x03, 0x00}}, // resolution 0.0625 °C, then nothing
	} {
		if got := read(tc.reg, 2); !slices.Equal(got, tc.want) {
			t.Errorf("register %#x = % x, want % x", tc.reg, got, tc.want)
		}
	}
	// Shutdown (CONFIG bit 8) stops conversions: T_A keeps its last value.
	if err := c.Set(22); err != nil {
		t.Fatal(err)
	}
	before := read(0x05, 2)
	if err := bus.Tx(0x18, []byte{0x01, 0x01, 0x00}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(30); err != nil {
		t.Fatal(err)
	}
	if got := read(0x05, 2); !slices.Equal(got, before) {
		t.Errorf("T_A in shutdown = % x, want the last conversion % x", got, before)
	}
	if err := bus.Tx(0x18, []byte{0x01, 0x00, 0x00}, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(0x05, 2); got[1] != 30*16&0xFF || got[0]&0x1F != 30*16>>8 {
		t.Errorf("T_A after wake-up = % x, want 30 °C", got)
	}
}

func TestSetRejectsNonFinite(t *testing.T) {
	c := mcp9808.New()
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if err := c.Set(v); !errors.Is(err, chip.ErrValue) {
			t.Errorf("Set(%v): %v, want ErrValue", v, err)
		}
	}
}

func TestFaultNACKFailsDriver(t *testing.T) {
	c, _, dev := attach(t, drv.DefaultOpts)
	c.SetFault(chip.NACK)
	if _, err := dev.SenseTemp(); err == nil {
		t.Fatal("SenseTemp succeeded on a chip that does not acknowledge")
	}
	c.SetFault(chip.Healthy)
	if _, err := dev.SenseTemp(); err != nil {
		t.Fatalf("SenseTemp after the fault cleared: %v", err)
	}
}

func TestFaultStuckFreezesReading(t *testing.T) {
	c, _, dev := attach(t, drv.DefaultOpts)
	if err := c.Set(21); err != nil {
		t.Fatal(err)
	}
	if got := senseC(t, dev); got != 21 {
		t.Fatalf("read %.4f °C, want 21", got)
	}
	c.SetFault(chip.Stuck)
	if err := c.Set(35); err != nil {
		t.Fatal(err)
	}
	if got := senseC(t, dev); got != 21 {
		t.Errorf("stuck chip read %.4f °C after Set(35), want the frozen 21", got)
	}
	c.SetFault(chip.Healthy)
	if got := senseC(t, dev); got != 35 {
		t.Errorf("after clearing Stuck read %.4f °C, want 35", got)
	}
}

func TestFaultSpikeOutOfRange(t *testing.T) {
	c, _, dev := attach(t, drv.DefaultOpts)
	if err := c.Set(21); err != nil {
		t.Fatal(err)
	}
	c.SpikeNext(1)
	if got := senseC(t, dev); got <= 125 {
		t.Errorf("spiked reading %.4f °C, want above the chip's 125 °C limit", got)
	}
	if got := senseC(t, dev); got != 21 {
		t.Errorf("reading after the spike %.4f °C, want 21", got)
	}
}

func TestFaultSlowBlocksDriver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, dev := attach(t, drv.DefaultOpts)
		const delay = 2 * time.Second
		c.SetSlow(delay)
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := dev.SenseTemp()
			done <- err
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("SenseTemp returned (%v) while the chip stalled", err)
		default:
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// SenseTemp is one transaction.
		if elapsed := time.Since(start); elapsed != delay {
			t.Errorf("SenseTemp took %s of virtual time, want %s", elapsed, delay)
		}
		c.SetFault(chip.Healthy)
	})
}
