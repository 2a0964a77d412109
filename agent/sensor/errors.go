package sensor

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// Errors a read can wrap, grouped by what the runner counts. Reason maps an
// error to its counter label with errors.Is, never by its text; an error that
// wraps none of these counts as "io".
var (
	// ErrTimeout: the read did not finish within the sensor's timeout, or a
	// previous read that timed out is still running.
	ErrTimeout = errors.New("read timed out")
	// ErrImplausible: a value outside the metric's plausible range, or NaN or ±Inf.
	ErrImplausible = errors.New("implausible value")
	// ErrParse: the source's output (sysfs file, command output) or the
	// values a Source returned are not in the expected form.
	ErrParse = errors.New("unparsable reading")
	// ErrBadFrame: a field-bus response that is garbled (bad CRC, short
	// frame) or does not match its request (unit id, transaction id).
	ErrBadFrame = errors.New("bad frame")
	// ErrBadStatus: the server reported a value as bad (an OPC UA status
	// code of severity Bad).
	ErrBadStatus = errors.New("bad status")
	// ErrNoChange is not a failure: a source that reports changes (OPC UA)
	// has nothing new since its last read. The runner counts the read and
	// passes nothing on.
	ErrNoChange = errors.New("no new value")
	// ErrNoOPCUA is the Open error of an opcua sensor in a build without
	// OPC UA (see OPCUASupported).
	ErrNoOPCUA = errors.New("this freshet-agent is built without OPC UA: run freshet-agent-opcua (make cross builds it; or go build -tags opcua)")
)

// Reasons an error is counted under, the values of the reason label of
// freshet_agent_sensor_errors_total.
const (
	ReasonIO          = "io"
	ReasonTimeout     = "timeout"
	ReasonImplausible = "implausible"
	ReasonParse       = "parse"
	ReasonBadFrame    = "bad_frame"  // field buses only
	ReasonBadStatus   = "bad_status" // OPC UA only
)

// reasons lists every value Reason returns for a non-nil error of a sensor of type typ.
func reasons(typ string) []string {
	out := []string{ReasonIO, ReasonTimeout, ReasonImplausible, ReasonParse}
	switch typ {
	case TypeModbus:
		out = append(out, modbusReasons()...)
	case TypeOPCUA:
		out = append(out, ReasonBadStatus)
	}
	return out
}

// Reason returns the counter label for a read error: "timeout",
// "implausible", "parse", for field buses "bad_frame", "bad_status" or
// "modbus_<exception>" (e.g. modbus_illegal_data_address) or, for anything
// else, "io". Nil maps to "".
func Reason(err error) string {
	if e, ok := errors.AsType[*ModbusException](err); ok {
		return e.reason()
	}
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrBadFrame):
		return ReasonBadFrame
	case errors.Is(err, ErrBadStatus):
		return ReasonBadStatus
	case errors.Is(err, ErrImplausible):
		return ReasonImplausible
	case errors.Is(err, ErrParse):
		return ReasonParse
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout
	}
	return ReasonIO
}

// ConfigError is a problem with one key of one sensor's config. Key is the
// YAML key ("address", "labels.room", "plausible.temperature"), so a caller
// holding the yaml.Node tree can point at the line.
type ConfigError struct {
	Sensor string
	Key    string
	Err    error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("sensor %q: %s: %v", e.Sensor, e.Key, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }
