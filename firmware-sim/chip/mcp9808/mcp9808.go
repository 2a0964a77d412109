package mcp9808

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
)

// Register pointers, datasheet table 5-1.
const (
	regConfig       = 0x01
	regUpper        = 0x02
	regLower        = 0x03
	regCrit         = 0x04
	regTA           = 0x05
	regManufacturer = 0x06
	regDevice       = 0x07
	regResolution   = 0x08

	configShutdown = 1 << 8
	manufacturerID = 0x0054
	deviceID       = 0x0400 // device ID 0x04, revision 0x00

	flagCrit  = 1 << 15 // T_A >= T_CRIT
	flagUpper = 1 << 14 // T_A > T_UPPER
	flagLower = 1 << 13 // T_A < T_LOWER

	spikeSixteenths = 0x0FFF // +255.9375 °C
)

// Chip is an emulated MCP9808, to attach to a chip.Bus at 0x18..0x1F. It
// starts at 20 °C with the power-on register values. Chip is safe for
// concurrent use.
//
// Under the Spike fault a conversion reads +255.9375 °C (every temperature
// bit set), far above the chip's 125 °C limit.
type Chip struct {
	chip.Faults

	mu         sync.Mutex
	tempC      float64
	ptr        byte
	config     uint16
	limits     [3]uint16 // T_UPPER, T_LOWER, T_CRIT
	resolution byte
	ta         int16 // last conversion, in 1/16 °C
}

// New returns a chip in its power-on state, which has already converted
// the initial 20 °C.
func New() *Chip {
	c := &Chip{tempC: 20, resolution: 3}
	c.ta = c.quantize()
	return c
}

// Set programs the temperature the chip measures from its next conversion
// on. Values beyond the register's range (-256 to +255.9375 °C) saturate;
// NaN and ±Inf are rejected with chip.ErrValue.
func (c *Chip) Set(temperatureC float64) error {
	if math.IsNaN(temperatureC) || math.IsInf(temperatureC, 0) {
		return fmt.Errorf("mcp9808: set %v °C: %w", temperatureC, chip.ErrValue)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tempC = temperatureC
	return nil
}

// Tx implements chip.Device with the chip's I²C protocol (datasheet
// section 4.1): the first byte written sets the register pointer and the
// following bytes, most significant first, are written to that register
// (an incomplete write is ignored); r is filled from the pointed register,
// and bytes beyond it read as 0. A read without a write uses the pointer
// set last.
func (c *Chip) Tx(w, r []byte) error {
	if err := c.BeginTx(); err != nil {
		return fmt.Errorf("mcp9808: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(w) > 0 {
		c.ptr = w[0] & 0x0F
		c.write(c.ptr, w[1:])
	}
	if len(r) > 0 {
		n := copy(r, c.read(c.ptr))
		clear(r[n:])
	}
	return nil
}

func (c *Chip) write(reg byte, b []byte) {
	switch reg {
	case regConfig, regUpper, regLower, regCrit:
		if len(b) < 2 {
			return
		}
		v := binary.BigEndian.Uint16(b)
		if reg == regConfig {
			c.config = v & 0x07FF
		} else {
			c.limits[reg-regUpper] = v & 0x1FFC
		}
	case regResolution:
		if len(b) >= 1 {
			c.resolution = b[0] & 3
		}
	}
}

func (c *Chip) read(reg byte) []byte {
	var v uint16
	switch reg {
	case regConfig:
		v = c.config
	case regUpper, regLower, regCrit:
		v = c.limits[reg-regUpper]
	case regTA:
		if c.config&configShutdown == 0 {
			c.convert()
		}
		v = c.taRegister()
	case regManufacturer:
		v = manufacturerID
	case regDevice:
		v = deviceID
	case regResolution:
		return []byte{c.resolution}
	}
	return binary.BigEndian.AppendUint16(nil, v)
}

func (c *Chip) convert() {
	switch c.Conversion() {
	case chip.Stuck:
	case chip.Spike:
		c.ta = spikeSixteenths
	default:
		c.ta = c.quantize()
	}
}

// quantize converts the programmed temperature to 1/16 °C, rounded to the
// resolution (0.5, 0.25, 0.125 or 0.0625 °C) and saturated to 13 bits.
func (c *Chip) quantize() int16 {
	step := 8.0 / float64(int(1)<<c.resolution) // in 1/16 °C
	v := math.Round(c.tempC*16/step) * step
	return int16(min(max(v, -4096), 4096-step))
}

// taRegister encodes the last conversion with the limit flags (datasheet
// register 5-4): flags in bits 15..13, then 13-bit two's complement.
func (c *Chip) taRegister() uint16 {
	v := uint16(c.ta) & 0x1FFF
	if c.ta >= signed13(c.limits[regCrit-regUpper]) {
		v |= flagCrit
	}
	if c.ta > signed13(c.limits[0]) {
		v |= flagUpper
	}
	if c.ta < signed13(c.limits[regLower-regUpper]) {
		v |= flagLower
	}
	return v
}

// signed13 sign-extends a 13-bit two's complement temperature in 1/16 °C.
func signed13(v uint16) int16 { return int16(v<<3) >> 3 }
