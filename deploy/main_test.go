package deploy_test

import (
	"io"
	"log"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	log.SetOutput(io.Discard) // the emulated PLC's OPC UA server (TestDashboardQueries' field gateway) logs to the standard logger
	os.Exit(m.Run())
}
