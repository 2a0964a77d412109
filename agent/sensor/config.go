package sensor

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/protocol"
)

// Sensor types.
const (
	TypeBME280  = "bme280"   // Bosch BME280 on I²C: temperature, humidity, pressure
	TypeBMP280  = "bmp280"   // Bosch BMP280 on I²C: temperature, pressure
	TypeMCP9808 = "mcp9808"  // Microchip MCP9808 on I²C: temperature
	TypeAHT20   = "aht20"    // Aosong AHT20 on I²C: temperature, humidity
	TypeDS18B20 = "ds18b20"  // Maxim DS18B20 on 1-Wire, through the kernel's w1 sysfs files
	TypeCPUTemp = "cpu_temp" // a thermal zone in sysfs
	TypeExec    = "exec"     // a command that prints metric=value lines
	TypeModbus  = "modbus"   // a Modbus slave over TCP, RTU or RTU over TCP
	TypeOPCUA   = "opcua"    // nodes of an OPC UA server
)

// Defaults and bounds of the timing keys.
const (
	DefaultInterval   = 10 * time.Second
	MinInterval       = 100 * time.Millisecond
	MaxInterval       = 24 * time.Hour
	MaxDefaultTimeout = 5 * time.Second // the default timeout is the interval, capped at this
)

// Config is one sensor entry of the agent's config file. Decode it with
// yaml.v3 and KnownFields(true); then Validate it, which fills in defaults.
//
//	sensors:
//	  - name: room
//	    type: bme280
//	    bus: "1"            # "1", "I2C1" or "/dev/i2c-1"
//	    address: 0x76
//	    interval: 10s
//	    labels: {room: kitchen}
//	    resolution: {pressure: 0.1}
//	    plausible: {temperature: {min: -20, max: 60}}
type Config struct {
	// Name identifies the sensor in readings and status: 1..64 bytes of
	// [A-Za-z0-9_.:-], unique within the agent.
	Name string `yaml:"name"`
	// Type is one of the Type constants.
	Type string `yaml:"type"`
	// Interval between reads. Default 10s; 100ms..24h.
	Interval Duration `yaml:"interval"`
	// Timeout bounds one read. Default: the interval, at most 5s. It may not
	// exceed the interval.
	Timeout Duration `yaml:"timeout"`
	// Labels tag every reading of the sensor (at most 16; keys
	// [A-Za-z][A-Za-z0-9_]*, not device, sensor, unit or time).
	Labels map[string]string `yaml:"labels"`

	// Bus names the I²C bus of bme280, bmp280, mcp9808 and aht20. Required.
	Bus string `yaml:"bus"`
	// Address is the I²C address: bme280/bmp280 0x76 (default) or 0x77;
	// mcp9808 0x18 (default) to 0x1f; aht20 only 0x38.
	Address uint16 `yaml:"address"`
	// Device is the 1-Wire id of a ds18b20, as in /sys/bus/w1/devices
	// (e.g. 28-00000a1b2c3d). Required.
	Device string `yaml:"device"`
	// Zone is the thermal zone of cpu_temp: /sys/class/thermal/thermal_zone<Zone>. Default 0.
	Zone int `yaml:"zone"`
	// Command is the argv of an exec sensor, run without a shell. Required.
	Command []string `yaml:"command"`
	// Modbus is the slave and register map of a modbus sensor. Required.
	Modbus *ModbusConfig `yaml:"modbus"`
	// OPCUA is the server and nodes of an opcua sensor. Required.
	OPCUA *OPCUAConfig `yaml:"opcua"`

	// Resolution overrides the resolution of a metric: 0 (send the float as
	// is) or a power of ten from 1e-9 to 1e9.
	Resolution map[string]float64 `yaml:"resolution"`
	// Plausible overrides the plausible range of a metric (see DefaultRange);
	// a bound left out keeps its default.
	Plausible map[string]Range `yaml:"plausible"`
}

// Range bounds the plausible values of a metric, inclusive. A nil bound is unset.
type Range struct {
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
}

// Duration is a time.Duration written in YAML as a Go duration string: "500ms", "10s", "1m30s".
type Duration = cfgfile.Duration

// metricSpec is one metric a sensor type produces.
type metricSpec struct {
	name, unit string
	res        float64 // default resolution
}

// typeSpec says what a sensor type needs and produces.
type typeSpec struct {
	keys     []string     // type-specific keys it uses
	required []string     // of those, the ones without a default
	metrics  []metricSpec // nil: any metric (exec)
	addr     func(a uint16) bool
	defAddr  uint16
}

