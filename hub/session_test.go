package hub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// TestKeptSessionGetsStatusesAgain: a hub that comes back to the session
// the broker kept for it (with unacked batches in it: InfluxDB is down)
// gets the retained statuses again, so it knows the fleet at once, while
// the batches wait for InfluxDB. On mochi the status SUBSCRIBE first
// collides with the packet ids of the batches handed to the hub again
// (0x91) and is sent again.
func TestKeptSessionGetsStatusesAgain(t *testing.T) {
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		ix := testsvc.StartInflux(t)
		db := ix.NewDatabase(t)
		ix.Kill() // nothing is stored, so nothing is acked to the broker
		t.Setenv("FRESHET_TEST_INFLUX_TOKEN", ix.Token)
		dir := t.TempDir()
		cfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`
data_dir: %s
broker: {url: "tcp://%s", client_id: hub-kept, max_inflight: 10}
influx: {url: %q, bucket: %q, token_env: FRESHET_TEST_INFLUX_TOKEN}
http: {listen: "off"}
ack_key_file: %s
`, dir, b.Addr, ix.URL, db+"/autogen", testsvc.NewAckKey(t).KeyFile)))
		if err != nil {
			t.Fatal(err)
		}
		pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID("kept-pub").SetAutoReconnect(false))
		if tok := pub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		defer pub.Disconnect(0)
		codec := protocol.NewCodec(protocol.Limits{})
		devices := []string{"gw-k1", "gw-k2", "gw-k3"}
		for _, d := range devices {
			st, _ := codec.EncodeStatus(&protocol.Status{Device: d, State: protocol.StateOnline, AgentVersion: "test", Epoch: 1, ClockSynced: true})
			if tok := pub.Publish("freshet/v1/"+d+"/status", 1, true, st); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
		}
		run := func(what string, during func(h *hub.Hub)) {
			h, err := hub.New(cfg, hub.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); h.Run(ctx) }()
			testsvc.WaitFor(t, 20*time.Second, what+": every retained status", func() error {
				for _, d := range devices {
					if dev, ok := h.Fleet().Device(d); !ok || dev.State != protocol.StateOnline {
						return fmt.Errorf("%s not known", d)
					}
				}
				return nil
			})
			during(h)
			cancel()
			<-done
		}
		run("first run", func(h *hub.Hub) {
			// 10 batches, the hub's Receive Maximum: it takes them and
			// cannot store (so ack) any; they are its kept session's.
			for i, data := range batches(t, "gw-k1", 1, 1, time.Now().Add(-time.Minute), make([]float64, 10), 1) {
				if tok := pub.Publish("freshet/v1/gw-k1/batch", 1, false, data); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					t.Fatalf("batch %d: %v", i, tok.Error())
				}
			}
			testsvc.WaitFor(t, 20*time.Second, "the hub trying to store the batches", func() error {
				if r := h.InfluxStats().Retries; r < 3 {
					return fmt.Errorf("%d retries", r)
				}
				return nil
			})
		})
		run("the kept session", func(*hub.Hub) {})
	})
}
