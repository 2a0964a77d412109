package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/agent/forward"
	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/internal/agenttest"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// cluster is several hubs sharing one fleet through a shared subscription.
type cluster struct {
	*world
	hubs      []*hubProc
	nextHub   int
	brokerURL string
	// stopped is when the sensors stopped (drain): series silent after it
	// are silent indeed.
	stopped time.Time
	hubCfg  func(i int, dir string, port int) string
}

// newCluster starts n hubs. With broker "mosquitto" they share a
// Mosquitto $share group, which hands out batches round robin; with
// "embedded" the first hub runs the embedded broker, whose shared
// subscriptions keep each device on one hub (rendezvous), and the others
// connect to it.
func newCluster(t *testing.T, ix *testsvc.Influx, hubBin, brokerName string, n int, fo fleet.Options) *cluster {
	// Two keys: hub i signs with keys[i%2] (hubs may share a key or have
	// their own), and the agents obey both.
	c := &cluster{world: &world{t: t, ix: ix, db: ix.NewDatabase(t), hubBin: hubBin, keys: []*testsvc.AckKey{testsvc.NewAckKey(t), testsvc.NewAckKey(t)}}}
	var brokerURL string
	embeddedPort := 0
	if brokerName == "embedded" {
		embeddedPort, _ = testsvc.FreePort()
		brokerURL = fmt.Sprintf("tcp://127.0.0.1:%d", embeddedPort)
	} else {
		c.broker = testsvc.StartBroker(t, brokerName)
		brokerURL = c.broker.URL()
	}
	c.brokerURL = brokerURL
	c.hubCfg = func(i int, dir string, port int) string {
		broker := fmt.Sprintf("{url: %q, client_id: hub-%d-%s, shared_group: hubs}", brokerURL, i, c.db)
		if i == 0 && embeddedPort != 0 {
			broker = fmt.Sprintf("{embedded: {listen: \"127.0.0.1:%d\"}, client_id: hub-0, shared_group: hubs}", embeddedPort)
		}
		return fmt.Sprintf(`data_dir: %s
broker: %s
influx: {url: %q, bucket: %q, token_env: E2E_INFLUX_TOKEN}
http: {listen: "127.0.0.1:%d"}
windows: {sizes: [1m], allowed_lateness: 1s, idle_timeout: 3s, verify_after: 2s}
quality: {interval: 500ms}
ack_key_file: %s
`, filepath.Join(dir, "hub"), broker, ix.URL, c.db+"/autogen", port, c.keys[i%len(c.keys)].KeyFile)
	}
	for range n {
		c.addHub()
	}
	c.httpURL = c.hubs[0].httpURL
	if embeddedPort != 0 {
		testsvc.WaitFor(t, 30*time.Second, "the embedded broker", func() error {
			if c.hubs[0].metric("freshet_hub_broker_connected") != 1 {
				return fmt.Errorf("hub-0 not connected to its broker yet")
			}
			return nil
		})
	}
	tune := fo.Tune
	fo.Tune = func(a *agent.Config) {
		a.MQTT.StatusInterval = cfgfile.Duration(time.Second) // every hub hears each device's settled mark often
		if tune != nil {
			tune(a)
		}
	}
	c.runFleet(fo, brokerURL, filepath.Join(t.TempDir(), "fleet"))
	t.Cleanup(func() {
		c.stop()
		for _, h := range c.hubs {
			h.stop(false)
			if t.Failed() {
				t.Logf("%s log (tail):\n%s", h.name, tail(h.out.String(), 30))
				if dir := os.Getenv("FRESHET_E2E_LOGS"); dir != "" { // the whole logs, for a failure's diagnosis
					os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+h.name+".log"), []byte(h.out.String()), 0o644)
				}
			}
		}
	})
	return c
}

// addHub starts one more hub in the group.
func (c *cluster) addHub() *hubProc {
	i := c.nextHub
	c.nextHub++
	dir := c.t.TempDir()
	port, _ := testsvc.FreePort()
	h := &hubProc{t: c.t, name: fmt.Sprintf("hub-%d", i), bin: c.hubBin, cfg: filepath.Join(dir, "hub.yaml"),
		dataDir: filepath.Join(dir, "hub"), httpURL: fmt.Sprintf("http://127.0.0.1:%d", port), env: []string{"E2E_INFLUX_TOKEN=" + c.ix.Token}}
	if err := os.WriteFile(h.cfg, []byte(c.hubCfg(i, dir, port)), 0o644); err != nil {
		c.t.Fatal(err)
	}
	h.start()
	c.hubs = append(c.hubs, h)
	return h
}

// drainCluster stops the sensors and waits for every backlog to be acked.
func (c *cluster) drainCluster() {
	c.stopped = time.Now()
	c.drain()
}

