package broker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/freshet-iot/freshet/hub/broker"
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
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(user + "-" + pass).
			SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
			SetProtocolVersion(4)) // one attempt: without it paho retries a refused connect as MQTT 3.1
		tok := c.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
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
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	gw1, err := connect("gw-1", "one")
	if err != nil {
		t.Fatal(err)
	}
	defer gw1.Disconnect(0)
	waitFor := func(key string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := got[key]
			mu.Unlock()
			if n == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%q did not reach the hub: %v", key, got)
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
	}
	gw1.Publish("freshet/v1/gw-1/batch", 1, false, "own").WaitTimeout(5 * time.Second)
	waitFor("freshet/v1/gw-1/batch own")
	sub := gw1.Subscribe("freshet/v1/gw-2/ack", 1, nil)
	sub.WaitTimeout(5 * time.Second)
	if st := sub.(*paho.SubscribeToken); st.Result()["freshet/v1/gw-2/ack"] != 0x80 {
		t.Fatalf("subscribing to another device's acks: result %v, want failure 0x80", st.Result())
	}
	// A forged publish is dropped (mochi also disconnects the client; MQTT
	// 3.1.1 has no way to refuse a single publish). A barrier from another
	// device, sent after it, shows the hub would have seen it by now.
	gw1.Publish("freshet/v1/gw-2/batch", 1, false, "forged").WaitTimeout(5 * time.Second)
	gw2, err := connect("gw-2", "two")
	if err != nil {
		t.Fatal(err)
	}
	defer gw2.Disconnect(0)
	gw2.Publish("freshet/v1/gw-2/batch", 1, false, "barrier").WaitTimeout(5 * time.Second)
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
