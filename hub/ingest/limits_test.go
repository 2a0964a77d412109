package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/protocol"
)

// TestLimits: a device beyond limits.devices and a batch that would take
// its device past limits.series_per_device are refused before their
// points reach InfluxDB, acked to the broker but never to the agent (so
// the batch stays on its disk), counted, and told to the fleet; batches
// of one device that each fit alone but not together are refused
// exactly, in the commit; beyond limits.epochs_per_device the ledger keeps
// the newest epochs and the batch is applied and acked.
func TestLimits(t *testing.T) {
	st := newStores(t)
	ix, dbName, w, db, win := st.ix, st.dbName, st.w, st.db, st.win
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	now := t0
	fl := fleet.New(fleet.Options{MaxDevices: 2})
	topics, _ := protocol.NewTopics("")
	p, err := New(Options{DB: db, Influx: w, Windows: win, Broker: BrokerOptions{URL: "tcp://127.0.0.1:1"}, Topics: topics,
		Fleet: fl, MaxSeriesPerDevice: 3, MaxEpochsPerDevice: 2, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]int{} // agents' acks by device
	send := func(topic string, _ []byte) error {
		d, _, _ := topics.Parse(topic)
		acked[d]++
		return nil
	}
	p.send.Store(&send)
	ctx := context.Background()
	codec := protocol.NewCodec(protocol.Limits{})
	batch := func(device string, epoch, seq uint64, metrics ...string) *message {
		pk, _ := protocol.NewPacker(device, protocol.Limits{})
		for _, m := range metrics {
			if err := pk.Add(&protocol.Reading{Sensor: "s", Metric: m, Type: protocol.Float, Time: t0.UnixNano(), Float: 1.5}); err != nil {
				t.Fatal(err)
			}
		}
		_, data, err := pk.Seal(protocol.Header{Epoch: epoch, Seq: seq, SealTime: t0.UnixNano()})
		if err != nil {
			t.Fatal(err)
		}
		return &message{topic: "freshet/v1/" + device + "/batch", payload: data}
	}
	// run takes the messages as one group through the pipeline's steps.
	run := func(ms ...*message) {
		t.Helper()
		lines := new(influx.Lines)
		var group []*record
		for _, m := range ms {
			group = p.take(codec, m, lines, group)
		}
		if !p.writeRaw(ctx, lines, group) {
			t.Fatal("writeRaw gave up")
		}
		if len(group) > 0 {
			if err := p.commit(group); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range group {
			p.finish(codec, r)
		}
		for _, m := range ms {
			if !m.acked {
				t.Fatalf("%s: not acked to the broker", m.topic)
			}
		}
	}
	rows := func(measurement string) int64 {
		t.Helper()
		s, err := ix.Query(dbName, fmt.Sprintf(`SELECT count("value") FROM %q`, measurement))
		if err != nil {
			t.Fatal(err)
		}
		if len(s) == 0 {
			return 0
		}
		n, _ := s[0].Values[0][1].(json.Number).Int64()
		return n
	}
	limited := func(reason string) int { return int(promtest.ToFloat64(p.metrics.Limited.WithLabelValues(reason))) }

	run(batch("gw-1", 1, 1, "a", "b"), batch("gw-2", 1, 1, "a", "b"))
	run(batch("gw-3", 1, 1, "a", "b")) // no room
	if acked["gw-1"] != 1 || acked["gw-2"] != 1 || acked["gw-3"] != 0 || limited(LimitDevices) != 1 || fl.Len() != 2 {
		t.Fatalf("devices: acks %v, limited %d, fleet %d", acked, limited(LimitDevices), fl.Len())
	}
	// Two new series on top of two: past 3. Refused before the raw write.
	now = t0.Add(time.Second)
	run(batch("gw-1", 1, 2, "a", "c", "d"))
	if acked["gw-1"] != 1 || limited(LimitSeries) != 1 || rows("c") != 0 {
		t.Fatalf("series: acks %v, limited %d, rows of c %d", acked, limited(LimitSeries), rows("c"))
	}
	o := fl.Observations()["gw-1"]
	if o == nil || o.Limits.At != now.UnixNano() || o.Limits.Value != 3 || !strings.Contains(o.Limits.Detail, "limits.series_per_device") {
		t.Fatalf("the fleet was not told: %+v", o)
	}
	// Each fits alone, not both: the second is refused in the commit.
	run(batch("gw-2", 1, 2, "a", "e"), batch("gw-2", 1, 3, "b", "f"))
	if acked["gw-2"] != 2 || limited(LimitSeries) != 2 || rows("e") != 1 {
		t.Fatalf("exact: acks %v, limited %d, rows of e %d", acked, limited(LimitSeries), rows("e"))
	}
	if got := promtest.ToFloat64(p.metrics.Batches.WithLabelValues(resultLimited)); got != 3 {
		t.Fatalf("%v batches counted limited, want 3", got)
	}
	// A third and a fourth epoch of gw-1: the oldest are forgotten, the
	// batches applied and acked.
	now = t0.Add(2 * time.Second)
	run(batch("gw-1", 2, 1, "a"))
	now = t0.Add(3 * time.Second)
	run(batch("gw-1", 3, 1, "a"))
	var epochs []uint64
	db.View(func(tx *bolt.Tx) error {
		return ledger.Devices(tx, func(d string, e uint64, _ ledger.State) error {
			if d == "gw-1" {
				epochs = append(epochs, e)
			}
			return nil
		})
	})
	if fmt.Sprint(epochs) != "[2 3]" || acked["gw-1"] != 3 || limited(LimitEpochs) != 1 {
		t.Fatalf("epochs %v, acks %v, limited %d", epochs, acked, limited(LimitEpochs))
	}
	if o := fl.Observations()["gw-1"]; o == nil || o.Limits.At != now.UnixNano() || !strings.Contains(o.Limits.Detail, "limits.epochs_per_device") {
		t.Fatalf("the fleet was not told of the epochs: %+v", o)
	}
	// gw-1's next batch is clean.
	now = t0.Add(4 * time.Second)
	run(batch("gw-1", 3, 2, "b"))
	if o := fl.Observations()["gw-1"]; o == nil || o.Limits.CleanAt != now.UnixNano() || o.Limits.Hits != 0 {
		t.Fatalf("a clean batch: %+v", o)
	}
}
