// Package opcua emulates a PLC's tag set behind an OPC UA server
// (github.com/gopcua/opcua's server package), so the agent's real OPC UA
// client code reads it over opc.tcp:// as it reads a plant's PLC.
//
// The tags are those of a filling line (namespace urn:freshet:plc, index 1):
//
//	ns=1;s=Line1.Temperature  Double   product temperature, °C
//	ns=1;s=Line1.Pressure     Float    line pressure, bar
//	ns=1;s=Line1.Running      Boolean  the line runs
//	ns=1;s=Line1.Count        UInt32   bottles filled (only grows)
//	ns=1;s=Line1.State        String   RUNNING, STOPPED, FAULT
//
// Every value carries a source timestamp (when it was Set) unless the
// NoSourceTimestamps fault is on; ClockOffset moves the PLC's clock; Bad
// gives a tag a Bad status. Stop and Start restart the server on the same
// port with no session surviving, as a PLC reboot does.
//
// The library's Server.Close neither closes its clients' connections nor
// stops its goroutines (gopcua v0.8.0), so the PLC's port is a small TCP
// relay in front of a server on a private port: Stop closes the port and
// every connection through it, Start opens it again in front of a new
// server. The old server's goroutines are left behind, blocked; tests
// that check for leaks ignore them (see IgnoreLeaks).
//
// The server package supports only security policy None and accepts any
// user identity, so the agent's encrypted and authenticated paths are
// exercised by configuration tests, not against this emulator.
package opcua

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
)

// Tag names.
const (
	Temperature = "Line1.Temperature"
	Pressure    = "Line1.Pressure"
	Running     = "Line1.Running"
	Count       = "Line1.Count"
	State       = "Line1.State"
)

// NodeID returns the node id of a tag: ns=1;s=<tag>.
func NodeID(tag string) string { return "ns=1;s=" + tag }

type tag struct {
	value any
	at    time.Time
}

// PLC is an emulated PLC with an OPC UA server.
type PLC struct {
	// URL is the opc.tcp:// endpoint; Addr its host:port.
	URL, Addr string

	mu      sync.Mutex
	tags    map[string]*tag
	offset  time.Duration
	noSrcTS bool
	bad     map[string]ua.StatusCode
	srv     *server.Server
	ns      *server.NodeNameSpace
	cancel  context.CancelFunc
	relay   *relay
}

// StartPLC starts a PLC's server on a free port of 127.0.0.1.
func StartPLC() (*PLC, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	now := time.Now()
	p := &PLC{Addr: addr, URL: "opc.tcp://" + addr, bad: map[string]ua.StatusCode{}, tags: map[string]*tag{
		Temperature: {float64(21.5), now}, Pressure: {float32(2.5), now}, Running: {true, now},
		Count: {uint32(0), now}, State: {"RUNNING", now},
	}}
	return p, p.Start()
}

// Start starts the server (again, after Stop) on the PLC's address.
func (p *PLC) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		return nil
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	innerAddr := inner.Addr().String()
	inner.Close()
	_, port, _ := net.SplitHostPort(innerAddr)
	pn, _ := strconv.Atoi(port)
	_, port, _ = net.SplitHostPort(p.Addr)
	pub, _ := strconv.Atoi(port)
	srv := server.New(
		server.EndPoint("127.0.0.1", pn),  // where it listens
		server.EndPoint("127.0.0.1", pub), // what it advertises too
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.EnableAuthMode(ua.UserTokenTypeUserName),
		server.ServerName("freshet emulated PLC"),
		server.SetLogger(quiet{}),
	)
	ns := server.NewNodeNameSpace(srv, "urn:freshet:plc")
	root, _ := srv.Namespace(0)
	objects := ns.Objects()
	root.(*server.NodeNameSpace).Objects().AddRef(objects, id.HasComponent, true)
	for _, name := range []string{Temperature, Pressure, Running, Count, State} {
		n := ns.AddNewVariableStringNode(name, func() *ua.DataValue { return p.value(name) })
		objects.AddRef(n, id.HasComponent, true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		return fmt.Errorf("start OPC UA server: %w", err)
	}
	r, err := startRelay(p.Addr, innerAddr)
	if err != nil {
		srv.Close()
		cancel()
		return err
	}
	p.srv, p.ns, p.cancel, p.relay = srv, ns, cancel, r
	return nil
}

// Stop closes the server and every session.
func (p *PLC) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv == nil {
		return nil
	}
	p.relay.close()
	err := p.srv.Close()
	p.cancel()
	p.srv, p.ns, p.relay = nil, nil, nil
	return err
}

// IgnoreLeaks lists the goroutines a stopped gopcua v0.8.0 server leaves
// behind, as goleak options' top functions.
var IgnoreLeaks = []string{
	"github.com/gopcua/opcua/server.(*channelBroker).RegisterConn",
	"github.com/gopcua/opcua/server.(*channelBroker).Close.func1",
	"github.com/gopcua/opcua/server.(*Subscription).run",
	"github.com/gopcua/opcua/server.(*Server).acceptAndRegister",
	"github.com/gopcua/opcua/server.(*channelBroker).RegisterConn.func1",
}

// relay forwards the PLC's public port to its current server.
type relay struct {
	l      net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

func startRelay(addr, to string) (*relay, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &relay{l: l, conns: map[net.Conn]bool{}}
	r.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				c.Close()
				up.Close()
				return
			}
			r.conns[c], r.conns[up] = true, true
			r.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				r.wg.Go(func() {
					io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				})
			}
		}
	})
	return r, nil
}

// close stops accepting and closes every relayed connection.
func (r *relay) close() {
	r.l.Close()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// value is a tag's DataValue as the server sends it.
func (p *PLC) value(name string) *ua.DataValue {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tags[name]
	dv := &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(t.value)}
	if st, ok := p.bad[name]; ok {
		dv.EncodingMask |= ua.DataValueStatusCode
		dv.Status = st
	}
	if !p.noSrcTS {
		dv.EncodingMask |= ua.DataValueSourceTimestamp
		dv.SourceTimestamp = t.at.Add(p.offset)
	}
	return dv
}

// Set sets a tag's value (of the tag's type) with source time at, and
// notifies the subscriptions that monitor it.
func (p *PLC) Set(name string, v any, at time.Time) {
	p.mu.Lock()
	t, ok := p.tags[name]
	if !ok {
		p.mu.Unlock()
		panic("opcua: unknown tag " + name)
	}
	if fmt.Sprintf("%T", v) != fmt.Sprintf("%T", t.value) {
		p.mu.Unlock()
		panic(fmt.Sprintf("opcua: tag %s is a %T, not a %T", name, t.value, v))
	}
	t.value, t.at = v, at
	ns := p.ns
	p.mu.Unlock()
	if ns != nil {
		ns.ChangeNotification(ua.NewStringNodeID(ns.ID(), name))
	}
}

// SetClockOffset moves the PLC's clock (its source timestamps) by d.
func (p *PLC) SetClockOffset(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offset = d
}

// SetNoSourceTimestamps makes the server send values without source timestamps.
func (p *PLC) SetNoSourceTimestamps(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.noSrcTS = on
}

// SetBad gives a tag a Bad status (ua.StatusOK clears it).
func (p *PLC) SetBad(name string, st ua.StatusCode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st == ua.StatusOK {
		delete(p.bad, name)
	} else {
		p.bad[name] = st
	}
}

// quiet discards the server's log.
type quiet struct{}

func (quiet) Debug(string, ...any) {}
func (quiet) Info(string, ...any)  {}
func (quiet) Warn(string, ...any)  {}
func (quiet) Error(string, ...any) {}
