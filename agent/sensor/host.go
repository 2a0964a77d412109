package sensor

import (
	"fmt"
	"strconv"
	"strings"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/host/v3/sysfs"
)

// HostEnv returns the Env of a real gateway: I²C buses are the kernel's
// /dev/i2c-N devices (on a Raspberry Pi, bus "1" is /dev/i2c-1 on header
// pins 3 and 5; enable it with dtparam=i2c_arm=on), sysfs at /, commands
// through os/exec.
//
// Only periph's sysfs I²C driver is linked, not periph's host.Init, which
// registers drivers for every SoC periph knows and costs the binary about
// a megabyte; the agent needs none of them.
func HostEnv() Env {
	return Env{OpenI2C: openHostI2C}
}

// openHostI2C opens "1", "I2C1" or "/dev/i2c-1".
func openHostI2C(name string) (i2c.BusCloser, error) {
	n := strings.TrimPrefix(strings.TrimPrefix(name, "/dev/i2c-"), "I2C")
	bus, err := strconv.Atoi(n)
	if err != nil || bus < 0 {
		return nil, fmt.Errorf("i2c bus %q: want a number, I2C<n> or /dev/i2c-<n>", name)
	}
	return sysfs.NewI2C(bus)
}
