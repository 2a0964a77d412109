package bme280_test

import (
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
	"github.com/freshet-iot/freshet/firmware-sim/chip/bme280"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Tolerances the driver reads back with (see doc.go): temperature to the
// nearest 0.01 °C, humidity 0.01 %RH, pressure by result width.
const (
	tempTol = 0.005 + 1e-9
	humTol  = 0.01
)

func pressureTol(o bmxx80.Oversampling, filter bool) float64 {
	if filter || o >= bmxx80.O16x {
		return 0.1
	}
	return 1.6 / float64(int(1)<<(o-1))
}

type reading struct{ tempC, humPct, pressPa float64 }

func decode(e physic.Env) reading {
	return reading{
		tempC:   float64(e.Temperature-physic.ZeroCelsius) / float64(physic.Celsius),
		humPct:  float64(e.Humidity) / float64(physic.PercentRH),
		pressPa: float64(e.Pressure) / float64(physic.Pascal),
	}
}

// attach puts a new chip on a new bus and opens it with periph's driver.
func attach(t *testing.T, opts *bme280.Options, addr uint16, dopts bmxx80.Opts) (*bme280.Chip, *bmxx80.Dev) {
	t.Helper()
	c, err := bme280.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	bus := chip.NewBus("test")
	if err := bus.Attach(addr, c); err != nil {
		t.Fatal(err)
	}
	dev, err := bmxx80.NewI2C(bus, addr, &dopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Halt(); err != nil {
			t.Error(err)
		}
	})
	return c, dev
}

func sense(t *testing.T, dev *bmxx80.Dev) reading {
	t.Helper()
	var e physic.Env
	if err := dev.Sense(&e); err != nil {
		t.Fatal(err)
	}
	return decode(e)
}

func TestDriverReadsProgrammedValues(t *testing.T) {
	o4 := bmxx80.DefaultOpts // 4x oversampling, forced mode
	o1 := bmxx80.Opts{Temperature: bmxx80.O1x, Pressure: bmxx80.O1x, Humidity: bmxx80.O1x}
	o16 := bmxx80.Opts{Temperature: bmxx80.O16x, Pressure: bmxx80.O16x, Humidity: bmxx80.O16x}
	normal := bmxx80.Opts{Temperature: bmxx80.O2x, Pressure: bmxx80.O2x, Humidity: bmxx80.O1x,
		Filter: bmxx80.F16, Standby: 62500 * time.Microsecond}
	for _, tc := range []struct {
		name  string
		model bme280.Model
		opts  bmxx80.Opts
		set   reading
	}{
		{"room", bme280.BME280, o4, reading{21.37, 45.5, 101325}},
		{"cold", bme280.BME280, o4, reading{-38.25, 80, 99000}},
		{"freezing", bme280.BME280, o4, reading{-0.01, 60, 101000}},
		{"hot", bme280.BME280, o4, reading{84.99, 10, 100500}},
		{"dry", bme280.BME280, o4, reading{30, 0.5, 101325}},
		{"humid", bme280.BME280, o4, reading{25, 99.5, 101325}},
		{"saturated", bme280.BME280, o4, reading{25, 100, 101325}},
		{"low pressure", bme280.BME280, o4, reading{-5, 30, 30000}},
		{"high pressure", bme280.BME280, o4, reading{15, 50, 110000}},
		{"1x oversampling", bme280.BME280, o1, reading{18.42, 33.3, 95432.1}},
		{"16x oversampling", bme280.BME280, o16, reading{18.42, 33.3, 95432.1}},
		{"normal mode with filter", bme280.BME280, normal, reading{-12.5, 72.25, 84000.5}},
		{"bmp280", bme280.BMP280, o4, reading{22.22, 0, 100123.4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, dev := attach(t, &bme280.Options{Model: tc.model}, 0x76, tc.opts)
			if err := c.Set(tc.set.tempC, tc.set.humPct, tc.set.pressPa); err != nil {
				t.Fatal(err)
			}
			got := sense(t, dev)
			if math.Abs(got.tempC-tc.set.tempC) > tempTol {
				t.Errorf("temperature %.4f °C, programmed %.2f °C", got.tempC, tc.set.tempC)
			}
			if tol := pressureTol(tc.opts.Pressure, tc.opts.Filter != bmxx80.NoFilter); math.Abs(got.pressPa-tc.set.pressPa) > tol {
				t.Errorf("pressure %.4f Pa, programmed %.2f Pa (tolerance %.2f Pa)", got.pressPa, tc.set.pressPa, tol)
			}
			if math.Abs(got.humPct-tc.set.humPct) > humTol {
				t.Errorf("humidity %.4f %%RH, programmed %.2f %%RH", got.humPct, tc.set.humPct)
			}
		})
	}
}

