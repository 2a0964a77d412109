// Package broker runs the embedded MQTT broker (mochi-mqtt) that makes one
// freshet-hub process a complete single-box setup. Production fleets can use
// any MQTT 3.1.1 broker instead (Mosquitto, EMQX).
package broker

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/freshet-iot/freshet/internal/exposure"
	"github.com/freshet-iot/freshet/protocol"
)

// Options configure the embedded broker. The zero value listens on
// 127.0.0.1:1883 and allows every client.
type Options struct {
	// Addr is the TCP listen address; "127.0.0.1:0" picks a free port.
	// Default 127.0.0.1:1883.
	Addr string
	// TLS, if not nil, makes the listener speak MQTT over TLS (set ClientAuth
	// and ClientCAs for mutual TLS).
	TLS *tls.Config
	// Users, if any, are the only accounts admitted (with client
	// certificates, every certificate of the CA is a device, and Users
	// give roles, and passwords if any), with the topic rules of User
	// under Topics. With neither, everyone is admitted to everything,
	// which Start allows on a loopback address only. Refusals are logged
	// and counted.
	Users  []User
	Topics protocol.Topics
	// HubClientIDs are reserved for hubs: no device may use them (nor any
	// client id a hub account has used).
	HubClientIDs []string
	// MaxPacketBytes bounds one MQTT packet; a client that sends a bigger
	// one is disconnected and counted. Default DefaultMaxPacketBytes.
	MaxPacketBytes int
	// MaxClients bounds the connected clients. Default DefaultMaxClients.
	MaxClients int
	// ConnectTimeout bounds the time from a TCP connection to its MQTT
	// CONNECT (TLS handshake included). Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// PendingWrites bounds the packets waiting to be written to one
	// client (memory for every connection). A hub connected over MQTT gets
	// at most this many unacked batches at a time. Default DefaultPendingWrites.
	PendingWrites int
	// MaxHold bounds how long a batch is held in its agent's connection
	// while its hub cannot take it. Default DefaultMaxHold.
	MaxHold time.Duration
	// Registerer receives the broker's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultPendingWrites = 256
	DefaultMaxHold       = 20 * time.Second
	// DefaultMaxPacketBytes is the protocol's largest message plus room
	// for the topic, properties and header.
	DefaultMaxPacketBytes = protocol.DefaultMaxMessageBytes + 4096
	DefaultMaxClients     = 10000
	DefaultConnectTimeout = 10 * time.Second
	// maxConnecting bounds connections not yet past CONNECT.
	maxConnecting = 1024
)

// clientCerts reports whether the listener requires client certificates
// (mutual TLS): then a client's identity is its certificate's common name.
func (o *Options) clientCerts() bool {
	return o.TLS != nil && o.TLS.ClientAuth == tls.RequireAndVerifyClientCert
}

// IsLoopback reports whether a listen address (host:port) is reachable
// only from this machine.
func IsLoopback(addr string) bool { return exposure.IsLoopback(addr) }

// Broker is a running embedded broker.
type Broker struct {
	metrics   *Metrics
	router    *router
	server    *mqtt.Server
	listener  *closeSafeTCP
	closeOnce sync.Once
}

// Start starts the broker and returns once it accepts connections.
func Start(o Options) (*Broker, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:1883"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.PendingWrites <= 0 {
		o.PendingWrites = DefaultPendingWrites
	}
	if o.MaxHold <= 0 {
		o.MaxHold = DefaultMaxHold
	}
	if o.MaxPacketBytes <= 0 {
		o.MaxPacketBytes = DefaultMaxPacketBytes
	}
	if o.MaxClients <= 0 {
		o.MaxClients = DefaultMaxClients
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if len(o.Users) == 0 && !o.clientCerts() && !IsLoopback(o.Addr) {
		return nil, fmt.Errorf("broker: %s is reachable from other machines: configure users or require client certificates; anonymous access is for a loopback address only", o.Addr)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	// A hub over MQTT 5 may ask for up to 65535 unacked batches; the
	// router keeps it under PendingWrites, so the store never overflows.
	caps.MaximumInflight = 65535
	caps.MaximumClientWritesPending = int32(o.PendingWrites)
	caps.MaximumPacketSize = uint32(o.MaxPacketBytes)
	caps.MaximumClients = int64(o.MaxClients)
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: o.Logger, Capabilities: caps})
	m := NewMetrics(o.Registerer)
	acc := newAccess(o, m)
	if err := s.AddHook(acc, nil); err != nil {
		return nil, fmt.Errorf("broker auth hook: %w", err)
	}
	topics := o.Topics
	if topics.Prefix() == "" {
		topics, _ = protocol.NewTopics("")
	}
	rt := &router{server: s, topics: topics, maxWait: o.MaxHold, pending: o.PendingWrites, metrics: m, locals: map[string]*local{}}
	if err := s.AddHook(rt, nil); err != nil {
		return nil, fmt.Errorf("broker router hook: %w", err)
	}
	m.dropped(o.Registerer, s)
	l := &closeSafeTCP{TCP: listeners.NewTCP(listeners.Config{ID: "tcp", Address: o.Addr, TLSConfig: o.TLS}), server: s,
		connectTimeout: o.ConnectTimeout, metrics: m}
	acc.listener = l
	if err := s.AddListener(l); err != nil {
		return nil, fmt.Errorf("broker listen on %s: %w", o.Addr, err)
	}
	if err := s.Serve(); err != nil {
		l.Close(l.closeClients)
		return nil, fmt.Errorf("broker serve: %w", err)
	}
	return &Broker{metrics: m, router: rt, server: s, listener: l}, nil
}

