package broker

import (
	"hash/fnv"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/freshet-iot/freshet/protocol"
)

// affinity picks, for each shared subscription group, the member that
// receives a device's message by rendezvous (highest random weight)
// hashing of the device id with each member's client id: a device stays on
// one member, and when members come or go only the devices of the member
// that left (or a share of them, to the one that joined) move, about 1/N of
// the fleet, against N/(N+1) for a modulo of the member count (EMQX's
// hash_clientid). Connected members are preferred, so a hub that is down
// does not collect its devices' batches in its session; without any, the
// default choice stands.
//
// Affinity makes several hubs cheap (each rebuilds only the windows a move
// shares, see hub/emit); it is never what makes them correct.
type affinity struct {
	mqtt.HookBase
	server *mqtt.Server
	topics protocol.Topics
}

func (h *affinity) ID() string { return "freshet-affinity" }

func (h *affinity) Provides(b byte) bool { return b == mqtt.OnSelectSubscribers }

func (h *affinity) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	device, _, err := h.topics.Parse(pk.TopicName)
	if err != nil {
		return subs // not a device's topic: the default choice
	}
	if subs.SharedSelected == nil {
		subs.SharedSelected = map[string]packets.Subscription{}
	}
	for _, members := range subs.Shared {
		best, bestLive := "", false
		var bestScore uint64
		for id := range members {
			live := false
			if cl, ok := h.server.Clients.Get(id); ok && !cl.Closed() {
				live = true
			}
			score := rendezvous(id, device)
			if best == "" || live && !bestLive || live == bestLive && (score > bestScore || score == bestScore && id < best) {
				best, bestLive, bestScore = id, live, score
			}
		}
		if best == "" {
			continue
		}
		sub := members[best]
		if prev, ok := subs.SharedSelected[best]; ok {
			sub = prev.Merge(sub)
		}
		subs.SharedSelected[best] = sub
	}
	return subs
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
