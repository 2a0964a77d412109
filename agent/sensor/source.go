package sensor

import (
	"context"
	"fmt"
	"os/exec"

	"periph.io/x/conn/v3/i2c"

	"github.com/freshet-iot/freshet/protocol"
)

// Value is one metric of one sample.
type Value struct {
	Metric, Unit string
	Type         protocol.ValueType
	// Resolution, for a Float, is 0 or a power of ten (see protocol.Series.Resolution).
	Resolution float64
	// The value: the field matching Type.
	Float float64
	Int   int64
	Bool  bool
	Str   string
	// Time is the value's event time in Unix ns when the source knows it
	// (an OPC UA source timestamp); 0 means the time the read started.
	Time int64
}

// Source reads one sample of one sensor.
//
// The Runner never calls Read concurrently on one Source, and passes a
// context that ends at the sensor's timeout; a Read that cannot honour it
// (a driver blocked in a bus transfer) is abandoned by the runner, not
// waited for. Close releases the source; it may be called while an
// abandoned Read is still blocked, and should then not wait for it.
type Source interface {
	Read(ctx context.Context) ([]Value, error)
	Close() error
}

// Env is what a Source needs from outside the process.
type Env struct {
	// OpenI2C opens an I²C bus by the name in the config. HostEnv's opens
	// "1", "I2C1" or "/dev/i2c-1" through periph's host drivers; tests pass
	// an emulated bus. Nil: the I²C types cannot be opened.
	OpenI2C func(name string) (i2c.BusCloser, error)
	// SysRoot is the directory under which sysfs is found as sys/...; "" is "/".
	SysRoot string
	// Command builds the process of an exec read; nil is exec.CommandContext.
	Command func(ctx context.Context, name string, arg ...string) *exec.Cmd
	// Modbus shares serial ports and TCP connections among the modbus
	// sensors opened with this Env. Nil: each sensor gets its own, so
	// sensors on one port would collide; the agent always sets it.
	Modbus *ModbusPool
}

// Open validates c (filling its defaults into Open's copy) and returns the
// Source for it. Open fails on configuration and environment errors (a bad
// key, a bus that does not exist); a chip that does not answer is not an
// Open error but a read error, counted and retried, so a sensor unplugged at
// boot starts working when it is plugged in.
func Open(c Config, env Env) (Source, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	spec, _ := specOf(c.Type)
	metrics := make([]metricSpec, len(spec.metrics))
	for i, m := range spec.metrics {
		m.res = c.resolution(m.name, m.res)
		metrics[i] = m
	}
	var (
		src Source
		err error
	)
	switch c.Type {
	case TypeBME280, TypeBMP280, TypeMCP9808, TypeAHT20:
		src, err = openChip(c, env, metrics)
	case TypeDS18B20:
		src = newW1Source(env.SysRoot, c.Device, metrics[0])
	case TypeCPUTemp:
		src = newThermalSource(env.SysRoot, c.Zone, metrics[0])
	case TypeExec:
		src, err = newExecSource(c, env)
	case TypeModbus:
		src, err = openModbus(c, env)
	case TypeOPCUA:
		src, err = openOPCUA(c, env)
	}
	if err != nil {
		return nil, fmt.Errorf("sensor %q: open %s: %w", c.Name, c.Type, err)
	}
	return src, nil
}
