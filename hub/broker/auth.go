package broker

import (
	"bytes"
	"crypto/subtle"
	"log/slog"
	"strings"
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
	// Refused counts refused connections by reason: unknown_user,
	// bad_password.
	Refused *prometheus.CounterVec
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
	for _, r := range []string{"unknown_user", "bad_password"} {
		m.Refused.WithLabelValues(r)
	}
	m.Denied.WithLabelValues("write")
	m.Denied.WithLabelValues("read")
	m.Held = prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_broker_held_total",
		Help: "Batches the embedded broker held in their agent's connection while their hub had all the unacked batches it accepts."})
	m.HeldTooLong = prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_broker_held_too_long_total",
		Help: "Held batches let through after the longest hold (the hub may then drop them; the agent sends them again)."})
	if reg != nil {
		reg.MustRegister(m.Refused, m.Denied, m.Held, m.HeldTooLong)
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

// userAuth admits only the given users, with the topic rules of User, and
// logs and counts every refusal.
type userAuth struct {
	mqtt.HookBase
	users   map[string]User
	prefix  string
	log     *slog.Logger
	metrics *Metrics
}

func newUserAuth(users []User, topics protocol.Topics, log *slog.Logger, m *Metrics) *userAuth {
	h := &userAuth{users: map[string]User{}, prefix: topics.Prefix() + "/v1/", log: log, metrics: m}
	if topics.Prefix() == "" {
		h.prefix = protocol.DefaultPrefix + "/v1/"
	}
	for _, u := range users {
		h.users[u.Name] = u
	}
	return h
}

func (h *userAuth) ID() string { return "freshet-users" }

func (h *userAuth) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *userAuth) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	u, ok := h.users[string(pk.Connect.Username)]
	reason := "unknown_user"
	if ok {
		if subtle.ConstantTimeCompare(pk.Connect.Password, []byte(u.Password)) == 1 {
			return true
		}
		reason = "bad_password"
	}
	h.metrics.Refused.WithLabelValues(reason).Inc()
	h.log.Warn("broker: connection refused", "reason", reason, "username", clip(string(pk.Connect.Username)),
		"client_id", clip(pk.Connect.ClientIdentifier), "remote", cl.Net.Remote)
	return false
}

func (h *userAuth) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if inlineAllowed(cl) || h.allowed(cl, topic, write) {
		return true
	}
	access := "read"
	if write {
		access = "write"
	}
	h.metrics.Denied.WithLabelValues(access).Inc()
	h.log.Warn("broker: topic denied", "access", access, "topic", clip(topic), "username", clip(string(cl.Properties.Username)),
		"client_id", clip(cl.ID))
	return false
}

// clip bounds what a client chose before it goes into a log line.
func clip(s string) string {
	const n = 128
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (h *userAuth) allowed(cl *mqtt.Client, topic string, write bool) bool {
	u, ok := h.users[string(cl.Properties.Username)]
	if !ok {
		return false
	}
	if u.Hub {
		if rest, ok := strings.CutPrefix(topic, "$share/"); ok {
			if _, filter, ok := strings.Cut(rest, "/"); ok {
				topic = filter
			}
		}
		return strings.HasPrefix(topic, h.prefix)
	}
	rest, ok := strings.CutPrefix(topic, h.prefix+u.Name+"/")
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
