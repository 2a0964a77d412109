package bme280

import (
	"math"
	"sort"
)

// Calibration is the factory trimming data a BME280 holds in NVM, named as in
// datasheet section 4.2.2, table 16 (dig_T1 is T1 and so on).
type Calibration struct {
	T1                             uint16
	T2, T3                         int16
	P1                             uint16
	P2, P3, P4, P5, P6, P7, P8, P9 int16
	H1                             uint8
	H2                             int16
	H3                             uint8
	H4, H5                         int16 // 12-bit values
	H6                             int8
}

// DefaultCalibration returns the trimming data read from a real BME280, as
// recorded in periph.io's bmxx80 tests (registers 0x88..0xA1 and
// 0xE1..0xE7).
func DefaultCalibration() Calibration {
	return Calibration{
		T1: 28176, T2: 26220, T3: 50,
		P1: 38237, P2: -10824, P3: 3024, P4: 7799, P5: -99, P6: -7, P7: 9900, P8: -10230, P9: 4285,
		H1: 75, H2: 366, H3: 0, H4: 309, H5: 0, H6: 30,
	}
}

// registers encodes the calibration as the chip exposes it: 0x88..0xA1
// (0xA0 unused) and 0xE1..0xE7, all little-endian.
func (c *Calibration) registers() (tp [26]byte, h [7]byte) {
	le := func(b []byte, v uint16) { b[0], b[1] = byte(v), byte(v>>8) }
	le(tp[0:], c.T1)
	le(tp[2:], uint16(c.T2))
	le(tp[4:], uint16(c.T3))
	le(tp[6:], c.P1)
	for i, p := range []int16{c.P2, c.P3, c.P4, c.P5, c.P6, c.P7, c.P8, c.P9} {
		le(tp[8+2*i:], uint16(p))
	}
	tp[25] = c.H1
	le(h[0:], uint16(c.H2))
	h[2] = c.H3
	// dig_H4 is 0xE4[7:0] / 0xE5[3:0], dig_H5 is 0xE5[7:4] / 0xE6[7:0].
	h[3] = byte(c.H4 >> 4)
	h[4] = byte(c.H4&0x0F) | byte(c.H5&0x0F)<<4
	h[5] = byte(c.H5 >> 4)
	h[6] = byte(c.H6)
	return tp, h
}

// The compensation formulas of datasheet section 4.2.3, in their integer
// forms (32-bit temperature and humidity, 64-bit pressure), which periph's
// driver uses too.

// temperature returns t_fine for raw adc_T; the temperature in 0.01 °C is
// (t_fine*5 + 128) >> 8.
func (c *Calibration) temperature(raw int32) int32 {
	x := ((raw>>3 - int32(c.T1)<<1) * int32(c.T2)) >> 11
	y := ((((raw>>4 - int32(c.T1)) * (raw>>4 - int32(c.T1))) >> 12) * int32(c.T3)) >> 14
	return x + y
}

// centiCelsius is the temperature in 0.01 °C for t_fine.
func centiCelsius(tFine int32) int32 { return (tFine*5 + 128) >> 8 }

// pressure returns the pressure in Pa as Q24.8 for raw adc_P, or 0 when the
// calibration would divide by zero. Unlike the datasheet it keeps negative
// results rather than returning them as a wrapped uint32.
func (c *Calibration) pressure(raw, tFine int32) int64 {
	x := int64(tFine) - 128000
	y := x * x * int64(c.P6)
	y += (x * int64(c.P5)) << 17
	y += int64(c.P4) << 35
	x = (x*x*int64(c.P3))>>8 + (x*int64(c.P2))<<12
	x = ((int64(1)<<47 + x) * int64(c.P1)) >> 33
	if x == 0 {
		return 0
	}
	p := (((1048576 - int64(raw)) << 31) - y) * 3125 / x
	x = (int64(c.P9) * (p >> 13) * (p >> 13)) >> 25
	y = (int64(c.P8) * p) >> 19
	return (p+x+y)>>8 + int64(c.P7)<<4
}

// humidity returns the relative humidity in % as Q22.10 for raw adc_H,
// clamped to [0, 100] %RH as the datasheet does.
func (c *Calibration) humidity(raw, tFine int32) int32 {
	x := tFine - 76800
	x1 := raw<<14 - int32(c.H4)<<20 - int32(c.H5)*x
	x6 := ((((((x*int32(c.H6))>>10)*(((x*int32(c.H3))>>11)+32768))>>10)+2097152)*int32(c.H2) + 8192) >> 14
	x = ((x1 + 16384) >> 15) * x6
	x -= ((((x >> 15) * (x >> 15)) >> 7) * int32(c.H1)) >> 4
	x = min(max(x, 0), 419430400)
	return x >> 12
}

// nearest returns the raw code, among the first n codes of a converter
// whose codes step by 1<<shift, for which f is nearest want. f must be
// monotonic over those codes, increasing or decreasing.
func nearest(n int, shift uint, want int64, f func(raw int32) int64) int32 {
	code := func(k int) int32 { return int32(k) << shift }
	if n < 1 {
		return 0
	}
	up := f(code(n-1)) >= f(0)
	k := sort.Search(n, func(k int) bool {
		if up {
			return f(code(k)) >= want
		}
		return f(code(k)) <= want
	})
	if k == n {
		return code(n - 1)
	}
	if k > 0 && abs(f(code(k-1))-want) <= abs(f(code(k))-want) {
		return code(k - 1)
	}
	return code(k)
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// rawTemperature returns adc_T, at the given resolution in bits, whose
// t_fine is nearest the one for tempC.
func (c *Calibration) rawTemperature(tempC float64, bits uint) int32 {
	// Temperature in 0.01 °C is t_fine*5/256: aim at the middle of the
	// programmed value's 0.01 °C step.
	want := int64(math.Round(clamp(tempC, -1000, 1000) * 5120))
	return nearest(1<<bits, 20-bits, want, func(raw int32) int64 { return int64(c.temperature(raw)) })
}

// rawPressure returns adc_P, at the given resolution in bits, whose pressure
// is nearest pressPa. Codes that would compensate to a negative pressure
// (which the driver wraps round to a huge one) are never chosen.
func (c *Calibration) rawPressure(pressPa float64, tFine int32, bits uint) int32 {
	want := int64(math.Round(clamp(pressPa, 0, 1e7) * 256))
	f := func(raw int32) int64 { return c.pressure(raw, tFine) }
	shift := 20 - bits
	n := sort.Search(1<<bits, func(k int) bool { return f(int32(k)<<shift) < 0 })
	return nearest(n, shift, want, f)
}

// rawHumidity returns adc_H whose humidity is nearest humPct.
func (c *Calibration) rawHumidity(humPct float64, tFine int32) int32 {
	want := int64(math.Round(clamp(humPct, 0, 100) * 1024))
	return nearest(1<<16, 0, want, func(raw int32) int64 { return int64(c.humidity(raw, tFine)) })
}

func clamp(v, lo, hi float64) float64 { return min(max(v, lo), hi) }
