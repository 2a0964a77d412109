package broker

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/freshet-iot/freshet/protocol"
)

// User is an account of the embedded broker.
type User struct {
	Name, Password string
	// Hub marks the hub's own account: it may use every freshet topic
	// (and shared subscriptions to them). Any other user is a device and
	// may use only {prefix}/v1/{its name}/{batch,ack,status}, like the
	// Mosquitto ACL in deploy/.
	Hub bool
}

// Metrics count what the broker refuses, holds and drops.
type Metrics struct {
	// Refused counts refused connections by reason (see refusals).
	Refused *prometheus.CounterVec
	// TooLarge counts clients disconnected for a packet over the size limit.
	TooLarge prometheus.Counter
	// Denied counts refused publishes and subscriptions (topic ACL).
	Denied *prometheus.CounterVec
	// Held counts batches held in their agent's connection because their
	// hub had all it accepts; HeldTooLong those let through after MaxHold.
	Held, HeldTooLong prometheus.Counter
}

// NewMetrics builds the metrics and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "freshet_hub_broker_refused_connections_total",
			Help: "Connections the embedded broker refused, by reason."}, []string{"reason"}),
		Denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "freshet_hub_broker_acl_denied_total",
			Help: "Publishes (write) and subscriptions (read) the embedded broker refused by its topic rules."}, []string{"access"}),
	}
	for _, r := range refusals {
		m.Refused.WithLabelValues(r)
	}
	m.TooLarge = prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_broker_too_large_total",
		Help: "Clients the embedded broker disconnected for a packet over its size limit."})
	m.Denied.WithLabelValues("write")
	m.Denied.WithLabelValues("read")
	m.Held = prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_broker_held_total",
		Help: "Batches the embedded broker held in their agent's connection while their hub had all the unacked batches it accepts."})
	m.HeldTooLong = prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_broker_held_too_long_total",
		Help: "Held batches let through after the longest hold (the hub may then drop them; the agent sends them again)."})
	if reg != nil {
		reg.MustRegister(m.Refused, m.Denied, m.TooLarge, m.Held, m.HeldTooLong)
	}
	return m
}

// dropped registers the broker's own count of messages it dropped: for a
// client whose store or pending writes were full, or after its session expired.
func (m *Metrics) dropped(reg prometheus.Registerer, s *mqtt.Server) {
	if reg == nil {
		return
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "freshet_hub_broker_dropped_total",
		Help: "Messages the embedded broker dropped (a client's store or pending writes full)."}, func() float64 {
		return float64(atomic.LoadInt64(&s.Info.InflightDropped) + atomic.LoadInt64(&s.Info.MessagesDropped))
	}))
}

// access authenticates and authorizes the broker's clients. A client's
// identity is its certificate's common name when the listener requires
// client certificates, else its username (checked against Users); a
// device's identity must be a device id and is its only client id, so no
// one takes over another device's session or a hub's; topics follow User.
// Without Users and client certificates every client is admitted with
// every topic (Start allows that on loopback only). Every refusal is
// logged and counted.
type access struct {
	mqtt.HookBase
	users       map[string]User
	clientCerts bool
	anonymous   bool
	prefix      string
	log         *slog.Logger
	metrics     *Metrics

	mu       sync.Mutex
	hubIDs   map[string]bool // client ids hubs use: reserved for hubs
	reserved map[string]bool
	// listener learns when a connection's CONNECT has come.
	listener *closeSafeTCP
}

func newAccess(o Options, m *Metrics) *access {
	h := &access{users: map[string]User{}, clientCerts: o.clientCerts(), prefix: o.Topics.Prefix() + "/v1/", log: o.Logger,
		metrics: m, hubIDs: map[string]bool{}, reserved: map[string]bool{}}
	if o.Topics.Prefix() == "" {
		h.prefix = protocol.DefaultPrefix + "/v1/"
	}
	for _, u := range o.Users {
		h.users[u.Name] = u
	}
	for _, id := range o.HubClientIDs {
		h.reserved[id] = true
	}
	h.anonymous = len(o.Users) == 0 && !h.clientCerts
	return h
}

func (h *access) ID() string { return "freshet-access" }

func (h *access) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect}, []byte{b})
}