// checkCluster is check plus what several hubs add: every hub lists the
// whole fleet, no healthy series was found silent (before the sensors
// stopped), and the hubs' rebuilds.
func (c *cluster) checkCluster() {
	c.check()
	names := map[string]bool{}
	for _, d := range c.fleet.Devices {
		names[d.Name] = true
	}
	for _, h := range c.hubs {
		if h.cmd == nil {
			continue
		}
		testsvc.WaitFor(c.t, 20*time.Second, h.name+" listing the whole fleet", func() error {
			resp, err := http.Get(h.httpURL + "/api/v1/devices")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var body struct {
				Devices []struct {
					Device string `json:"device"`
				} `json:"devices"`
			}
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
				return err
			}
			seen := 0
			for _, d := range body.Devices {
				if names[d.Device] {
					seen++
				}
			}
			if seen != len(names) {
				return fmt.Errorf("%d of %d devices", seen, len(names))
			}
			return nil
		})
	}
	c.noFalseSilence()
	var report []string
	for _, h := range c.hubs {
		if h.cmd == nil {
			continue
		}
		report = append(report, fmt.Sprintf("%s: rebuilt %v, rewritten %v, readings adopted %v", h.name, h.metric("freshet_hub_windows_rebuilt_total"),
			h.metric(`freshet_hub_windows_verified_total{result="rewritten"}`), h.metric("freshet_hub_readings_adopted_total")))
	}
	c.t.Logf("windows: %s", strings.Join(report, "; "))
}

