package aht20_test

import (
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/physic"
	drv "periph.io/x/devices/v3/aht20"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
	"github.com/freshet-iot/freshet/firmware-sim/chip/aht20"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Tolerances: one ADC step is 200/2^20 °C and 100/2^20 %RH.
const (
	tempTol = 0.0002
	humTol  = 0.0001
)

func attach(t *testing.T) (*aht20.Chip, *chip.Bus, *drv.Dev) {
	t.Helper()
	c := aht20.New()
	bus := chip.NewBus("test")
	if err := bus.Attach(0x38, c); err != nil {
		t.Fatal(err)
	}
	dev, err := drv.NewI2C(bus, nil) // default options: CRC checked
	if err != nil {
		t.Fatal(err)
	}
	return c, bus, dev
}

func sense(t *testing.T, dev *drv.Dev) (tempC, humPct float64) {
	t.Helper()
	var e physic.Env
	if err := dev.Sense(&e); err != nil {
		t.Fatal(err)
	}
	return float64(e.Temperature-physic.ZeroCelsius) / float64(physic.Celsius), float64(e.Humidity) / float64(physic.PercentRH)
}

func TestDriverReadsProgrammedValues(t *testing.T) {
	for _, tc := range []struct {
		name          string
		tempC, humPct float64
	}{
		{"room", 21.37, 45.5},
		{"cold", -40, 80},
		{"hot", 85, 10},
		{"dry", 30, 0},
		{"humid", 25, 99.9},
		{"negative fraction", -0.01, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, dev := attach(t)
			if err := c.Set(tc.tempC, tc.humPct); err != nil {
				t.Fatal(err)
			}
			tempC, humPct := sense(t, dev)
			if math.Abs(tempC-tc.tempC) > tempTol || math.Abs(humPct-tc.humPct) > humTol {
				t.Errorf("read %.5f °C %.5f %%RH, programmed %.5f °C %.5f %%RH", tempC, humPct, tc.tempC, tc.humPct)
			}
		})
	}
}

func TestSetRejectsNonFinite(t *testing.T) {
	c := aht20.New()
	for _, v := range [][2]float64{{math.NaN(), 50}, {20, math.Inf(1)}} {
		if err := c.Set(v[0], v[1]); !errors.Is(err, chip.ErrValue) {
			t.Errorf("Set(%v): %v, want ErrValue", v, err)
		}
	}
}

// TestMeasurementTakes80ms checks the busy bit and that reads during a
// measurement return the previous result, and that a soft reset aborts a
// measurement.
func TestMeasurementTakes80ms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, bus, _ := attach(t)
		frame := func() [7]byte {
			t.Helper()
			var b [7]byte
			if err := bus.Tx(0x38, nil, b[:]); err != nil {
				t.Fatal(err)
			}
			return b
		}
		trigger := func() {
			t.Helper()
			if err := bus.Tx(0x38, []byte{0xAC, 0x33, 0x00}, nil); err != nil {
				t.Fatal(err)
			}
		}
		idle := frame()
		if idle[0] != 0x18 {
			t.Fatalf("status %#x, want 0x18 (calibrated, idle)", idle[0])
		}
		if err := c.Set(30, 60); err != nil {
			t.Fatal(err)
		}
		trigger()
		time.Sleep(80*time.Millisecond - time.Nanosecond)
		if got := frame(); got[0]&0x80 == 0 || [5]byte(got[1:6]) != [5]byte(idle[1:6]) {
			t.Errorf("frame % x before 80 ms, want busy with the previous data % x", got, idle[1:6])
		}
		time.Sleep(time.Nanosecond)
		done := frame()
		if done[0] != 0x18 || [5]byte(done[1:6]) == [5]byte(idle[1:6]) {
			t.Errorf("frame % x after 80 ms, want idle with new data", done)
		}
		if err := c.Set(10, 20); err != nil {
			t.Fatal(err)
		}
		trigger()
		if err := bus.Tx(0x38, []byte{0xBA}, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if got := frame(); got != done {
			t.Errorf("frame % x after an aborted measurement, want the last result % x", got, done)
		}
	})
}

func TestFaultNACKFailsDriver(t *testing.T) {
	c, bus, dev := attach(t)
	c.SetFault(chip.NACK)
	var e physic.Env
	if err := dev.Sense(&e); err == nil {
		t.Fatal("Sense succeeded on a chip that does not acknowledge")
	}
	if _, err := drv.NewI2C(bus, nil); err == nil {
		t.Fatal("NewI2C succeeded on a chip that does not acknowledge")
	}
	c.SetFault(chip.Healthy)
	if err := dev.Sense(&e); err != nil {
		t.Fatalf("Sense after the fault cleared: %v", err)
	}
}

func TestFaultStuckFreezesReading(t *testing.T) {
	c, _, dev := attach(t)
	if err := c.Set(21, 40); err != nil {
		t.Fatal(err)
	}
	t0, h0 := sense(t, dev)
	c.SetFault(chip.Stuck)
	if err := c.Set(35, 80); err != nil {
		t.Fatal(err)
	}
	if t1, h1 := sense(t, dev); t1 != t0 || h1 != h0 {
		t.Errorf("stuck chip read %.4f °C %.4f %%RH after Set changed, want the frozen %.4f °C %.4f %%RH", t1, h1, t0, h0)
	}
	c.SetFault(chip.Healthy)
	if t2, h2 := sense(t, dev); math.Abs(t2-35) > tempTol || math.Abs(h2-80) > humTol {
		t.Errorf("after clearing Stuck read %.4f °C %.4f %%RH, want 35 °C 80 %%RH", t2, h2)
	}
}

func TestFaultSpikeOutOfRange(t *testing.T) {
	c, _, dev := attach(t)
	if err := c.Set(21, 40); err != nil {
		t.Fatal(err)
	}
	c.SpikeNext(1)
	if tempC, _ := sense(t, dev); tempC <= 85 {
		t.Errorf("spiked reading %.2f °C, want above the chip's 85 °C limit", tempC)
	}
	if tempC, _ := sense(t, dev); math.Abs(tempC-21) > tempTol {
		t.Errorf("reading after the spike %.4f °C, want 21", tempC)
	}
}

func TestFaultSlowBlocksDriver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, dev := attach(t)
		c.SetFault(chip.Slow) // stall until the fault changes
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
		time.Sleep(time.Hour)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Sense returned (%v) after an hour while the chip stalled", err)
		default:
		}
		c.SetFault(chip.Healthy)
		if err := <-done; err != nil {
			t.Fatalf("Sense after the stall was released: %v", err)
		}
	})
}
