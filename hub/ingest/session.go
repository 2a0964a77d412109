package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/protocol"
)

// The broker session speaks MQTT 5 (eclipse/paho.golang) for its flow
// control: the hub announces Receive Maximum = MaxInflight, the size of its
// intake, so the broker never hands it more unacked messages than it can
// hold, and keeps the rest queued in the hub's session; the hub acks them
// in the order they came (paho's tracker; the MQTT spec requires it, and
// Mosquitto's inflight accounting goes wrong without it, mosquitto#2301).
// A surge therefore waits in the broker and on the agents' disks, and the
// hub never drops its session to shed load.

// Message is one message taken from the broker.
type Message interface {
	Topic() string
	Payload() []byte
	// Ack tells the broker the message is done with (PUBACK, in order).
	Ack()
}

// brokerMessage is a Message of a paho.golang session.
type brokerMessage struct {
	pub    *paho.Publish
	client *paho.Client
}

func (m *brokerMessage) Topic() string   { return m.pub.Topic }
func (m *brokerMessage) Payload() []byte { return m.pub.Payload }
func (m *brokerMessage) Ack() {
	if m.pub.QoS > 0 {
		m.client.Ack(m.pub) // on a session since lost this does nothing: the broker redelivers
	}
}

// Reconnects back off from 100 ms to 10 s; a session that lasted
// healthySession starts them afresh.
const (
	backoffMin     = 100 * time.Millisecond
	backoffMax     = 10 * time.Second
	healthySession = 10 * time.Second
	// ackEvery is how often paho sends the acks that are done, in order.
	ackEvery = 5 * time.Millisecond
)

// connectLoop keeps one broker session up until ctx ends.
func (p *Pipeline) connectLoop(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := p.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) >= healthySession {
			attempt = 0
		}
		wait := min(backoffMin<<min(attempt, 10), backoffMax)
		attempt++
		p.log.Warn("broker session ended, reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// dial opens the connection a broker URL names: tcp://host:1883 (mqtt://)
// or ssl://host:8883 (mqtts://, tls://).
func dial(ctx context.Context, raw string, tlsConf *tls.Config) (net.Conn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	switch u.Scheme {
	case "tcp", "mqtt":
		return d.DialContext(ctx, "tcp", u.Host)
	case "ssl", "tls", "mqtts", "tcps":
		cfg := tlsConf.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", u.Host)
	}
	return nil, fmt.Errorf("broker url %q: scheme %q, want tcp or ssl", cfgfile.Redact(raw), u.Scheme)
}

// mqttSession is one connection to the broker.
type mqttSession struct {
	c    *paho.Client
	lost chan error
	// present: the broker kept a session of this client id.
	present bool
}

// connect opens the hub's MQTT 5 session as clientID: persistent (it
// survives a disconnect for SessionExpiry), with Receive Maximum
// MaxInflight, acking the batches in order by hand. Its messages go to the
// intake.
func (p *Pipeline) connect(ctx context.Context, clientID string) (*mqttSession, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := dial(cctx, p.o.Broker.URL, p.o.Broker.TLS)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", cfgfile.Redact(p.o.Broker.URL), err)
	}
	s := &mqttSession{lost: make(chan error, 1)}
	signal := func(err error) {
		select {
		case s.lost <- err:
		default:
		}
	}
	s.c = paho.NewClient(paho.ClientConfig{
		ClientID: clientID,
		// Thread safe for writing: acks, pings and the agents' acks share it.
		Conn:                       packets.NewThreadSafeConn(conn),
		Session:                    state.NewInMemory(),
		EnableManualAcknowledgment: true,
		SendAcksInterval:           ackEvery,
		PacketTimeout:              10 * time.Second,
		OnClientError:              signal,
		OnServerDisconnect: func(d *paho.Disconnect) {
			signal(fmt.Errorf("the broker disconnected the hub: reason 0x%02x %s", d.ReasonCode, reasonString(d)))
		},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if pr.Packet.QoS == 0 { // a status: outside Receive Maximum, and nothing to ack
				p.statusMessage(pr.Packet.Topic, pr.Packet.Payload)
				return true, nil
			}
			p.intake(ctx, &brokerMessage{pub: pr.Packet, client: pr.Client})
			return true, nil
		}},
	})
	receiveMax := uint16(p.o.Broker.MaxInflight)
	expiry := uint32(p.o.Broker.SessionExpiry / time.Second)
	cp := &paho.Connect{ClientID: clientID, KeepAlive: uint16(p.o.Broker.KeepAlive / time.Second), CleanStart: false,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &receiveMax, SessionExpiryInterval: &expiry}}
	if p.o.Broker.Username != "" {
		cp.Username, cp.UsernameFlag = p.o.Broker.Username, true
		cp.Password, cp.PasswordFlag = []byte(p.o.Broker.Password), true
	}
	cctx, cancel = context.WithTimeout(ctx, 15*time.Second)
	ca, err := s.c.Connect(cctx, cp)
	cancel()
	if err != nil {
		conn.Close()
		if ca != nil {
			return nil, fmt.Errorf("connect %s as %s: %w (reason 0x%02x)", cfgfile.Redact(p.o.Broker.URL), clientID, err, ca.ReasonCode)
		}
		return nil, fmt.Errorf("connect %s as %s: %w", cfgfile.Redact(p.o.Broker.URL), clientID, err)
	}
	s.present = ca.SessionPresent
	return s, nil
}

func (s *mqttSession) close() {
	s.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	<-s.c.Done()
}

