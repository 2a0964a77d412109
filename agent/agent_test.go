package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"periph.io/x/conn/v3/i2c"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/firmware-sim/chip"
	"github.com/freshet-iot/freshet/firmware-sim/chip/bme280"
	"github.com/freshet-iot/freshet/firmware-sim/chip/sysfs"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

const baseConfig = `
device: %s
data_dir: %s
sys_root: %s
mqtt:
  broker: %s
  hub_keys: [%s]
  backoff_min: 50ms
  backoff_max: 300ms
  ack_timeout: 2s
outbox:
  commit_interval: 50ms
  max_batch_age: 200ms
  max_message_bytes: 4096
http: {listen: "off"}
sensors:
`

// TestAgentEndToEnd runs the agent in-process against each broker, reading
// an emulated BME280 through the real periph driver and a sysfs thermal
// zone, then stops it cleanly.
func TestAgentEndToEnd(t *testing.T) {
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		h := testsvc.StartHubStub(t, b.URL())
		root := t.TempDir()
		if _, err := sysfs.NewThermalZone(root, 0, "cpu-thermal", 48.5); err != nil {
			t.Fatal(err)
		}
		bus := chip.NewBus("sim")
		bme, _ := bme280.New(nil)
		bme.Set(21.37, 45.2, 101325)
		bus.Attach(0x76, bme)
		env := &sensor.Env{OpenI2C: func(name string) (i2c.BusCloser, error) {
			if name != "sim" {
				return nil, fmt.Errorf("no bus %q", name)
			}
			return bus, nil
		}}
		cfgText := fmt.Sprintf(baseConfig, "gw-e2e", t.TempDir(), root, b.URL(), h.Key.PubFile) + `
  - {name: cpu, type: cpu_temp, interval: 100ms}
  - {name: room, type: bme280, bus: sim, address: 0x76, interval: 100ms, labels: {floor: "2"}}
`
		cfg, err := agent.ParseConfig(strings.NewReader(cfgText))
		if err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(cfg, agent.Options{Env: env, Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()

		want := map[string]float64{"cpu/temperature": 48.5, "room/temperature": 21.37, "room/humidity": 45.2, "room/pressure": 1013.25}
		testsvc.WaitFor(t, 20*time.Second, "readings of every metric", func() error {
			got := map[string]int{}
			for _, b := range h.Applied() {
				for _, s := range b.Series {
					k := s.Sensor + "/" + s.Metric
					for _, v := range s.Floats {
						if w, ok := want[k]; !ok || v != w {
							return fmt.Errorf("%s = %v, want %v", k, v, w)
						}
					}
					got[k] += s.Len()
				}
			}
			for k := range want {
				if got[k] < 5 {
					return fmt.Errorf("%s: %d readings", k, got[k])
				}
			}
			return nil
		})
		for _, b := range h.Applied() {
			for _, s := range b.Series {
				if s.Sensor == "room" && (len(s.Labels) != 1 || s.Labels[0] != (protocol.Label{Key: "floor", Value: "2"})) {
					t.Fatalf("labels %v", s.Labels)
				}
			}
		}
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		checkMetrics(t, rec.Body.String())
		rec = httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		if !strings.Contains(rec.Body.String(), `"connected":true`) {
			t.Errorf("/healthz: %s", rec.Body)
		}

		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the agent did not stop within 5 s")
		}
		testsvc.WaitFor(t, 30*time.Second, "offline status", func() error {
			if s := h.Status("gw-e2e"); s == nil || s.State != protocol.StateOffline {
				return fmt.Errorf("%+v", s)
			}
			return nil
		})
	})
}

// buildAgent builds the freshet-agent binary once per test run.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "freshet-agent")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/freshet-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

type readingKey struct {
	sensor, metric string
	t              int64
}

// readCommitLog parses the agent's commit log, ignoring a torn last line.
func readCommitLog(t *testing.T, path string) map[readingKey]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[readingKey]bool{}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF {
			return out // a line without its newline was cut by kill -9
		}
		if err != nil {
			t.Fatal(err)
		}
		var k readingKey
		var device, value string
		if _, err := fmt.Sscanf(strings.TrimSuffix(line, "\n"), "%s\t%s\t%s\t%d\t%s", &device, &k.sensor, &k.metric, &k.t, &value); err != nil {
			t.Fatalf("commit log line %q: %v", line, err)
		}
		out[k] = true
	}
}

