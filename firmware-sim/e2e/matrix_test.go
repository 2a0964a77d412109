package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// metrics are every metric the fleet's devices commit: the chips', and the
// field gateways' meter, soil probe and PLC (fleet.FieldMetrics).
var metrics = append([]string{"temperature", "humidity", "pressure"}, fleet.FieldMetrics...)

// world is one scenario's setup.
type world struct {
	t      *testing.T
	ix     *testsvc.Influx
	db     string
	broker *testsvc.Broker
	hubBin string
	hub    *hubProc // the scenario's one hub (clusters have several)
	// keys sign the hubs' acks; the agents obey every one of them.
	keys    []*testsvc.AckKey
	httpURL string
	fleet   *fleet.Fleet
	stop    func()
	// procs are agents run as processes (scenarios that kill them).
	procs []*agentProc
	// quality test: resolved findings (count, value) and the rows read
	resolved   map[string]qrow
	qualityLog []string
}

// newWorld starts a hub (its config extended by extra YAML lines, which
// may replace the windows line) and a fleet.
func newWorld(t *testing.T, ix *testsvc.Influx, hubBin, brokerName string, fo fleet.Options, extra ...string) *world {
	w := &world{t: t, ix: ix, db: ix.NewDatabase(t), hubBin: hubBin, keys: []*testsvc.AckKey{testsvc.NewAckKey(t)}}
	dir := t.TempDir()
	port, _ := testsvc.FreePort()
	w.httpURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	w.hub = &hubProc{t: t, name: "hub", bin: hubBin, cfg: filepath.Join(dir, "hub.yaml"), dataDir: filepath.Join(dir, "hub"),
		httpURL: w.httpURL, env: []string{"E2E_INFLUX_TOKEN=" + ix.Token}}
	var brokerURL, brokerCfg string
	if brokerName == "hub-embedded" {
		// The hub's own broker: it lives and dies with the hub process.
		bp, _ := testsvc.FreePort()
		brokerURL = fmt.Sprintf("tcp://127.0.0.1:%d", bp)
		brokerCfg = fmt.Sprintf("{embedded: {listen: \"127.0.0.1:%d\"}}", bp)
	} else {
		w.broker = testsvc.StartBroker(t, brokerName)
		brokerURL = w.broker.URL()
		brokerCfg = fmt.Sprintf("{url: %q, client_id: hub-%s}", brokerURL, w.db)
	}
	cfg := fmt.Sprintf(`data_dir: %s
broker: %s
influx: {url: %q, bucket: %q, token_env: E2E_INFLUX_TOKEN}
http: {listen: "127.0.0.1:%d"}
ack_key_file: %s
`, filepath.Join(dir, "hub"), brokerCfg, ix.URL, w.db+"/autogen", port, w.keys[0].KeyFile)
	if x := strings.Join(extra, "\n"); !strings.Contains(x, "windows:") {
		cfg += "windows: {sizes: [1m], allowed_lateness: 1s, idle_timeout: 3s}\n"
	}
	cfg += strings.Join(extra, "\n") + "\n"
	os.WriteFile(w.hub.cfg, []byte(cfg), 0o644)
	w.startHub()
	w.runFleet(fo, brokerURL, filepath.Join(dir, "fleet"))
	t.Cleanup(func() { w.stop(); w.stopHub() })
	return w
}

// runFleet starts the scenario's fleet on brokerURL with the e2e timings
// (fo.Tune applies after them); w.stop stops it.
func (w *world) runFleet(fo fleet.Options, brokerURL, dataDir string) {
	fo.Broker, fo.DataDir, fo.GroundTruth, fo.HubKeys = brokerURL, dataDir, true, w.hubKeys()
	if fo.Devices == 0 {
		fo.Devices = 4
	}
	if fo.Interval == 0 {
		fo.Interval = 100 * time.Millisecond
	}
	tune := fo.Tune
	fo.Tune = func(c *agent.Config) {
		c.MQTT.AckTimeout = cfgfile.Duration(2 * time.Second)
		c.MQTT.BackoffMax = cfgfile.Duration(time.Second)
		c.Outbox.MaxBatchAge = cfgfile.Duration(500 * time.Millisecond)
		if tune != nil {
			tune(c)
		}
	}
	f, err := fleet.New(fo)
	if err != nil {
		w.t.Fatal(err)
	}
	w.fleet = f
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	var once sync.Once
	w.stop = func() { once.Do(func() { cancel(); <-done }) }
}

// hubKeys are the agents' mqtt.hub_keys: the public keys of w.keys.
func (w *world) hubKeys() []string {
	var out []string
	for _, k := range w.keys {
		out = append(out, k.PubFile)
	}
	return out
}

func (w *world) startHub() { w.hub.start() }
func (w *world) killHub()  { w.hub.stop(true) }
func (w *world) stopHub()  { w.hub.stop(false) }

// run lets the fleet read for d (real time; a scenario's pace).
func run(d time.Duration) { time.Sleep(d) } // the simulated fleet produces data while we wait

