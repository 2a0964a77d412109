package broker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/hub/broker"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// TestSharedSubscriptionAffinity: with three hubs in one shared group, each
// device's batches go to one hub; when a hub leaves, only its devices move
// (rendezvous hashing), and when it comes back they return to it.
func TestSharedSubscriptionAffinity(t *testing.T) {
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var mu sync.Mutex
	got := map[string]map[string]int{} // device -> hub -> messages
	hub := func(id string) paho.Client {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(id).SetAutoReconnect(false).
			SetCleanSession(false)) // as hubs do: a hub that left keeps its subscription in its session
		if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		tok := c.Subscribe("$share/hubs/freshet/v1/+/batch", 1, func(_ paho.Client, m paho.Message) {
			mu.Lock()
			defer mu.Unlock()
			d := string(m.Payload())
			if got[d] == nil {
				got[d] = map[string]int{}
			}
			got[d][id]++
		})
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		return c
	}
	hubs := map[string]paho.Client{}
	for _, id := range []string{"hub-a", "hub-b", "hub-c"} {
		hubs[id] = hub(id)
	}
	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("publisher").SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(0)
	const devices = 90
	round := func(n int) map[string]string { // device -> its one hub
		t.Helper()
		mu.Lock()
		clear(got)
		mu.Unlock()
		for d := range devices {
			dev := fmt.Sprintf("gw-%03d", d)
			for range n {
				pub.Publish("freshet/v1/"+dev+"/batch", 1, false, dev).WaitTimeout(30 * time.Second)
			}
		}
		owner := map[string]string{}
		testsvc.WaitFor(t, 30*time.Second, "every message delivered", func() error {
			mu.Lock()
			defer mu.Unlock()
			total := 0
			for _, per := range got {
				for _, k := range per {
					total += k
				}
			}
			if total != devices*n {
				return fmt.Errorf("%d of %d", total, devices*n)
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		for d, per := range got {
			if len(per) != 1 {
				t.Fatalf("device %s went to %d hubs: %v", d, len(per), per)
			}
			for h := range per {
				owner[d] = h
			}
		}
		return owner
	}
	before := round(3)
	share := map[string]int{}
	for _, h := range before {
		share[h]++
	}
	for id, n := range share {
		if n < devices/6 { // rendezvous spreads them: each of 3 hubs gets about 30
			t.Errorf("%s has %d of %d devices: %v", id, n, devices, share)
		}
	}
	hubs["hub-b"].Disconnect(0)
	testsvc.WaitFor(t, 30*time.Second, "hub-b gone", func() error {
		if cl, ok := b.Server().Clients.Get("hub-b"); ok && !cl.Closed() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	after := round(2)
	moved := 0
	for d, h := range after {
		if h != before[d] {
			moved++
			if before[d] != "hub-b" {
				t.Errorf("device %s moved from %s to %s, though %s stayed", d, before[d], h, before[d])
			}
		}
	}
	if moved != share["hub-b"] {
		t.Errorf("%d devices moved, hub-b had %d", moved, share["hub-b"])
	}
	hubs["hub-b"] = hub("hub-b")
	back := round(1)
	for d, h := range back {
		if h != before[d] {
			t.Errorf("device %s is on %s after hub-b came back, was on %s", d, h, before[d])
		}
	}
	for _, c := range hubs {
		c.Disconnect(0)
	}
}
