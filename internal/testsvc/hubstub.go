package testsvc

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/protocol"
)

// HubStub is a minimal acking subscriber that stands in for the hub in agent
// tests: it takes every batch from the broker, keeps the hub's ledger
// (hub/ledger) per (device, epoch), which drops duplicates and treats
// gap-notice seqs as settled, and acks from it as the hub does, signed
// with a key of its own (its agents verify with Key.Keys or Key.PubFile). It
// reconnects by itself when the broker goes away.
type HubStub struct {
	tb     testing.TB
	url    string
	topics protocol.Topics
	acking atomic.Bool
	// Key signs the stub's acks; agents verify them with Key.Keys.
	Key *AckKey

	mu       sync.Mutex
	ledgers  map[ledgerKey]*ledger.State
	applied  []*protocol.Batch // in the order first received
	dupes    int
	bad      int
	statuses map[string]*protocol.Status
	states   map[string][]string
}

type ledgerKey struct {
	device string
	epoch  uint64
}

// StartHubStub connects a stub hub to the broker at url for the life of tb.
func StartHubStub(tb testing.TB, url string) *HubStub {
	tb.Helper()
	topics, _ := protocol.NewTopics("")
	h := &HubStub{tb: tb, url: url, topics: topics, Key: NewAckKey(tb), ledgers: map[ledgerKey]*ledger.State{}, statuses: map[string]*protocol.Status{}, states: map[string][]string{}}
	h.acking.Store(true)
	stop := make(chan struct{})
	done := make(chan struct{})
	connected := make(chan struct{}, 1)
	go h.run(stop, done, connected)
	tb.Cleanup(func() { close(stop); <-done })
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		tb.Fatalf("hub stub could not connect to %s", url)
	}
	return h
}

// SetAcking turns acks on or off (batches are still recorded).
func (h *HubStub) SetAcking(on bool) { h.acking.Store(on) }

func (h *HubStub) run(stop, done chan struct{}, connected chan struct{}) {
	defer close(done)
	msgs := make(chan paho.Message, 1024)
	for {
		lost := make(chan struct{}, 1)
		c := paho.NewClient(paho.NewClientOptions().AddBroker(h.url).SetClientID(fmt.Sprintf("hubstub-%p", h)).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second).
			SetConnectionLostHandler(func(paho.Client, error) {
				select {
				case lost <- struct{}{}:
				default:
				}
			}))
		ok := false
		if tok := c.Connect(); tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
			handler := func(_ paho.Client, m paho.Message) { msgs <- m }
			st := c.Subscribe(h.topics.Filter(protocol.TopicBatch), 1, handler)
			ss := c.Subscribe(h.topics.Filter(protocol.TopicStatus), 1, handler)
			ok = st.WaitTimeout(3*time.Second) && st.Error() == nil && ss.WaitTimeout(3*time.Second) && ss.Error() == nil
		}
		if ok {
			select {
			case connected <- struct{}{}:
			default:
			}
		loop:
			for {
				select {
				case <-stop:
					c.Disconnect(100)
					return
				case <-lost:
					break loop
				case m := <-msgs:
					h.handle(c, m)
				}
			}
		}
		c.Disconnect(0)
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (h *HubStub) handle(c paho.Client, m paho.Message) {
	device, kind, err := h.topics.Parse(m.Topic())
	codec := protocol.NewCodec(protocol.Limits{})
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.bad++
		return
	}
	if kind == protocol.TopicStatus {
		if s, err := codec.DecodeStatus(m.Payload()); err == nil {
			h.statuses[device] = s
			h.states[device] = append(h.states[device], s.State)
		}
		return
	}
	var b protocol.Batch
	if err := codec.DecodeBatch(m.Payload(), &b); err != nil || b.Device != device {
		h.bad++
		return
	}
	k := ledgerKey{device, b.Epoch}
	l := h.ledgers[k]
	if l == nil {
		l = &ledger.State{}
		h.ledgers[k] = l
	}
	l.SettleThrough(b.Settled) // the agent's settled mark, as the hub takes it
	if l.Settled(b.Seq) {
		h.dupes++
	} else {
		if b.Gap != nil {
			for _, r := range b.Gap.Seqs {
				l.SettleRange(r.First, r.Last)
			}
		}
		l.Settle(b.Seq)
		h.applied = append(h.applied, &b)
	}
	if !h.acking.Load() {
		return
	}
	a := l.Ack(device, b.Epoch, b.Seq, b.Version, protocol.DefaultLimits().MaxAckSeqs)
	if a.Version >= 2 {
		h.Key.Signer.Sign(a)
	}
	data, err := codec.EncodeAck(a)
	if err != nil {
		h.tb.Errorf("hub stub: encode ack: %v", err)
		return
	}
	c.Publish(h.topics.Ack(device), 1, false, data) // not waited on: never block the handler
}

// Applied returns the batches applied so far (duplicates excluded), in the
// order they were first received.
func (h *HubStub) Applied() []*protocol.Batch {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.applied)
}

// Readings counts the readings applied so far.
func (h *HubStub) Readings() int {
	n := 0
	for _, b := range h.Applied() {
		n += b.Readings()
	}
	return n
}

// Dupes counts batches received again after they were applied.
func (h *HubStub) Dupes() int { h.mu.Lock(); defer h.mu.Unlock(); return h.dupes }

// Status returns the last status a device published.
func (h *HubStub) Status(device string) *protocol.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.statuses[device]
}

// States returns the states of every status a device published, in order.
func (h *HubStub) States(device string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.states[device])
}
