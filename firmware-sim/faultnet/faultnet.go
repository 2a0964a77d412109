// Package faultnet is a fault-injecting dialer for simulated links: cut the
// connections a client has (the peer sees them vanish), keep the link down
// so dials fail, delay every write, or stall the link (connections stay up
// but nothing moves, as when a cellular link dies silently: only keepalives
// notice).
//
// A cut connection reports ErrLinkCut from Read and Write, never "use of
// closed network connection": MQTT clients (paho) take that error to mean
// they closed the socket on purpose and do not report the connection lost.
package faultnet

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrLinkCut is returned by the I/O of a cut connection.
var ErrLinkCut = errors.New("faultnet: link cut")

// ErrLinkDown is returned by dials while the link is down.
var ErrLinkDown = errors.New("faultnet: link down")

// Dialer dials TCP through a link that can fail on command. The zero value
// is a working link. Safe for concurrent use.
type Dialer struct {
	mu      sync.Mutex
	conns   map[*conn]struct{}
	down    bool
	delay   time.Duration
	stalled chan struct{} // closed when the stall ends; nil when not stalled
	dials   atomic.Int64
}

// DialContext dials addr unless the link is down.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	down := d.down
	d.mu.Unlock()
	if down {
		return nil, ErrLinkDown
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	fc := &conn{Conn: c, d: d, cutCh: make(chan struct{})}
	d.mu.Lock()
	if d.down {
		// The link went down while this dial was under way. Cut has
		// already run and could not see this connection: refuse it here,
		// or it would outlive the outage.
		d.mu.Unlock()
		c.Close()
		return nil, ErrLinkDown
	}
	if d.conns == nil {
		d.conns = map[*conn]struct{}{}
	}
	d.conns[fc] = struct{}{}
	d.mu.Unlock()
	d.dials.Add(1)
	return fc, nil
}

// Dials counts successful dials.
func (d *Dialer) Dials() int64 { return d.dials.Load() }

// Cut breaks every open connection.
func (d *Dialer) Cut() {
	d.mu.Lock()
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	for c := range conns {
		c.markCut()
		c.Conn.Close()
	}
}

// SetDown cuts the open connections (if down) and makes dials fail until SetDown(false).
func (d *Dialer) SetDown(down bool) {
	d.mu.Lock()
	d.down = down
	d.mu.Unlock()
	if down {
		d.Cut()
	}
}

// SetStalled stalls the link (true) or lets it flow again (false): while
// stalled, reads and writes of every connection block, and return as soon
// as the stall ends or the link is cut.
func (d *Dialer) SetStalled(stalled bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case stalled && d.stalled == nil:
		d.stalled = make(chan struct{})
	case !stalled && d.stalled != nil:
		close(d.stalled)
		d.stalled = nil
	}
}

// wait blocks while the link is stalled, until it flows again or c is cut.
func (c *conn) wait() {
	c.d.mu.Lock()
	stall := c.d.stalled
	c.d.mu.Unlock()
	if stall != nil {
		select {
		case <-stall:
		case <-c.cutCh:
		}
	}
}

// SetDelay delays every write by delay (0: none), a slow link.
func (d *Dialer) SetDelay(delay time.Duration) {
	d.mu.Lock()
	d.delay = delay
	d.mu.Unlock()
}

type conn struct {
	net.Conn
	d       *Dialer
	cut     atomic.Bool
	cutCh   chan struct{}
	cutOnce sync.Once
}

func (c *conn) markCut() {
	c.cut.Store(true)
	c.cutOnce.Do(func() { close(c.cutCh) })
}

func (c *conn) Read(b []byte) (int, error) {
	c.wait()
	n, err := c.Conn.Read(b)
	if err != nil && c.cut.Load() {
		err = ErrLinkCut
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	c.d.mu.Lock()
	delay := c.d.delay
	c.d.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		<-t.C
	}
	c.wait()
	if c.cut.Load() {
		return 0, ErrLinkCut
	}
	n, err := c.Conn.Write(b)
	if err != nil && c.cut.Load() {
		err = ErrLinkCut
	}
	return n, err
}

func (c *conn) Close() error {
	c.cutOnce.Do(func() { close(c.cutCh) }) // unblock a stalled read or write
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}
