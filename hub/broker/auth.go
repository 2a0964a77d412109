package broker

import (
	"bytes"
	"crypto/subtle"
	"strings"

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

// UserAuth returns an auth hook for Options.Auth that admits only the
// given users, with the topic rules of User.
func UserAuth(users []User, topics protocol.Topics) mqtt.Hook {
	h := &userAuth{users: map[string]User{}, prefix: topics.Prefix() + "/v1/"}
	if topics.Prefix() == "" {
		h.prefix = protocol.DefaultPrefix + "/v1/"
	}
	for _, u := range users {
		h.users[u.Name] = u
	}
	return h
}

type userAuth struct {
	mqtt.HookBase
	users  map[string]User
	prefix string
}

func (h *userAuth) ID() string { return "freshet-users" }

func (h *userAuth) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *userAuth) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	u, ok := h.users[string(pk.Connect.Username)]
	return ok && subtle.ConstantTimeCompare(pk.Connect.Password, []byte(u.Password)) == 1
}

func (h *userAuth) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
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
