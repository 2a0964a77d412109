package hub_test

import (
	"fmt"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

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
