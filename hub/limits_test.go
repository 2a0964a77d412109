package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/hub/ingest"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// Bounds of TestFlood, for 4,000 devices admitted out of 5,000 (README.md,
// "Limits"): the hub's live heap grows by at most floodHeapPerDevice per
// device it knows, and hub.db holds at most floodDBPerDevice of live data
// per device.
const (
	floodDevices, floodLimit = 5000, 4000
	floodHeapPerDevice       = 8 << 10
	floodDBPerDevice         = 2 << 10
)

// testClock is the hub's injected clock.
type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// floodHub is one run of the hub on a data dir, with a publisher that
// speaks for many devices on its anonymous embedded broker.
type floodHub struct {
	t     *testing.T
	h     *hub.Hub
	reg   *prometheus.Registry
	pub   paho.Client
	stop  func()
	mu    sync.Mutex
	acked map[string]bool
}

func startFloodHub(t *testing.T, dir, influxURL, bucket, tokenFile string, clock *testClock) *floodHub {
	t.Helper()
	cfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`
data_dir: %s
broker: {embedded: {listen: "127.0.0.1:0"}}
influx: {url: %q, bucket: %q, token_file: %q}
windows: {sizes: [1m, 1h], allowed_lateness: 2m, idle_timeout: 1s}
quality: {interval: 200ms}
limits: {devices: %d}
http: {listen: "off"}
ack_key_file: %s
`, dir, influxURL, bucket, tokenFile, floodLimit, testsvc.NewAckKey(t).KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	f := &floodHub{t: t, reg: prometheus.NewRegistry(), acked: map[string]bool{}}
	f.h, err = hub.New(cfg, hub.Options{Now: clock.Now, Registry: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.h.Run(ctx) }()
	f.pub = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + f.h.BrokerAddr()).SetClientID("flood").SetAutoReconnect(false))
	if tok := f.pub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	codec := protocol.NewCodec(protocol.Limits{})
	tok := f.pub.Subscribe("freshet/v1/+/ack", 0, func(_ paho.Client, m paho.Message) {
		if a, err := codec.DecodeAck(m.Payload()); err == nil {
			f.mu.Lock()
			f.acked[a.Device] = true
			f.mu.Unlock()
		}
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	var once sync.Once
	f.stop = func() { once.Do(func() { f.pub.Disconnect(100); cancel(); <-done }) }
	t.Cleanup(f.stop)
	return f
}

// publish sends, for each device, its retained status (unless batchOnly)
// and one batch of three readings, and waits until the broker has them.
func (f *floodHub) publish(devices []string, batchOnly bool, clock *testClock) {
	f.t.Helper()
	codec := protocol.NewCodec(protocol.Limits{})
	var toks []paho.Token
	for _, d := range devices {
		if !batchOnly {
			st, err := codec.EncodeStatus(&protocol.Status{Device: d, State: protocol.StateOnline, Time: clock.Now().UnixNano(),
				Epoch: 1, LastSeq: 1, ClockSynced: true, Backlog: protocol.Backlog{Batches: 1, Readings: 3}})
			if err != nil {
				f.t.Fatal(err)
			}
			toks = append(toks, f.pub.Publish("freshet/v1/"+d+"/status", 1, true, st))
		}
		toks = append(toks, f.pub.Publish("freshet/v1/"+d+"/batch", 1, false, batches(f.t, d, 1, 1, base, []float64{21.5, 21.6, 21.7}, 3)[0]))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			f.t.Fatalf("publish: %v", tok.Error())
		}
	}
}

func (f *floodHub) ackedCount(devices []string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, d := range devices {
		if f.acked[d] {
			n++
		}
	}
	return n
}

func (f *floodHub) waitFor(what string, cond func() error) {
	testsvc.WaitFor(f.t, 60*time.Second, what, cond)
}

func (f *floodHub) counter(c prometheus.Collector) int { return int(promtest.ToFloat64(c)) }

func (f *floodHub) gauge(name string, labels ...string) int {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue metric
				}
			}
			return int(m.GetGauge().GetValue() + m.GetCounter().GetValue())
		}
	}
	f.t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// liveHeap returns the bytes of live heap objects after a collection.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// stateOf returns the keys per bucket of a stopped hub's hub.db (nested
