package broker_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/freshet-iot/freshet/hub/broker"
	"github.com/freshet-iot/freshet/internal/testcerts"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// TestUserAuth: wrong passwords are refused; a device can use only its own
// topics; the hub user sees every device.
func TestUserAuth(t *testing.T) {
	topics, _ := protocol.NewTopics("")
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", Topics: topics, Users: []broker.User{
		{Name: "hub", Password: "hub-secret", Hub: true},
		{Name: "gw-1", Password: "one"},
		{Name: "gw-2", Password: "two"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	connect := func(user, pass string) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(user).
			SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetProtocolVersion(4)) // one attempt: without it paho retries a refused connect as MQTT 3.1
		tok := c.Connect()
		if !tok.WaitTimeout(30 * time.Second) {
			return nil, fmt.Errorf("timeout")
		}
		return c, tok.Error()
	}
	if _, err := connect("gw-1", "wrong"); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if _, err := connect("nobody", "x"); err == nil {
		t.Fatal("an unknown user was accepted")
	}
	m := b.Metrics()
	if bad, unknown := promtest.ToFloat64(m.Refused.WithLabelValues("bad_password")), promtest.ToFloat64(m.Refused.WithLabelValues("unknown_user")); bad != 1 || unknown != 1 {
		t.Fatalf("refused connections counted: bad_password %v, unknown_user %v; want 1 and 1", bad, unknown)
	}
	hub, err := connect("hub", "hub-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Disconnect(0)
	var mu sync.Mutex
	got := map[string]int{}
	tok := hub.Subscribe("$share/hubs/freshet/v1/+/batch", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got[m.Topic()+" "+string(m.Payload())]++
		mu.Unlock()
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	gw1, err := connect("gw-1", "one")
	if err != nil {
		t.Fatal(err)
	}
	defer gw1.Disconnect(0)
	waitFor := func(key string) {
		t.Helper()
		testsvc.WaitFor(t, 30*time.Second, fmt.Sprintf("%q to reach the hub once", key), func() error {
			mu.Lock()
			defer mu.Unlock()
			if got[key] != 1 {
				return fmt.Errorf("got %v", got)
			}
			return nil
		})
	}
	gw1.Publish("freshet/v1/gw-1/batch", 1, false, "own").WaitTimeout(30 * time.Second)
	waitFor("freshet/v1/gw-1/batch own")
	sub := gw1.Subscribe("freshet/v1/gw-2/ack", 1, nil)
	sub.WaitTimeout(30 * time.Second)
	if st := sub.(*paho.SubscribeToken); st.Result()["freshet/v1/gw-2/ack"] != 0x80 {
		t.Fatalf("subscribing to another device's acks: result %v, want failure 0x80", st.Result())
	}
	// A forged publish is dropped (mochi also disconnects the client; MQTT
	// 3.1.1 has no way to refuse a single publish). A barrier from another
	// device, sent after it, shows the hub would have seen it by now.
	gw1.Publish("freshet/v1/gw-2/batch", 1, false, "forged").WaitTimeout(30 * time.Second)
	gw2, err := connect("gw-2", "two")
	if err != nil {
		t.Fatal(err)
	}
	defer gw2.Disconnect(0)
	gw2.Publish("freshet/v1/gw-2/batch", 1, false, "barrier").WaitTimeout(30 * time.Second)
	waitFor("freshet/v1/gw-2/batch barrier")
	mu.Lock()
	defer mu.Unlock()
	if got["freshet/v1/gw-2/batch forged"] != 0 {
		t.Fatal("a device published on another device's topic")
	}
	if w, r := promtest.ToFloat64(m.Denied.WithLabelValues("write")), promtest.ToFloat64(m.Denied.WithLabelValues("read")); w != 1 || r != 1 {
		t.Fatalf("denials counted: write %v, read %v; want 1 and 1", w, r)
	}
}

// connectAs connects to b as clientID with username and password (empty:
// none) over tc (nil: plain TCP), once.
func connectAs(b *broker.Broker, tc *tls.Config, clientID, user, pass string) (paho.Client, error) {
	o := paho.NewClientOptions().SetClientID(clientID).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	if tc != nil {
		o.AddBroker("ssl://" + b.Addr()).SetTLSConfig(tc)
	} else {
		o.AddBroker("tcp://" + b.Addr())
	}
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(30 * time.Second) {
		return nil, fmt.Errorf("timeout")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	return c, nil
}

func refused(b *broker.Broker, reason string) float64 {
	return promtest.ToFloat64(b.Metrics().Refused.WithLabelValues(reason))
}

// TestClientIDsBoundToIdentities: a device connects only with its own id
// as client id, so it can take over neither another device's session nor
// a hub's (finding 4 of issue 15); a hub keeps its session.
func TestClientIDsBoundToIdentities(t *testing.T) {
	topics, _ := protocol.NewTopics("")
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", Topics: topics, HubClientIDs: []string{"freshet-hub"}, Users: []broker.User{
		{Name: "hub", Password: "h", Hub: true},
		{Name: "gw-1", Password: "one"},
		{Name: "freshet-hub", Password: "x"}, // a device account named like the hub (hub config refuses it)
		{Name: "hub-2", Password: "y"},       // a device named like a client id a hub uses
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	hub, err := connectAs(b, nil, "hub-2", "hub", "h") // a hub account may use any client id
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Disconnect(0)
	for _, c := range []struct{ clientID, user, pass, reason string }{
		{"gw-2", "gw-1", "one", "client_id_not_identity"},
		{"freshet-hub", "gw-1", "one", "client_id_not_identity"},
		{"", "gw-1", "one", "client_id_not_identity"},
		{"freshet-hub", "freshet-hub", "x", "hub_client_id"},
		{"hub-2", "hub-2", "y", "hub_client_id"},
	} {
		if cl, err := connectAs(b, nil, c.clientID, c.user, c.pass); err == nil {
			cl.Disconnect(0)
			t.Errorf("%s connected with client id %q", c.user, c.clientID)
		}
		if n := refused(b, c.reason); n < 1 {
			t.Errorf("%s as %q: refusal %s counted %v times", c.user, c.clientID, c.reason, n)
		}
	}
	if !hub.IsConnectionOpen() {
		t.Fatal("the hub's session was taken over")
	}
	gw, err := connectAs(b, nil, "gw-1", "gw-1", "one")
	if err != nil {
		t.Fatal(err)
	}
	gw.Disconnect(0)
}

// TestClientCertificateIdentity: with client certificates the common name
// is the identity: it binds the client id and the topics, a username may
// only repeat it, and a users entry gives a certificate the hub role.
func TestClientCertificateIdentity(t *testing.T) {
	ca := testcerts.NewCA(t)
	topics, _ := protocol.NewTopics("")
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", TLS: ca.ServerConfig(t), Topics: topics,
		Users: []broker.User{{Name: "hub-2", Hub: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := connectAs(b, ca.ClientConfig(t, ""), "gw-1", "", ""); err == nil {
		t.Fatal("a client without a certificate connected")
	}
	if _, err := connectAs(b, ca.ClientConfig(t, "gw-1"), "gw-1", "gw-2", ""); err == nil || refused(b, "username_not_certificate") != 1 {
		t.Fatalf("a username other than the certificate's: err %v, counted %v", err, refused(b, "username_not_certificate"))
	}
	if _, err := connectAs(b, ca.ClientConfig(t, "gw-1"), "gw-2", "", ""); err == nil || refused(b, "client_id_not_identity") != 1 {
		t.Fatalf("another device's client id: err %v, counted %v", err, refused(b, "client_id_not_identity"))
	}
	if _, err := connectAs(b, ca.ClientConfig(t, "not a device/id"), "not a device/id", "", ""); err == nil || refused(b, "not_a_device_id") != 1 {
		t.Fatalf("a certificate whose name is no device id: err %v, counted %v", err, refused(b, "not_a_device_id"))
	}
	hub, err := connectAs(b, ca.ClientConfig(t, "hub-2"), "freshet-hub-2", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Disconnect(0)
	got := make(chan string, 10)
	if tok := hub.Subscribe("$share/hubs/freshet/v1/+/batch", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	gw, err := connectAs(b, ca.ClientConfig(t, "gw-1"), "gw-1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Disconnect(0)
	gw.Publish("freshet/v1/gw-2/batch", 1, false, "forged").WaitTimeout(30 * time.Second)
	gw2, err := connectAs(b, ca.ClientConfig(t, "gw-2"), "gw-2", "gw-2", "")
	if err != nil {
		t.Fatal(err)
	}
	defer gw2.Disconnect(0)
	gw2.Publish("freshet/v1/gw-2/batch", 1, false, "own").WaitTimeout(30 * time.Second)
	select {
	case topic := <-got:
		if topic != "freshet/v1/gw-2/batch" {
			t.Fatalf("the hub got %s first", topic)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gw-2's own batch did not reach the hub")
	}
	if d := promtest.ToFloat64(b.Metrics().Denied.WithLabelValues("write")); d != 1 {
		t.Fatalf("denied writes %v, want 1 (gw-1 on gw-2's topic)", d)
	}
}

// TestAnonymousOnlyOnLoopback: without users or client certificates the
// broker refuses to listen beyond loopback (finding 3 of issue 15).
func TestAnonymousOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		if b, err := broker.Start(broker.Options{Addr: addr}); err == nil {
			b.Close()
			t.Errorf("%s: an anonymous broker started", addr)
		} else if !strings.Contains(err.Error(), "anonymous access is for a loopback address only") {
			t.Errorf("%s: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:1883", "localhost:1883", "[::1]:1883"} {
		if !broker.IsLoopback(addr) {
			t.Errorf("%s is loopback", addr)
		}
	}
}

// TestPacketSizeLimit: a publish over the limit disconnects its client
// and is counted; it never reaches a subscriber (finding 6 of issue 15).
func TestPacketSizeLimit(t *testing.T) {
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := connectAs(b, nil, "big", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(0)
	c.Publish("freshet/v1/big/batch", 1, false, make([]byte, broker.DefaultMaxPacketBytes+1)).WaitTimeout(30 * time.Second)
	testsvc.WaitFor(t, 30*time.Second, "the publish counted as too large", func() error {
		if n := promtest.ToFloat64(b.Metrics().TooLarge); n != 1 {
			return fmt.Errorf("too large counted %v times, want 1", n)
		}
		return nil
	})
}

// TestSilentConnectionsClosed: a TCP connection that never sends CONNECT
// is closed after ConnectTimeout, so idle sockets hold no memory for long.
func TestSilentConnectionsClosed(t *testing.T) {
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", ConnectTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second)) // only a bound on the test
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the silent connection was not closed by the broker: %v", err)
	}
}
