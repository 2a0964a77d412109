package aht20

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
)

// Commands and status bits, datasheet section 5.
const (
	cmdStatus    = 0x71
	cmdInit      = 0xBE
	cmdMeasure   = 0xAC
	cmdSoftReset = 0xBA

	statusBusy       = 1 << 7
	statusCalibrated = 1 << 3
	statusReserved   = 1 << 4 // reads as 1 on shipped parts

	measureTime = 80 * time.Millisecond
	fullScale   = 1 << 20
)

// Chip is an emulated AHT20, to attach to a chip.Bus at 0x38. It starts
// calibrated (status 0x18, as shipped parts report) at 20 °C and 50 %RH,
// with no measurement taken yet. Chip is safe for concurrent use.
//
// Under the Spike fault a measurement returns all ones in both 20-bit
// results (with a valid CRC): about 150 °C and 100 %RH, far above the chip's
// 85 °C limit.
type Chip struct {
	chip.Faults

	mu            sync.Mutex
	tempC, humPct float64
	calibrated    bool
	data          [5]byte // 20-bit humidity, 20-bit temperature
	pending       bool
	next          [5]byte
	readyAt       time.Time
}

// New returns a chip in its power-on state.
func New() *Chip {
	return &Chip{tempC: 20, humPct: 50, calibrated: true}
}

// Set programs the values the chip measures from its next measurement on.
// Values beyond the converter's range (-50 to 150 °C, 0 to 100 %RH)
// saturate; NaN and ±Inf are rejected with chip.ErrValue.
func (c *Chip) Set(temperatureC, humidityPct float64) error {
	for _, v := range []float64{temperatureC, humidityPct} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("aht20: set %v °C, %v %%RH: %w", temperatureC, humidityPct, chip.ErrValue)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tempC, c.humPct = temperatureC, humidityPct
	return nil
}

// Tx implements chip.Device: w is a command with its arguments (unknown
// commands and arguments are ignored), and r is filled with the status byte,
// the last result and its CRC, then 0xFF.
func (c *Chip) Tx(w, r []byte) error {
	if err := c.BeginTx(); err != nil {
		return fmt.Errorf("aht20: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.settle(now)
	if len(w) > 0 {
		c.command(w, now)
	}
	if len(r) > 0 {
		frame := [7]byte{c.status()}
		copy(frame[1:6], c.data[:])
		frame[6] = crc8(frame[:6])
		n := copy(r, frame[:])
		for i := n; i < len(r); i++ {
			r[i] = 0xFF
		}
	}
	return nil
}

func (c *Chip) command(w []byte, now time.Time) {
	switch {
	case w[0] == cmdMeasure && len(w) == 3 && w[1] == 0x33 && w[2] == 0x00:
		c.next, c.pending, c.readyAt = c.convert(), true, now.Add(measureTime)
	case w[0] == cmdInit && len(w) == 3 && w[1] == 0x08 && w[2] == 0x00:
		c.calibrated = true
	case w[0] == cmdSoftReset && len(w) == 1:
		// A soft reset aborts a measurement and reloads the calibration.
		c.pending = false
	case w[0] == cmdStatus:
		// Only announces a status read.
	}
}

func (c *Chip) settle(now time.Time) {
	if c.pending && !now.Before(c.readyAt) {
		c.data, c.pending = c.next, false
	}
}

func (c *Chip) status() byte {
	s := byte(statusReserved)
	if c.calibrated {
		s |= statusCalibrated
	}
	if c.pending {
		s |= statusBusy
	}
	return s
}

// convert returns the 5 data bytes of one measurement.
func (c *Chip) convert() [5]byte {
	var h, t uint32
	switch c.Conversion() {
	case chip.Stuck:
		return c.data
	case chip.Spike:
		h, t = fullScale-1, fullScale-1
	default:
		h = code(c.humPct / 100)
		t = code((c.tempC + 50) / 200)
	}
	return [5]byte{byte(h >> 12), byte(h >> 4), byte(h<<4) | byte(t>>16), byte(t >> 8), byte(t)}
}

// code converts a fraction of full scale to a 20-bit code.
func code(fraction float64) uint32 {
	return uint32(min(math.Round(max(fraction, 0)*fullScale), fullScale-1))
}

// crc8 is the datasheet's CRC-8: polynomial x^8 + x^5 + x^4 + 1, initial
// value 0xFF.
func crc8(b []byte) byte {
	crc := byte(0xFF)
	for _, v := range b {
		crc ^= v
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
