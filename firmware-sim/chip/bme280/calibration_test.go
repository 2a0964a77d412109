package bme280

import (
	"math"
	"testing"
)

// A conversion recorded from a real BME280 by periph.io's bmxx80 tests
// (TestI2CSenseBME280_success): calibration registers, raw data registers
// and what the driver decoded from them.
var (
	recordedCalTP = [26]byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}
	recordedCalH  = [7]byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}
	recordedData  = [8]byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}
)

func TestDefaultCalibrationIsRecordedChip(t *testing.T) {
	c := DefaultCalibration()
	tp, h := c.registers()
	if tp != recordedCalTP {
		t.Errorf("0x88..0xA1 = % x\nwant          % x", tp, recordedCalTP)
	}
	if h != recordedCalH {
		t.Errorf("0xE1..0xE7 = % x\nwant          % x", h, recordedCalH)
	}
}

// TestCompensationMatchesRecordedChip checks the formulas against what
// periph's driver decoded from the real chip: 23.72 °C, 100942.6953125 Pa
// and 653056 µ%RH.
func TestCompensationMatchesRecordedChip(t *testing.T) {
	c := DefaultCalibration()
	d := recordedData
	rawP := int32(d[0])<<12 | int32(d[1])<<4 | int32(d[2])>>4
	rawT := int32(d[3])<<12 | int32(d[4])<<4 | int32(d[5])>>4
	rawH := int32(d[6])<<8 | int32(d[7])
	tFine := c.temperature(rawT)
	if got := centiCelsius(tFine); got != 2372 {
		t.Errorf("temperature = %d c°C, want 2372", got)
	}
	if got := c.pressure(rawP, tFine); got != 25841330 { // 100942.6953125 Pa × 256
		t.Errorf("pressure = %d Pa/256, want 25841330", got)
	}
	if got := c.humidity(rawH, tFine) * 10000 / 1024; got != 653056 {
		t.Errorf("humidity = %d µ%%RH, want 653056", got)
	}
}

// TestCompensationDatasheetExample is the worked example of the BMP280
// datasheet (BST-BMP280-DS001, section 3.12): adc_T 519888 gives t_fine
// 128422, 25.08 °C.
func TestCompensationDatasheetExample(t *testing.T) {
	c := Calibration{T1: 27504, T2: 26435, T3: -1000}
	tFine := c.temperature(519888)
	if tFine != 128422 || centiCelsius(tFine) != 2508 {
		t.Errorf("t_fine = %d (%d c°C), want 128422 (2508 c°C)", tFine, centiCelsius(tFine))
	}
}

// TestInversionIsNearest sweeps the operating range and checks that the raw
// codes the emulator picks compensate to the programmed values within the
// tolerances documented in doc.go, at every result width.
func TestInversionIsNearest(t *testing.T) {
	c := DefaultCalibration()
	pressureTol := map[uint]float64{16: 1.6, 17: 0.8, 18: 0.4, 19: 0.2, 20: 0.1}
	for tempC := -40.0; tempC <= 85; tempC += 12.5 {
		for bits := uint(16); bits <= 20; bits++ {
			for x := tempC; x < tempC+0.5; x += 0.01 {
				rawT := c.rawTemperature(x, bits)
				if got, want := centiCelsius(c.temperature(rawT)), int32(math.Round(x*100)); got != want {
					t.Fatalf("%d-bit: %.2f °C reads %d c°C", bits, x, got)
				}
			}
			tFine := c.temperature(c.rawTemperature(tempC, bits))
			for p := 30000.0; p <= 110000; p += 97.3 {
				got := float64(c.pressure(c.rawPressure(p, tFine, bits), tFine)) / 256
				if math.Abs(got-p) > pressureTol[bits] {
					t.Fatalf("%d-bit at %.1f °C: %.2f Pa reads %.4f Pa", bits, tempC, p, got)
				}
			}
		}
		tFine := c.temperature(c.rawTemperature(tempC, 20))
		for h := 0.0; h <= 100; h += 0.37 {
			got := float64(c.humidity(c.rawHumidity(h, tFine), tFine)) / 1024
			if math.Abs(got-h) > 0.01 {
				t.Fatalf("at %.1f °C: %.2f %%RH reads %.4f %%RH", tempC, h, got)
			}
		}
	}
}

// TestInversionSaturates checks that values beyond the ADC's range give the
// nearest reading it can, never a wrapped one.
func TestInversionSaturates(t *testing.T) {
	c := DefaultCalibration()
	tFine := c.temperature(c.rawTemperature(25, 20))
	if p := c.pressure(c.rawPressure(0, tFine, 16), tFine); p < 0 || p > 3*256 {
		t.Errorf("0 Pa reads %.2f Pa, want the lowest non-negative reading", float64(p)/256)
	}
	if raw := c.rawPressure(1e9, tFine, 20); raw != 0 {
		t.Errorf("1e9 Pa: raw %d, want 0 (the highest pressure code)", raw)
	}
	if h := c.humidity(c.rawHumidity(250, tFine), tFine); h != 100*1024 {
		t.Errorf("250 %%RH reads %d/1024 %%RH, want 100 %%RH", h)
	}
	if raw := c.rawTemperature(1e6, 20); raw != 1<<20-1 {
		t.Errorf("1e6 °C: raw %#x, want 0xfffff", raw)
	}
}