// drain stops the sensors and waits until every device's backlog is acked.
func (w *world) drain() {
	w.fleet.StopSensors()
	testsvc.WaitFor(w.t, 90*time.Second, "every device drained", func() error {
		for _, d := range w.fleet.Devices {
			st := d.Agent.Outbox()
			if st.Pending != 0 || st.Backlog.Readings != 0 || st.Backlog.Batches != 0 {
				return fmt.Errorf("%s: pending %d, backlog %+v", d.Name, st.Pending, st.Backlog)
			}
		}
		return nil
	})
}

type key struct {
	device, sensor, metric string
	t                      int64
}

// commitLogs lists every device's ground truth (a world may have agent
// processes and no fleet).
func (w *world) commitLogs() []string {
	var out []string
	if w.fleet != nil {
		for _, d := range w.fleet.Devices {
			out = append(out, filepath.Join(w.fleetDir(), d.Name, "commits.log"))
		}
	}
	for _, p := range w.procs {
		out = append(out, p.commitLog)
	}
	return out
}

// truth reads every device's commit log (a line torn by kill -9 is skipped).
func (w *world) truth() map[key]float64 {
	out := map[key]float64{}
	for _, path := range w.commitLogs() {
		f, err := os.Open(path)
		if err != nil {
			w.t.Fatal(err)
		}
		r := bufio.NewReader(f)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break // EOF, or a last line cut by kill -9
			}
			p := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
			if len(p) != 5 {
				w.t.Fatalf("commit log line %q", line)
			}
			ts, _ := strconv.ParseInt(p[3], 10, 64)
			v, _ := strconv.ParseFloat(p[4], 64)
			out[key{p[0], p[1], p[2], ts}] = v
		}
		f.Close()
	}
	return out
}

func (w *world) fleetDir() string {
	// DataDir of the fleet, from the first device's outbox location.
	return filepath.Dir(filepath.Dir(w.fleet.Devices[0].Agent.OutboxPath()))
}

type row struct {
	t int64
	v float64
}

// query returns rows of field per (device, sensor) for a measurement: the
// time (Unix ns, exact) and the fields as float64. A row missing a field is
// an error, not a value: InfluxDB 1.x reads each field through its own
// cursor, so a query that runs while a point is being written can see some
// of its fields and not the others (the hub writes every field of an
// aggregate in one point); check polls again.
func (w *world) query(measurement string, fields ...string) (map[[2]string][]qrow, error) {
	q := fmt.Sprintf(`SELECT %s FROM %q GROUP BY "device","sensor"`, `"`+strings.Join(fields, `","`)+`"`, measurement)
	series, err := w.ix.Query(w.db, q)
	if err != nil {
		return nil, err
	}
	out := map[[2]string][]qrow{}
	for _, s := range series {
		k := [2]string{s.Tags["device"], s.Tags["sensor"]}
		for _, v := range s.Values {
			var r qrow
			n, ok := v[0].(json.Number)
			if !ok {
				return nil, fmt.Errorf("%s %v: time %v is not a number", measurement, k, v[0])
			}
			r.t, _ = n.Int64()
			for i, x := range v[1:] {
				n, ok := x.(json.Number)
				if !ok {
					return nil, fmt.Errorf("%s %v at %d: field %s is %v, not a number", measurement, k, r.t, fields[i], x)
				}
				f, _ := strconv.ParseFloat(string(n), 64)
				r.f = append(r.f, f)
			}
			out[k] = append(out[k], r)
		}
	}
	return out, nil
}

type qrow struct {
	t int64
	f []float64
}

