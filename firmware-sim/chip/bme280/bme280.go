package bme280

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
)

// Model selects the chip of the family to emulate.
type Model int

const (
	// BME280 answers chip id 0x60 and measures temperature, pressure and
	// humidity.
	BME280 Model = iota
	// BMP280 answers chip id 0x58 and has no humidity sensor: no ctrl_hum,
	// humidity calibration or humidity data registers.
	BMP280
)

// Options configures a Chip. The zero value emulates a BME280 with
// DefaultCalibration.
type Options struct {
	// Model is the chip to emulate.
	Model Model
	// Calibration is the trimming data in NVM; nil means DefaultCalibration.
	Calibration *Calibration
}

// Register map, datasheet section 5.3.
const (
	regCalibTP   = 0x88 // 0x88..0xA1: dig_T1..dig_P9, unused byte, dig_H1
	regID        = 0xD0
	regReset     = 0xE0
	regCalibH    = 0xE1 // 0xE1..0xE7: dig_H2..dig_H6
	regCtrlHum   = 0xF2
	regStatus    = 0xF3
	regCtrlMeas  = 0xF4
	regConfig    = 0xF5
	regData      = 0xF7 // 0xF7..0xFE: press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb
	regDataEnd   = 0xFE
	resetCommand = 0xB6

	statusMeasuring = 1 << 3

	// ctrl_meas mode bits; 1 and 2 both mean forced mode.
	modeSleep  = 0
	modeNormal = 3
)

// powerOnData is the content of 0xF7..0xFE after reset: 0x80000 for
// pressure and temperature, 0x8000 for humidity, also what a skipped
// measurement reads.
func powerOnData() [8]byte { return [8]byte{0x80, 0, 0, 0x80, 0, 0, 0x80, 0} }

// Chip is an emulated BME280 or BMP280 to attach to a chip.Bus at 0x76 or
// 0x77. It starts at 20 °C, 50 %RH and 101325 Pa, in sleep mode with the
// power-on register values. Chip is safe for concurrent use.
//
// Under the Spike fault a conversion returns all ones in every data register
// (adc_T = 0xFFFFF, which DefaultCalibration compensates to about 187 °C, far
// above the chip's 85 °C limit), as when SDA is stuck high.
type Chip struct {
	chip.Faults

	id       byte
	humidity bool // BME280
	cal      Calibration
	calTP    [26]byte
	calH     [7]byte

	mu                     sync.Mutex
	tempC, humPct, pressPa float64

	ptr      byte // register pointer
	ctrlHum  byte // as written to 0xF2
	osrsH    byte // humidity oversampling latched by the last ctrl_meas write
	ctrlMeas byte
	config   byte
	data     [8]byte   // 0xF7..0xFE
	pending  bool      // a forced conversion is running
	next     [8]byte   // its result
	readyAt  time.Time // when it completes
}

// New returns a chip in its power-on state; nil opts means the zero Options.
func New(opts *Options) (*Chip, error) {
	if opts == nil {
		opts = &Options{}
	}
	c := &Chip{cal: DefaultCalibration(), tempC: 20, humPct: 50, pressPa: 101325, data: powerOnData()}
	switch opts.Model {
	case BME280:
		c.id, c.humidity = 0x60, true
	case BMP280:
		c.id = 0x58
	default:
		return nil, fmt.Errorf("bme280: unknown model %d", opts.Model)
	}
	if opts.Calibration != nil {
		c.cal = *opts.Calibration
	}
	c.calTP, c.calH = c.cal.registers()
	return c, nil
}

// Set programs the physical values the chip measures from its next
// conversion on. Values beyond what the ADC can encode saturate; NaN and ±Inf
// are rejected with chip.ErrValue. A BMP280 ignores humidityPct.
func (c *Chip) Set(temperatureC, humidityPct, pressurePa float64) error {
	for _, v := range []float64{temperatureC, humidityPct, pressurePa} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("bme280: set %v °C, %v %%RH, %v Pa: %w", temperatureC, humidityPct, pressurePa, chip.ErrValue)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tempC, c.humPct, c.pressPa = temperatureC, humidityPct, pressurePa
	return nil
}

