package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/firmware-sim/surge"
	"github.com/freshet-iot/freshet/internal/localsvc"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// The surge scenario: this many gateways, each with this backlog, come back
// within a few seconds. (make bench runs 10,000 of them.)
const (
	surgeDevices  = 1000
	surgeBatches  = 10
	surgeReadings = 20
)

// shippedFlowControl returns the flow-control lines (max_...) of the
// shipped deploy/mosquitto/mosquitto.conf, so the surge runs against the
// queue sizes users get, plus a $SYS report every second.
func shippedFlowControl(tb testing.TB) []string {
	tb.Helper()
	b, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		tb.Fatal(err)
	}
	lines := []string{"sys_interval 1"}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "max_") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) < 3 {
		tb.Fatalf("deploy/mosquitto/mosquitto.conf: no max_ lines in %q", lines)
	}
	return lines
}

// TestSurge: a thousand gateways, each with a backlog and the agent's
// window of 8 batches in flight, reconnect within five seconds, through
// the hub's embedded broker and through Mosquitto, to one hub and one
// influxd. The hub keeps its broker session (no reconnect), no ack is lost
// (no batch is sent again: the ack timeout is longer than the drain), the
// broker drops nothing, every batch is applied once, and the hub's memory
// stays bounded.
func TestSurge(t *testing.T) {
	raiseFileLimit(t, surgeDevices)
	hubBin := buildHub(t)
	ix := testsvc.StartInflux(t)
	for _, name := range []string{"embedded", "mosquitto"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := runSurge(t, ix, hubBin, name, surge.Options{Devices: surgeDevices, Batches: surgeBatches, Readings: surgeReadings,
				Window: 8, AckTimeout: 5 * time.Minute, ConnectWithin: 5 * time.Second}, "176MiB", true)
			if res.err != nil {
				t.Fatal(res.err)
			}
			checks := []struct {
				what      string
				got, want float64
			}{
				{"hub broker sessions", res.connects, 1},
				{"batches sent again (acks lost)", float64(res.surge.Resends), 0},
				{"intake overflows", res.overflows, 0},
				{"messages the broker dropped", res.brokerDropped, 0},
				{"batches applied", res.applied, surgeDevices * surgeBatches},
				{"duplicate batches", res.duplicates, 0},
				{"readings in InfluxDB", res.stored, surgeDevices * surgeBatches * surgeReadings},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
				}
			}
			if res.hubPeakRSS > 256<<20 {
				t.Errorf("hub peak RSS %.0f MB, over 256 MB", float64(res.hubPeakRSS)/(1<<20))
			}
			t.Logf("%s: %d gateways, %d batches, %d readings in %v (%.0f readings/s); ack p50 %v p99 %v; hub peak RSS %.0f MB",
				name, surgeDevices, res.surge.Batches, res.surge.Readings, res.surge.Elapsed.Round(time.Millisecond),
				float64(res.surge.Readings)/res.surge.Elapsed.Seconds(), res.surge.AckP50.Round(time.Millisecond),
				res.surge.AckP99.Round(time.Millisecond), float64(res.hubPeakRSS)/(1<<20))
		})
	}
}

// surgeResult is what one surge measured.
type surgeResult struct {
	err                                      error
	surge                                    surge.Result
	connects, overflows, brokerDropped, held float64 // held: embedded only
	applied, duplicates, stored              float64
	// hubPeakRSS is the hub's VmHWM; hubPeakAnon the peak of its
	// anonymous memory (heap, stacks), sampled every 100 ms, without the
	// file-backed pages of hub.db's mmap, which the kernel may reclaim.
	hubPeakRSS, hubPeakAnon int64
	// CPU time of the hub (with the embedded broker, the broker too),
	// Mosquitto, influxd and this process (the simulated gateways).
	hubCPU, mosquittoCPU, influxCPU, simCPU time.Duration
}