func (w *world) metric(name string) float64 {
	resp, err := http.Get(w.httpURL + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// check compares InfluxDB with the ground truth (polling until the hub has
// written every window) and logs the accounting.
func (w *world) check() {
	truth := w.truth()
	var last error
	testsvc.WaitFor(w.t, 60*time.Second, "InfluxDB to equal the ground truth", func() error {
		last = w.compare(truth)
		return last
	})
}

func (w *world) compare(truth map[key]float64) error {
	stored := map[key]float64{}
	for _, m := range metrics {
		raw, err := w.query(m, "value")
		if err != nil {
			return err
		}
		for k, rows := range raw {
			for _, r := range rows {
				stored[key{k[0], k[1], m, r.t}] = r.f[0]
			}
		}
	}
	// Reported drops per device.
	dropped := map[string]int64{}
	if s, err := w.ix.Query(w.db, `SELECT sum("readings") FROM "freshet_gaps" GROUP BY "device"`); err == nil {
		for _, se := range s {
			sum, ok := se.Values[0][1].(json.Number)
			if !ok {
				return fmt.Errorf("freshet_gaps of %s: sum %v is not a number", se.Tags["device"], se.Values[0][1])
			}
			n, _ := sum.Int64()
			dropped[se.Tags["device"]] = n
		}
	}
	// Every reported drop is also a data quality finding, with the same count.
	findings := map[string]int64{}
	if s, err := w.ix.Query(w.db, `SELECT sum("count") FROM "freshet_quality" WHERE "kind" = 'dropped' AND "state" = 'resolved' GROUP BY "device"`); err == nil {
		for _, se := range s {
			sum, ok := se.Values[0][1].(json.Number)
			if !ok {
				return fmt.Errorf("dropped findings of %s: sum %v is not a number", se.Tags["device"], se.Values[0][1])
			}
			findings[se.Tags["device"]], _ = sum.Int64()
		}
	}
	reported := map[string]int64{}
	for d, n := range dropped {
		if n > 0 {
			reported[d] = n
		}
	}
	if !maps.Equal(findings, reported) {
		return fmt.Errorf("dropped findings %v, gap notices %v", findings, dropped)
	}
	perDevice := map[string][2]int64{} // truth, stored
	for k, v := range truth {
		c := perDevice[k.device]
		c[0]++
		if sv, ok := stored[k]; ok {
			c[1]++
			if sv != v {
				return fmt.Errorf("%v stored as %v, committed as %v", k, sv, v)
			}
		}
		perDevice[k.device] = c
	}
	for k := range stored {
		if _, ok := truth[k]; !ok {
			return fmt.Errorf("%v stored but never committed by the agent", k)
		}
	}
	var sent, kept, drops int64
	for d, c := range perDevice {
		if c[0]-dropped[d] != c[1] {
			return fmt.Errorf("%s: %d committed - %d reported dropped != %d stored", d, c[0], dropped[d], c[1])
		}
		sent, kept, drops = sent+c[0], kept+c[1], drops+dropped[d]
	}
	// Aggregates: recompute each 1 m window from the stored rows, in time order.
	type wkey struct {
		device, sensor, metric string
		start                  int64
	}
	byWindow := map[wkey][]row{}
	for k, v := range stored {
		start := k.t - ((k.t%int64(time.Minute))+int64(time.Minute))%int64(time.Minute)
		wk := wkey{k.device, k.sensor, k.metric, start}
		byWindow[wk] = append(byWindow[wk], row{k.t, v})
	}
	aggs := 0
	written := map[wkey]bool{}
	for _, m := range metrics {
		aggRows, err := w.query(m+"_1m", "count", "sum", "min", "max", "first", "last")
		if err != nil {
			return err
		}
		for k, rows := range aggRows {
			for _, r := range rows {
				aggs++
				written[wkey{k[0], k[1], m, r.t}] = true
				rs := byWindow[wkey{k[0], k[1], m, r.t}]
				slices.SortFunc(rs, func(a, b row) int { return int(a.t - b.t) })
				if len(rs) == 0 {
					return fmt.Errorf("aggregate %v %s at %d has no raw rows", k, m, r.t)
				}
				sum, lo, hi := 0.0, rs[0].v, rs[0].v
				for _, x := range rs {
					sum += x.v
					lo, hi = min(lo, x.v), max(hi, x.v)
				}
				want := []float64{float64(len(rs)), sum, lo, hi, rs[0].v, rs[len(rs)-1].v}
				if !slices.Equal(r.f, want) {
					return fmt.Errorf("aggregate %v %s at %d: %v, from the rows %v", k, m, r.t, r.f, want)
				}
			}
		}
	}
	if aggs != len(byWindow) {
		var missing []string
		for k, rows := range byWindow {
			if !written[k] {
				missing = append(missing, fmt.Sprintf("%s/%s/%s at %s (%d readings)", k.device, k.sensor, k.metric, time.Unix(0, k.start).UTC().Format(time.TimeOnly), len(rows)))
			}
		}
		slices.Sort(missing)
		return fmt.Errorf("%d aggregates written, %d windows hold data; not written: %s", aggs, len(byWindow), strings.Join(missing, ", "))
	}
	w.t.Logf("accounting: committed %d, stored %d, reported dropped %d, windows %d, corrections %v, duplicate batches %v",
		sent, kept, drops, aggs, w.metric("freshet_hub_window_corrections_total"), w.metric(`freshet_hub_batches_total{result="duplicate"}`))
	return nil
}

func buildHub(t testing.TB) string {
	bin := filepath.Join(t.TempDir(), "freshet-hub")
	if out, err := exec.Command("go", "build", "-o", bin, "../../hub/cmd/freshet-hub").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestFaultMatrix runs every scenario against a fresh database, hub state
// and fleet; influxd is shared.
func TestFaultMatrix(t *testing.T) {
	t.Parallel() // beside TestArmAgentsUnderQemu, which mostly waits for its cross builds
	hubBin := buildHub(t)
	ix := testsvc.StartInflux(t)
	for _, sc := range scenarios {
		for _, b := range sc.brokers {
			t.Run(sc.name+"/"+b, func(t *testing.T) {
				if sc.setup != nil {
					sc.setup()
				}
				w := newWorld(t, ix, hubBin, b, sc.fleet)
				sc.run(w)
				w.drain()
				w.check()
			})
		}
	}
}
