package hub_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent/forward"
	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/internal/agenttest"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// device is an agent's outbox and forwarder with a known set of readings.
type device struct {
	name string
	ob   *outbox.Outbox
	vals []float64 // 1 Hz from base
}

func startDevice(t *testing.T, name, brokerURL string, keys *protocol.AckKeys, n int, seed uint64) *device {
	t.Helper()
	// A clock a second ahead at every call: every commit finds the open batch old enough to seal.
	var tick atomic.Int64
	now := func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Second) }
	ob, err := outbox.Open(outbox.Options{Path: filepath.Join(t.TempDir(), "o.db"), Device: name, MaxBatchAge: time.Millisecond,
		Limits: protocol.Limits{MaxMessageBytes: 512}, NoSync: true, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	d := &device{name: name, ob: ob}
	r := rand.New(rand.NewPCG(seed, seed))
	rs := make([]protocol.Reading, n)
	for i := range rs {
		v, _ := protocol.Quantize(15+10*r.Float64(), 0.01)
		d.vals = append(d.vals, v)
		rs[i] = protocol.Reading{Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01,
			Time: base.Add(time.Duration(i) * time.Second).UnixNano(), Float: v}
	}
	ob.Add(rs)
	ob.Commit()
	ob.Commit() // the clock has moved on: this one seals the tail
	topics, _ := protocol.NewTopics("")
	agenttest.Run(t, ob, forward.Options{Broker: brokerURL, Device: name, Topics: topics, AckTimeout: time.Second,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond, Poll: 50 * time.Millisecond, AckKeys: keys}, 0)
	return d
}

// TestHubKill9 kills a real freshet-hub process at each step boundary of
// the pipeline (after the raw write, after the ledger commit, before the
// ack), several times, while three agents send; afterwards InfluxDB holds
// every reading exactly once and every 1 m aggregate equals the oracle's.
func TestHubKill9(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "freshet-hub")
	if out, err := exec.Command("go", "build", "-tags", "failpoint", "-o", bin, "./cmd/freshet-hub").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	testsvc.EachBroker(t, func(t *testing.T, b *testsvc.Broker) {
		ix := testsvc.StartInflux(t)
		db := ix.NewDatabase(t)
		dataDir := t.TempDir()
		key := testsvc.NewAckKey(t)
		cfgPath := filepath.Join(dataDir, "hub.yaml")
		os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
broker: {url: %q, client_id: hub-kill}
influx: {url: %q, bucket: %q, token_env: FRESHET_TEST_INFLUX_TOKEN}
windows: {sizes: [1m], idle_timeout: 1s}
http: {listen: "off"}
ack_key_file: %s
`, dataDir, b.URL(), ix.URL, db+"/autogen", key.KeyFile)), 0o644)
		run := func(failpoint string) (*exec.Cmd, *strings.Builder) {
			cmd := exec.Command(bin, "-config", cfgPath)
			cmd.Env = append(os.Environ(), "FRESHET_TEST_INFLUX_TOKEN="+ix.Token, "FRESHET_HUB_FAILPOINT="+failpoint)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd, &out
		}
		var devices []*device
		for i := range 3 {
			devices = append(devices, startDevice(t, fmt.Sprintf("gw-k%d", i), b.URL(), key.Keys, 3600, uint64(i+1)))
		}
		// Small hit counts: one run may apply many batches in one group
		// commit, so large counts could outlast the data.
		crashes := 0
		for _, fp := range []string{"after-raw-write:1", "after-commit:1", "before-ack:1", "after-raw-write:3", "after-commit:2", "before-ack:4"} {
			cmd, out := run(fp)
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			deadline := time.After(60 * time.Second)
		wait:
			for {
				select {
				case err := <-exited:
					if err == nil || !strings.Contains(err.Error(), "killed") {
						t.Fatalf("hub with failpoint %s exited with %v, not by the kill:\n%s", fp, err, out)
					}
					crashes++
					break wait
				case <-time.After(200 * time.Millisecond):
					drained := true
					for _, d := range devices {
						drained = drained && d.ob.Stats().Backlog.Readings == 0
					}
					if drained {
						cmd.Process.Kill()
						<-exited
						t.Logf("everything acked before failpoint %s was reached", fp)
						break wait
					}
				case <-deadline:
					cmd.Process.Kill()
					t.Fatalf("failpoint %s never reached:\n%s", fp, out)
				}
			}
		}
		if crashes < 4 {
			t.Fatalf("only %d crashes happened", crashes)
		}
		t.Logf("%d crashes at step boundaries", crashes)
		cmd, out := run("")
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		testsvc.WaitFor(t, 90*time.Second, "every batch acked", func() error {
			for _, d := range devices {
				if st := d.ob.Stats(); st.Backlog.Readings != 0 {
					return fmt.Errorf("%s: %d readings unacked", d.name, st.Backlog.Readings)
				}
			}
			return nil
		})
		for _, d := range devices {
			s, err := ix.Query(db, fmt.Sprintf(`SELECT count(value) FROM temperature WHERE device = '%s'`, d.name))
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := s[0].Values[0][1].(json.Number).Int64(); n != int64(len(d.vals)) {
				t.Fatalf("%s: %d raw rows, want %d\n%s", d.name, n, len(d.vals), out)
			}
			testsvc.WaitFor(t, 30*time.Second, d.name+" aggregates equal to the oracle", func() error {
				s, err := ix.Query(db, fmt.Sprintf(`SELECT "count","sum","min","max","first","last" FROM temperature_1m WHERE device = '%s'`, d.name))
				if err != nil {
					return err
				}
				if len(s) == 0 || len(s[0].Values) != len(d.vals)/60 {
					return fmt.Errorf("windows not all written yet")
				}
				for _, v := range s[0].Values {
					ts, _ := v[0].(json.Number).Int64()
					m := int((ts - base.UnixNano()) / int64(time.Minute))
					w := d.vals[m*60 : m*60+60]
					sum, lo, hi := 0.0, w[0], w[0]
					for _, x := range w {
						sum += x
						lo, hi = min(lo, x), max(hi, x)
					}
					got := fmt.Sprint(v[1:])
					want := fmt.Sprint([]any{json.Number("60"), sum, lo, hi, w[0], w[59]})
					if strings.ReplaceAll(got, " ", "") != strings.ReplaceAll(want, " ", "") {
						return fmt.Errorf("window %d: got %s, oracle %s", m, got, want)
					}
				}
				return nil
			})
		}
	})
}
