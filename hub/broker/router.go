package broker

import (
	"hash/fnv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/freshet-iot/freshet/protocol"
)

// router picks, for each shared subscription group, the member that gets
// a device's batch, and holds the batch while that member cannot take it.
//
// Affinity. The member is chosen by rendezvous (highest random weight)
// hashing of the device id with each member's client id: a device stays on
// one member, and when members come or go only the devices of the member
// that left (or a share of them, to the one that joined) move, about 1/N of
// the fleet, against N/(N+1) for a modulo of the member count (EMQX's
// hash_clientid). Connected members are preferred, so a hub that is down
// does not collect its devices' batches in its session. Affinity makes
// several hubs cheap (each rebuilds only the windows a move shares, see
// hub/emit); it is never what makes them correct.
//
// Flow control. A batch is routed in the goroutine of the agent's
// connection that published it. A hub in this process (Attach) takes it
// straight into its intake, and when the intake is full the agent's
// connection waits: the agent's window fills and the rest of its backlog
// stays on its disk. A hub connected over MQTT 5 gets batches while it has
// fewer unacked than its Receive Maximum (and than the broker's pending
// writes per client); beyond that the batch waits likewise, so the broker
// never queues or drops for a hub. (mochi v2.7.9's own Receive Maximum
// quota is off, see OnSessionEstablished; it drops what does not fit its
// pending writes, which is not reached.)
type router struct {
	mqtt.HookBase
	server  *mqtt.Server
	topics  protocol.Topics
	maxWait time.Duration
	pending int // the broker's pending writes per client
	metrics *Metrics

	mu     sync.RWMutex
	locals map[string]*local // by the group's filter: $share/<group>/<batch filter>
}

// local is a hub in this process, a member of a shared group.
type local struct {
	id      string
	deliver func(topic string, payload []byte)
}

func (r *router) ID() string { return "freshet-router" }

func (r *router) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnSelectSubscribers || b == mqtt.OnSessionEstablished
}

// OnSessionEstablished turns mochi's send quota off for the client: the
// router holds batches at a hub's Receive Maximum itself (admit), and
// mochi v2.7.9's own quota has two bugs. After every packet of a client
// with unacked messages and send quota left, it takes the client's
// inflight read lock twice (Inflight.NextImmediate calls GetAll): a
// publish to that client in between waits for the write lock, the second
// read lock waits behind it, and the client and every agent publishing to
// it hang for good (TestHubTakesBatchesWhileAgentsPublish). And a message
// it queued at the quota loses the quota when sent. With a maximum of 0
// neither path is taken: every QoS 1 message is sent at once, and the
// quota is never consulted again. What mochi no longer bounds is the
// unacked QoS 1 messages of clients that are not hubs; freshet sends them
// none (acks and a hub's statuses go at QoS 0), and MaximumInflight still
// caps each client's store.
func (r *router) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	cl.State.Inflight.ResetSendQuota(0)
}

// shareFilter is the filter a hub in group subscribes batches with.
func (r *router) shareFilter(group string) string {
	return "$share/" + group + "/" + r.topics.Filter(protocol.TopicBatch)
}

func (r *router) attach(group, id string, deliver func(topic string, payload []byte)) func() {
	f := r.shareFilter(group)
	r.mu.Lock()
	r.locals[f] = &local{id: id, deliver: deliver}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.locals, f)
		r.mu.Unlock()
	}
}

// routeKey is the user property that carries the router's choice from
// OnPublish, where it is made (and waited for), to OnSelectSubscribers.
const routeKey = "freshet-route"

