package faultnet_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/faultnet"
)

func TestCutAndDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			peer <- err
			return
		}
		_, err = io.ReadAll(c) // returns when the client side goes away
		c.Close()
		peer <- err
	}()
	var d faultnet.Dialer
	c, err := d.DialContext(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	d.SetDown(true)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, faultnet.ErrLinkCut) {
		t.Fatalf("read on a cut link: %v, want ErrLinkCut", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, faultnet.ErrLinkCut) {
		t.Fatalf("write on a cut link: %v, want ErrLinkCut", err)
	}
	if err := <-peer; err != nil {
		t.Fatalf("peer did not see a clean end: %v", err)
	}
	if _, err := d.DialContext(context.Background(), "tcp", l.Addr().String()); !errors.Is(err, faultnet.ErrLinkDown) {
		t.Fatalf("dial while down: %v", err)
	}
	d.SetDown(false)
	go l.Accept()
	c2, err := d.DialContext(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial after the link is back: %v", err)
	}
	c2.Close()
	if d.Dials() != 2 {
		t.Fatalf("dials %d", d.Dials())
	}
}

// TestStall: a stalled link blocks reads and writes without failing them;
// they complete when the stall ends, and fail when the link is cut.
func TestStall(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(c, c) // echo
			c.Close()
		}
	}()
	var d faultnet.Dialer
	c, err := d.DialContext(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d.SetStalled(true)
	wrote := make(chan error, 1)
	go func() { _, err := c.Write([]byte("x")); wrote <- err }()
	select {
	case <-wrote:
		t.Fatal("a write went through a stalled link")
	default:
	}
	d.SetStalled(false)
	if err := <-wrote; err != nil {
		t.Fatalf("write after the stall: %v", err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("echo after the stall: %q %v", buf, err)
	}
	d.SetStalled(true)
	read := make(chan error, 1)
	go func() { _, err := c.Read(buf); read <- err }()
	d.Cut()
	if err := <-read; !errors.Is(err, faultnet.ErrLinkCut) {
		t.Fatalf("a stalled read on a cut link: %v, want ErrLinkCut", err)
	}
	d.SetStalled(false)
}

// TestDownDuringDial: a link taken down while a dial is under way never
// leaves that connection working. Once SetDown(true) has returned, the dial
// either failed or gave a connection that is already cut.
func TestDownDuringDial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	var worked, failed int
	for i := range 400 {
		var d faultnet.Dialer
		type result struct {
			c   net.Conn
			err error
		}
		dialed := make(chan result, 1)
		go func() {
			c, err := d.DialContext(context.Background(), "tcp", l.Addr().String())
			dialed <- result{c, err}
		}()
		// Spread the moment the link goes down over the dial's duration
		// (tens of microseconds on loopback), so that some rounds land
		// between its start and its end.
		for deadline := time.Now().Add(time.Duration(i%80) * time.Microsecond); time.Now().Before(deadline); {
		}
		d.SetDown(true)
		r := <-dialed
		if r.err != nil {
			if !errors.Is(r.err, faultnet.ErrLinkDown) {
				t.Fatalf("round %d: dial: %v", i, r.err)
			}
			failed++
			continue
		}
		worked++
		_, err := r.c.Write([]byte("x"))
		r.c.Close()
		if !errors.Is(err, faultnet.ErrLinkCut) {
			t.Fatalf("round %d: a connection dialed while the link went down still works (write: %v)", i, err)
		}
	}
	t.Logf("%d dials refused, %d dialed and cut", failed, worked)
}
