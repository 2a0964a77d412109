package faultnet_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

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