func specOf(typ string) (typeSpec, bool) {
	temperature := func(res float64) metricSpec { return metricSpec{"temperature", "C", res} }
	humidity := metricSpec{"humidity", "%", 0.01}
	pressure := metricSpec{"pressure", "hPa", 0.01}
	i2cKeys, i2cRequired := []string{"bus", "address"}, []string{"bus"}
	bmx := func(a uint16) bool { return a == 0x76 || a == 0x77 }
	switch typ {
	case TypeBME280:
		return typeSpec{keys: i2cKeys, required: i2cRequired, addr: bmx, defAddr: 0x76,
			metrics: []metricSpec{temperature(0.01), humidity, pressure}}, true
	case TypeBMP280:
		return typeSpec{keys: i2cKeys, required: i2cRequired, addr: bmx, defAddr: 0x76,
			metrics: []metricSpec{temperature(0.01), pressure}}, true
	case TypeMCP9808:
		// 0.0625 °C steps: four decimals keep them exact.
		return typeSpec{keys: i2cKeys, required: i2cRequired, defAddr: 0x18,
			addr:    func(a uint16) bool { return a >= 0x18 && a <= 0x1f },
			metrics: []metricSpec{temperature(0.0001)}}, true
	case TypeAHT20:
		return typeSpec{keys: i2cKeys, required: i2cRequired, defAddr: 0x38,
			addr:    func(a uint16) bool { return a == 0x38 },
			metrics: []metricSpec{temperature(0.01), humidity}}, true
	case TypeDS18B20:
		// The kernel reports millidegrees.
		return typeSpec{keys: []string{"device"}, required: []string{"device"},
			metrics: []metricSpec{temperature(0.001)}}, true
	case TypeCPUTemp:
		return typeSpec{keys: []string{"zone"}, metrics: []metricSpec{temperature(0.001)}}, true
	case TypeExec:
		return typeSpec{keys: []string{"command"}, required: []string{"command"}}, true
	case TypeModbus:
		return typeSpec{keys: []string{"modbus"}, required: []string{"modbus"}}, true
	case TypeOPCUA:
		return typeSpec{keys: []string{"opcua"}, required: []string{"opcua"}}, true
	}
	return typeSpec{}, false
}

func (s typeSpec) metric(name string) (metricSpec, bool) {
	for _, m := range s.metrics {
		if m.name == name {
			return m, true
		}
	}
	return metricSpec{}, false
}

