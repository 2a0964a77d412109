package forward_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/freshet-iot/freshet/agent/forward"
	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/firmware-sim/faultnet"
	"github.com/freshet-iot/freshet/internal/agenttest"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is an outbox, a commit loop and a forwarder, as the agent runs them.
type rig struct {
	t    *testing.T
	ob   *outbox.Outbox
	fw   *forward.Forwarder
	n    int // readings added
	link faultnet.Dialer
}

// newRig starts a forwarder that obeys acks signed with keys.
func newRig(t *testing.T, b *testsvc.Broker, keys *protocol.AckKeys, mod func(*forward.Options)) *rig {
	r := &rig{t: t}
	ob, err := outbox.Open(outbox.Options{Path: filepath.Join(t.TempDir(), "o.db"), Device: "gw-1",
		MaxBatchAge: 50 * time.Millisecond, Limits: protocol.Limits{MaxMessageBytes: 2048}, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r.ob = ob
	topics, _ := protocol.NewTopics("")
	o := forward.Options{Broker: b.URL(), Device: "gw-1", Topics: topics, Window: 4,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Poll: 20 * time.Millisecond,
		AckTimeout: 2 * time.Second, ConnectTimeout: 2 * time.Second,
		Status: func(state string) *protocol.Status {
			st := ob.Stats()
			return &protocol.Status{Device: "gw-1", State: state, Epoch: st.Epoch, LastSeq: st.LastSeq, Backlog: st.Backlog}
		},
		Dial: r.link.DialContext, AckKeys: keys,
	}
	if mod != nil {
		mod(&o)
	}
	r.fw = agenttest.Run(t, ob, o, 10*time.Millisecond).Forwarder
	return r
}

func (r *rig) add(n int) {
	rs := make([]protocol.Reading, n)
	for i := range rs {
		k := r.n + i
		rs[i] = protocol.Reading{Sensor: "s1", Metric: "counter", Type: protocol.Int, Time: int64(1_700_000_000+k) * 1e9, Int: int64(k)}
	}
	r.n += n
	r.ob.Add(rs)
}

// delivered waits until the stub has applied every reading added and the
// outbox has deleted them all, then checks order and uniqueness.
func (r *rig) delivered(h *testsvc.HubStub) { r.deliveredOrder(h, true) }

// deliveredOrder is delivered; inOrder also requires that batches were first
// received in seq order (true without faults: after a broker restart a
// subscriber with a clean session can miss what was published before it
// resubscribed, and gets it only with the resend).
func (r *rig) deliveredOrder(h *testsvc.HubStub, inOrder bool) {
	r.t.Helper()
	testsvc.WaitFor(r.t, 30*time.Second, "every reading applied and settled", func() error {
		if got := h.Readings(); got != r.n {
			return fmt.Errorf("%d of %d readings applied", got, r.n)
		}
		if st := r.ob.Stats(); st.Backlog.Readings != 0 || st.Backlog.Batches != 0 {
			return fmt.Errorf("backlog %+v", st.Backlog)
		}
		return nil
	})
	seen := map[int64]bool{}
	seqs := map[uint64]bool{}
	for i, b := range h.Applied() {
		if inOrder && b.Seq != uint64(i+1) {
			r.t.Fatalf("applied batch %d has seq %d: not in seq order", i, b.Seq)
		}
		if seqs[b.Seq] {
			r.t.Fatalf("seq %d applied twice", b.Seq)
		}
		seqs[b.Seq] = true
		for _, s := range b.Series {
			for j, v := range s.Ints {
				if seen[v] {
					r.t.Fatalf("reading %d applied twice", v)
				}
				seen[v] = true
				if s.Times[j] != int64(1_700_000_000+v)*1e9 {
					r.t.Fatalf("reading %d has time %d", v, s.Times[j])
				}
			}
		}
	}
}

func TestDeliversInOrder(t *testing.T) {
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		h := testsvc.StartHubStub(t, b.URL())
		r := newRig(t, b, h.Key.Keys, nil)
		r.add(5000)
		r.delivered(h)
		testsvc.WaitFor(t, 30*time.Second, "online status", func() error {
			if s := h.Status("gw-1"); s == nil || s.State != protocol.StateOnline {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
	})
}

// TestLinkGap: the broker goes away while readings keep being committed;
// when it returns everything arrives, in seq order, none twice.
func TestLinkGap(t *testing.T) {
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		h := testsvc.StartHubStub(t, b.URL())
		r := newRig(t, b, h.Key.Keys, nil)
		r.add(1000)
		testsvc.WaitFor(t, 20*time.Second, "first readings", func() error {
			if h.Readings() == 0 {
				return fmt.Errorf("none yet")
			}
			return nil
		})
		b.Kill()
		testsvc.WaitFor(t, 30*time.Second, "forwarder to notice", func() error {
			if r.fw.Connected() {
				return fmt.Errorf("still connected")
			}
			return nil
		})
		for range 5 {
			r.add(500) // committed while offline
		}
		testsvc.WaitFor(t, 30*time.Second, "offline readings committed", func() error {
			if st := r.ob.Stats(); st.Pending != 0 {
				return fmt.Errorf("%d pending", st.Pending)
			}
			return nil
		})
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		r.deliveredOrder(h, false)
		if st := r.fw.Stats(); st.Connects < 2 {
			t.Fatalf("connects %d: expected a reconnect", st.Connects)
		}
	})
}

// TestAckTimeoutRepublishes: without acks, batches are published again after
// AckTimeout; once acks flow everything settles.
func TestAckTimeoutRepublishes(t *testing.T) {
	b := testsvc.StartMochi(t)
	h := testsvc.StartHubStub(t, b.URL())
	h.SetAcking(false)
	r := newRig(t, b, h.Key.Keys, func(o *forward.Options) { o.AckTimeout = 200 * time.Millisecond })
	r.add(200)
	testsvc.WaitFor(t, 20*time.Second, "a republish", func() error {
		if st := r.fw.Stats(); st.Republished == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	if h.Dupes() == 0 {
		t.Fatal("republished batches did not reach the hub again")
	}
	h.SetAcking(true)
	r.delivered(h)
}

// TestRogueAcks: garbage and foreign acks on the agent's ack topic are
// counted and delete nothing, even when signed with the hub's key.
func TestRogueAcks(t *testing.T) {
	b := testsvc.StartMochi(t)
	h := testsvc.StartHubStub(t, b.URL())
	r, c := unacked(t, b, h, nil)
	codec := protocol.NewCodec(protocol.Limits{})
	epoch := r.ob.Epoch()
	signed := func(a *protocol.Ack) []byte {
		h.Key.Signer.Sign(a)
		d, _ := codec.EncodeAck(a)
		return d
	}
	rogue := [][]byte{
		[]byte("garbage"),
		signed(&protocol.Ack{Device: "gw-2", Epoch: epoch, Through: 1}),
		signed(&protocol.Ack{Device: "gw-1", Epoch: epoch + 1, Through: 1}),
		signed(&protocol.Ack{Device: "gw-1", Epoch: epoch, Through: 1 << 40}),
	}
	publishAcks(t, c, rogue...)
	testsvc.WaitFor(t, 30*time.Second, "rogue acks counted", func() error {
		fw, ob := r.fw.Stats().AcksIgnored, r.ob.Stats().AcksIgnored
		if fw["malformed"] != 1 || ob["foreign_device"] != 1 || ob["unknown_epoch"] != 1 || ob["unsent_seq"] != 1 {
			return fmt.Errorf("ignored: forwarder %v, outbox %v", fw, ob)
		}
		return nil
	})
	if st := r.ob.Stats(); st.Settled != 0 || st.Backlog.Readings != 3000 {
		t.Fatalf("rogue acks changed the outbox: %+v", st)
	}
	h.SetAcking(true)
	r.delivered(h)
}

// TestForgedAcks: acks for the agent's own device, epoch and seqs, but
// unsigned, signed with another key, or signed by the hub and altered,
// through a real broker, settle nothing and are counted by reason; the
// batches are sent again after their ack timeout, and the hub's signed
// acks then settle everything.
func TestForgedAcks(t *testing.T) {
	b := testsvc.StartMochi(t)
	h := testsvc.StartHubStub(t, b.URL())
	var logs lockedBuffer
	r, c := unacked(t, b, h, func(o *forward.Options) {
		o.AckTimeout = 500 * time.Millisecond
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	codec := protocol.NewCodec(protocol.Limits{})
	epoch := r.ob.Epoch()
	last := r.ob.Stats().LastSeq
	other := testsvc.NewAckKey(t)
	enc := func(a *protocol.Ack) []byte {
		d, err := codec.EncodeAck(a)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	all := func() *protocol.Ack { return &protocol.Ack{Device: "gw-1", Epoch: epoch, Through: last} }
	unsigned := enc(all())
	wrongKey := all()
	other.Signer.Sign(wrongKey)
	claimed := all() // another key's signature under the hub's key id
	other.Signer.Sign(claimed)
	claimed.KeyID = h.Key.Signer.KeyID()
	tampered := &protocol.Ack{Device: "gw-1", Epoch: epoch, Through: 1} // the hub settled seq 1 only...
	h.Key.Signer.Sign(tampered)
	tampered.Through = last // ...and the forger widened it
	v1 := all()
	v1.Version = 1
	forged := map[string][][]byte{
		"unsigned":      {unsigned, enc(v1)},
		"unknown_key":   {enc(wrongKey)},
		"bad_signature": {enc(claimed), enc(tampered)},
	}
	for _, ps := range forged {
		publishAcks(t, c, ps...)
	}
	testsvc.WaitFor(t, 30*time.Second, "forged acks counted", func() error {
		st := r.fw.Stats()
		for reason, ps := range forged {
			if st.AcksIgnored[reason] != uint64(len(ps)) {
				return fmt.Errorf("ignored %v", st.AcksIgnored)
			}
		}
		return nil
	})
	// Resent, since no ack came: still all there.
	testsvc.WaitFor(t, 30*time.Second, "a resend after the ack timeout", func() error {
		if h.Dupes() == 0 {
			return fmt.Errorf("no batch received twice")
		}
		return nil
	})
	if st := r.ob.Stats(); st.Settled != 0 || st.Backlog.Readings != 3000 || r.fw.Stats().Acks != 0 {
		t.Fatalf("forged acks changed the outbox: %+v, acks applied %d", st, r.fw.Stats().Acks)
	}
	h.SetAcking(true)
	r.delivered(h)
	if st := r.fw.Stats(); st.Acks == 0 || st.AcksIgnored["unsigned"] != 2 {
		t.Errorf("after the hub's acks: %+v", st)
	}
	// One line per reason within a minute: a flood is counted, not logged.
	for reason := range forged {
		if n := strings.Count(logs.String(), "reason="+reason+" "); n != 1 {
			t.Errorf("%d log lines for reason %s, want 1:\n%s", n, reason, logs.String())
		}
	}
}

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// unacked starts a rig whose hub stub h does not ack yet, adds 3,000
// readings and waits until batches are out; it also connects a client
// that is not the hub.
func unacked(t *testing.T, b *testsvc.Broker, h *testsvc.HubStub, mod func(*forward.Options)) (*rig, paho.Client) {
	h.SetAcking(false)
	r := newRig(t, b, h.Key.Keys, mod)
	r.add(3000)
	testsvc.WaitFor(t, 20*time.Second, "batches published", func() error {
		if len(h.Applied()) < 2 {
			return fmt.Errorf("%d", len(h.Applied()))
		}
		return nil
	})
	c := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("rogue"))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return r, c
}

// publishAcks publishes payloads on gw-1's ack topic.
func publishAcks(t *testing.T, c paho.Client, payloads ...[]byte) {
	for _, p := range payloads {
		if tok := c.Publish("freshet/v1/gw-1/ack", 1, false, p); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
}

// TestLastWill: when the connection dies without a goodbye the broker
// publishes the retained offline status; on reconnect it is online again.
func TestLastWill(t *testing.T) {
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		h := testsvc.StartHubStub(t, b.URL())
		r := newRig(t, b, h.Key.Keys, func(o *forward.Options) { o.KeepAlive = time.Second })
		testsvc.WaitFor(t, 30*time.Second, "online", func() error {
			if s := h.Status("gw-1"); s == nil || s.State != protocol.StateOnline || !r.fw.Connected() {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
		r.link.Cut()
		testsvc.WaitFor(t, 30*time.Second, "offline will, then online again", func() error {
			if st := r.fw.Stats(); st.Connects < 2 {
				return fmt.Errorf("not reconnected")
			}
			if s := h.Status("gw-1"); s == nil || s.State != protocol.StateOnline {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
		// The broker published the will between the two online statuses.
		states := strings.Join(h.States("gw-1"), ",")
		if !strings.Contains(states, "online,offline,online") {
			t.Fatalf("status history %s: no offline will between the connections", states)
		}
	})
}

// TestStalledLink: a link that stalls silently (no error, nothing moves) is
// noticed by the keepalive; once it flows again the agent reconnects and
// delivers everything.
func TestStalledLink(t *testing.T) {
	b := testsvc.StartMochi(t)
	h := testsvc.StartHubStub(t, b.URL())
	r := newRig(t, b, h.Key.Keys, func(o *forward.Options) { o.KeepAlive = time.Second; o.ConnectTimeout = time.Second })
	r.add(500)
	testsvc.WaitFor(t, 30*time.Second, "first delivery", func() error {
		if h.Readings() == 0 {
			return fmt.Errorf("none")
		}
		return nil
	})
	r.link.SetStalled(true)
	r.add(500)
	testsvc.WaitFor(t, 30*time.Second, "the keepalive to notice the stall", func() error {
		if r.fw.Connected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	r.link.SetStalled(false)
	r.delivered(h)
}
