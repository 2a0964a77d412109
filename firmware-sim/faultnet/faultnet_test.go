package faultnet_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
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

// pair dials a server through d and returns both ends of the connection.
func pair(t *testing.T, d *faultnet.Dialer) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = d.DialContext(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestStall: a stalled link is a dead cellular link under TCP. Small writes
// are taken into the send buffer and reach the peer only when the stall
// ends; a write beyond the buffer blocks until its deadline; what the peer
// sends, and its close, are held; nothing fails until the link is cut.
func TestStall(t *testing.T) {
	var d faultnet.Dialer
	c, s := pair(t, &d)
	// A read waiting on the socket when the stall begins (as an MQTT
	// client's reader always is) or one started during it: either way,
	// what the peer sends during the stall must not come through.
	read := make(chan []byte, 1)
	go func() {
		b := make([]byte, 8)
		n, _ := c.Read(b)
		read <- b[:n]
	}()
	d.SetStalled(true)

	// Taken into the send buffer: returns at once, reaches nobody.
	if n, err := c.Write([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("a small write on a stalled link: %d, %v; want it buffered", n, err)
	}
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := s.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the peer read %d bytes (err %v) through a stalled link", n, err)
	}
	s.SetReadDeadline(time.Time{})

	// The send buffer is full: a write blocks until its deadline.
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := c.Write(make([]byte, faultnet.SendBuffer)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a write beyond the send buffer of a stalled link: %d, %v; want os.ErrDeadlineExceeded", n, err)
	}
	c.SetWriteDeadline(time.Time{})

	// What the peer sends is held.
	if _, err := s.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if got := <-read; len(got) != 0 {
		t.Fatalf("read %q through a stalled link", got)
	}
	c.SetReadDeadline(time.Time{})

	// The stall ends: the buffered write reaches the peer, the held reply
	// reaches the client, in order.
	d.SetStalled(false)
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("the peer after the stall: %q %v, want the buffered ping", buf, err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("the client after the stall: %q %v, want the held pong", buf, err)
	}

	// The peer's close during a stall is held too, then delivered.
	d.SetStalled(true)
	s.Close()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a stalled read saw %v; want the peer's close held", err)
	}
	c.SetReadDeadline(time.Time{})
	d.SetStalled(false)
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("read after the stall: %v, want the peer's close (EOF)", err)
	}
}

// TestStallCutAndClose: a read or write blocked by a stall returns
// ErrLinkCut when the link is cut, and net.ErrClosed when its owner closes
// the connection (paho reports only the former as a lost connection).
func TestStallCutAndClose(t *testing.T) {
	var d faultnet.Dialer
	c1, _ := pair(t, &d)
	c2, _ := pair(t, &d)
	d.SetStalled(true)
	defer d.SetStalled(false)
	read := make(chan error, 1)
	go func() { _, err := c1.Read(make([]byte, 1)); read <- err }()
	wrote := make(chan error, 1)
	go func() { _, err := c1.Write(make([]byte, faultnet.SendBuffer+1)); wrote <- err }()
	d.Cut()
	if err := <-read; !errors.Is(err, faultnet.ErrLinkCut) {
		t.Fatalf("a stalled read on a cut link: %v, want ErrLinkCut", err)
	}
	if err := <-wrote; !errors.Is(err, faultnet.ErrLinkCut) {
		t.Fatalf("a stalled write on a cut link: %v, want ErrLinkCut", err)
	}
	// c2 was cut too (Cut cuts every connection); a fresh one to close.
	_ = c2
	c3, _ := pair(t, &d)
	go func() { _, err := c3.Write(make([]byte, faultnet.SendBuffer+1)); wrote <- err }()
	c3.Close()
	if err := <-wrote; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a stalled write on a closed connection: %v, want net.ErrClosed", err)
	}
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