// OnConnect: the client's CONNECT has come.
func (h *access) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	if h.listener != nil && !cl.Net.Inline {
		h.listener.connected(cl.Net.Conn)
	}
	return nil
}

// Reasons a connection is refused (freshet_hub_broker_refused_connections_total).
var refusals = []string{"unknown_user", "bad_password", "no_certificate", "username_not_certificate",
	"not_a_device_id", "client_id_not_identity", "hub_client_id", "too_many_connecting"}

func (h *access) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.anonymous {
		return true
	}
	identity, reason := h.authenticate(cl, pk)
	if reason == "" {
		cl.Properties.Username = []byte(identity) // what the topic rules read
		return true
	}
	h.metrics.Refused.WithLabelValues(reason).Inc()
	h.log.Warn("broker: connection refused", "reason", reason, "identity", clip(identity), "username", clip(string(pk.Connect.Username)),
		"client_id", clip(pk.Connect.ClientIdentifier), "remote", cl.Net.Remote)
	return false
}

// authenticate returns the client's identity, or why it is refused.
func (h *access) authenticate(cl *mqtt.Client, pk packets.Packet) (identity, refused string) {
	username := string(pk.Connect.Username)
	identity = username
	if h.clientCerts {
		cn, ok := peerCommonName(cl.Net.Conn)
		if !ok {
			return "", "no_certificate"
		}
		if username != "" && username != cn {
			return cn, "username_not_certificate"
		}
		identity = cn
	}
	u, known := h.users[identity]
	switch {
	case !known && !h.clientCerts:
		return identity, "unknown_user"
	case known && (u.Password != "" || !h.clientCerts) && subtle.ConstantTimeCompare(pk.Connect.Password, []byte(u.Password)) != 1:
		return identity, "bad_password"
	}
	id := pk.Connect.ClientIdentifier
	h.mu.Lock()
	defer h.mu.Unlock()
	if u.Hub {
		h.hubIDs[id] = true
		return identity, ""
	}
	switch {
	case protocol.ValidDevice(identity) != nil:
		return identity, "not_a_device_id"
	case id != identity:
		return identity, "client_id_not_identity"
	case h.reserved[id] || h.hubIDs[id]:
		return identity, "hub_client_id"
	}
	return identity, ""
}

// peerCommonName is the common name of the certificate a TLS client
// presented (the listener has verified it against the CA).
func peerCommonName(c net.Conn) (string, bool) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return "", false
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 || st.PeerCertificates[0].Subject.CommonName == "" {
		return "", false
	}
	return st.PeerCertificates[0].Subject.CommonName, true
}

func (h *access) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.anonymous || inlineAllowed(cl) || h.allowed(cl, topic, write) {
		return true
	}
	access := "read"
	if write {
		access = "write"
	}
	h.metrics.Denied.WithLabelValues(access).Inc()
	h.log.Warn("broker: topic denied", "access", access, "topic", clip(topic), "identity", clip(string(cl.Properties.Username)),
		"client_id", clip(cl.ID))
	return false
}

// OnDisconnect counts the clients dropped for a packet over the size limit.
func (h *access) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	if errors.Is(err, packets.ErrPacketTooLarge) {
		h.metrics.TooLarge.Inc()
		h.log.Warn("broker: packet over the size limit, client disconnected", "identity", clip(string(cl.Properties.Username)),
			"client_id", clip(cl.ID), "remote", cl.Net.Remote)
	}
}

// clip bounds what a client chose before it goes into a log line.
func clip(s string) string {
	const n = 128
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (h *access) allowed(cl *mqtt.Client, topic string, write bool) bool {
	u := h.users[string(cl.Properties.Username)] // not listed: a device with a certificate
	if u.Hub {
		if rest, ok := strings.CutPrefix(topic, "$share/"); ok {
			if _, filter, ok := strings.Cut(rest, "/"); ok {
				topic = filter
			}
		}
		return strings.HasPrefix(topic, h.prefix)
	}
	rest, ok := strings.CutPrefix(topic, h.prefix+string(cl.Properties.Username)+"/")
	if !ok {
		return false
	}
	switch protocol.TopicKind(rest) {
	case protocol.TopicBatch, protocol.TopicStatus:
		return write // a device publishes its batches and status...
	case protocol.TopicAck:
		return !write // ...and reads its acks
	}
	return false
}
