package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ingest"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
	"github.com/freshet-iot/freshet/protocol/prototest"
)

// rig is a running hub with its embedded broker and a real influxd.
type rig struct {
	t    testing.TB
	h    *hub.Hub
	ix   *testsvc.Influx
	db   string
	pub  paho.Client
	key  *testsvc.AckKey // the hub's: every version 2 ack it sends must verify
	mu   sync.Mutex
	acks map[string][]*protocol.Ack
}

func startHub(t testing.TB) *rig {
	t.Helper()
	ix := testsvc.StartInflux(t)
	db := ix.NewDatabase(t)
	t.Setenv("FRESHET_TEST_INFLUX_TOKEN", ix.Token)
	key := testsvc.NewAckKey(t)
	cfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`
data_dir: %s
broker: {embedded: {listen: "127.0.0.1:0"}}
influx: {url: %q, bucket: %q, token_env: FRESHET_TEST_INFLUX_TOKEN}
windows: {sizes: [1m, 1h], allowed_lateness: 2m, idle_timeout: 1s}
quality: {interval: 200ms}
http: {listen: "off"}
ack_key_file: %s
`, t.TempDir(), ix.URL, db+"/autogen", key.KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(cfg, hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r := &rig{t: t, h: h, ix: ix, db: db, key: key, acks: map[string][]*protocol.Ack{}}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.BrokerAddr()).SetClientID("test-publisher").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	codec := protocol.NewCodec(protocol.Limits{})
	tok := c.Subscribe("freshet/v1/+/ack", 1, func(_ paho.Client, m paho.Message) {
		a, err := codec.DecodeAck(m.Payload())
		if err != nil {
			t.Errorf("hub sent an ack that does not decode: %v", err)
			return
		}
		if a.Version >= 2 {
			if err := key.Keys.Verify(a); err != nil {
				t.Errorf("hub sent an ack that does not verify: %v", err)
			}
		} else if a.KeyID != "" || a.Sig != nil {
			t.Errorf("hub sent a signed version 1 ack: %+v", a)
		}
		r.mu.Lock()
		r.acks[a.Device] = append(r.acks[a.Device], a)
		r.mu.Unlock()
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	r.pub = c
	testsvc.WaitFor(t, 30*time.Second, "hub connected to its broker", func() error {
		if !h.Pipeline().Connected() {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	return r
}

func (r *rig) publish(device string, payload []byte) {
	r.t.Helper()
	if tok := r.pub.Publish("freshet/v1/"+device+"/batch", 1, false, payload); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		r.t.Fatal(tok.Error())
	}
}

func (r *rig) ackList(device string) []*protocol.Ack {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*protocol.Ack(nil), r.acks[device]...)
}

// waitStat waits until a counter of the hub reaches want.
func (r *rig) waitStat(c prometheus.Collector, want uint64) {
	r.t.Helper()
	testsvc.WaitFor(r.t, 20*time.Second, "a counter", func() error {
		if got := uint64(promtest.ToFloat64(c)); got != want {
			return fmt.Errorf("counter = %d, want %d", got, want)
		}
		return nil
	})
}

// m returns the pipeline's counters.
func (r *rig) m() *ingest.Metrics { return r.h.Pipeline().Metrics() }

// count returns the number of rows of a measurement for a device.
func (r *rig) count(measurement, device string, field string) int {
	r.t.Helper()
	s, err := r.ix.Query(r.db, fmt.Sprintf(`SELECT count(%s) FROM %q WHERE device = '%s'`, field, measurement, device))
	if err != nil {
		r.t.Fatal(err)
	}
	if len(s) == 0 {
		return 0
	}
	n, _ := s[0].Values[0][1].(json.Number).Int64()
	return int(n)
}

// batches packs readings (one temperature series, 1 Hz from t0) into batches.
func batches(t testing.TB, device string, epoch uint64, firstSeq uint64, t0 time.Time, values []float64, perBatch int) [][]byte {
	t.Helper()
	var out [][]byte
	p, _ := protocol.NewPacker(device, protocol.Limits{})
	seq := firstSeq
	for i, v := range values {
		if err := p.Add(&protocol.Reading{Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01,
			Time: t0.Add(time.Duration(i) * time.Second).UnixNano(), Float: v}); err != nil {
			t.Fatal(err)
		}
		if p.Len() == perBatch || i == len(values)-1 {
			_, data, err := p.Seal(protocol.Header{Epoch: epoch, Seq: seq, SealTime: t0.Add(time.Duration(i) * time.Second).UnixNano()})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, data)
			seq++
		}
	}
	return out
}

var base = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// TestExactlyOnce: the same batch three times is applied once, stored once
// and acked three times.
func TestExactlyOnce(t *testing.T) {
	r := startHub(t)
	vals := make([]float64, 100)
	for i := range vals {
		vals[i] = 20 + float64(i%7)/100
	}
	b := batches(t, "gw-a", 7, 1, base, vals, 100)[0]
	for range 3 {
		r.publish("gw-a", b)
	}
	r.waitStat(r.m().Batches.WithLabelValues("applied"), 1)
	r.waitStat(r.m().Batches.WithLabelValues("duplicate"), 2)
	testsvc.WaitFor(t, 30*time.Second, "three acks", func() error {
		acks := r.ackList("gw-a")
		if len(acks) != 3 {
			return fmt.Errorf("%d acks", len(acks))
		}
		for _, a := range acks {
			if a.Epoch != 7 || a.Through != 1 {
				return fmt.Errorf("ack %+v", a)
			}
		}
		return nil
	})
	if n := r.count("temperature", "gw-a", "value"); n != 100 {
		t.Fatalf("%d raw rows, want 100", n)
	}
	if got := uint64(promtest.ToFloat64(r.m().Readings)); got != 100 {
		t.Fatalf("readings counted %d, want 100", got)
	}
}

type agg struct{ count, min, max, mean, sum, first, last, stddev string }

func (r *rig) aggregates(device string) map[int64]agg {
	r.t.Helper()
	s, err := r.ix.Query(r.db, fmt.Sprintf(`SELECT "count","min","max","mean","sum","first","last","stddev" FROM "temperature_1m" WHERE device = '%s'`, device))
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[int64]agg{}
	for _, se := range s {
		for _, v := range se.Values {
			ts, _ := v[0].(json.Number).Int64()
			str := func(i int) string { return fmt.Sprint(v[i]) }
			out[ts] = agg{str(1), str(2), str(3), str(4), str(5), str(6), str(7), str(8)}
		}
	}
	return out
}

// TestAggregatesOrderIndependent: the same readings delivered in order to one
// device and in reverse order to another give identical aggregates, equal to
// those computed from the readings.
func TestAggregatesOrderIndependent(t *testing.T) {
	r := startHub(t)
	rnd := rand.New(rand.NewPCG(3, 3))
	vals := make([]float64, 600) // ten minutes at 1 Hz
	for i := range vals {
		q, _ := protocol.Quantize(20+rnd.NormFloat64(), 0.01)
		vals[i] = q
	}
	fwd := batches(t, "gw-fwd", 1, 1, base, vals, 37)
	rev := batches(t, "gw-rev", 1, 1, base, vals, 37)
	for i := range fwd {
		r.publish("gw-fwd", fwd[i])
		r.publish("gw-rev", rev[len(rev)-1-i])
	}
	r.waitStat(r.m().Batches.WithLabelValues("applied"), uint64(2*len(fwd)))
	testsvc.WaitFor(t, 30*time.Second, "ten 1m aggregates per device", func() error {
		if a, b := len(r.aggregates("gw-fwd")), len(r.aggregates("gw-rev")); a != 10 || b != 10 {
			return fmt.Errorf("%d and %d windows", a, b)
		}
		return nil
	})
	af, ar := r.aggregates("gw-fwd"), r.aggregates("gw-rev")
	for ts, a := range af {
		if ar[ts] != a {
			t.Fatalf("window %d: in order %+v, reversed %+v", ts, a, ar[ts])
		}
		// The oracle: the minute's readings in time order.
		m := int((ts - base.UnixNano()) / int64(time.Minute))
		w := vals[m*60 : m*60+60]
		sum, lo, hi := 0.0, w[0], w[0]
		for _, v := range w {
			sum += v
			lo, hi = min(lo, v), max(hi, v)
		}
		want := agg{count: "60", min: fmt.Sprint(lo), max: fmt.Sprint(hi), sum: fmt.Sprint(sum), first: fmt.Sprint(w[0]), last: fmt.Sprint(w[59])}
		if a.count != want.count || a.min != want.min || a.max != want.max || a.sum != want.sum || a.first != want.first || a.last != want.last {
			t.Fatalf("window %d: got %+v, oracle %+v", ts, a, want)
		}
	}
}

// TestLateDataCorrects: readings six hours late correct their windows; readings
// beyond the correction horizon are stored raw and counted too late.
func TestLateDataCorrects(t *testing.T) {
	r := startHub(t)
	vals := make([]float64, 120)
	for i := range vals {
		vals[i] = 20
	}
	for _, b := range batches(t, "gw-late", 1, 1, base, vals, 120) {
		r.publish("gw-late", b)
	}
	testsvc.WaitFor(t, 30*time.Second, "first windows", func() error {
		if n := len(r.aggregates("gw-late")); n != 2 {
			return fmt.Errorf("%d windows", n)
		}
		return nil
	})
	// Six hours later the device moves on...
	for _, b := range batches(t, "gw-late", 1, 2, base.Add(6*time.Hour), vals, 120) {
		r.publish("gw-late", b)
	}
	// ...then delivers a late reading for the first minute (a new maximum),
	// and one beyond the 72 h horizon.
	for _, b := range batches(t, "gw-late", 1, 3, base.Add(30*time.Second+500*time.Millisecond), []float64{35}, 1) {
		r.publish("gw-late", b)
	}
	for _, b := range batches(t, "gw-late", 1, 4, base.Add(-80*time.Hour), []float64{1}, 1) {
		r.publish("gw-late", b)
	}
	r.waitStat(r.m().Batches.WithLabelValues("applied"), 4)
	testsvc.WaitFor(t, 30*time.Second, "the corrected window", func() error {
		a := r.aggregates("gw-late")[base.UnixNano()]
		if a.count != "61" || a.max != "35" {
			return fmt.Errorf("first window %+v", a)
		}
		return nil
	})
	if got := uint64(promtest.ToFloat64(r.m().Corrections)); got == 0 {
		t.Fatal("no correction counted")
	}
	if got := uint64(promtest.ToFloat64(r.m().TooLate)); got != 1 {
		t.Fatalf("too late %d, want 1", got)
	}
	if n := r.count("temperature", "gw-late", "value"); n != 242 {
		t.Fatalf("%d raw rows, want 242 (the too-late one is stored raw)", n)
	}
}

// TestHostileInput: garbage, wrong devices, NaN, oversize and out-of-range
// batches are refused with their reason; the hub keeps serving.
func TestHostileInput(t *testing.T) {
	r := startHub(t)
	bad := map[string]string{
		"bad-float-nan":       "not_finite",
		"bad-time-negative":   "time_range",
		"bad-time-after-2200": "time_range",
		"bad-labels-unsorted": "bad_name",
	}
	for _, v := range prototest.Vectors {
		if _, ok := bad[v.Name]; ok {
			r.publish("gw-1", v.Bytes())
		}
	}
	r.publish("gw-1", []byte("not msgpack at all"))
	r.publish("gw-2", prototest.Vectors[0].Bytes()) // a batch of gw-1 on gw-2's topic
	// Over the protocol's limit, under the broker's packet limit (which
	// disconnects bigger ones: hub/broker's TestPacketSizeLimit).
	huge := make([]byte, protocol.DefaultMaxMessageBytes+1024)
	r.publish("gw-1", huge)
	deep := []byte{}
	for range 60000 { // under the size limit: the decoder itself must cope
		deep = append(deep, 0x91) // nested arrays
	}
	r.publish("gw-1", deep)
	for _, reason := range bad {
		testsvc.WaitFor(t, 30*time.Second, "rejection "+reason, func() error {
			if uint64(promtest.ToFloat64(r.m().Rejections.WithLabelValues(reason))) == 0 {
				return fmt.Errorf("none")
			}
			return nil
		})
	}
	r.waitStat(r.m().Rejections.WithLabelValues("device_mismatch"), 1)
	r.waitStat(r.m().Rejections.WithLabelValues("too_large"), 1)
	// The refused batches that name a seq are answered, so agents stop resending.
	testsvc.WaitFor(t, 30*time.Second, "rejection acks", func() error {
		n := 0
		for _, a := range r.ackList("gw-1") {
			n += len(a.Rejected)
		}
		if n < len(bad) {
			return fmt.Errorf("%d rejections acked", n)
		}
		return nil
	})
	// Still serving.
	vals := []float64{21, 22}
	r.publish("gw-3", batches(t, "gw-3", 1, 1, base, vals, 2)[0])
	r.waitStat(r.m().Readings, 2)
	// The refused payloads are kept, with their reasons, for inspection.
	dl, err := r.h.Pipeline().DeadLetters(100)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, d := range dl {
		reasons[d.Reason] = true
	}
	for _, want := range []string{"not_finite", "time_range", "bad_name", "device_mismatch", "too_large", "malformed"} {
		if !reasons[want] {
			t.Errorf("no dead letter with reason %s (have %v)", want, reasons)
		}
	}
}

// TestInfluxRejects: a batch InfluxDB refuses for its data (here an
// integer field where the measurement holds floats) is acked as rejected
// with reason influx_rejected and kept as a dead letter, and the batches
// around it are stored.
func TestInfluxRejects(t *testing.T) {
	r := startHub(t)
	r.publish("gw-f", batches(t, "gw-f", 1, 1, base, []float64{21, 22, 23}, 3)[0])
	r.waitStat(r.m().Readings, 3)
	p, _ := protocol.NewPacker("gw-i", protocol.Limits{})
	for i := range 4 {
		if err := p.Add(&protocol.Reading{Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Int, Time: base.Add(time.Duration(i) * time.Second).UnixNano(), Int: 21}); err != nil {
			t.Fatal(err)
		}
	}
	_, data, err := p.Seal(protocol.Header{Epoch: 3, Seq: 1, SealTime: base.UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	r.publish("gw-i", data)
	r.publish("gw-g", batches(t, "gw-g", 1, 1, base, []float64{24, 25}, 2)[0])
	testsvc.WaitFor(t, 30*time.Second, "gw-i's batch acked as rejected", func() error {
		for _, a := range r.ackList("gw-i") {
			if a.Epoch == 3 && a.Through == 1 && len(a.Rejected) == 1 && a.Rejected[0].Seq == 1 && a.Rejected[0].Reason == "influx_rejected" {
				return nil
			}
		}
		return fmt.Errorf("acks %+v", r.ackList("gw-i"))
	})
	r.waitStat(r.m().Rejections.WithLabelValues("influx_rejected"), 1)
	r.waitStat(r.m().Readings, 5)
	if n := r.count("temperature", "gw-g", "value"); n != 2 {
		t.Fatalf("gw-g: %d rows, want 2", n)
	}
	dl, err := r.h.Pipeline().DeadLetters(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || dl[0].Reason != "influx_rejected" || !strings.Contains(dl[0].Detail, "field type conflict") {
		t.Fatalf("dead letters %+v", dl)
	}
}

// TestGapNotice: an agent's gap notice settles the dropped seqs, is counted,
// and is stored as a freshet_gaps row.
func TestGapNotice(t *testing.T) {
	r := startHub(t)
	b := batches(t, "gw-gap", 5, 1, base, []float64{20, 21}, 2)[0]
	r.publish("gw-gap", b)
	var gb protocol.Batch
	codec := protocol.NewCodec(protocol.Limits{})
	codec.DecodeBatch(b, &gb)
	gb.Seq = 10
	gb.Gap = &protocol.Gap{Seqs: []protocol.SeqRange{{First: 2, Last: 9}}, Readings: 4000, FirstTime: base.UnixNano(), LastTime: base.Add(time.Hour).UnixNano()}
	for i := range gb.Series[0].Times {
		gb.Series[0].Times[i] += int64(2 * time.Hour)
	}
	data, err := codec.EncodeBatch(&gb)
	if err != nil {
		t.Fatal(err)
	}
	r.publish("gw-gap", data)
	r.waitStat(r.m().GapReadings, 4000)
	testsvc.WaitFor(t, 30*time.Second, "the ack to settle 1..10", func() error {
		acks := r.ackList("gw-gap")
		if len(acks) == 0 || acks[len(acks)-1].Through != 10 {
			return fmt.Errorf("acks %d", len(acks))
		}
		return nil
	})
	if n := r.count(schema.GapMeasurement, "gw-gap", "readings"); n != 1 {
		t.Fatalf("%d freshet_gaps rows", n)
	}
}

// TestAcksSigned: the hub signs each version 2 ack (applied, duplicate,
// rejected) with its key, through its embedded broker (the rig verifies
// every ack it sees), and answers a version 1 batch with a version 1 ack,
// which has no signature, and counts it.
func TestAcksSigned(t *testing.T) {
	r := startHub(t)
	b := batches(t, "gw-s", 9, 1, base, []float64{20, 21}, 2)[0]
	r.publish("gw-s", b)
	r.publish("gw-s", b)
	for _, v := range prototest.Vectors {
		switch v.Name {
		case "batch-minimal", "bad-batch-v2-before-negative": // gw-1: version 1, applied; version 2, refused
			r.publish("gw-1", v.Bytes())
		}
	}
	testsvc.WaitFor(t, 30*time.Second, "the acks", func() error {
		if n := len(r.ackList("gw-s")); n != 2 {
			return fmt.Errorf("gw-s: %d acks", n)
		}
		if n := len(r.ackList("gw-1")); n != 2 {
			return fmt.Errorf("gw-1: %d acks", n)
		}
		return nil
	})
	for _, a := range r.ackList("gw-s") {
		if a.KeyID != r.key.Signer.KeyID() || a.Through != 1 {
			t.Errorf("gw-s ack %+v, want through 1 signed by %s", a, r.key.Signer.KeyID())
		}
	}
	versions := map[uint8]*protocol.Ack{}
	for _, a := range r.ackList("gw-1") {
		versions[a.Version] = a
	}
	if a := versions[1]; a == nil || a.Sig != nil {
		t.Errorf("version 1 ack %+v: want one, unsigned", a)
	}
	if a := versions[2]; a == nil || len(a.Rejected) != 1 || a.KeyID != r.key.Signer.KeyID() {
		t.Errorf("version 2 rejection ack %+v: want one, signed", a)
	}
	r.waitStat(r.m().AcksUnsigned.WithLabelValues("version_1"), 1)
	r.waitStat(r.m().AcksUnsigned.WithLabelValues("no_key"), 0)
	names, err := r.h.MetricNames()
	if err != nil || !slices.Contains(names, "freshet_hub_ack_key_info") {
		t.Errorf("metrics %v (%v): no freshet_hub_ack_key_info", names, err)
	}
}

// TestInfluxOutage: with InfluxDB down the hub keeps retrying, acks nothing,
// holds at most its intake bound, reports not ready, and stores everything
// once InfluxDB is back.
func TestInfluxOutage(t *testing.T) {
	r := startHub(t)
	srv := httptest.NewServer(r.h.Handler())
	defer srv.Close()
	r.ix.Kill()
	vals := make([]float64, 4000)
	for i := range vals {
		vals[i] = 20 + float64(i%50)/10
	}
	bs := batches(t, "gw-out", 1, 1, base, vals, 100)
	for _, b := range bs {
		r.publish("gw-out", b)
	}
	testsvc.WaitFor(t, 30*time.Second, "the writer retrying", func() error {
		if st := r.h.InfluxStats(); st.Retries < 5 {
			return fmt.Errorf("%d retries", st.Retries)
		}
		return nil
	})
	if n := len(r.ackList("gw-out")); n != 0 || uint64(promtest.ToFloat64(r.m().Readings)) != 0 {
		t.Fatalf("during the outage: %d acks, %d readings counted", n, uint64(promtest.ToFloat64(r.m().Readings)))
	}
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the outage: %s", resp.Status)
	}
	if q := metricValue(t, srv.URL, "freshet_hub_intake_queue"); q > 1000 {
		t.Fatalf("intake queue %v over its bound", q)
	}
	if err := r.ix.Start(); err != nil {
		t.Fatal(err)
	}
	// A worker may be in its backoff when influxd comes back: up to
	// influx.DefaultMaxBackoff (30 s, full jitter) before its next try.
	testsvc.WaitFor(t, influx.DefaultMaxBackoff+30*time.Second, "every reading stored", func() error {
		if n := uint64(promtest.ToFloat64(r.m().Readings)); n != uint64(len(vals)) {
			return fmt.Errorf("%d readings", n)
		}
		return nil
	})
	testsvc.WaitFor(t, 20*time.Second, "every batch acked", func() error {
		acks := r.ackList("gw-out")
		if len(acks) == 0 || acks[len(acks)-1].Through != uint64(len(bs)) {
			return fmt.Errorf("%d acks", len(acks))
		}
		return nil
	})
	if n := r.count("temperature", "gw-out", "value"); n != len(vals) {
		t.Fatalf("%d raw rows, want %d", n, len(vals))
	}
	resp, err = http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz after the outage: %s", resp.Status)
	}
	resp, err = http.Get(srv.URL + "/api/v1/devices")
	if err != nil {
		t.Fatal(err)
	}
	var fleet struct {
		Devices []struct {
			Device  string            `json:"device"`
			LastSeq map[string]uint64 `json:"last_seq"`
		} `json:"devices"`
	}
	json.NewDecoder(resp.Body).Decode(&fleet)
	resp.Body.Close()
	if len(fleet.Devices) != 1 || fleet.Devices[0].Device != "gw-out" || fleet.Devices[0].LastSeq["0000000000000001"] != uint64(len(bs)) {
		t.Fatalf("/api/v1/devices: %+v", fleet)
	}
}

// metricValue reads one unlabelled metric from /metrics.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestHTTPToken: with http.token_file the page, the API and /metrics need
// the token (bearer, or basic authentication's password); the probes do
// not; refusals are counted (issue 15).
func TestHTTPToken(t *testing.T) {
	t.Setenv("FRESHET_TEST_HTTP_TOKEN", "s3cret-token")
	cfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`
data_dir: %s
broker: {embedded: {listen: "127.0.0.1:0"}}
influx: {url: "http://127.0.0.1:9", bucket: db/autogen}
http: {listen: "0.0.0.0:0", token_env: FRESHET_TEST_HTTP_TOKEN}
ack_key_file: %s
`, t.TempDir(), testsvc.NewAckKey(t).KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h, err := hub.New(cfg, hub.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	get := func(path string, auth func(*http.Request)) int {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if auth != nil {
			auth(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	basic := func(r *http.Request) { r.SetBasicAuth("anyone", "s3cret-token") }
	refusedBefore := 0
	for _, path := range []string{"/", "/api/v1/devices", "/api/v1/rejections", "/metrics"} {
		if c := get(path, nil); c != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d", path, c)
		}
		if c := get(path, bearer("wrong")); c != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d", path, c)
		}
		refusedBefore += 2
		if c := get(path, bearer("s3cret-token")); c != http.StatusOK {
			t.Errorf("%s with the token: %d", path, c)
		}
		if c := get(path, basic); c != http.StatusOK {
			t.Errorf("%s with the token as basic auth: %d", path, c)
		}
	}
	if c := get("/healthz", nil); c != http.StatusOK {
		t.Errorf("/healthz without a token: %d", c)
	}
	if c := get("/readyz", nil); c == http.StatusUnauthorized {
		t.Errorf("/readyz needs no token: %d", c)
	}
	if n := gathered(t, reg, "freshet_hub_http_unauthorized_total"); int(n) != refusedBefore {
		t.Errorf("unauthorized counted %v, want %d", n, refusedBefore)
	}
}

// gathered is the value of the single metric name in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetCounter().GetValue() + mf.Metric[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestSecretsRedacted: passwords in the broker's and InfluxDB's URLs, the
// broker password, the InfluxDB token and the ack signing key appear in no
// log line and no HTTP response (issue 15, finding 7: /readyz echoed a
// URL's userinfo).
func TestSecretsRedacted(t *testing.T) {
	key := testsvc.NewAckKey(t)
	pem, err := os.ReadFile(key.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ackKey := strings.Split(string(pem), "\n")[1] // the PKCS#8 body
	t.Setenv("FRESHET_TEST_INFLUX_TOKEN", "tok-S3cretTOKEN")
	t.Setenv("FRESHET_TEST_BROKER_PW", "pw-S3cretBROKER")
	cfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`
data_dir: %s
broker: {url: "tcp://hubuser:url-S3cretURL1@127.0.0.1:9", username: hubuser, password_env: FRESHET_TEST_BROKER_PW}
influx: {url: "http://admin:url-S3cretURL2@127.0.0.1:9", bucket: db/autogen, token_env: FRESHET_TEST_INFLUX_TOKEN}
http: {listen: "off"}
ack_key_file: %s
`, t.TempDir(), key.KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	h, err := hub.New(cfg, hub.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testsvc.WaitFor(t, 20*time.Second, "a failed broker connection logged", func() error {
		if !strings.Contains(logs.String(), "broker session ended") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	var bodies strings.Builder
	for _, path := range []string{"/readyz", "/metrics", "/api/v1/devices", "/api/v1/rejections", "/"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		bodies.Write(b)
	}
	if !strings.Contains(bodies.String(), "admin:xxxxx@127.0.0.1:9") {
		t.Errorf("/readyz does not name the (redacted) InfluxDB URL it cannot reach: %s", bodies.String())
	}
	for _, secret := range []string{"S3cretTOKEN", "S3cretBROKER", "S3cretURL1", "S3cretURL2", ackKey} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a log line holds %s:\n%s", secret, logs.String())
		}
		if strings.Contains(bodies.String(), secret) {
			t.Errorf("an HTTP response holds %s", secret)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