func TestDriverFollowsSet(t *testing.T) {
	c, dev := attach(t, nil, 0x77, bmxx80.DefaultOpts)
	for _, temp := range []float64{10, 11.11, -3.5} {
		if err := c.Set(temp, 50, 101325); err != nil {
			t.Fatal(err)
		}
		if got := sense(t, dev); math.Abs(got.tempC-temp) > tempTol {
			t.Fatalf("temperature %.4f °C after Set(%.2f)", got.tempC, temp)
		}
	}
}

func TestSetRejectsNonFinite(t *testing.T) {
	c, err := bme280.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []reading{{math.NaN(), 50, 1e5}, {20, math.Inf(1), 1e5}, {20, 50, math.Inf(-1)}} {
		if err := c.Set(v.tempC, v.humPct, v.pressPa); !errors.Is(err, chip.ErrValue) {
			t.Errorf("Set(%v): %v, want ErrValue", v, err)
		}
	}
	if _, err := bme280.New(&bme280.Options{Model: 7}); err == nil {
		t.Error("New with an unknown model succeeded")
	}
}

func TestFaultNACKFailsDriver(t *testing.T) {
	c, dev := attach(t, nil, 0x76, bmxx80.DefaultOpts)
	c.SetFault(chip.NACK)
	var e physic.Env
	if err := dev.Sense(&e); err == nil {
		t.Fatal("Sense succeeded on a chip that does not acknowledge")
	}
	c.SetFault(chip.Healthy)
	if err := dev.Sense(&e); err != nil {
		t.Fatalf("Sense after the fault cleared: %v", err)
	}
}

func TestFaultStuckFreezesReading(t *testing.T) {
	c, dev := attach(t, nil, 0x76, bmxx80.DefaultOpts)
	if err := c.Set(21, 40, 100000); err != nil {
		t.Fatal(err)
	}
	before := sense(t, dev)
	c.SetFault(chip.Stuck)
	if err := c.Set(35, 80, 90000); err != nil {
		t.Fatal(err)
	}
	if got := sense(t, dev); got != before {
		t.Errorf("stuck chip read %+v after Set changed, want the frozen %+v", got, before)
	}
	c.SetFault(chip.Healthy)
	if got := sense(t, dev); math.Abs(got.tempC-35) > tempTol || math.Abs(got.humPct-80) > humTol {
		t.Errorf("after clearing Stuck read %+v, want 35 °C, 80 %%RH", got)
	}
}

func TestFaultSpikeOutOfRange(t *testing.T) {
	c, dev := attach(t, nil, 0x76, bmxx80.DefaultOpts)
	if err := c.Set(21, 40, 100000); err != nil {
		t.Fatal(err)
	}
	c.SpikeNext(1)
	if got := sense(t, dev); got.tempC <= 85 {
		t.Errorf("spiked reading %.2f °C, want above the chip's 85 °C limit", got.tempC)
	}
	if got := sense(t, dev); math.Abs(got.tempC-21) > tempTol {
		t.Errorf("reading after the spike %.2f °C, want 21 °C", got.tempC)
	}
}

func TestFaultSlowBlocksDriver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, dev := attach(t, nil, 0x76, bmxx80.DefaultOpts)
		const delay = time.Second
		c.SetSlow(delay)
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			var e physic.Env
			done <- dev.Sense(&e)
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Sense returned (%v) while the chip stalled", err)
		default:
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Sense is three transactions: trigger, status, data.
		if elapsed := time.Since(start); elapsed < 3*delay {
			t.Errorf("Sense took %s of virtual time, want at least %s", elapsed, 3*delay)
		}
		c.SetFault(chip.Healthy)
	})
}