// Addr returns the address the broker listens on (with the real port when
// Options.Addr asked for port 0).
func (b *Broker) Addr() string { return b.listener.Address() }

// Attach makes a hub in this process a member of the shared group: it
// gets its devices' batches (see router) through deliver, called in the
// publishing agent's connection, which may wait in it. The returned
// function detaches it.
func (b *Broker) Attach(group, id string, deliver func(topic string, payload []byte)) (detach func()) {
	return b.router.attach(group, id, deliver)
}

// Subscribe calls fn with every message on topics matching filter (and the
// retained ones at once), in the publishing client's connection.
func (b *Broker) Subscribe(filter string, id int, fn func(topic string, payload []byte)) error {
	return b.server.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) { fn(pk.TopicName, pk.Payload) })
}

// Publish publishes a message from the broker itself, at QoS 0: the hub's
// acks, as its MQTT session sends them through an external broker. A lost
// ack costs its agent one resend, which the ledger answers as a duplicate;
// QoS 1 would cost an inflight entry per ack per gateway at the broker.
func (b *Broker) Publish(topic string, payload []byte) error {
	return b.server.Publish(topic, payload, false, 0)
}

// Metrics returns the broker's counters.
func (b *Broker) Metrics() *Metrics { return b.metrics }

// Server returns the mochi server, for hooks and statistics.
func (b *Broker) Server() *mqtt.Server { return b.server }

// Close disconnects every client and stops listening. It is safe to call twice.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() { err = b.server.Close() })
	return err
}

// closeSafeTCP is mochi's TCP listener made safe to close while clients
// come and go. mochi v2.7.9 has three bugs on that path, all open upstream:
//   - it lists a listener's clients with Clients.GetByListener, which takes
//     its RWMutex for reading twice; a client connecting or leaving in between
//     queues a writer and the broker hangs for good (mochi-mqtt#488);
//   - each connection does ClientsWg.Add(1) in its own goroutine while Close
//     may already be in ClientsWg.Wait (a data race, mochi-mqtt#541; Close
//     returning early or hanging, #424).
//
// This listener gates connections itself: once closing starts it refuses new
// ones, disconnects clients through GetAll (a single read lock), closes the
// sockets of connections still being established, and waits for every
// connection goroutine to return before mochi's Close reaches its Wait, so
// every Add happens before that Wait. Remove it once mochi fixes these.
type closeSafeTCP struct {
	*listeners.TCP
	server *mqtt.Server

	// connectTimeout bounds a connection's time to its CONNECT, and at
	// most maxConnecting wait for theirs: a client that opens connections
	// and says nothing holds no memory for long (mochi sets no deadline
	// before CONNECT; after it, the keepalive's).
	connectTimeout time.Duration
	metrics        *Metrics
	connecting     atomic.Int32

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]bool // true: still waiting for its CONNECT
	active  sync.WaitGroup
}

// connected notes that c's CONNECT has come (or c ended).
func (l *closeSafeTCP) connected(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[c] {
		l.conns[c] = false
		l.connecting.Add(-1)
	}
}

func (l *closeSafeTCP) Serve(establish listeners.EstablishFn) {
	l.TCP.Serve(func(id string, c net.Conn) error {
		if l.connecting.Add(1) > maxConnecting {
			l.connecting.Add(-1)
			l.metrics.Refused.WithLabelValues("too_many_connecting").Inc()
			return c.Close()
		}
		c.SetDeadline(time.Now().Add(l.connectTimeout)) // mochi sets the keepalive's after CONNECT
		l.mu.Lock()
		if l.closing {
			l.mu.Unlock()
			l.connecting.Add(-1)
			return c.Close()
		}
		if l.conns == nil {
			l.conns = map[net.Conn]bool{}
		}
		l.conns[c] = true
		l.active.Add(1)
		l.mu.Unlock()
		defer func() {
			l.connected(c)
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
			l.active.Done()
		}()
		return establish(id, c)
	})
}

func (l *closeSafeTCP) Close(listeners.CloseFn) {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.TCP.Close(l.closeClients) // disconnects clients, then closes the socket
	l.mu.Lock()
	for c := range l.conns {
		c.Close() // connections mochi has not registered as clients yet
	}
	l.mu.Unlock()
	l.active.Wait()
}

func (l *closeSafeTCP) closeClients(id string) {
	for _, cl := range l.server.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = l.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}
