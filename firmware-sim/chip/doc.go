// Package chip emulates sensor hardware at the register level so that the
// unmodified periph.io drivers the agent uses run against it in tests and
// demos.
//
// Bus is a virtual I²C bus implementing periph.io/x/conn/v3/i2c.BusCloser.
// Emulated chips (subpackages bme280, mcp9808, aht20) attach to it at an
// address and answer transactions the way the real parts do, so
// periph.io/x/devices/v3 drivers read back the physical values a test
// programs with the chip's Set method. Every chip embeds Faults, which
// switches it at run time into one of the failure modes listed under Fault.
//
// Subpackage sysfs fakes the Linux sysfs files for 1-wire DS18B20 probes and
// the CPU thermal zone.
package chip
