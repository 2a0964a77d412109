package outbox_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/protocol"
)

// BenchmarkDurableIngest: readings added and committed with fsync, in
// commits of 10,000 readings (a busy second), including sealing into
// batches and deleting settled ones. Reports readings/s on one goroutine.
func BenchmarkDurableIngest(b *testing.B) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	ob, err := outbox.Open(outbox.Options{Path: filepath.Join(b.TempDir(), "o.db"), Device: "gw-1", Now: clk.Now, MaxBatchAge: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer ob.Close()
	const perCommit = 10_000
	rs := make([]protocol.Reading, perCommit)
	metrics := []string{"temperature", "humidity", "pressure"}
	n := 0
	b.ResetTimer()
	for b.Loop() {
		for i := range rs {
			rs[i] = protocol.Reading{Sensor: "bme280", Metric: metrics[i%3], Unit: "x", Type: protocol.Float, Resolution: 0.01,
				Time: int64(1_700_000_000_000+n/3) * 1e6, Float: 20 + float64(n%97)/100}
			n++
		}
		ob.Add(rs)
		clk.Add(time.Second)
		if err := ob.Commit(); err != nil {
			b.Fatal(err)
		}
		// Settle everything sealed so far, as a connected hub would.
		st := ob.Stats()
		if st.LastSeq > 0 {
			ob.Ack(&protocol.Ack{Device: "gw-1", Epoch: st.Epoch, Through: st.LastSeq})
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
	st := ob.Stats()
	b.ReportMetric(float64(st.FileBytes), "file-bytes")
}