// Tx implements chip.Device with the chip's I²C protocol (datasheet section
// 6.2): w holds register/value pairs to write, and a trailing lone byte sets
// the register pointer; r is then filled from the pointer on, which
// auto-increments (and stays at 0xFF). Reads of unused registers return 0.
func (c *Chip) Tx(w, r []byte) error {
	if err := c.BeginTx(); err != nil {
		return fmt.Errorf("bme280: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.settle(now)
	for ; len(w) >= 2; w = w[2:] {
		c.write(w[0], w[1], now)
	}
	if len(w) == 1 {
		c.ptr = w[0]
	}
	if len(r) == 0 {
		return nil
	}
	if c.ctrlMeas&3 == modeNormal && int(c.ptr)+len(r) > regData && c.ptr <= regDataEnd {
		// Normal mode: as if a standby period had passed since the last read.
		c.data = c.convert()
	}
	for i := range r {
		r[i] = c.read(c.ptr)
		if c.ptr < 0xFF {
			c.ptr++
		}
	}
	return nil
}

// settle completes a forced conversion whose measurement time has passed;
// the chip then returns to sleep mode.
func (c *Chip) settle(now time.Time) {
	if c.pending && !now.Before(c.readyAt) {
		c.data, c.pending = c.next, false
		c.ctrlMeas = c.ctrlMeas&^3 | modeSleep
	}
}

func (c *Chip) write(reg, v byte, now time.Time) {
	c.ptr = reg
	switch reg {
	case regReset:
		if v == resetCommand {
			c.ctrlHum, c.osrsH, c.ctrlMeas, c.config = 0, 0, 0, 0
			c.data, c.pending = powerOnData(), false
		}
	case regCtrlHum:
		if c.humidity {
			c.ctrlHum = v & 7
		}
	case regCtrlMeas:
		// Section 5.4.3: ctrl_hum takes effect with the next ctrl_meas write.
		c.ctrlMeas, c.osrsH, c.pending = v, c.ctrlHum, false
		if mode := v & 3; mode != modeSleep && mode != modeNormal {
			c.next, c.pending = c.convert(), true
			c.readyAt = now.Add(c.measureTime())
		}
	case regConfig:
		// A real chip may ignore config writes in normal mode; this one
		// always takes them.
		c.config = v &^ 2
	}
}

func (c *Chip) read(reg byte) byte {
	switch {
	case reg >= regCalibTP && reg < regCalibTP+byte(len(c.calTP)):
		return c.calTP[reg-regCalibTP]
	case reg == regID:
		return c.id
	case reg >= regCalibH && reg < regCalibH+byte(len(c.calH)) && c.humidity:
		return c.calH[reg-regCalibH]
	case reg == regCtrlHum:
		return c.ctrlHum
	case reg == regStatus:
		if c.pending {
			return statusMeasuring
		}
		return 0
	case reg == regCtrlMeas:
		return c.ctrlMeas
	case reg == regConfig:
		return c.config
	case reg >= regData && reg <= regDataEnd && (c.humidity || reg < regData+6):
		return c.data[reg-regData]
	}
	return 0
}

// convert runs one measurement with the current settings and returns the
// data registers it produces.
func (c *Chip) convert() [8]byte {
	switch c.Conversion() {
	case chip.Stuck:
		return c.data
	case chip.Spike:
		return [8]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}
	}
	osrsT, osrsP := c.ctrlMeas>>5, (c.ctrlMeas>>2)&7
	filter := (c.config>>2)&7 != 0
	d := powerOnData()
	// t_fine feeds pressure and humidity even when temperature output is
	// skipped.
	rawT := c.cal.rawTemperature(c.tempC, resolution(osrsT, filter))
	tFine := c.cal.temperature(rawT)
	if osrsT != 0 {
		put20(d[3:6], rawT)
	}
	if osrsP != 0 {
		put20(d[0:3], c.cal.rawPressure(c.pressPa, tFine, resolution(osrsP, filter)))
	}
	if c.humidity && c.osrsH != 0 {
		h := c.cal.rawHumidity(c.humPct, tFine)
		d[6], d[7] = byte(h>>8), byte(h)
	}
	return d
}

// resolution is the bit width of a temperature or pressure result
// (sections 3.4.2 and 3.4.3): 20 bits with the IIR filter on, else
// 16 + (osrs - 1).
func resolution(osrs byte, filter bool) uint {
	if filter || osrs >= 5 {
		return 20
	}
	return 15 + uint(max(osrs, 1))
}

// put20 stores a 20-bit ADC value as msb, lsb, xlsb[7:4].
func put20(b []byte, v int32) {
	b[0], b[1], b[2] = byte(v>>12), byte(v>>4), byte(v<<4)
}

// measureTime is the typical measurement time of appendix 9.1.
func (c *Chip) measureTime() time.Duration {
	us := 1000
	add := func(osrs byte, extra int) {
		if osrs != 0 {
			us += 2000<<(min(osrs, 5)-1) + extra
		}
	}
	add(c.ctrlMeas>>5, 0)
	add((c.ctrlMeas>>2)&7, 500)
	if c.humidity {
		add(c.osrsH, 500)
	}
	return time.Duration(us) * time.Microsecond
}
