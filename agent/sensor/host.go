package sensor

import (
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"
)

// HostEnv returns the Env of a real gateway: I²C buses through periph's host
// drivers (on a Raspberry Pi, bus "1" is /dev/i2c-1 on header pins 3 and 5),
// sysfs at /, commands through os/exec.
func HostEnv() Env {
	return Env{OpenI2C: openHostI2C}
}

func openHostI2C(name string) (i2c.BusCloser, error) {
	// host.Init is idempotent: later calls return the first call's result.
	if _, err := host.Init(); err != nil {
		return nil, err
	}
	return i2creg.Open(name)
}
