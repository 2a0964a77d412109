// Package mcp9808 emulates a Microchip MCP9808 digital temperature sensor at
// the register level, on a chip.Bus, so that the unmodified
// periph.io/x/devices/v3/mcp9808 driver reads it.
//
// Reference: Microchip, "MCP9808 ±0.5°C Maximum Accuracy Digital
// Temperature Sensor", datasheet DS25095A, section 5.1 "Registers"
// (register pointer, CONFIG, T_UPPER/T_LOWER/T_CRIT, T_A, manufacturer and
// device ID, resolution).
//
// The chip converts continuously unless CONFIG's SHDN bit is set; every read
// of T_A sees a fresh conversion of the programmed temperature, rounded to
// the selected resolution (0.0625 °C at power-on), so the driver reads it
// back within half a resolution step. T_A's flag bits compare the reading
// with the three limit registers. Not emulated: the ALERT output, the
// hysteresis and lock bits of CONFIG (stored, without effect) and
// conversion time.
package mcp9808