// noFalseSilence fails the test for every silent finding the ground truth
// contradicts: a reading the device committed between the last reading the
// hub saw and the one that ended the silence (resolved), or after the
// silence opened (still open). A series that really had no readings for a
// while (a stalled test process on a loaded machine) is silent indeed.
func (c *cluster) noFalseSilence() {
	truth := map[[3]string][]int64{}
	for k := range c.truth() {
		s := [3]string{k.device, k.sensor, k.metric}
		truth[s] = append(truth[s], k.t)
	}
	for _, ts := range truth {
		slices.Sort(ts)
	}
	// The hubs are still running: a finding may be being written.
	series := c.ix.QueryWhole(c.t, c.db, `SELECT "state","opened","resolved","count" FROM "freshet_quality" WHERE "kind" = 'silent' GROUP BY "device","sensor","metric"`)
	found := 0
	for _, se := range series {
		ts := truth[[3]string{se.Tags["device"], se.Tags["sensor"], se.Tags["metric"]}]
		// A finding is a row when it opened and one when it resolved,
		// both with its opened time; one still open has only the first.
		resolvedAt := map[int64]int64{}
		for _, v := range se.Values {
			opened, _ := v[2].(json.Number).Int64()
			if v[1] == "resolved" {
				resolvedAt[opened], _ = v[3].(json.Number).Int64()
			} else if _, ok := resolvedAt[opened]; !ok {
				resolvedAt[opened] = math.MaxInt64
			}
		}
		for opened, resolved := range resolvedAt {
			found++
			// opened is the last reading seen plus one interval: a reading
			// committed in [opened, resolved) was there to be seen.
			i, _ := slices.BinarySearch(ts, opened)
			if i < len(ts) && ts[i] < resolved {
				c.t.Errorf("false silent finding %v opened %s: the device committed a reading at %s", se.Tags,
					time.Unix(0, opened).UTC().Format(time.RFC3339Nano), time.Unix(0, ts[i]).UTC().Format(time.RFC3339Nano))
			}
		}
	}
	if !c.t.Failed() {
		c.t.Logf("%d silent findings, none contradicted by the ground truth", found)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestMultiHub: several hubs share one fleet, devices move between them in
// every way a cluster sees (round robin, a hub killed and restarted on an
// empty data dir or on an old copy of its state, a hub added, a hub
// removed), and afterwards InfluxDB holds every committed reading exactly
// once, every aggregate equals its recomputation from the raw rows, no
// backlog is left and no healthy series was found silent.
func TestMultiHub(t *testing.T) {
	hubBin := buildHub(t)
	ix := testsvc.StartInflux(t)
	t.Run("round-robin-mosquitto", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, ix, hubBin, "mosquitto", 3, fleet.Options{Devices: 4})
		run(3 * time.Second)
		c.hubs[2].stop(true) // SIGKILL, and back on an empty data dir
		if err := os.RemoveAll(c.hubs[2].dataDir); err != nil {
			t.Fatal(err)
		}
		c.hubs[2].start()
		run(3 * time.Second)
		c.hubs[1].stop(false) // removed for good
		c.addHub()            // and one added
		run(3 * time.Second)
		c.drainCluster()
		c.checkCluster()
	})
	t.Run("affinity-embedded", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, ix, hubBin, "embedded", 3, fleet.Options{Devices: 6})
		run(2 * time.Second)
		// hub-1 goes back to an older copy of its state: stopped, copied,
		// run on, killed, and restarted on the copy.
		h := c.hubs[1]
		h.stop(false)
		db := filepath.Join(h.dataDir, "hub.db")
		old, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		h.start()
		run(3 * time.Second)
		h.stop(true)
		if err := os.WriteFile(db, old, 0o600); err != nil {
			t.Fatal(err)
		}
		h.start()
		run(2 * time.Second)
		c.hubs[2].stop(true) // SIGKILL, back on an empty data dir
		os.RemoveAll(c.hubs[2].dataDir)
		c.hubs[2].start()
		run(2 * time.Second)
		added := c.addHub()
		run(3 * time.Second)
		added.stop(false) // and removed again
		run(2 * time.Second)
		c.drainCluster()
		c.checkCluster()
	})
	t.Run("split-backlog-over-2000-batches", func(t *testing.T) {
		t.Parallel()
		// A device comes back with a backlog of over 2,000 batches and
		// drains it through two hubs taking turns: each lacks every other
		// seq of it. (Before the ledger kept ranges, each hub's ack listed
		// only the 1,024 seqs above its Through, and the device stalled.)
		c := newCluster(t, ix, hubBin, "mosquitto", 2, fleet.Options{Devices: 1})
		base := time.Now().Add(-3 * time.Hour).Truncate(time.Minute)
		var tick atomic.Int64 // a second on at every call: every commit seals
		ob, err := outbox.Open(outbox.Options{Path: filepath.Join(t.TempDir(), "o.db"), Device: "split-0001", MaxBatchAge: time.Millisecond,
			MaxBytes: 64 << 20, Limits: protocol.Limits{MaxMessageBytes: 512}, NoSync: true,
			Now: func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Second) }})
		if err != nil {
			t.Fatal(err)
		}
		var vals []float64
		for ob.Stats().Backlog.Batches < 2100 {
			var rs []protocol.Reading
			for range 30 {
				v, _ := protocol.Quantize(20+float64(len(vals)%500)/100, 0.01)
				rs = append(rs, protocol.Reading{Sensor: "probe", Metric: "level", Unit: "m", Type: protocol.Float, Resolution: 0.01,
					Time: base.Add(time.Duration(len(vals)) * time.Second).UnixNano(), Float: v})
				vals = append(vals, v)
			}
			ob.Add(rs)
			if err := ob.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if err := ob.Commit(); err != nil { // the tail
			t.Fatal(err)
		}
		batches := ob.Stats().Backlog.Batches
		topics, _ := protocol.NewTopics("")
		keys, err := protocol.NewAckKeys(c.keys[0].Signer.Public(), c.keys[1].Signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		agenttest.Run(t, ob, forward.Options{Broker: c.brokerURL, Device: "split-0001", Topics: topics, AckTimeout: 2 * time.Second,
			BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, Poll: 20 * time.Millisecond, AckKeys: keys}, 0)
		testsvc.WaitFor(t, 3*time.Minute, "the split backlog drained", func() error {
			if st := ob.Stats(); st.Backlog.Readings != 0 {
				return fmt.Errorf("%d batches, %d readings left", st.Backlog.Batches, st.Backlog.Readings)
			}
			return nil
		})
		c.drainCluster()
		c.checkCluster()
		// The split device (its own metric, outside the fleet's check):
		// every reading once, every minute exact.
		testsvc.WaitFor(t, time.Minute, "the split device's aggregates equal to the oracle", func() error {
			s, err := ix.Query(c.db, `SELECT count("value") FROM "level" WHERE "device" = 'split-0001'`)
			if err != nil || len(s) == 0 {
				return fmt.Errorf("raw count: %v", err)
			}
			if n, _ := s[0].Values[0][1].(json.Number).Int64(); n != int64(len(vals)) {
				return fmt.Errorf("%d raw rows, %d readings sent", n, len(vals))
			}
			s, err = ix.Query(c.db, `SELECT "count","sum","min","max","first","last" FROM "level_1m" WHERE "device" = 'split-0001'`)
			if err != nil || len(s) == 0 {
				return fmt.Errorf("aggregates: %v", err)
			}
			if len(s[0].Values) != (len(vals)+59)/60 {
				return fmt.Errorf("%d windows written, want %d", len(s[0].Values), (len(vals)+59)/60)
			}
			for _, v := range s[0].Values {
				ts, _ := v[0].(json.Number).Int64()
				m := int((ts - base.UnixNano()) / int64(time.Minute))
				w := vals[m*60 : min(m*60+60, len(vals))]
				sum, lo, hi := 0.0, w[0], w[0]
				for _, x := range w {
					sum += x
					lo, hi = min(lo, x), max(hi, x)
				}
				got := strings.ReplaceAll(fmt.Sprint(v[1:]), " ", "")
				want := strings.ReplaceAll(fmt.Sprint([]any{json.Number(fmt.Sprint(len(w))), sum, lo, hi, w[0], w[len(w)-1]}), " ", "")
				if got != want {
					return fmt.Errorf("window %d: got %s, oracle %s", m, got, want)
				}
			}
			return nil
		})
		t.Logf("%d batches of %d readings drained through two hubs taking turns", batches, len(vals))
	})
}