// runSurge starts a hub (its embedded broker, or Mosquitto configured as
// deploy/mosquitto) on a fresh database of ix, runs a surge through it and
// reads the hub's counters, the broker's drops and InfluxDB's count. The
// hub signs its acks; with verify the gateways check them as agents do
// (the benchmark leaves that CPU out of its load generator).
func runSurge(tb testing.TB, ix *testsvc.Influx, hubBin, brokerName string, o surge.Options, memLimit string, verify bool) surgeResult {
	devices, batches, readings := o.Devices, o.Batches, o.Readings
	db, err := ix.NewDatabaseName()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	port, _ := testsvc.FreePort()
	var brokerURL, brokerCfg string
	var mosq *testsvc.Broker
	if brokerName == "embedded" {
		bp, _ := testsvc.FreePort()
		brokerURL = fmt.Sprintf("tcp://127.0.0.1:%d", bp)
		brokerCfg = fmt.Sprintf("{embedded: {listen: \"127.0.0.1:%d\"}}", bp)
	} else {
		mosq = testsvc.StartMosquittoWith(tb, testsvc.MosquittoOptions{Config: shippedFlowControl(tb)})
		brokerURL = mosq.URL()
		brokerCfg = fmt.Sprintf("{url: %q, client_id: hub-surge}", brokerURL)
	}
	key := testsvc.NewAckKey(tb)
	if verify {
		o.AckKeys = key.Keys
	}
	h := &hubProc{t: nil, name: "hub", bin: hubBin, cfg: filepath.Join(dir, "hub.yaml"), dataDir: filepath.Join(dir, "hub"),
		httpURL: fmt.Sprintf("http://127.0.0.1:%d", port), env: []string{"E2E_INFLUX_TOKEN=" + ix.Token}}
	cfg := fmt.Sprintf(`data_dir: %s
broker: %s
influx: {url: %q, bucket: %q, token_env: E2E_INFLUX_TOKEN}
http: {listen: "127.0.0.1:%d"}
windows: {sizes: [1m, 1h]}
log: {level: warn}
memory: {limit: %s}
ack_key_file: %s
`, h.dataDir, brokerCfg, ix.URL, db+"/autogen", port, memLimit, key.KeyFile)
	if err := os.WriteFile(h.cfg, []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
	h.startTB(tb)
	defer h.stop(false)
	testsvc.WaitFor(tb, 20*time.Second, "the hub connected to its broker", func() error {
		if h.metric("freshet_hub_broker_connected") != 1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	var sysDropped float64
	var sysSeen int
	var sysMu sync.Mutex
	if mosq != nil {
		// Mosquitto counts what it drops for a full queue in $SYS.
		c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID("surge-sys"))
		if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			tb.Fatal(tok.Error())
		}
		defer c.Disconnect(0)
		// The drop count is published (retained) only when it changes;
		// the uptime comes first in every report, so two uptimes after
		// the run mean the drop count of the run has arrived.
		c.SubscribeMultiple(map[string]byte{"$SYS/broker/publish/messages/dropped": 0, "$SYS/broker/uptime": 0}, func(_ paho.Client, m paho.Message) {
			sysMu.Lock()
			defer sysMu.Unlock()
			if m.Topic() == "$SYS/broker/uptime" {
				sysSeen++
				return
			}
			v, _ := strconv.ParseFloat(strings.TrimSpace(string(m.Payload())), 64)
			sysDropped = max(sysDropped, v)
		}).WaitTimeout(30 * time.Second)
	}
	ixPid, mqPid := localsvc.ChildPid("influxd"), 0
	if mosq != nil {
		mqPid = localsvc.ChildPid("mosquitto") // the bench runs one broker at a time
	}
	cpu0, ix0, mq0, sim0 := localsvc.ProcCPU(h.pid()), localsvc.ProcCPU(ixPid), localsvc.ProcCPU(mqPid), localsvc.SelfCPU()
	topics, _ := protocol.NewTopics("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var res surgeResult
	o.Broker, o.Topics = brokerURL, topics
	sampled := make(chan int64)
	stopSampling := make(chan struct{})
	go func() {
		var peak int64
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, localsvc.ProcStatusBytes(h.pid(), "RssAnon"))
			select {
			case <-stopSampling:
				sampled <- peak
				return
			case <-tick.C:
			}
		}
	}()
	res.surge, res.err = surge.Run(ctx, o)
	close(stopSampling)
	res.hubPeakAnon = <-sampled
	res.hubCPU, res.influxCPU = localsvc.ProcCPU(h.pid())-cpu0, localsvc.ProcCPU(ixPid)-ix0
	res.mosquittoCPU, res.simCPU = localsvc.ProcCPU(mqPid)-mq0, localsvc.SelfCPU()-sim0
	res.hubPeakRSS = localsvc.ProcStatusBytes(h.pid(), "VmHWM")
	res.connects = h.metric("freshet_hub_broker_connects_total")
	res.overflows = h.metric("freshet_hub_intake_overflows_total")
	res.held = h.metric("freshet_hub_broker_held_total")
	res.applied = h.metric(`freshet_hub_batches_total{result="applied"}`)
	res.duplicates = h.metric(`freshet_hub_batches_total{result="duplicate"}`)
	if mosq != nil {
		// $SYS comes every second: wait for two more reports.
		sysMu.Lock()
		seen := sysSeen
		sysMu.Unlock()
		err := testsvc.Poll(30*time.Second, func() error {
			sysMu.Lock()
			defer sysMu.Unlock()
			if sysSeen < seen+2 {
				return fmt.Errorf("%d $SYS reports", sysSeen-seen)
			}
			return nil
		})
		if err != nil && res.err == nil {
			res.err = fmt.Errorf("mosquitto's $SYS drop count: %w", err)
		}
		sysMu.Lock()
		res.brokerDropped = sysDropped
		sysMu.Unlock()
	} else {
		res.brokerDropped = h.metric("freshet_hub_broker_dropped_total")
	}
	testsvc.Poll(2*time.Minute, func() error { // the raw writes come before the acks: this is quick
		s, err := ix.Query(db, `SELECT count("value") FROM "temperature"`)
		if err != nil || len(s) == 0 {
			return fmt.Errorf("count: %v", err)
		}
		n, _ := s[0].Values[0][1].(json.Number).Float64()
		res.stored = n
		if int(n) < devices*batches*readings {
			return fmt.Errorf("%v stored", n)
		}
		return nil
	})
	return res
}
