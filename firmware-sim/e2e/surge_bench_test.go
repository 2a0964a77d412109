package e2e

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/surge"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// The benchmark's surge: 10,000 gateways, each back with an hour of one
// reading every 10 s that its agent sealed every 5 minutes (max_batch_age
// 5m): 12 batches of 30 readings, 3.6 M readings in all, and with the
// agents' window of 8 the broker holds up to 80,000 batches for the hub.
const (
	benchSurgeDevices  = 10000
	benchSurgeBatches  = 12
	benchSurgeReadings = 30
)

// surgeMemLimit is the hub's memory.limit per broker: with Mosquitto,
// deploy/k8s's; with the embedded broker the hub's process holds 10,000
// connections, more than that limit (README.md "Surges"), and runs
// without one.
var surgeMemLimit = map[string]string{"embedded": "0", "mosquitto": "176MiB"}

// BenchmarkSurge: 10,000 gateways reconnect within 10 s, through each
// broker, to one hub (the real binary) and one influxd. Around the surge,
// the same readings go straight to influxd as line protocol (4 writers of
// 5,000 lines, as the hub writes them) to measure influxd's own limit in
// the same run, before and after, on fresh databases; x-influxd is the
// surge's rate over the mean of the two.
//
//	go test ./firmware-sim/e2e -run '^$' -bench Surge -benchtime 1x -timeout 30m
func BenchmarkSurge(b *testing.B) {
	raiseFileLimit(b, benchSurgeDevices)
	hubBin := buildHub(b)
	ix := testsvc.StartInflux(b)
	for _, name := range []string{"embedded", "mosquitto"} {
		b.Run("broker="+name, func(b *testing.B) {
			for b.Loop() {
				o := surge.Options{Devices: benchSurgeDevices, Batches: benchSurgeBatches, Readings: benchSurgeReadings,
					Window: 8, AckTimeout: 30 * time.Second, ConnectWithin: 10 * time.Second}
				before := influxLimit(b, ix, o)
				res := runSurge(b, ix, hubBin, name, o, surgeMemLimit[name], false)
				after := influxLimit(b, ix, o)
				if res.err != nil {
					b.Fatal(res.err)
				}
				n := float64(res.surge.Readings)
				rate := n / res.surge.Elapsed.Seconds()
				b.ReportMetric(res.surge.Elapsed.Seconds(), "drain-s")
				b.ReportMetric(rate, "readings/s")
				b.ReportMetric(rate/((before+after)/2), "x-influxd")
				b.ReportMetric((before+after)/2, "influxd-readings/s")
				b.ReportMetric(res.connects-1, "hub-reconnects")
				b.ReportMetric(float64(res.surge.Resends), "resends")
				b.ReportMetric(res.brokerDropped, "broker-dropped")
				b.ReportMetric(res.applied, "applied")
				b.ReportMetric(res.duplicates, "duplicates")
				b.ReportMetric(res.stored, "stored")
				b.ReportMetric(float64(res.hubPeakRSS)/(1<<20), "hub-peak-RSS-MB")
				b.ReportMetric(float64(res.hubPeakAnon)/(1<<20), "hub-peak-anon-MB")
				b.ReportMetric(res.hubCPU.Seconds()/(n/1e6), "hub-cpu-s/1M")
				b.ReportMetric(res.influxCPU.Seconds()/(n/1e6), "influxd-cpu-s/1M")
				b.ReportMetric(res.simCPU.Seconds()/(n/1e6), "gateways-cpu-s/1M")
				if name == "mosquitto" {
					b.ReportMetric(res.mosquittoCPU.Seconds()/(n/1e6), "mosquitto-cpu-s/1M")
				}
				b.ReportMetric(res.surge.AckP99.Seconds(), "ack-p99-s")
				if name == "embedded" {
					b.ReportMetric(res.held, "held-publishes")
				}
				b.Logf("%s: drained %.1f M readings in %v: %.0f readings/s, %.2f of influxd's %.0f (%.0f before, %.0f after); %v hub reconnects, %d resends, %v dropped by the broker; hub peak RSS %.0f MB",
					name, n/1e6, res.surge.Elapsed.Round(time.Millisecond), rate, rate/((before+after)/2), (before+after)/2, before, after,
					res.connects-1, res.surge.Resends, res.brokerDropped, float64(res.hubPeakRSS)/(1<<20))
			}
		})
	}
}

// influxLimit writes the surge's readings, rendered as the hub renders
// them, straight into a fresh database with 4 concurrent writers of 5,000
// lines, and returns the readings per second influxd took.
func influxLimit(tb testing.TB, ix *testsvc.Influx, o surge.Options) float64 {
	tb.Helper()
	if err := o.SetDefaults(); err != nil {
		tb.Fatal(err)
	}
	db, err := ix.NewDatabaseName()
	if err != nil {
		tb.Fatal(err)
	}
	w, err := influx.New(influx.Options{URL: ix.URL, Bucket: db + "/autogen", Token: ix.Token, BatchLines: 5000})
	if err != nil {
		tb.Fatal(err)
	}
	defer w.Close()
	const writers = 4
	perGroup := max(1, 5000/o.Readings) // batches in one 5,000-line write
	var next int
	var mu sync.Mutex
	take := func() (int, bool) { // the next group's first batch index
		mu.Lock()
		defer mu.Unlock()
		i := next
		next += perGroup
		return i, i < o.Devices*o.Batches
	}
	errs := make(chan error, writers)
	start := time.Now()
	for range writers {
		go func() {
			l := new(influx.Lines)
			for {
				first, ok := take()
				if !ok {
					errs <- nil
					return
				}
				l.Reset()
				for k := first; k < min(first+perGroup, o.Devices*o.Batches); k++ {
					schema.RawLines(l, o.Batch(k/o.Batches, uint64(k%o.Batches+1)))
				}
				if err := w.WriteLines(context.Background(), l); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			tb.Fatal(err)
		}
	}
	return float64(o.Devices*o.Batches*o.Readings) / time.Since(start).Seconds()
}

// raiseFileLimit lets this process, and the brokers and hubs it starts,
// hold a connection per gateway (children inherit the raised limit).
func raiseFileLimit(tb testing.TB, gateways int) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		tb.Fatal(err)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		tb.Fatal(err)
	}
	if need := uint64(gateways) + 1000; l.Cur < need {
		tb.Fatalf("open files limited to %d, %d gateways need %d: raise the hard limit (ulimit -Hn)", l.Cur, gateways, need)
	}
}
