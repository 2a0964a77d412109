package testsvc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"go.uber.org/goleak"

	"github.com/freshet-iot/freshet/internal/testsvc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func connect(t *testing.T, b *testsvc.Broker, id string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID(id).
		SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, b.Name, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

type inbox struct {
	mu  sync.Mutex
	got []string
}

func (in *inbox) handler(_ paho.Client, m paho.Message) {
	in.mu.Lock()
	in.got = append(in.got, string(m.Payload()))
	in.mu.Unlock()
}

func (in *inbox) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.got)
}

// TestBrokerPubSub proves each broker carries QoS 1 messages between two clients.
func TestBrokerPubSub(t *testing.T) {
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		sub := connect(t, b, "sub")
		var in inbox
		if tok := sub.Subscribe("freshet/v1/+/batch", 1, in.handler); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		pub := connect(t, b, "pub")
		const n = 100
		for i := range n {
			if tok := pub.Publish(fmt.Sprintf("freshet/v1/gw-%d/batch", i%3), 1, false, fmt.Sprint(i)); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %d: %v", i, tok.Error())
			}
		}
		testsvc.WaitFor(t, 30*time.Second, "all messages", func() error {
			if c := in.count(); c != n {
				return fmt.Errorf("%d of %d received", c, n)
			}
			return nil
		})
		in.mu.Lock()
		defer in.mu.Unlock()
		for i, m := range in.got {
			if m != fmt.Sprint(i) {
				t.Fatalf("message %d is %q: QoS 1 from one publisher must arrive in order", i, m)
			}
		}
	})
}

// TestBrokerRestart proves a broker comes back on its port after a stop and
// after a kill, and carries messages again. (Clients reconnect with a fresh
// paho client, as freshet's agent and hub do: paho's own auto-reconnect
// replays its in-memory store racily, paho.mqtt.golang#703.)
func TestBrokerRestart(t *testing.T) {
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		for i, stop := range []func(){b.Stop, b.Kill} {
			c := connect(t, b, fmt.Sprintf("before-%d", i))
			stop()
			testsvc.WaitFor(t, 30*time.Second, "client to notice the broker is gone", func() error {
				if c.IsConnectionOpen() {
					return fmt.Errorf("still connected")
				}
				return nil
			})
			if err := b.Start(); err != nil {
				t.Fatal(err)
			}
			sub := connect(t, b, fmt.Sprintf("sub-%d", i))
			var in inbox
			if tok := sub.Subscribe("t", 1, in.handler); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe after restart: %v", tok.Error())
			}
			pub := connect(t, b, fmt.Sprintf("pub-%d", i))
			if tok := pub.Publish("t", 1, false, "x"); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("publish after restart: %v", tok.Error())
			}
			testsvc.WaitFor(t, 30*time.Second, "message after restart", func() error {
				if in.count() != 1 {
					return fmt.Errorf("%d messages", in.count())
				}
				return nil
			})
		}
	})
}

// TestInfluxWriteRead writes points through influxdb-client-go's v2 API
// (bucket db/rp, token user:password) and reads them back with Flux and
// InfluxQL; a wrong token is refused, so authentication is really on.
func TestInfluxWriteRead(t *testing.T) {
	ix := testsvc.StartInflux(t)
	db := ix.NewDatabase(t)
	client := influxdb2.NewClient(ix.URL, ix.Token)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	w := client.WriteAPIBlocking("", db+"/autogen")
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 10 {
		p := influxdb2.NewPoint("temperature", map[string]string{"device": "gw-1", "sensor": "bme280"},
			map[string]any{"value": 20 + float64(i)/100}, t0.Add(time.Duration(i)*time.Second))
		if err := w.WritePoint(ctx, p); err != nil {
			t.Fatalf("write: %v", err)
		}
	}

	// Flux through the v2 compatibility API.
	res, err := client.QueryAPI("").Query(ctx, fmt.Sprintf(`from(bucket: "%s/autogen")
  |> range(start: 2023-01-01T00:00:00Z, stop: 2024-01-01T00:00:00Z)
  |> filter(fn: (r) => r._measurement == "temperature" and r.device == "gw-1")`, db))
	if err != nil {
		t.Fatalf("flux query: %v", err)
	}
	var sum float64
	n := 0
	for res.Next() {
		sum += res.Record().Value().(float64)
		n++
	}
	if res.Err() != nil {
		t.Fatalf("flux result: %v", res.Err())
	}
	if n != 10 || fmt.Sprintf("%.2f", sum) != "200.45" {
		t.Fatalf("flux read %d points summing to %v, want 10 summing to 200.45", n, sum)
	}

	// InfluxQL.
	series, err := ix.Query(db, `SELECT count(value), sum(value) FROM temperature WHERE device = 'gw-1'`)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || series[0].Values[0][1].(json.Number).String() != "10" {
		t.Fatalf("influxql count: %+v", series)
	}

	// A wrong token is refused.
	bad := influxdb2.NewClient(ix.URL, ix.User+":wrong")
	defer bad.Close()
	err = bad.WriteAPIBlocking("", db+"/autogen").WriteRecord(ctx, "x value=1 1")
	if err == nil || !strings.Contains(err.Error(), "authorization") && !strings.Contains(err.Error(), "401") {
		t.Fatalf("write with a wrong password: %v, want an authorization error", err)
	}
}

// TestInfluxRestart proves data survives a stop and start on the same port.
func TestInfluxRestart(t *testing.T) {
	ix := testsvc.StartInflux(t)
	db := ix.NewDatabase(t)
	client := influxdb2.NewClient(ix.URL, ix.Token)
	defer client.Close()
	ctx := context.Background()
	if err := client.WriteAPIBlocking("", db+"/autogen").WriteRecord(ctx, "m,device=a value=1 1700000000000000000"); err != nil {
		t.Fatal(err)
	}
	ix.Kill()
	if err := client.WriteAPIBlocking("", db+"/autogen").WriteRecord(ctx, "m,device=a value=2 1700000001000000000"); err == nil {
		t.Fatal("write to a stopped influxd succeeded")
	}
	if err := ix.Start(); err != nil {
		t.Fatal(err)
	}
	series, err := ix.Query(db, `SELECT count(value) FROM m`)
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 || series[0].Values[0][1].(json.Number).String() != "1" {
		t.Fatalf("after kill -9 and restart: %+v", series)
	}
}
