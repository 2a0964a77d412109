package forward_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent/forward"
	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/internal/agenttest"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// BenchmarkDrain: an outbox holding a backlog of 1 M readings (full 64 KiB
// batches, a BME280-like workload) is drained through the embedded broker
// to an acking hub stub with the default window of 8. Reports readings/s
// until every batch is acked and deleted.
func BenchmarkDrain(b *testing.B) {
	broker := testsvc.StartMochi(b)
	h := testsvc.StartHubStub(b, broker.URL())
	topics, _ := protocol.NewTopics("")
	var clock atomic.Int64 // a second ahead at every call: every commit can seal
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		device := fmt.Sprintf("gw-drain-%d", i)
		ob, err := outbox.Open(outbox.Options{Path: filepath.Join(b.TempDir(), "o.db"), Device: device, MaxBytes: 1 << 30, MaxBatchAge: time.Millisecond,
			Now: func() time.Time { return time.Now().Add(time.Duration(clock.Add(1)) * time.Second) }})
		if err != nil {
			b.Fatal(err)
		}
		const n = 1_000_000
		metrics := []string{"temperature", "humidity", "pressure"}
		rs := make([]protocol.Reading, 0, 100_000)
		for k := range n {
			rs = append(rs, protocol.Reading{Sensor: "bme280", Metric: metrics[k%3], Type: protocol.Float, Resolution: 0.01,
				Time: (1_700_000_000_000 + int64(k/3)*1000) * 1e6, Float: 20 + float64(k%37)/100})
			if len(rs) == cap(rs) {
				ob.Add(rs)
				if err := ob.Commit(); err != nil {
					b.Fatal(err)
				}
				rs = rs[:0]
			}
		}
		if err := ob.Commit(); err != nil { // the clock has moved on: this one seals the tail
			b.Fatal(err)
		}
		before := h.Readings()
		b.StartTimer()
		start := time.Now()
		agent := agenttest.Run(b, ob, forward.Options{Broker: broker.URL(), Device: device, Topics: topics, Poll: 10 * time.Millisecond, AckKeys: h.Key.Keys}, 0)
		testsvc.WaitFor(b, 5*time.Minute, "backlog drained", func() error {
			if st := ob.Stats(); st.Backlog.Readings != 0 {
				return fmt.Errorf("%d readings left", st.Backlog.Readings)
			}
			return nil
		})
		elapsed := time.Since(start)
		b.StopTimer()
		agent.Stop()
		if got := h.Readings() - before; got != n {
			b.Fatalf("hub applied %d readings, want %d", got, n)
		}
		b.ReportMetric(n/elapsed.Seconds(), "readings/s")
		b.StartTimer()
	}
}