// OnPublish chooses the member of each shared group that gets a batch,
// hands it to a hub in this process at once (which may wait, in this
// agent's connection), or waits until the chosen hub over MQTT can take it,
// and records the choice in the packet for OnSelectSubscribers.
func (r *router) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	device, kind, err := r.topics.Parse(pk.TopicName)
	if err != nil || kind != protocol.TopicBatch {
		return pk, nil
	}
	r.mu.RLock()
	locals := make(map[string]*local, len(r.locals))
	for f, l := range r.locals {
		locals[f] = l
	}
	r.mu.RUnlock()
	subs := r.server.Topics.Subscribers(pk.TopicName)
	for id := range subs.Subscriptions { // hubs subscribed without a group: each gets every batch
		if member, ok := r.server.Clients.Get(id); ok {
			r.admit(member)
		}
	}
	shared := subs.Shared
	groups := make(map[string]bool, len(shared)+len(locals))
	for f := range shared {
		groups[f] = true
	}
	for f := range locals {
		groups[f] = true
	}
	for f := range groups {
		l := locals[f]
		best := r.choose(device, l, shared[f])
		switch {
		case best == "":
			continue
		case l != nil && best == l.id:
			l.deliver(pk.TopicName, pk.Payload)
		default:
			if member, ok := r.server.Clients.Get(best); ok {
				r.admit(member)
			}
		}
		id := best
		if l != nil && best == l.id {
			id = "" // taken here: no member over MQTT gets it
		}
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: routeKey, Val: f + "\x00" + id})
	}
	return pk, nil
}

// choose returns the member of a group (a hub in this process, and
// members over MQTT) that gets the device's batches: the connected one of
// highest rendezvous weight.
func (r *router) choose(device string, l *local, members map[string]packets.Subscription) string {
	best, bestLive := "", false
	var bestScore uint64
	consider := func(id string, live bool) {
		score := rendezvous(id, device)
		if best == "" || live && !bestLive || live == bestLive && (score > bestScore || score == bestScore && id < best) {
			best, bestLive, bestScore = id, live, score
		}
	}
	if l != nil {
		consider(l.id, true)
	}
	for id := range members {
		cl, ok := r.server.Clients.Get(id)
		consider(id, ok && !cl.Closed())
	}
	return best
}

// OnSelectSubscribers applies the choices OnPublish made: a group whose
// batch went to a hub in this process gets it no more, the others give it
// to the member chosen.
func (r *router) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	chosen := map[string]string{}
	for _, u := range pk.Properties.User {
		if u.Key == routeKey {
			if f, id, ok := strings.Cut(u.Val, "\x00"); ok {
				chosen[f] = id
			}
		}
	}
	if len(chosen) == 0 {
		return subs // not a batch: the default choice
	}
	if subs.SharedSelected == nil {
		subs.SharedSelected = map[string]packets.Subscription{}
	}
	device, _, _ := r.topics.Parse(pk.TopicName)
	for f, members := range subs.Shared {
		id, decided := chosen[f]
		if decided && id == "" {
			delete(subs.Shared, f) // its batch went to the hub in this process
			continue
		}
		if _, member := members[id]; !member {
			id = r.choose(device, nil, members) // not decided, or the member left since
		}
		sub, ok := members[id]
		if !ok {
			continue
		}
		if prev, ok := subs.SharedSelected[id]; ok {
			sub = prev.Merge(sub)
		}
		subs.SharedSelected[id] = sub
	}
	return subs
}

// admit waits while the hub cl has as many unacked batches as it accepts
// (its Receive Maximum, and the broker's pending writes per client), or
// until maxWait; a hub that left is not waited for.
func (r *router) admit(cl *mqtt.Client) {
	limit := r.pending
	if rm := int(cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < limit {
		limit = rm
	}
	if cl.State.Inflight.Len() < limit {
		return
	}
	r.metrics.Held.Inc()
	deadline := time.Now().Add(r.maxWait)
	for wait := time.Millisecond; cl.State.Inflight.Len() >= limit && !cl.Closed(); wait = min(2*wait, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			r.metrics.HeldTooLong.Inc()
			return
		}
		time.Sleep(wait) // in the publishing agent's connection: it is what waits
	}
}

// rendezvous is the weight of member for device: FNV-1a over both, so it
// is the same in every process and across restarts.
func rendezvous(member, device string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(device))
	x := h.Sum64()
	// FNV's low bits mix poorly for similar inputs: finish with a
	// splitmix64 round so that scores spread over the whole range.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// inlineAllowed lets the broker's own (inline) client publish and subscribe
// whatever the users' rules say: it is the hub in this process.
func inlineAllowed(cl *mqtt.Client) bool { return cl.Net.Inline }
