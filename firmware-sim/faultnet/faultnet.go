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
	"os"
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
	fc := &conn{Conn: c, d: d, cutCh: make(chan struct{}), dlChanged: make(chan struct{})}
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

// SetStalled stalls the link (true) or lets it flow again (false), as a
// cellular link that dies without a word does to TCP: nothing crosses it,
// yet no connection fails. While stalled, a write is taken into the
// connection's send buffer (SendBuffer bytes, the kernel's socket buffer)
// and returns; once that is full, writes block until the stall ends, the
// write deadline passes (os.ErrDeadlineExceeded) or the link is cut. Bytes
// and a close from the peer are held, not delivered: reads block the same
// way. When the stall ends, what was held goes through in order.
func (d *Dialer) SetStalled(stalled bool) {
	d.mu.Lock()
	var conns []*conn
	switch {
	case stalled && d.stalled == nil:
		d.stalled = make(chan struct{})
	case !stalled && d.stalled != nil:
		close(d.stalled)
		d.stalled = nil
		for c := range d.conns {
			conns = append(conns, c)
		}
	}
	d.mu.Unlock()
	for _, c := range conns {
		go c.flush() // what was written during the stall, even if nothing more is
	}
}

// SendBuffer is how many bytes a connection takes from writes while its link
// is stalled before writes block.
const SendBuffer = 64 << 10

// stall returns the channel closed when the current stall ends, nil if the
// link flows.
func (d *Dialer) stall() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stalled
}

// wait blocks until stall ends (nil), the read or write deadline passes
// (os.ErrDeadlineExceeded), or c is cut or closed. A deadline set while it
// waits counts, as with a net.Conn.
func (c *conn) wait(stall chan struct{}, write bool) error {
	for {
		c.dlMu.Lock()
		dl, changed := c.readDL, c.dlChanged
		if write {
			dl = c.writeDL
		}
		c.dlMu.Unlock()
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		var err error
		again := false
		select {
		case <-stall:
		case <-timeout:
			err = os.ErrDeadlineExceeded
		case <-changed:
			again = true
		case <-c.cutCh:
			err = net.ErrClosed // closed by its owner: paho takes this as its own doing
			if c.cut.Load() {
				err = ErrLinkCut
			}
		}
		if t != nil {
			t.Stop()
		}
		if !again {
			return err
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
	cutCh   chan struct{} // closed when the connection is cut or closed
	cutOnce sync.Once

	dlMu            sync.Mutex
	readDL, writeDL time.Time
	dlChanged       chan struct{} // closed and replaced when a deadline is set

	wmu  sync.Mutex // orders writes and held bytes
	held []byte     // written during a stall, not yet sent

	rmu     sync.Mutex
	rheld   []byte // received during a stall, not yet delivered
	rheldEr error  // and the error that came after them (the peer's close)
}

func (c *conn) markCut() {
	c.cut.Store(true)
	c.cutOnce.Do(func() { close(c.cutCh) })
}

func (c *conn) ioErr(err error) error {
	if err != nil && c.cut.Load() {
		return ErrLinkCut
	}
	return err
}

func (c *conn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if stall := c.d.stall(); stall != nil {
			if err := c.wait(stall, false); err != nil {
				return 0, err
			}
			continue
		}
		if len(c.rheld) > 0 {
			n := copy(b, c.rheld)
			c.rheld = c.rheld[n:]
			return n, nil
		}
		if c.rheldEr != nil {
			return 0, c.ioErr(c.rheldEr)
		}
		n, err := c.Conn.Read(b)
		if c.d.stall() == nil || c.cut.Load() || (n == 0 && errors.Is(err, os.ErrDeadlineExceeded)) {
			return n, c.ioErr(err)
		}
		// The link stalled while this read waited on the socket: what
		// came is still on the dead link, as far as the reader can tell.
		c.rheld = append(c.rheld, b[:n]...)
		c.rheldEr = err
	}
}

func (c *conn) Write(b []byte) (int, error) {
	c.d.mu.Lock()
	delay := c.d.delay
	c.d.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		<-t.C
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for {
		if c.cut.Load() {
			return 0, ErrLinkCut
		}
		stall := c.d.stall()
		if stall == nil {
			if err := c.sendHeld(); err != nil {
				return 0, err
			}
			n, err := c.Conn.Write(b)
			return n, c.ioErr(err)
		}
		if len(c.held)+len(b) <= SendBuffer {
			c.held = append(c.held, b...)
			return len(b), nil
		}
		if err := c.wait(stall, true); err != nil {
			return 0, err
		}
	}
}

// sendHeld sends what was written during a stall. Callers hold wmu.
func (c *conn) sendHeld() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = nil
	return c.ioErr(err)
}

// flush sends the held bytes once a stall has ended.
func (c *conn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.d.stall() == nil && !c.cut.Load() {
		_ = c.sendHeld() // a failure shows in the owner's next read or write
	}
}

// setDeadline records the read and/or write deadline and wakes a stalled
// read or write to look at it again.
func (c *conn) setDeadline(t time.Time, read, write bool) {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	if read {
		c.readDL = t
	}
	if write {
		c.writeDL = t
	}
	close(c.dlChanged)
	c.dlChanged = make(chan struct{})
}

func (c *conn) SetDeadline(t time.Time) error {
	c.setDeadline(t, true, true)
	return c.Conn.SetDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.setDeadline(t, true, false)
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.setDeadline(t, false, true)
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) Close() error {
	c.cutOnce.Do(func() { close(c.cutCh) }) // unblock a stalled read or write
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}
