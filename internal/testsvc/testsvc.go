// Package testsvc starts the real services freshet's tests talk to, on free
// loopback ports, and stops them when the test ends: the embedded mochi-mqtt
// broker (always), Mosquitto (when installed) and InfluxDB 1.8 (built by
// `make tools`). No mocks: a test that passes here has spoken MQTT to a real
// broker and line protocol to a real influxd.
//
// When FRESHET_REQUIRE_SERVICES=1 (CI sets it) a missing Mosquitto or
// influxd fails the test instead of skipping it.
package testsvc

import (
	"os"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/internal/localsvc"
)

// RequireEnv is the variable that turns a missing service into a failure.
const RequireEnv = "FRESHET_REQUIRE_SERVICES"

// Required reports whether missing services must fail tests.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// skipShort skips tb under -short (make test-short runs no services).
func skipShort(tb testing.TB, what string) {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("-short: %s not started", what)
	}
}

// missing skips tb, or fails it when services are required.
func missing(tb testing.TB, what, hint string) {
	tb.Helper()
	if Required() {
		tb.Fatalf("%s is not available and %s=1: %s", what, RequireEnv, hint)
	}
	tb.Skipf("%s is not available, so this test did not run against it: %s", what, hint)
}

// WaitFor polls cond every few milliseconds until it returns nil or timeout
// passes, then fails tb with cond's last error. Use it instead of sleeping.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	if err := localsvc.Poll(timeout, cond); err != nil {
		tb.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll is localsvc.Poll: it returns cond's last error on timeout.
func Poll(timeout time.Duration, cond func() error) error { return localsvc.Poll(timeout, cond) }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) { return localsvc.FreePort() }

// ToolPath finds a tool built by `make tools` (localsvc.ToolPath).
func ToolPath(name, env string) (string, error) { return localsvc.ToolPath(name, env) }