// Validate checks c and fills in the defaults of the keys it leaves out. An
// error is a *ConfigError naming the offending key, e.g.
// `sensor "room": bus: required for type bme280`. Keys that do not apply to
// the type are errors too. Validate is idempotent.
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{Sensor: c.Name, Key: key, Err: fmt.Errorf(format, args...)}
	}
	if err := checkName(c.Name); err != nil {
		return bad("name", "%v", err)
	}
	spec, ok := specOf(c.Type)
	if !ok {
		if c.Type == "" {
			return bad("type", "required")
		}
		return bad("type", "unknown type %q (want one of %s)", c.Type,
			strings.Join([]string{TypeBME280, TypeBMP280, TypeMCP9808, TypeAHT20, TypeDS18B20, TypeCPUTemp, TypeExec, TypeModbus, TypeOPCUA}, ", "))
	}

	// Timing.
	if c.Interval == 0 {
		c.Interval = Duration(DefaultInterval)
	}
	if iv := time.Duration(c.Interval); iv < MinInterval || iv > MaxInterval {
		return bad("interval", "%v is outside %v..%v", iv, MinInterval, MaxInterval)
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(min(time.Duration(c.Interval), MaxDefaultTimeout))
	}
	if c.Timeout < 0 {
		return bad("timeout", "%v is negative", time.Duration(c.Timeout))
	}
	if c.Timeout > c.Interval {
		return bad("timeout", "%v exceeds the interval %v", time.Duration(c.Timeout), time.Duration(c.Interval))
	}

	// Labels.
	if len(c.Labels) > maxLabels {
		return bad("labels", "%d labels, limit %d", len(c.Labels), maxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		if err := checkLabelKey(k); err != nil {
			return bad("labels."+k, "%v", err)
		}
		if err := checkPrintable(c.Labels[k], false); err != nil {
			return bad("labels."+k, "value %v", err)
		}
	}

	// Type-specific keys: only the type's own, and its required ones present.
	set := map[string]bool{
		"bus":     c.Bus != "",
		"address": c.Address != 0,
		"device":  c.Device != "",
		"zone":    c.Zone != 0,
		"command": len(c.Command) > 0,
		"modbus":  c.Modbus != nil,
		"opcua":   c.OPCUA != nil,
	}
	for _, k := range []string{"bus", "address", "device", "zone", "command", "modbus", "opcua"} {
		if set[k] && !slices.Contains(spec.keys, k) {
			return bad(k, "not used by type %s", c.Type)
		}
	}
	for _, k := range spec.required {
		if !set[k] {
			return bad(k, "required for type %s", c.Type)
		}
	}
	if spec.addr != nil {
		if c.Address == 0 {
			c.Address = spec.defAddr
		}
		if !spec.addr(c.Address) {
			return bad("address", "0x%02x is not an address of a %s", c.Address, c.Type)
		}
	}
	switch c.Type {
	case TypeDS18B20:
		if err := checkW1ID(c.Device); err != nil {
			return bad("device", "%v", err)
		}
	case TypeCPUTemp:
		if c.Zone < 0 {
			return bad("zone", "%d is negative", c.Zone)
		}
	case TypeExec:
		if c.Command[0] == "" {
			return bad("command", "empty program name")
		}
		for i, a := range c.Command {
			if strings.IndexByte(a, 0) >= 0 {
				return bad("command", "argument %d holds a NUL byte", i)
			}
		}
	case TypeModbus:
		if err := c.Modbus.validate(c); err != nil {
			return err
		}
		for _, r := range c.Modbus.Registers {
			spec.metrics = append(spec.metrics, metricSpec{name: r.Metric, unit: r.Unit})
		}
		if len(c.Resolution) > 0 {
			return bad("resolution", "set the resolution of a modbus register as modbus.registers[i].resolution")
		}
	case TypeOPCUA:
		if err := c.OPCUA.validate(c); err != nil {
			return err
		}
		for _, n := range c.OPCUA.Nodes {
			spec.metrics = append(spec.metrics, metricSpec{name: n.Metric, unit: n.Unit})
		}
		if len(c.Resolution) > 0 {
			return bad("resolution", "set the resolution of an opcua node as opcua.nodes[i].resolution")
		}
	}

	// Per-metric overrides: for a fixed set of metrics, only those.
	checkMetric := func(key, m string) error {
		if err := checkName(m); err != nil {
			return bad(key+"."+m, "metric name %v", err)
		}
		if _, ok := spec.metric(m); spec.metrics != nil && !ok {
			return bad(key+"."+m, "type %s has no metric %q (it has %s)", c.Type, m, spec.metricNames())
		}
		return nil
	}
	for _, m := range slices.Sorted(maps.Keys(c.Resolution)) {
		if err := checkMetric("resolution", m); err != nil {
			return err
		}
		if r := c.Resolution[m]; r != 0 {
			if _, err := protocol.ResolutionExp(r); err != nil {
				return bad("resolution."+m, "%g is not 0 or a power of ten from 1e-9 to 1e9", r)
			}
		}
	}
	for _, m := range slices.Sorted(maps.Keys(c.Plausible)) {
		if err := checkMetric("plausible", m); err != nil {
			return err
		}
		r := c.Plausible[m]
		switch {
		case r.Min == nil && r.Max == nil:
			return bad("plausible."+m, "want min, max or both")
		case r.Min != nil && math.IsNaN(*r.Min), r.Max != nil && math.IsNaN(*r.Max):
			return bad("plausible."+m, "NaN bound")
		}
		if lo, hi := c.bounds(m, spec.unitOf(m)); lo > hi {
			return bad("plausible."+m, "min %g exceeds max %g", lo, hi)
		}
	}
	return nil
}

func (s typeSpec) metricNames() string {
	names := make([]string, len(s.metrics))
	for i, m := range s.metrics {
		names[i] = m.name
	}
	return strings.Join(names, ", ")
}

// unitOf is the unit of a fixed metric, "" when the type has no such metric.
func (s typeSpec) unitOf(metric string) string {
	m, _ := s.metric(metric)
	return m.unit
}

// resolution returns the resolution of metric: the override, else def.
func (c *Config) resolution(metric string, def float64) float64 {
	if r, ok := c.Resolution[metric]; ok {
		return r
	}
	return def
}

// checkW1ID accepts a 1-Wire slave id as the kernel names it: two hex digits
// of family code, a dash, twelve hex digits of serial.
func checkW1ID(id string) error {
	ok := len(id) == 15 && id[2] == '-'
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = i == 2 || c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
	}
	if !ok {
		return fmt.Errorf("%q: want a 1-Wire id like 28-00000a1b2c3d", id)
	}
	return nil
}
