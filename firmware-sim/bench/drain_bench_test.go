package bench_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/internal/localsvc"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// The outage every device comes back from.
const (
	drainDevices = 50
	outage       = time.Hour
	// Each device reads a BME280 (temperature, humidity, pressure) every
	// 1/3 s and an MCP9808 every second: 10 readings/s.
	bmeInterval = time.Second / 3
	mcpInterval = time.Second
	perDevice   = int(outage/bmeInterval)*3 + int(outage/mcpInterval) // 36,000
	// batchAge is the agent's default max_batch_age: an agent whose link is
	// down still seals a batch every 30 s, so its outbox holds 120 batches
	// of 300 readings after the hour.
	batchAge = 30 * time.Second
)

// BenchmarkBacklogDrain: 50 simulated gateways (firmware-sim/fleet: real
// agents, outboxes and forwarders) come back after a 1 h outage during which
// each committed 10 readings/s to its outbox: 36,000 readings in 120 sealed
// batches per device, 1.8 M in all. The outboxes are filled through the
// outbox API before the agents start, so no hour is waited. The clock starts
// when the agents start and connect (the reconnect; a backoff wait before it
// is not counted) and stops when InfluxDB holds every one of the 1.8 M
// readings, counted by a query. Meanwhile the agents keep reading their
// emulated chips at 10 readings/s. The broker is the embedded mochi, the hub
// the real freshet-hub binary with its default pipeline settings, and
// influxd the real one.
//
// Reports x-realtime (the outage's length over the drain time; goal >= 20),
// readings/s, and the CPU seconds per million readings spent by the hub
// process, by influxd, and by this process (the 50 agents and the broker).
//
//	go test ./firmware-sim/bench -run '^$' -bench BacklogDrain -benchtime 1x
func BenchmarkBacklogDrain(b *testing.B) {
	ix := testsvc.StartInflux(b)
	broker := testsvc.StartMochi(b)
	hubBin := filepath.Join(b.TempDir(), "freshet-hub")
	if out, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", hubBin, "github.com/freshet-iot/freshet/hub/cmd/freshet-hub").CombinedOutput(); err != nil {
		b.Fatalf("build freshet-hub: %v\n%s", err, out)
	}
	var sum drainResult
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		r := drainOnce(b, i, ix, broker.URL(), hubBin)
		sum.elapsed += r.elapsed
		sum.hubCPU += r.hubCPU
		sum.influxCPU += r.influxCPU
		sum.selfCPU += r.selfCPU
		b.StartTimer()
	}
	n := float64(b.N)
	total := float64(drainDevices * perDevice)
	perM := func(cpu time.Duration) float64 { return cpu.Seconds() / n / total * 1e6 }
	b.ReportMetric(outage.Seconds()/(sum.elapsed.Seconds()/n), "x-realtime")
	b.ReportMetric(total/(sum.elapsed.Seconds()/n), "readings/s")
	b.ReportMetric(perM(sum.hubCPU), "hub-cpu-s/1M")
	b.ReportMetric(perM(sum.influxCPU), "influxd-cpu-s/1M")
	b.ReportMetric(perM(sum.selfCPU), "agents-broker-cpu-s/1M")
	b.ReportMetric((sum.hubCPU+sum.influxCPU+sum.selfCPU).Seconds()/sum.elapsed.Seconds(), "cores-busy")
}

// drainResult is one drain: its wall time and the CPU time each part spent.
type drainResult struct {
	elapsed, hubCPU, influxCPU, selfCPU time.Duration
}