// subscribe subscribes to the batches (QoS 1, in the shared group if
// any) and to every status (QoS 0: a status is retained and sent again
// every minute, so one lost while the hub is away costs nothing).
func (s *mqttSession) subscribe(ctx context.Context, batches, statuses string) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sa, err := s.c.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: batches, QoS: 1}, {Topic: statuses, QoS: 0}}})
	if err != nil {
		if sa != nil {
			return fmt.Errorf("subscribe to %s and %s: %w (reasons %v)", batches, statuses, err, sa.Reasons)
		}
		return fmt.Errorf("subscribe to %s and %s: %w", batches, statuses, err)
	}
	return nil
}

// resubscribe subscribes to filter again at QoS 0 on a kept session, so
// that the broker sends its retained messages again. mochi answers 0x91
// (packet identifier in use) when the SUBSCRIBE's id is one of the
// batches it is handing to the hub again (it keeps both directions' ids in
// one store); paho takes the next id at each try.
func (s *mqttSession) resubscribe(ctx context.Context, filter string) error {
	const idInUse = 0x91
	for try := 0; ; try++ {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sa, err := s.c.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 0}}})
		cancel()
		switch {
		case err == nil:
			return nil
		case sa != nil && len(sa.Reasons) == 1 && sa.Reasons[0] == idInUse && try < 65535:
			continue
		case sa != nil:
			return fmt.Errorf("subscribe to %s: %w (reasons %v)", filter, err, sa.Reasons)
		}
		return fmt.Errorf("subscribe to %s: %w", filter, err)
	}
}

// session runs one broker session. It is persistent: what was taken and
// not acked when the hub stopped is handed to it again when it comes back.
// It is the hub's only session, so that a broker may bind client ids to
// identities (Mosquitto's use_username_as_clientid; the embedded broker
// always does): one identity, one client id.
func (p *Pipeline) session(ctx context.Context) error {
	batches, err := p.connect(ctx, p.o.Broker.ClientID)
	if err != nil {
		return err
	}
	defer batches.close()
	// A session the broker kept still holds the subscriptions; the status
	// subscription is made again, for the retained statuses (what a hub
	// that restarted knows of the fleet: sensors, intervals, marks).
	statusFilter := p.o.Topics.Filter(protocol.TopicStatus)
	if !batches.present {
		prefix := ""
		if p.o.Broker.SharedGroup != "" {
			prefix = "$share/" + p.o.Broker.SharedGroup + "/"
		}
		if err := batches.subscribe(ctx, prefix+p.o.Topics.Filter(protocol.TopicBatch), statusFilter); err != nil {
			return err
		}
	} else if err := batches.resubscribe(ctx, statusFilter); err != nil {
		return err
	}
	p.metrics.Connects.Inc()
	// Agents' acks go at QoS 0: a lost ack costs a resend, which is acked
	// again, and QoS 1 publishes from the hub would share packet ids with
	// the batches coming to it, which mochi v2.7.9 keeps in one store.
	c := batches.c
	send := func(topic string, payload []byte) error {
		_, err := c.Publish(context.Background(), &paho.Publish{QoS: 0, Topic: topic, Payload: payload})
		return err
	}
	p.send.Store(&send)
	p.connected.Store(true)
	defer p.connected.Store(false)
	p.log.Info("consuming", "broker", cfgfile.Redact(p.o.Broker.URL), "client_id", p.o.Broker.ClientID, "receive_maximum", p.o.Broker.MaxInflight,
		"session_present", batches.present)
	select {
	case <-ctx.Done():
		return nil
	case err := <-batches.lost:
		return err
	case <-batches.c.Done():
		return errors.New("connection closed")
	}
}

// intake hands a message to the workers. The broker never has more than
// MaxInflight unacked messages out to the hub (Receive Maximum), and each
// waits in the intake until it is acked, so the intake never fills; if a
// broker breaks that promise the message waits here (paho stops reading,
// and TCP holds the broker back), and the breach is counted.
func (p *Pipeline) intake(ctx context.Context, m Message) {
	select {
	case p.in <- m:
		return
	default:
	}
	p.metrics.Overflows.Inc()
	select {
	case p.in <- m:
	case <-ctx.Done():
	}
}

// localMessage is a Message of the broker in this process: it needs no
// ack (the broker dies with the hub; agents send again what was not acked).
type localMessage struct {
	topic   string
	payload []byte
}

func (m *localMessage) Topic() string   { return m.topic }
func (m *localMessage) Payload() []byte { return m.payload }
func (m *localMessage) Ack()            {}

// local takes the pipeline's batches and every status straight from the
// broker in this process until ctx ends.
func (p *Pipeline) local(ctx context.Context) {
	b := p.o.Broker.Local
	group := p.o.Broker.SharedGroup
	if group == "" {
		group = "freshet-local" // a group of one: this hub takes every batch
	}
	deliver := func(topic string, payload []byte) { p.intake(ctx, &localMessage{topic, bytes.Clone(payload)}) }
	detach := b.Attach(group, p.o.Broker.ClientID, deliver)
	defer detach()
	if err := b.Subscribe(p.o.Topics.Filter(protocol.TopicStatus), 1, p.statusMessage); err != nil {
		p.log.Error("subscribe to statuses", "err", err)
	}
	send := b.Publish
	p.send.Store(&send)
	p.metrics.Connects.Inc()
	p.connected.Store(true)
	defer p.connected.Store(false)
	p.log.Info("consuming from the embedded broker", "group", group, "client_id", p.o.Broker.ClientID)
	<-ctx.Done()
}

func reasonString(d *paho.Disconnect) string {
	if d.Properties != nil {
		return d.Properties.ReasonString
	}
	return ""
}
