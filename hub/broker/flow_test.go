package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/hub/broker"
	"github.com/freshet-iot/freshet/internal/localsvc"
)

// TestHubTakesBatchesWhileAgentsPublish: a hub over MQTT 5 (Receive
// Maximum, acks by hand, as hub/ingest's session) takes batches that many
// agents publish at once. mochi v2.7.9 takes its per-client inflight read
// lock twice after every packet of a client with unacked messages and send
// quota left (Inflight.NextImmediate calls GetAll); an agent's publish to
// that client between the two takes waits for the write lock, and the
// second read lock then waits forever behind it: the hub's connection and
// every agent that publishes to it hang (it hung TestHubKill9 in CI). The
// router turns mochi's send quota off, so that path is never taken, and
// holds batches at the hub's Receive Maximum itself. Every batch must
// arrive, and the broker must close.
func TestHubTakesBatchesWhileAgentsPublish(t *testing.T) {
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed { // a hung broker would hang its Close too
			b.Close()
		}
	}()
	conn, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	c := paho.NewClient(paho.ClientConfig{
		ClientID: "hub-flow", Conn: packets.NewThreadSafeConn(conn), Session: state.NewInMemory(),
		EnableManualAcknowledgment: true, SendAcksInterval: time.Millisecond,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got.Add(1)
			pr.Client.Ack(pr.Packet)
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rm := uint16(16)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "hub-flow", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm}}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "freshet/v1/+/batch", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	const agents, each = 16, 300
	var wg sync.WaitGroup
	errs := make(chan error, agents)
	for a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := fmt.Sprintf("gw-flow-%02d", a)
			p := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(dev).SetAutoReconnect(false))
			if tok := p.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				errs <- fmt.Errorf("%s: connect: %v", dev, tok.Error())
				return
			}
			defer p.Disconnect(0)
			toks := make([]pahov3.Token, 0, 8)
			for i := range each { // a window of 8 in flight, as agents send
				toks = append(toks, p.Publish("freshet/v1/"+dev+"/batch", 1, false, []byte{byte(i)}))
				if len(toks) == 8 {
					for _, tok := range toks {
						if !tok.WaitTimeout(30 * time.Second) {
							errs <- fmt.Errorf("%s: batch %d not acked by the broker in 30 s", dev, i)
							return
						}
					}
					toks = toks[:0]
				}
			}
			for _, tok := range toks {
				tok.WaitTimeout(30 * time.Second)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		closed = true // the broker hung: leave it (the test fails either way)
		t.Fatal(err)
	}
	localsvc.Poll(30*time.Second, func() error { // checked below, where a hung broker is left behind
		if got.Load() < agents*each {
			return errors.New("not all batches yet")
		}
		return nil
	})
	if n := got.Load(); n != agents*each {
		closed = true
		t.Fatalf("the hub got %d of %d batches", n, agents*each)
	}
}
