// Package forward publishes the outbox's sealed batches over MQTT and feeds
// the hub's acks back to it.
//
// Each connection is a fresh paho client with a clean session, a retained
// last will (the offline status) and a retained birth status; the forwarder
// subscribes to its own ack topic, then publishes sealed batches in seq order
// with at most Window unacked in flight. A batch not acked within AckTimeout,
// or in flight when the connection drops, is published again from the
// outbox (the hub drops duplicates), so nothing relies on paho's in-memory
// store: its auto-reconnect replays that store racily (paho.mqtt.golang#703)
// and acks sent on a dead connection are lost anyway (#726). Reconnects use
// capped exponential backoff with full jitter.
package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/protocol"
)

// Outbox is what the forwarder needs of the agent's outbox.
type Outbox interface {
	Next(after uint64) (seq uint64, data []byte, ok bool, err error)
	MarkPublishing(seq uint64) error
	Ack(a *protocol.Ack) error
	Settled(seq uint64) bool
}

// Options configure a Forwarder. Zero values take the defaults.
type Options struct {
	// Broker is the MQTT server URL: tcp://host:1883, or ssl://host:8883 with TLS.
	Broker string
	// ClientID defaults to the device id.
	ClientID string
	// Username and Password, if the broker wants them.
	Username, Password string
	// TLS configures ssl:// connections (CA, client certificate for mutual TLS).
	TLS *tls.Config
	// Device is the agent's id; Topics its topic scheme.
	Device string
	Topics protocol.Topics
	// Window bounds the batches published and not yet acked. Default 8.
	Window int
	// AckTimeout: a batch unacked this long is published again, after a
	// further random delay of up to half of it, so that a fleet that lost
	// its acks at once does not send again at once. Default 30 s.
	AckTimeout time.Duration
	// ConnectTimeout bounds one connection attempt. Default 10 s.
	ConnectTimeout time.Duration
	// KeepAlive is the MQTT keepalive. Default 30 s.
	KeepAlive time.Duration
	// BackoffMin and BackoffMax bound the wait between connection attempts
	// (exponential with full jitter). Defaults 1 s and 60 s.
	BackoffMin, BackoffMax time.Duration
	// StatusInterval republishes the retained status. Default 60 s.
	StatusInterval time.Duration
	// Poll is how often the outbox is checked for new batches when Wake is
	// quiet. Default 1 s.
	Poll time.Duration
	// Wake, if set, signals that new batches were sealed.
	Wake <-chan struct{}
	// Status builds the status message for a state (online or offline).
	Status func(state string) *protocol.Status
	// Limits for decoding acks.
	Limits protocol.Limits
	// AckKeys are the hub keys an ack must be signed with: an ack that is
	// unsigned, signed with another key or altered is ignored and counted
	// (Stats.AcksIgnored: unsigned, unknown_key, bad_signature), and the
	// batch it names is sent again after its ack timeout. Required unless
	// InsecureUnsignedAcks.
	AckKeys *protocol.AckKeys
	// InsecureUnsignedAcks applies acks without checking who sent them:
	// whoever can publish on the ack topic can make the agent delete
	// readings. It excludes AckKeys.
	InsecureUnsignedAcks bool

	Logger *slog.Logger
	// Dial, if set, replaces the network dialer (fault injection in
	// simulations); TLS, if configured, runs over the connection it returns.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Stats are the forwarder's counters.
type Stats struct {
	Connected                 bool
	Connects, ConnectFailures uint64
	Published, Republished    uint64 // batches
	Acks                      uint64 // acks applied
	// AcksIgnored counts acks ignored before the outbox saw them, by
	// reason: foreign_topic, malformed, unsigned, unknown_key,
	// bad_signature, queue_full. (The outbox counts those it refuses.)
	AcksIgnored map[string]uint64
	// LastAck is when the last ack was applied.
	LastAck time.Time
}

// Forwarder moves batches from the outbox to the broker.
type Forwarder struct {
	o     Options
	ob    Outbox
	log   *slog.Logger
	codec *protocol.Codec

	connected atomic.Bool
	mu        sync.Mutex
	stats     Stats
	// logged bounds the log lines of ignored acks (session goroutine only).
	logged logLimiter
}

// New returns a forwarder for ob.
func New(ob Outbox, o Options) (*Forwarder, error) {
	if o.Broker == "" {
		return nil, errors.New("forward: broker URL required")
	}
	if err := protocol.ValidDevice(o.Device); err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	if (o.AckKeys == nil) == !o.InsecureUnsignedAcks {
		return nil, errors.New("forward: set one of AckKeys (the hub keys acks must be signed with) and InsecureUnsignedAcks")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.AckTimeout, 30*time.Second)
	def(&o.ConnectTimeout, 10*time.Second)
	def(&o.KeepAlive, 30*time.Second)
	def(&o.BackoffMin, time.Second)
	def(&o.BackoffMax, 60*time.Second)
	def(&o.StatusInterval, 60*time.Second)
	def(&o.Poll, time.Second)
	if o.Window <= 0 {
		o.Window = 8
	}
	if o.ClientID == "" {
		o.ClientID = o.Device
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Status == nil {
		o.Status = func(state string) *protocol.Status {
			return &protocol.Status{Device: o.Device, State: state}
		}
	}
	f := &Forwarder{o: o, ob: ob, log: o.Logger, codec: protocol.NewCodec(o.Limits)}
	f.stats.AcksIgnored = map[string]uint64{}
	return f, nil
}

// Connected reports whether a connection is up.
func (f *Forwarder) Connected() bool { return f.connected.Load() }

// Stats returns a snapshot of the counters.
func (f *Forwarder) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Connected = f.connected.Load()
	s.AcksIgnored = make(map[string]uint64, len(f.stats.AcksIgnored))
	for k, v := range f.stats.AcksIgnored {
		s.AcksIgnored[k] = v
	}
	return s
}

func (f *Forwarder) count(fn func(s *Stats)) {
	f.mu.Lock()
	fn(&f.stats)
	f.mu.Unlock()
}

// Run connects, forwards and reconnects until ctx is done. On the way out it
// publishes the offline status and disconnects cleanly.
func (f *Forwarder) Run(ctx context.Context) error {
	attempt := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		start := time.Now()
		err := f.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > f.o.BackoffMax {
			attempt = 0 // it was up for a while: start backing off afresh
		}
		wait := backoff(attempt, f.o.BackoffMin, f.o.BackoffMax)
		attempt++
		f.log.Warn("mqtt: connection ended, retrying", "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff is capped exponential backoff with full jitter.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(attempt, 30)
	if d <= 0 || d > hi {
		d = hi
	}
	return lo/2 + rand.N(d-lo/2+1)
}

// session runs one connection until it fails or ctx is done.
func (f *Forwarder) session(ctx context.Context) error {
	will, err := f.codec.EncodeStatus(f.o.Status(protocol.StateOffline))
	if err != nil {
		return fmt.Errorf("encode will: %w", err)
	}
	lost := make(chan error, 1)
	acks := make(chan paho.Message, 256)
	po := paho.NewClientOptions().AddBroker(f.o.Broker).SetClientID(f.o.ClientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(f.o.KeepAlive).SetPingTimeout(10*time.Second).
		SetConnectTimeout(f.o.ConnectTimeout).SetWriteTimeout(f.o.ConnectTimeout).
		SetOrderMatters(false).
		SetBinaryWill(f.o.Topics.Status(f.o.Device), will, 1, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if f.o.Username != "" {
		po.SetUsername(f.o.Username).SetPassword(f.o.Password)
	}
	if f.o.TLS != nil {
		po.SetTLSConfig(f.o.TLS)
	}
	if f.o.Dial != nil {
		po.SetCustomOpenConnectionFn(f.openConn)
	}
	c := paho.NewClient(po)
	tok := c.Connect()
	if !waitToken(ctx, tok, f.o.ConnectTimeout) {
		f.count(func(s *Stats) { s.ConnectFailures++ })
		c.Disconnect(0)
		return fmt.Errorf("connect %s: %w", f.o.Broker, tokenErr(tok, "timed out"))
	}
	defer c.Disconnect(250)
	f.count(func(s *Stats) { s.Connects++ })
	f.log.Info("mqtt: connected", "broker", cfgfile.Redact(f.o.Broker))

	// The callback must never block paho's router: hand acks over, and if
	// the queue is full drop the ack (the batch is resent and re-acked).
	sub := c.Subscribe(f.o.Topics.Ack(f.o.Device), 1, func(_ paho.Client, m paho.Message) {
		select {
		case acks <- m:
		default:
			f.count(func(s *Stats) { s.AcksIgnored["queue_full"]++ })
		}
	})
	if !waitToken(ctx, sub, f.o.ConnectTimeout) {
		return fmt.Errorf("subscribe to acks: %w", tokenErr(sub, "timed out"))
	}
	if err := f.publishStatus(ctx, c, protocol.StateOnline); err != nil {
		return err
	}
	f.connected.Store(true)
	defer f.connected.Store(false)

	inflight := map[uint64]time.Time{} // seq -> when it is due again
	var last uint64                    // highest seq published in this session
	poll := time.NewTicker(f.o.Poll)
	defer poll.Stop()
	status := time.NewTicker(f.o.StatusInterval)
	defer status.Stop()
	for {
		// Fill the window, in seq order.
		for len(inflight) < f.o.Window {
			seq, data, ok, err := f.ob.Next(last)
			if err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			if !ok {
				break
			}
			if err := f.ob.MarkPublishing(seq); err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			c.Publish(f.o.Topics.Batch(f.o.Device), 1, false, data)
			inflight[seq] = time.Now().Add(f.o.AckTimeout + rand.N(f.o.AckTimeout/2+1))
			last = seq
			f.count(func(s *Stats) { s.Published++ })
		}
		select {
		case <-ctx.Done():
			f.publishStatus(context.Background(), c, protocol.StateOffline)
			return ctx.Err()
		case err := <-lost:
			return fmt.Errorf("connection lost: %w", err)
		case m := <-acks:
			f.handleAck(m)
			for seq := range inflight {
				if f.ob.Settled(seq) {
					delete(inflight, seq)
				}
			}
		case <-f.o.Wake:
		case <-poll.C:
			if !c.IsConnectionOpen() {
				return errors.New("connection closed")
			}
			for seq, due := range inflight {
				if time.Now().After(due) {
					// Resend from the oldest unsettled batch.
					f.log.Warn("mqtt: ack timeout, publishing again", "seq", seq, "inflight", len(inflight))
					n := uint64(len(inflight))
					f.count(func(s *Stats) { s.Republished += n })
					clear(inflight)
					last = 0
					break
				}
			}
		case <-status.C:
			if err := f.publishStatus(ctx, c, protocol.StateOnline); err != nil {
				return err
			}
		}
	}
}

func (f *Forwarder) publishStatus(ctx context.Context, c paho.Client, state string) error {
	data, err := f.codec.EncodeStatus(f.o.Status(state))
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	tok := c.Publish(f.o.Topics.Status(f.o.Device), 1, true, data)
	if !waitToken(ctx, tok, f.o.ConnectTimeout) {
		return fmt.Errorf("publish status: %w", tokenErr(tok, "timed out"))
	}
	return nil
}

// handleAck applies an ack to the outbox if it comes from the hub: on the
// device's ack topic, well formed, and signed with one of the hub keys.
func (f *Forwarder) handleAck(m paho.Message) {
	ignore := func(reason string, err error, count bool) {
		if count {
			f.count(func(s *Stats) { s.AcksIgnored[reason]++ })
		}
		if n, ok := f.logged.allow(reason, time.Now()); ok {
			f.log.Warn("mqtt: ack ignored", "reason", reason, "err", err, "also_ignored_since_last_line", n)
		}
	}
	device, kind, err := f.o.Topics.Parse(m.Topic())
	if err != nil || kind != protocol.TopicAck || device != f.o.Device {
		ignore("foreign_topic", fmt.Errorf("topic %q", m.Topic()), true)
		return
	}
	a, err := f.codec.DecodeAck(m.Payload())
	if err != nil {
		ignore("malformed", err, true)
		return
	}
	if f.o.AckKeys != nil {
		if err := f.o.AckKeys.Verify(a); err != nil {
			ignore(protocol.Reason(err), err, true) // unsigned, unknown_key, bad_signature
			return
		}
	}
	if err := f.ob.Ack(a); err != nil {
		ignore("refused", err, false) // the outbox counts it, by its reason
		return
	}
	f.count(func(s *Stats) { s.Acks++; s.LastAck = time.Now() })
}

// logLimiter lets through one log line per reason a minute: a flood of
// forged acks is counted in full, and logged only now and then.
type logLimiter struct {
	last       map[string]time.Time
	suppressed map[string]uint64
}

// logEvery is the least time between two lines of one reason.
const logEvery = time.Minute

// allow reports whether a line for reason may be logged now, and how many
// were suppressed since the last one.
func (l *logLimiter) allow(reason string, now time.Time) (uint64, bool) {
	if l.last == nil {
		l.last, l.suppressed = map[string]time.Time{}, map[string]uint64{}
	}
	if t, ok := l.last[reason]; ok && now.Sub(t) < logEvery {
		l.suppressed[reason]++
		return 0, false
	}
	n := l.suppressed[reason]
	l.last[reason], l.suppressed[reason] = now, 0
	return n, true
}

// openConn dials through Options.Dial, adding TLS for ssl:// URLs.
func (f *Forwarder) openConn(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.o.ConnectTimeout)
	defer cancel()
	conn, err := f.o.Dial(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "tcps":
		cfg := f.o.TLS.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
	return conn, nil
}

// waitToken waits for tok, ctx or timeout; it reports success.
func waitToken(ctx context.Context, tok paho.Token, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error() == nil
	case <-ctx.Done():
		return false
	case <-t.C:
		return false
	}
}

func tokenErr(tok paho.Token, fallback string) error {
	if err := tok.Error(); err != nil {
		return err
	}
	return errors.New(fallback)
}
