package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/internal/bolttest"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
	bolt "go.etcd.io/bbolt"
)

// message is a batch as paho hands it to the hub.
type message struct {
	topic   string
	payload []byte
	acked   bool
}

func (m *message) Duplicate() bool   { return false }
func (m *message) Qos() byte         { return 1 }
func (m *message) Retained() bool    { return false }
func (m *message) Topic() string     { return m.topic }
func (m *message) MessageID() uint16 { return 1 }
func (m *message) Payload() []byte   { return m.payload }
func (m *message) Ack()              { m.acked = true }

// stores is what a pipeline writes to, fresh for one test: a database in a
// real influxd, a bbolt file and a window store.
type stores struct {
	ix     *testsvc.Influx
	dbName string
	w      *influx.Writer
	db     *bolt.DB
	win    *window.Store
}

func newStores(t *testing.T) *stores {
	t.Helper()
	s := &stores{ix: testsvc.StartInflux(t), db: bolttest.Open(t, nil)}
	s.dbName = s.ix.NewDatabase(t)
	var err error
	if s.w, err = influx.New(influx.Options{URL: s.ix.URL, Bucket: s.dbName + "/autogen", Token: s.ix.Token}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.w.Close)
	if s.win, err = window.New(window.Options{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCoalescedRawWrite: the raw points of several batches go to InfluxDB
// in one write; when InfluxDB refuses some points of it (a field type
// conflict), exactly the batch that holds them becomes a rejection and the
// others are stored in full.
func TestCoalescedRawWrite(t *testing.T) {
	st := newStores(t)
	ix, dbName, w, db, win := st.ix, st.dbName, st.w, st.db, st.win
	topics, _ := protocol.NewTopics("")
	h, err := New(Options{DB: db, Influx: w, Windows: win, Broker: BrokerOptions{URL: "tcp://127.0.0.1:1"}, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	batch := func(device string, typ protocol.ValueType, n int) *message {
		p, _ := protocol.NewPacker(device, protocol.Limits{})
		for i := range n {
			rd := &protocol.Reading{Sensor: "s", Metric: "temperature", Type: typ, Time: t0.Add(time.Duration(i) * time.Second).UnixNano()}
			rd.Float, rd.Int = 20.5, 20
			if err := p.Add(rd); err != nil {
				t.Fatal(err)
			}
		}
		_, data, err := p.Seal(protocol.Header{Epoch: 1, Seq: 1, SealTime: t0.UnixNano()})
		if err != nil {
			t.Fatal(err)
		}
		return &message{topic: "freshet/v1/" + device + "/batch", payload: data}
	}
	// The measurement's field is a float from here on.
	if err := w.Write(ctx, []influx.Point{{Measurement: "temperature", Tags: []influx.Tag{{Key: "device", Value: "gw-0"}},
		Fields: []influx.Field{{Key: "value", Value: 1.5}}, Time: t0.UnixNano()}}); err != nil {
		t.Fatal(err)
	}

	codec := protocol.NewCodec(protocol.Limits{})
	lines := new(influx.Lines)
	var group []*record
	for _, m := range []*message{batch("gw-1", protocol.Float, 40), batch("gw-2", protocol.Int, 30), batch("gw-3", protocol.Float, 50)} {
		group = h.take(codec, m, lines, group)
	}
	if len(group) != 3 || lines.Len() != 120 {
		t.Fatalf("%d records, %d lines; want 3 and 120", len(group), lines.Len())
	}
	if !h.writeRaw(ctx, lines, group) {
		t.Fatal("writeRaw gave up")
	}
	for i, want := range []recordKind{kindApply, kindReject, kindApply} {
		if r := group[i]; r.kind != want || (want == kindReject) != (r.reason == "influx_rejected") {
			t.Errorf("%s: kind %v reason %q detail %q; want kind %v", r.device, r.kind, r.reason, r.detail, want)
		}
	}
	// One combined write refused, then the three alone: two stored, one refused.
	if s := w.Stats(); s.Rejected != 2 {
		t.Errorf("writer stats %+v: want 2 rejected requests (the group's, then gw-2's)", s)
	}
	for device, want := range map[string]int64{"gw-1": 40, "gw-2": 0, "gw-3": 50} {
		s, err := ix.Query(dbName, fmt.Sprintf(`SELECT count("value") FROM "temperature" WHERE device = '%s'`, device))
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		if len(s) > 0 {
			n, _ = s[0].Values[0][1].(json.Number).Int64()
		}
		if n != want {
			t.Errorf("%s: %d rows, want %d", device, n, want)
		}
	}
}