// buckets as "window/data"), its live bytes and its file size.
func stateOf(t *testing.T, dir string) (map[string]int, int, int64) {
	t.Helper()
	path := filepath.Join(dir, "hub.db")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, live := map[string]int{}, 0
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			st := b.Stats()
			live += st.LeafInuse + st.BranchInuse
			keys[string(name)] = st.KeyN
			return b.ForEachBucket(func(sub []byte) error {
				keys[string(name)+"/"+string(sub)] = b.Bucket(sub).Stats().KeyN
				return nil
			})
		})
	})
	return keys, live, fi.Size()
}

// TestFlood: 5,000 made-up devices, one retained status and one batch
// each, against a hub whose limits.devices is 4,000. The first 4,000 are
// stored and acked; the others are refused, counted, never acked (their
// batches would stay on their agents' disks) and raise the hub's limit
// finding. The hub's heap and hub.db stay within stated bounds per device,
// offline devices cost the quality loop nothing, and after a restart the
// hub still counts the devices it stores. With its clock past the
// correction horizon it forgets every one of them, in every registry; the
// refused devices' batches, sent again, are then taken.
func TestFlood(t *testing.T) {
	ix := testsvc.StartInflux(t)
	db := ix.NewDatabase(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(ix.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	clock := &testClock{}
	clock.Set(base.Add(time.Minute))
	devices := make([]string, floodDevices)
	for i := range devices {
		devices[i] = fmt.Sprintf("flood-%05d", i)
	}
	heap0 := liveHeap()

	f := startFloodHub(t, dir, ix.URL, db+"/autogen", tokenFile, clock)
	m := f.h.Pipeline().Metrics()
	f.publish(devices, false, clock)
	f.waitFor("every batch applied or refused", func() error {
		applied, limited := f.counter(m.Batches.WithLabelValues("applied")), f.counter(m.Limited.WithLabelValues(ingest.LimitDevices))
		statuses := f.counter(m.Limited.WithLabelValues(ingest.LimitDeviceStatuses))
		if applied != floodLimit || limited != floodDevices-floodLimit || statuses != floodDevices-floodLimit {
			return fmt.Errorf("%d applied, %d batches and %d statuses refused", applied, limited, statuses)
		}
		return nil
	})
	f.waitFor("the hub's limit finding", func() error {
		if n := f.gauge("freshet_hub_quality_open_findings", "kind", string(quality.Limit)); n != 1 {
			return fmt.Errorf("%d limit findings open", n)
		}
		return nil
	})
	// The refused devices are those the fleet does not know. Acks go at
	// QoS 0 (the broker may drop some on the way to this one subscriber;
	// an agent would send again): none of the refused may have one.
	known := map[string]bool{}
	for _, d := range f.h.Fleet().Devices() {
		known[d.Device] = true
	}
	var refused []string
	for _, d := range devices {
		if !known[d] {
			refused = append(refused, d)
		}
	}
	if len(refused) != floodDevices-floodLimit || f.ackedCount(refused) != 0 || f.ackedCount(devices) == 0 {
		t.Fatalf("%d refused, %d of them acked; %d devices acked", len(refused), f.ackedCount(refused), f.ackedCount(devices))
	}
	heap1 := liveHeap()
	grown := int64(heap1) - int64(heap0)
	t.Logf("live heap %d MB -> %d MB with %d devices: %d bytes per device", heap0>>20, heap1>>20, floodLimit, grown/floodLimit)
	if grown > floodLimit*floodHeapPerDevice {
		t.Errorf("the live heap grew by %d bytes for %d devices, over %d per device", grown, floodLimit, floodHeapPerDevice)
	}
	if f.h.Fleet().Len() != floodLimit {
		t.Fatalf("the fleet knows %d devices", f.h.Fleet().Len())
	}
	s, err := ix.Query(db, `SELECT count("value") FROM "temperature"`)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) == 0 || s[0].Values[0][1] != json.Number(fmt.Sprint(3*floodLimit)) {
		t.Fatalf("raw rows %v, want %d: none of the refused devices'", s, 3*floodLimit)
	}
	// Ten minutes later every device is offline, and the quality loop
	// stops checking them.
	clock.Advance(10 * time.Minute)
	f.waitFor("every device offline, none checked", func() error {
		off, checked := f.gauge("freshet_hub_quality_open_findings", "kind", string(quality.Offline)), f.gauge("freshet_hub_quality_checked_devices")
		if off != floodLimit || checked != 0 {
			return fmt.Errorf("%d offline, %d checked", off, checked)
		}
		return nil
	})
	f.waitFor("every window written", func() error {
		if n := f.counter(f.h.Emitter().Metrics().Aggregates); n != 2*floodLimit {
			return fmt.Errorf("%d aggregates", n)
		}
		return nil
	})
	f.stop()
	keys, live, size := stateOf(t, dir)
	t.Logf("hub.db: %d bytes of live data, a file of %d bytes, for %d devices", live, size, floodLimit)
	if live > floodLimit*floodDBPerDevice {
		t.Errorf("hub.db holds %d bytes of live data for %d devices, over %d per device", live, floodLimit, floodDBPerDevice)
	}
	if keys["ledger2"] != floodLimit || keys["window/names"] != floodLimit {
		t.Fatalf("stored: %v", keys)
	}

	// Restarted on the same data dir: it still knows them, and has no room.
	f = startFloodHub(t, dir, ix.URL, db+"/autogen", tokenFile, clock)
	if f.h.Fleet().Len() != floodLimit || f.h.Fleet().Admit("flood-new", clock.Now()) {
		t.Fatalf("after a restart the fleet knows %d devices, and admits another", f.h.Fleet().Len())
	}
	// 72 hours on, it forgets them all.
	clock.Advance(72 * time.Hour)
	f.waitFor("every device forgotten", func() error {
		if _, err := f.h.Prune(); err != nil {
			return err
		}
		if n := f.h.Fleet().Len(); n != 0 {
			return fmt.Errorf("%d devices left", n)
		}
		if n := f.counter(f.h.Checks().Metrics().Forgotten); n != floodLimit {
			return fmt.Errorf("the checks forgot %d", n)
		}
		if n := f.gauge("freshet_hub_quality_open_findings", "kind", string(quality.Offline)); n != 0 {
			return fmt.Errorf("%d offline findings open", n)
		}
		if n := f.gauge("freshet_hub_quality_open_findings", "kind", string(quality.Limit)); n != 0 {
			return fmt.Errorf("%d limit findings open", n)
		}
		return nil
	})
	srv := httptest.NewServer(f.h.Handler())
	resp, err := http.Get(srv.URL + "/api/v1/devices")
	if err != nil {
		t.Fatal(err)
	}
	var api struct{ Devices []json.RawMessage }
	json.NewDecoder(resp.Body).Decode(&api)
	resp.Body.Close()
	srv.Close()
	if len(api.Devices) != 0 {
		t.Fatalf("/api/v1/devices lists %d devices", len(api.Devices))
	}
	f.stop()
	keys, live, size = stateOf(t, dir)
	t.Logf("hub.db after forgetting: %d bytes of live data, a file of %d bytes (bbolt does not shrink it)", live, size)
	for b, n := range keys {
		want := 0
		switch b {
		case "quality": // the hub's own state
			want = 1
		case "window", "dead_letters": // the window format key and sub-buckets; refused payloads (none)
			continue
		}
		if n != want {
			t.Errorf("bucket %s holds %d keys after forgetting, want %d", b, n, want)
		}
	}

	// The refused devices' agents kept their batches and send them again.
	f = startFloodHub(t, dir, ix.URL, db+"/autogen", tokenFile, clock)
	m = f.h.Pipeline().Metrics()
	f.publish(refused, true, clock)
	f.waitFor("the refused devices' batches taken", func() error {
		if n := f.counter(m.Batches.WithLabelValues("applied")); n != len(refused) {
			return fmt.Errorf("%d of %d applied", n, len(refused))
		}
		return nil
	})
}

// TestForgottenDeviceComesBack: a device forgotten after the correction
// horizon whose agent never got the acks of its last two batches (its
// link died, then came back 73 hours later) sends them again. The hub
// applies them afresh, as a hub on an empty data dir would: the raw rows
// are the same rows (no duplicates), and every 1 m aggregate in InfluxDB,
// including the minute the batches share with the one before them (which
// the hub no longer holds), equals the one computed from the raw rows.
func TestForgottenDeviceComesBack(t *testing.T) {
	ix := testsvc.StartInflux(t)
	db := ix.NewDatabase(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(ix.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := &testClock{}
	clock.Set(base.Add(10 * time.Minute))
	f := startFloodHub(t, t.TempDir(), ix.URL, db+"/autogen", tokenFile, clock)
	m := f.h.Pipeline().Metrics()
	// Readings every 7 s for 10.5 minutes, in three batches of 30: the
	// first and the second share a minute (3), all share the hour; values
	// exact in binary, so any order sums alike.
	vals := make([]float64, 90)
	for i := range vals {
		vals[i] = 20 + float64(i%8)/4
	}
	var bs [][]byte
	p, _ := protocol.NewPacker("gw-back", protocol.Limits{})
	before := base.UnixNano() // the epoch began with the first reading
	for i, v := range vals {
		at := base.Add(time.Duration(i) * 7 * time.Second).UnixNano()
		if err := p.Add(&protocol.Reading{Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Float, Time: at, Float: v}); err != nil {
			t.Fatal(err)
		}
		if (i+1)%30 == 0 {
			_, data, err := p.Seal(protocol.Header{Epoch: 7, Seq: uint64(len(bs) + 1), SealTime: at, Before: before})
			if err != nil {
				t.Fatal(err)
			}
			bs, before = append(bs, data), at
		}
	}
	send := func(payloads ...[]byte) {
		t.Helper()
		for _, b := range payloads {
			if tok := f.pub.Publish("freshet/v1/gw-back/batch", 1, false, b); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
		}
	}
	exact := func(what string) {
		t.Helper()
		f.waitFor(what, func() error {
			for _, size := range []string{"1m", "1h"} {
				got, err := ix.Query(db, `SELECT "count", "min", "max", "sum" FROM "temperature_`+size+`" WHERE device = 'gw-back'`)
				if err != nil {
					return err
				}
				want, err := ix.Query(db, `SELECT count("value"), min("value"), max("value"), sum("value") FROM "temperature"
					WHERE device = 'gw-back' AND time >= '2026-11-20T10:00:00Z' AND time < '2026-11-20T11:00:00Z' GROUP BY time(`+size+`) fill(none)`)
				if err != nil {
					return err
				}
				if len(got) != 1 || len(want) != 1 || fmt.Sprint(got[0].Values) != fmt.Sprint(want[0].Values) {
					return fmt.Errorf("%s aggregates %v, from the raw rows %v", size, got, want)
				}
			}
			return nil
		})
	}
	send(bs...)
	f.waitFor("three batches applied", func() error {
		if n := f.counter(m.Batches.WithLabelValues("applied")); n != 3 {
			return fmt.Errorf("%d applied", n)
		}
		return nil
	})
	clock.Advance(10 * time.Second) // idle: its windows close
	exact("the windows written")

	clock.Advance(73 * time.Hour)
	f.waitFor("the device forgotten", func() error {
		if _, err := f.h.Prune(); err != nil {
			return err
		}
		if n := f.h.Fleet().Len(); n != 0 {
			return fmt.Errorf("%d devices", n)
		}
		return nil
	})
	send(bs[1:]...)
	f.waitFor("the two batches applied again", func() error {
		if n := f.counter(m.Batches.WithLabelValues("applied")); n != 5 {
			return fmt.Errorf("%d applied", n)
		}
		return nil
	})
	written := f.counter(f.h.Emitter().Metrics().Aggregates)
	clock.Advance(10 * time.Second)
	f.waitFor("the windows of the two batches written again", func() error {
		if n := f.counter(f.h.Emitter().Metrics().Aggregates) - written; n < 8+1 { // minutes 3..10, the hour
			return fmt.Errorf("%d written", n)
		}
		return nil
	})
	exact("every window exact")
	s, err := ix.Query(db, `SELECT count("value") FROM "temperature" WHERE device = 'gw-back'`)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) == 0 || s[0].Values[0][1] != json.Number(fmt.Sprint(len(vals))) {
		t.Fatalf("raw rows %v, want %d", s, len(vals))
	}
}
