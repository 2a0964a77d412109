package bme280_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
	"github.com/freshet-iot/freshet/firmware-sim/chip/bme280"
)

// regs drives a chip register by register, as a datasheet reader would.
type regs struct {
	t   *testing.T
	bus *chip.Bus
}

func newRegs(t *testing.T, model bme280.Model) regs {
	t.Helper()
	c, err := bme280.New(&bme280.Options{Model: model})
	if err != nil {
		t.Fatal(err)
	}
	bus := chip.NewBus("test")
	if err := bus.Attach(0x76, c); err != nil {
		t.Fatal(err)
	}
	return regs{t, bus}
}

func (r regs) write(pairs ...byte) {
	r.t.Helper()
	if err := r.bus.Tx(0x76, pairs, nil); err != nil {
		r.t.Fatal(err)
	}
}

func (r regs) read(reg byte, n int) []byte {
	r.t.Helper()
	b := make([]byte, n)
	if err := r.bus.Tx(0x76, []byte{reg}, b); err != nil {
		r.t.Fatal(err)
	}
	return b
}

func raw20(b []byte) int { return int(b[0])<<12 | int(b[1])<<4 | int(b[2])>>4 }

func TestRegisterChipID(t *testing.T) {
	for model, want := range map[bme280.Model]byte{bme280.BME280: 0x60, bme280.BMP280: 0x58} {
		r := newRegs(t, model)
		if got := r.read(0xD0, 1)[0]; got != want {
			t.Errorf("model %d: chip id %#x, want %#x", model, got, want)
		}
		// A lone register byte sets the pointer for a following read-only
		// transaction.
		r.write(0xD0)
		b := make([]byte, 1)
		if err := r.bus.Tx(0x76, nil, b); err != nil {
			t.Fatal(err)
		}
		if b[0] != want {
			t.Errorf("model %d: chip id via pointer %#x, want %#x", model, b[0], want)
		}
	}
}

func TestRegisterBMP280HasNoHumidity(t *testing.T) {
	r := newRegs(t, bme280.BMP280)
	r.write(0xF2, 0x01, 0xF4, 0x27) // ctrl_hum 1x, then normal mode
	if got := r.read(0xE1, 7); string(got) != string(make([]byte, 7)) {
		t.Errorf("0xE1..0xE7 = % x, want zeros", got)
	}
	if got := r.read(0xF2, 1)[0]; got != 0 {
		t.Errorf("ctrl_hum = %#x, want 0", got)
	}
	if got := r.read(0xFD, 2); got[0] != 0 || got[1] != 0 {
		t.Errorf("0xFD..0xFE = % x, want zeros", got)
	}
}

func TestRegisterAutoIncrementAndReset(t *testing.T) {
	r := newRegs(t, bme280.BME280)
	r.write(0xF2, 0x03, 0xF5, 0xA0, 0xF4, 0x6C) // as bmxx80 configures: sleep mode
	if got := r.read(0xF2, 4); got[0] != 0x03 || got[1] != 0 || got[2] != 0x6C || got[3] != 0xA0 {
		t.Errorf("0xF2..0xF5 = % x, want 03 00 6c a0", got)
	}
	if got := r.read(0xF7, 8); got[0] != 0x80 || got[3] != 0x80 || got[6] != 0x80 {
		t.Errorf("power-on data = % x, want 0x80000/0x80000/0x8000", got)
	}
	r.write(0xE0, 0x12) // not the reset command
	if got := r.read(0xF4, 1)[0]; got != 0x6C {
		t.Errorf("ctrl_meas = %#x after a wrong reset word", got)
	}
	r.write(0xE0, 0xB6)
	if got := r.read(0xF2, 4); got[0]|got[2]|got[3] != 0 {
		t.Errorf("0xF2..0xF5 after reset = % x, want zeros", got)
	}
}

// TestRegisterForcedMode checks the measuring bit, the data registers
// keeping the old result until the measurement time has passed (datasheet
// appendix 9.1: 1 + 2 + 2.5 + 2.5 ms at 1x), and the return to sleep mode.
func TestRegisterForcedMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRegs(t, bme280.BME280)
		r.write(0xF2, 0x01, 0xF4, 0x25) // humidity 1x; T 1x, P 1x, forced
		if got := r.read(0xF3, 1)[0]; got&0x08 == 0 {
			t.Errorf("status %#x right after the trigger, want measuring", got)
		}
		if got := r.read(0xF4, 1)[0]; got != 0x25 {
			t.Errorf("ctrl_meas %#x while measuring, want 0x25", got)
		}
		if got := r.read(0xF7, 8); got[0] != 0x80 || got[3] != 0x80 {
			t.Errorf("data % x while measuring, want the power-on values", got)
		}
		time.Sleep(8*time.Millisecond - time.Nanosecond)
		if got := r.read(0xF3, 1)[0]; got&0x08 == 0 {
			t.Errorf("status %#x before the measurement time, want measuring", got)
		}
		time.Sleep(time.Nanosecond)
		if got := r.read(0xF3, 1)[0]; got != 0 {
			t.Errorf("status %#x after the measurement time, want 0", got)
		}
		if got := r.read(0xF4, 1)[0]; got != 0x24 {
			t.Errorf("ctrl_meas %#x after the measurement, want 0x24 (sleep)", got)
		}
		d := r.read(0xF7, 8)
		if raw20(d[0:]) == 0x80000 || raw20(d[3:]) == 0x80000 || d[6] == 0x80 && d[7] == 0 {
			t.Errorf("data % x after the measurement, want results", d)
		}
		// 1x oversampling without filter gives 16-bit results: xlsb is 0.
		if d[2] != 0 || d[5] != 0 {
			t.Errorf("xlsb bytes %#x %#x at 1x, want 0", d[2], d[5])
		}
	})
}

// TestRegisterCtrlHumLatch checks datasheet section 5.4.3: a ctrl_hum write
// takes effect only with the next ctrl_meas write. It uses normal mode, where
// every read of the data registers sees a fresh conversion.
func TestRegisterCtrlHumLatch(t *testing.T) {
	r := newRegs(t, bme280.BME280)
	skipped := func() bool { h := r.read(0xFD, 2); return h[0] == 0x80 && h[1] == 0 }
	r.write(0xF2, 0x01, 0xF4, 0x27) // humidity 1x; T 1x, P 1x, normal mode
	if skipped() {
		t.Fatal("humidity skipped with ctrl_hum 1x latched")
	}
	r.write(0xF2, 0x00)
	if got := r.read(0xF2, 1)[0]; got != 0 {
		t.Errorf("ctrl_hum reads %#x after writing 0", got)
	}
	if skipped() {
		t.Error("humidity skipped before ctrl_meas was written: ctrl_hum took effect early")
	}
	r.write(0xF4, 0x27)
	if !skipped() {
		t.Error("humidity measured after ctrl_meas latched ctrl_hum 0")
	}
}

func TestRegisterSkippedMeasurement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRegs(t, bme280.BME280)
		r.write(0xF2, 0x00, 0xF4, 0x21) // T 1x, P skipped, H skipped, forced
		time.Sleep(time.Second)
		d := r.read(0xF7, 8)
		if raw20(d[0:]) != 0x80000 || d[6] != 0x80 || d[7] != 0 {
			t.Errorf("data % x, want 0x80000 pressure and 0x8000 humidity (skipped)", d)
		}
		if raw20(d[3:]) == 0x80000 {
			t.Errorf("data % x, want a temperature", d)
		}
	})
}