// TestKill9 kills a real agent process with SIGKILL at random moments while
// it reads and sends; every reading it committed before each kill must
// reach the hub exactly once.
func TestKill9(t *testing.T) {
	bin := buildAgent(t)
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		h := testsvc.StartHubStub(t, b.URL())
		root, data := t.TempDir(), t.TempDir()
		for z := range 5 {
			if _, err := sysfs.NewThermalZone(root, z, "zone", 40+float64(z)); err != nil {
				t.Fatal(err)
			}
		}
		commitLog := filepath.Join(data, "commits.log")
		cfgText := "commit_log: " + commitLog + fmt.Sprintf(baseConfig, "gw-kill", data, root, b.URL(), h.Key.PubFile)
		for z := range 5 {
			cfgText += fmt.Sprintf("  - {name: z%d, type: cpu_temp, zone: %d, interval: 100ms}\n", z, z)
		}
		cfgPath := filepath.Join(data, "agent.yaml")
		os.WriteFile(cfgPath, []byte(cfgText), 0o644)
		r := rand.New(rand.NewPCG(7, uint64(len(b.Name))))
		start := func() (*exec.Cmd, *strings.Builder) {
			cmd := exec.Command(bin, "-config", cfgPath)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd, &out
		}
		for i := range 6 {
			cmd, out := start()
			time.Sleep(time.Duration(300+r.IntN(1200)) * time.Millisecond) // a random moment is the point of this test
			if cmd.ProcessState != nil {
				t.Fatalf("the agent exited by itself:\n%s", out)
			}
			cmd.Process.Signal(syscall.SIGKILL)
			if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("run %d did not die by the kill (%v):\n%s", i, err, out)
			}
			t.Logf("kill %d: %d readings in the commit log, %d applied", i+1, len(readCommitLog(t, commitLog)), h.Readings())
		}
		committed := readCommitLog(t, commitLog)
		cmd, out := start()
		if len(committed) < 100 {
			t.Fatalf("only %d readings committed across the kills", len(committed))
		}
		testsvc.WaitFor(t, 30*time.Second, "every committed reading applied", func() error {
			applied := map[readingKey]bool{}
			for _, b := range h.Applied() {
				for _, s := range b.Series {
					for _, ts := range s.Times {
						applied[readingKey{s.Sensor, s.Metric, ts}] = true
					}
				}
			}
			missing := 0
			for k := range committed {
				if !applied[k] {
					missing++
				}
			}
			if missing > 0 {
				return fmt.Errorf("%d of %d committed readings not applied", missing, len(committed))
			}
			return nil
		})
		// No reading applied twice, and one epoch throughout.
		seen := map[readingKey]bool{}
		epochs := map[uint64]bool{}
		for _, b := range h.Applied() {
			epochs[b.Epoch] = true
			for _, s := range b.Series {
				for _, ts := range s.Times {
					k := readingKey{s.Sensor, s.Metric, ts}
					if seen[k] {
						t.Fatalf("reading %v applied twice", k)
					}
					seen[k] = true
				}
			}
		}
		if len(epochs) != 1 {
			t.Fatalf("%d epochs: kill -9 must not start a new one", len(epochs))
		}
		testsvc.WaitFor(t, 30*time.Second, "the last run to commit", func() error {
			if n := len(readCommitLog(t, commitLog)); n <= len(committed) {
				return fmt.Errorf("commit log still at %d", n)
			}
			return nil
		})
		cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("SIGTERM exit: %v\n%s", err, out)
			}
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("no clean exit within 5 s of SIGTERM\n%s", out)
		}
		t.Logf("%d readings committed, %d applied, %d duplicate batches dropped by the hub", len(committed), len(seen), h.Dupes())
	})
}

// checkMetrics parses /metrics with Prometheus's own parser and checks every
// family's type and label names (what dashboards and alerts depend on), and
// a few values of a connected agent with a sensor named room.
func checkMetrics(t *testing.T, body string) {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	counter, gauge := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	for _, f := range []struct {
		name   string
		typ    dto.MetricType
		labels string // sorted
	}{
		{"freshet_agent_readings_total", counter, "fate"},
		{"freshet_agent_backlog", gauge, "unit"},
		{"freshet_agent_pending_readings", gauge, ""},
		{"freshet_agent_outbox_file_bytes", gauge, ""},
		{"freshet_agent_commits_total", counter, "result"},
		{"freshet_agent_batches_total", counter, "event"},
		{"freshet_agent_connected", gauge, ""},
		{"freshet_agent_connects_total", counter, "result"},
		{"freshet_agent_acks_total", counter, ""},
		{"freshet_agent_last_ack_age_seconds", gauge, ""},
		{"freshet_agent_outbox_reset", gauge, ""},
		{"freshet_agent_sensor_reads_total", counter, "sensor"},
		{"freshet_agent_sensor_errors_total", counter, "reason,sensor"},
	} {
		mf := mfs[f.name]
		if mf == nil {
			t.Errorf("/metrics lacks %s", f.name)
			continue
		}
		if mf.GetType() != f.typ {
			t.Errorf("%s is a %v, want a %v", f.name, mf.GetType(), f.typ)
		}
		for _, m := range mf.GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
			slices.Sort(names)
			if got := strings.Join(names, ","); got != f.labels {
				t.Errorf("%s has labels %q, want %q", f.name, got, f.labels)
			}
		}
	}
	value := func(name, label, v string) float64 {
		for _, m := range mfs[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == v {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
			if label == "" {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		return -1
	}
	if v := value("freshet_agent_readings_total", "fate", "committed"); v <= 0 {
		t.Errorf("committed readings: %v", v)
	}
	if v := value("freshet_agent_connected", "", ""); v != 1 {
		t.Errorf("connected: %v", v)
	}
	if v := value("freshet_agent_sensor_reads_total", "sensor", "room"); v <= 0 {
		t.Errorf("reads of sensor room: %v", v)
	}
}
