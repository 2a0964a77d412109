package opcua

import (
	"errors"
	"io"
	"log"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	log.SetOutput(io.Discard) // the server library logs to the standard logger
	var opts []goleak.Option
	for _, f := range IgnoreLeaks {
		opts = append(opts, goleak.IgnoreTopFunction(f))
	}
	goleak.VerifyTestMain(m, opts...)
}

// TestRestartDropsClients: a stopped PLC drops its connections and refuses
// new ones; started again, it accepts them on the same port.
func TestRestartDropsClients(t *testing.T) {
	p, err := StartPLC()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.Stop()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// Dropped: a clean close (EOF) or a reset, depending on what the relay
	// had in flight; never a timeout.
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read on a connection to a stopped PLC: %v, want EOF or a reset", err)
	}
	if c2, err := net.Dial("tcp", p.Addr); err == nil {
		c2.Close()
		t.Fatal("a stopped PLC accepted a connection")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	c3, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	c3.Close()
}

func TestSetChecksTheTagType(t *testing.T) {
	p := &PLC{tags: map[string]*tag{Count: {uint32(0), time.Time{}}}}
	defer func() {
		if recover() == nil {
			t.Fatal("a float64 set into a UInt32 tag")
		}
	}()
	p.Set(Count, 1.5, time.Now())
}
