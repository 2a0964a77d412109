// Package sensor is the agent's sensor layer: it reads the configured
// sensors, each on its own interval, and hands their readings to a sink (the
// outbox) as protocol.Readings.
//
// The parts follow the data flow:
//
//   - Config (config.go) is one sensor entry of the agent's YAML config;
//     Validate checks it, names the offending key in its errors and fills in
//     defaults.
//   - Open(Config, Env) returns the Source for a config. Env carries what a
//     Source needs from outside: how to open an I²C bus, where sysfs is, how
//     to run a command; tests inject an emulated bus and a temporary root.
//   - Runner reads every Source on its interval with a timeout, checks the
//     values (plausible.go), counts reads and errors for Status and
//     Prometheus, retries failures with capped exponential backoff, and
//     stamps each sample with the time its read started.
//
// # Sensor types
//
// Chips on I²C through periph.io/x/devices/v3 drivers (datasheets: Bosch
// BST-BME280-DS002 and BST-BMP280-DS001, Microchip DS25095A for the MCP9808,
// Aosong's AHT20 datasheet v1.1):
//
//	bme280   temperature C (0.01), humidity % (0.01), pressure hPa (0.01)
//	bmp280   temperature C (0.01), pressure hPa (0.01)
//	mcp9808  temperature C (0.0001, the chip's steps are 0.0625)
//	aht20    temperature C (0.01), humidity % (0.01)
//
// Files in sysfs:
//
//	ds18b20   temperature C (0.001), from /sys/bus/w1/devices/<device>/temperature
//	          or, on older kernels, w1_slave (Maxim DS18B20 datasheet 19-7487)
//	cpu_temp  temperature C (0.001), from /sys/class/thermal/thermal_zone<zone>/temp
//
// The numbers in parentheses are the default resolutions; a config's
// resolution key overrides them per metric.
//
// # The exec source
//
// An exec sensor runs its command (an argv list, no shell) once per read,
// with the sensor's timeout, and parses its standard output. Each line is
//
//	metric=value [unit]
//
// Empty lines and lines starting with # are ignored; each metric may appear
// once per run. The metric follows the sensor-name rule [A-Za-z0-9_.:-]. A
// value that is a decimal number (21.5, -3, 1e-3) becomes a float, with an
// optional unit after a space, at the resolution the config sets for that
// metric, else 0.01 for temperature C, humidity % and pressure hPa, else
// none (sent as an exact float64). The value true or false becomes a bool.
// Anything else, to the end of the line, becomes a string (at most 1024
// bytes of UTF-8, no control characters such as NUL or an ANSI escape). A non-zero exit status, a timeout, more than 64 KiB of
// output or a line that does not parse fails the read; the error carries the
// tail of the command's standard error.
//
//	$ /usr/local/bin/ups-status
//	battery=87 %
//	on_battery=false
//	state=online, charging
//
// # Field buses
//
// A modbus sensor (modbus.go, modbus_config.go) reads one slave's register
// map through github.com/simonvetter/modbus: Modbus TCP, RTU on a serial
// port, or RTU over TCP. ModbusPool shares one connection per serial port
// or TCP endpoint among the sensors on it, one request at a time. Exception
// responses are *ModbusException, counted as modbus_<name>; garbled frames
// ErrBadFrame.
//
// An opcua sensor (opcua.go, opcua_config.go) reads nodes of an OPC UA
// server through github.com/gopcua/opcua, polled or subscribed, with
// source timestamps as event time (Value.Time) when plausible. A read with
// nothing new returns ErrNoChange, which the runner counts as a read and
// passes nothing on.
//
// # Plausibility
//
// Every float or int value is checked against the plausible range of its
// metric: the config's plausible key, else DefaultRange (temperature -60..125
// C, humidity 0..100 %, pressure 300..1100 hPa). NaN, ±Inf and values out of
// range fail the read with ErrImplausible, and nothing of that sample is
// passed on.
package sensor