// drainOnce prepares a fleet with a backlog, a fresh hub and a fresh
// database, times the drain (with b's timer running), and checks that
// InfluxDB holds exactly the backlog.
func drainOnce(b *testing.B, iter int, ix *testsvc.Influx, brokerURL, hubBin string) drainResult {
	dir := b.TempDir()
	db := ix.NewDatabase(b)
	prefix := fmt.Sprintf("drain%d-", iter)
	end := time.Now()
	begin := end.Add(-outage)
	for d := range drainDevices {
		name := fmt.Sprintf("%s%04d", prefix, d+1) // the fleet's naming
		if err := prefill(filepath.Join(dir, "fleet", name), name, begin, uint64(d)); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
	}
	key := testsvc.NewAckKey(b)
	h := startHub(b, hubBin, filepath.Join(dir, "hub"), brokerURL, key.KeyFile, ix, db, iter)
	f, err := fleet.New(fleet.Options{
		Devices: drainDevices, Seed: uint64(iter) + 1, Broker: brokerURL, DataDir: filepath.Join(dir, "fleet"), HubKeys: []string{key.PubFile},
		Prefix: prefix, Interval: bmeInterval,
		Tune: func(c *agent.Config) {
			c.Outbox.MaxBatchAge = cfgfile.Duration(batchAge)
			var keep []sensor.Config
			for _, s := range c.Sensors {
				switch s.Type {
				case sensor.TypeMCP9808:
					s.Interval = cfgfile.Duration(mcpInterval)
					keep = append(keep, s)
				case sensor.TypeBME280:
					keep = append(keep, s)
				}
			}
			c.Sensors = keep
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range f.Devices {
		if st := d.Agent.Outbox(); st.Backlog.Readings != uint64(perDevice) {
			b.Fatalf("%s opened with a backlog of %d readings, want %d", d.Name, st.Backlog.Readings, perDevice)
		}
	}
	influxPid := localsvc.ChildPid("influxd")
	hubCPU0, influxCPU0, selfCPU0 := localsvc.ProcCPU(h.cmd.Process.Pid), localsvc.ProcCPU(influxPid), localsvc.SelfCPU()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})

	b.StartTimer()
	start := time.Now()
	go func() { defer close(done); f.Run(ctx) }()
	total := drainDevices * perDevice
	// The hub's counter is cheap to poll; it counts readings stored raw and
	// applied, and stays below the total until the backlog is nearly in
	// (the agents' live readings seal only every 30 s).
	testsvc.WaitFor(b, 10*time.Minute, "the hub to apply the backlog", func() error {
		if n := h.metric("freshet_hub_readings_total"); n < float64(total) {
			return fmt.Errorf("%.0f of %d readings applied", n, total)
		}
		return nil
	})
	applied := time.Since(start)
	var stored int64
	testsvc.WaitFor(b, time.Minute, "InfluxDB to hold the backlog", func() error {
		n, err := countRaw(ix, db, begin, end, "")
		if err != nil {
			return err
		}
		stored = n
		if n < int64(total) {
			return fmt.Errorf("%d of %d readings stored", n, total)
		}
		return nil
	})
	elapsed := time.Since(start)
	b.StopTimer()

	r := drainResult{elapsed: elapsed, hubCPU: localsvc.ProcCPU(h.cmd.Process.Pid) - hubCPU0,
		influxCPU: localsvc.ProcCPU(influxPid) - influxCPU0, selfCPU: localsvc.SelfCPU() - selfCPU0}
	var published, republished, connects uint64
	for _, d := range f.Devices {
		st := d.Agent.Forwarder()
		published, republished, connects = published+st.Published, republished+st.Republished, connects+st.Connects
	}
	cancel()
	<-done
	if stored != int64(total) {
		var per []string
		for _, d := range f.Devices {
			n, _ := countRaw(ix, db, begin, end, d.Name)
			if n != int64(perDevice) {
				per = append(per, fmt.Sprintf("%s: %d", d.Name, n))
			}
		}
		b.Fatalf("InfluxDB holds %d readings of the outage, want exactly %d; devices off: %s", stored, total, strings.Join(per, ", "))
	}
	b.Logf("%d devices, %d readings drained in %v (%.0fx real time; the hub had applied them after %v, the rest is the count query); %d batches published (%d again), %d connects; CPU s: hub %.1f, influxd %.1f, agents+broker %.1f; hub: %s",
		drainDevices, total, elapsed.Round(time.Millisecond), outage.Seconds()/elapsed.Seconds(), applied.Round(time.Millisecond), published, republished, connects,
		r.hubCPU.Seconds(), r.influxCPU.Seconds(), r.selfCPU.Seconds(), h.summary())
	h.stop()
	return r
}

// prefill commits an outage's worth of readings from begin to the outbox in
// dir as the agent would have while its link was down: committed, and
// sealed into a batch every batchAge. The readings look like the fleet's
// (sensors, metrics, units, resolutions, labels, nanosecond timestamps
// with scheduling jitter). fsync is off: this is set-up, not the benchmark.
func prefill(dir, device string, begin time.Time, seed uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	now := begin
	ob, err := outbox.Open(outbox.Options{Path: filepath.Join(dir, "outbox.db"), Device: device,
		MaxBatchAge: batchAge, NoSync: true, Now: func() time.Time { return now }})
	if err != nil {
		return err
	}
	rnd := rand.New(rand.NewPCG(seed, 7))
	labels := []protocol.Label{{Key: "fleet", Value: "sim"}}
	base := 14 + 10*rnd.Float64()
	phase := 2 * math.Pi * rnd.Float64()
	stamp := func(t time.Time) int64 { return t.UnixNano() + rnd.Int64N(200_000) } // up to 0.2 ms late
	var rs []protocol.Reading
	// The k-th BME280 read, on an exact grid of 1/3 s (k·333,333,333 ns
	// would put a 91st read into the first 30 s).
	bmeAt := func(k int) time.Time { return begin.Add(time.Duration(k) * time.Second / 3) }
	bme, mcp := 0, 0
	for p := begin; p.Before(begin.Add(outage)); p = p.Add(batchAge) {
		rs = rs[:0]
		for ; bmeAt(bme).Before(p.Add(batchAge)); bme++ {
			t := bmeAt(bme)
			temp := base + 3*math.Sin(phase+2*math.Pi*float64(t.Unix()%86400)/86400) + 0.05*rnd.NormFloat64()
			ts := stamp(t)
			for _, m := range []struct {
				metric, unit string
				v            float64
			}{{"temperature", "C", temp}, {"humidity", "%", 50 - 1.5*(temp-base) + 0.3*rnd.NormFloat64()}, {"pressure", "hPa", 1010 + 0.05*rnd.NormFloat64()}} {
				rs = append(rs, protocol.Reading{Sensor: "bme280", Metric: m.metric, Unit: m.unit, Labels: labels,
					Type: protocol.Float, Resolution: 0.01, Time: ts, Float: m.v})
			}
		}
		for ; begin.Add(time.Duration(mcp) * mcpInterval).Before(p.Add(batchAge)); mcp++ {
			t := begin.Add(time.Duration(mcp) * mcpInterval)
			rs = append(rs, protocol.Reading{Sensor: "mcp9808", Metric: "temperature", Unit: "C", Labels: labels,
				Type: protocol.Float, Resolution: 0.0001, Time: stamp(t), Float: base + 0.2 + 0.01*rnd.NormFloat64()})
		}
		now = p
		ob.Add(rs)
		if err := ob.Commit(); err != nil { // opens the batch
			ob.Close()
			return err
		}
		now = p.Add(batchAge)
		if err := ob.Commit(); err != nil { // seals it
			ob.Close()
			return err
		}
	}
	st := ob.Stats()
	if err := ob.Close(); err != nil {
		return err
	}
	if st.Backlog.Readings != uint64(perDevice) || st.Backlog.Batches != uint64(outage/batchAge) {
		return fmt.Errorf("prefilled %d readings in %d batches, want %d in %d", st.Backlog.Readings, st.Backlog.Batches, perDevice, outage/batchAge)
	}
	return nil
}

// hubProc is a running freshet-hub binary.
type hubProc struct {
	b       *testing.B
	cmd     *exec.Cmd
	url     string // its HTTP endpoint
	out     *strings.Builder
	done    chan error
	stopped bool
}

// startHub runs freshet-hub with its defaults against the broker and the
// database, and waits until it is ready (subscribed, InfluxDB reachable).
func startHub(b *testing.B, bin, dir, brokerURL, keyFile string, ix *testsvc.Influx, db string, iter int) *hubProc {
	port, err := testsvc.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(dir, "hub.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir: %s
broker: {url: %q, client_id: hub-drain-%d}
influx: {url: %q, bucket: %q, token_env: FRESHET_BENCH_INFLUX_TOKEN}
http: {listen: "127.0.0.1:%d"}
log: {level: warn}
ack_key_file: %s
`, dir, brokerURL, iter, ix.URL, db+"/autogen", port, keyFile)), 0o644)
	h := &hubProc{b: b, cmd: exec.Command(bin, "-config", cfg), url: fmt.Sprintf("http://127.0.0.1:%d", port), out: &strings.Builder{}, done: make(chan error, 1)}
	h.cmd.Env = append(os.Environ(), "FRESHET_BENCH_INFLUX_TOKEN="+ix.Token)
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.out
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { h.done <- h.cmd.Wait() }()
	b.Cleanup(h.stop)
	testsvc.WaitFor(b, 30*time.Second, "freshet-hub ready", func() error {
		resp, err := http.Get(h.url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	return h
}

// stop stops the hub with SIGTERM (SIGKILL after 10 s); it may be called again.
func (h *hubProc) stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-h.done
	}
	if h.b.Failed() {
		h.b.Logf("freshet-hub output:\n%s", h.out)
	}
}

// metrics returns the hub's /metrics lines that start with prefix.
func (h *hubProc) metrics(prefix string) []string {
	resp, err := http.Get(h.url + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var lines []string
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), prefix) {
			lines = append(lines, s.Text())
		}
	}
	return lines
}

// metric returns the value of the unlabelled sample name, or -1.
func (h *hubProc) metric(name string) float64 {
	for _, l := range h.metrics(name + " ") {
		if v, err := strconv.ParseFloat(strings.TrimPrefix(l, name+" "), 64); err == nil {
			return v
		}
	}
	return -1
}

// summary is the hub's counters that say where a drain went.
func (h *hubProc) summary() string {
	var parts []string
	for _, p := range []string{"freshet_hub_batches_total", "freshet_hub_commits_total", "freshet_hub_intake_overflows_total",
		"freshet_hub_aggregates_written_total", "freshet_hub_influx_write_duration_seconds_sum", "freshet_hub_influx_write_duration_seconds_count"} {
		for _, l := range h.metrics(p) {
			if !strings.HasSuffix(l, " 0") {
				parts = append(parts, strings.TrimPrefix(l, "freshet_hub_"))
			}
		}
	}
	return strings.Join(parts, ", ")
}

// countRaw counts the raw BME280 and MCP9808 readings InfluxDB holds from
// begin to end (of one device, if device is set).
func countRaw(ix *testsvc.Influx, db string, begin, end time.Time, device string) (int64, error) {
	q := fmt.Sprintf("SELECT count(value) FROM temperature, humidity, pressure WHERE time >= %d AND time < %d", begin.UnixNano(), end.UnixNano())
	if device != "" {
		q += fmt.Sprintf(" AND device = '%s'", device)
	}
	series, err := ix.Query(db, q)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range series {
		for _, row := range s.Values {
			if len(row) < 2 {
				continue
			}
			num, ok := row[1].(json.Number)
			if !ok {
				return 0, fmt.Errorf("count of %s: %v", s.Name, row[1])
			}
			v, err := num.Int64()
			if err != nil {
				return 0, err
			}
			n += v
		}
	}
	return n, nil
}
