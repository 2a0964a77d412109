package hub_test

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// BenchmarkEndToEndCPU: 1 M readings from 8 devices in full batches through
// the hub's embedded broker into a real influxd (raw points and 1 m / 1 h
// aggregates). Reports the CPU seconds this process spent per million
// readings: the hub, its embedded broker and the test's publisher (an upper
// bound for the hub); influxd runs in its own process and is not counted.
// Each iteration sends new devices' readings, so that -benchtime Nx
// averages N equal runs (this figure is noisy on a small machine).
func BenchmarkEndToEndCPU(b *testing.B) {
	// freshet-hub runs at its memory.gc_percent, DefaultGCPercent unless
	// configured; the hub here runs in the test process, so set it alike.
	defer debug.SetGCPercent(debug.SetGCPercent(hub.DefaultGCPercent))
	r := startHub(b)
	const devices, perDevice = 8, 125_000
	vals := make([]float64, perDevice)
	for i := range vals {
		vals[i] = 20 + float64(i%97)/100
	}
	var cpu, elapsed time.Duration
	n := 0
	for iter := 0; b.Loop(); iter++ {
		b.StopTimer()
		var payloads [][]byte
		var names []string
		for d := range devices {
			name := fmt.Sprintf("gw-cpu-%d-%d", iter, d)
			for _, p := range batches(b, name, 1, 1, base.Add(-48*time.Hour), vals, 30000) {
				payloads = append(payloads, p)
				names = append(names, name)
			}
		}
		b.StartTimer()
		var before, after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		start := time.Now()
		for i, p := range payloads {
			r.publish(names[i], p)
		}
		n += devices * perDevice
		testsvc.WaitFor(b, 5*time.Minute, "all readings stored", func() error {
			if got := uint64(promtest.ToFloat64(r.m().Readings)); got < uint64(n) {
				return fmt.Errorf("%d of %d stored", got, n)
			}
			return nil
		})
		elapsed += time.Since(start)
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu += time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	}
	b.ReportMetric(cpu.Seconds()/float64(n)*1e6, "cpu-s/1M-readings")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "readings/s")
}

// BenchmarkAffinityCPU: the CPU per reading of two hubs sharing a fleet
// under per-device affinity (a shared group on the first hub's embedded
// broker, which keeps each device on one hub), against one hub, for the
// same 1 M readings from 8 devices into a real influxd. Runs alternate one
// hub and two, and each reports the CPU seconds this process spent per
// million readings (the hubs, the broker and the publisher); extra-% is
// the two hubs' cost above one hub's.
func BenchmarkAffinityCPU(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(hub.DefaultGCPercent))
	ix := testsvc.StartInflux(b)
	const devices, perDevice = 8, 125_000
	vals := make([]float64, perDevice)
	for i := range vals {
		vals[i] = 20 + float64(i%97)/100
	}
	var cpu [2]time.Duration
	var n [2]int
	for iter := 0; b.Loop(); iter++ {
		b.StopTimer()
		k := iter % 2 // one hub, then two
		hubs := startCluster(b, ix, k+1)
		var payloads [][]byte
		var names []string
		for d := range devices {
			name := fmt.Sprintf("gw-aff-%d-%d", iter, d)
			for _, p := range batches(b, name, 1, 1, base.Add(-48*time.Hour), vals, 30000) {
				payloads, names = append(payloads, p), append(names, name)
			}
		}
		pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + hubs[0].BrokerAddr()).SetClientID("bench-publisher").SetAutoReconnect(false))
		if tok := pub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		b.StartTimer()
		var before, after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		for i, p := range payloads {
			if tok := pub.Publish("freshet/v1/"+names[i]+"/batch", 1, false, p); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
		}
		testsvc.WaitFor(b, 5*time.Minute, "all readings stored", func() error {
			got := 0.0
			for _, h := range hubs {
				got += promtest.ToFloat64(h.Pipeline().Metrics().Readings)
			}
			if got < devices*perDevice {
				return fmt.Errorf("%v of %d stored", got, devices*perDevice)
			}
			return nil
		})
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		b.StopTimer()
		cpu[k] += time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		n[k] += devices * perDevice
		pub.Disconnect(100)
		b.StartTimer()
	}
	if n[0] == 0 || n[1] == 0 {
		b.Skip("needs -benchtime 2x or more: one run with one hub and one with two")
	}
	one, two := cpu[0].Seconds()/float64(n[0])*1e6, cpu[1].Seconds()/float64(n[1])*1e6
	b.ReportMetric(one, "cpu-s/1M-one-hub")
	b.ReportMetric(two, "cpu-s/1M-two-hubs")
	b.ReportMetric(100*(two/one-1), "extra-%")
}

// startCluster runs n hubs in this process sharing the group "hubs" on the
// first hub's embedded broker, writing to a fresh database of ix; they stop
// when tb ends.
func startCluster(tb testing.TB, ix *testsvc.Influx, n int) []*hub.Hub {
	tb.Helper()
	db := ix.NewDatabase(tb)
	tb.Setenv("FRESHET_TEST_INFLUX_TOKEN", ix.Token)
	var hubs []*hub.Hub
	for i := range n {
		broker := `{embedded: {listen: "127.0.0.1:0"}, shared_group: hubs, client_id: hub-0}`
		if i > 0 {
			broker = fmt.Sprintf(`{url: "tcp://%s", shared_group: hubs, client_id: hub-%d}`, hubs[0].BrokerAddr(), i)
		}
		cfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`
data_dir: %s
broker: %s
influx: {url: %q, bucket: %q, token_env: FRESHET_TEST_INFLUX_TOKEN}
windows: {sizes: [1m, 1h], allowed_lateness: 2m, idle_timeout: 1s}
http: {listen: "off"}
ack_key_file: %s
`, tb.TempDir(), broker, ix.URL, db+"/autogen", testsvc.NewAckKey(tb).KeyFile)))
		if err != nil {
			tb.Fatal(err)
		}
		h, err := hub.New(cfg, hub.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); h.Run(ctx) }()
		tb.Cleanup(func() { cancel(); <-done })
		testsvc.WaitFor(tb, 10*time.Second, "hub connected", func() error {
			if !h.Pipeline().Connected() {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		hubs = append(hubs, h)
	}
	return hubs
}
