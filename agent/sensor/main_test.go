package sensor

import (
	"io"
	"log"
	"testing"

	"go.uber.org/goleak"

	plc "github.com/freshet-iot/freshet/firmware-sim/opcua"
)

func TestMain(m *testing.M) {
	// The emulated OPC UA server's library logs to the standard logger.
	log.SetOutput(io.Discard)
	var opts []goleak.Option
	for _, f := range plc.IgnoreLeaks {
		opts = append(opts, goleak.IgnoreTopFunction(f))
	}
	goleak.VerifyTestMain(m, opts...)
}
