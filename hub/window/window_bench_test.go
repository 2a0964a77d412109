package window

import (
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// bme280 returns a BME280-like batch: temperature, humidity and pressure
// at 1 Hz for n seconds from t0 (3n readings).
func bme280(dev string, t0 int64, n int) *protocol.Batch {
	b := &protocol.Batch{Device: dev, Epoch: 1, Seq: 1}
	for k, m := range []string{"temperature", "humidity", "pressure"} {
		ts, vs := regular(t0, time.Second, n, func(i int) float64 { return float64(k*100) + temp(i) })
		b.Series = append(b.Series, floatSeries("bme280-0x76", m, "", nil, ts, vs))
	}
	return b
}

func shift(b *protocol.Batch, d time.Duration) {
	for i := range b.Series {
		for j := range b.Series[i].Times {
			b.Series[i].Times[j] += int64(d)
		}
	}
}

// BenchmarkMerge merges a 1500-reading batch per transaction (bbolt
// without fsync): "fresh" into minutes not seen before, "rewrite" into
// minutes that hold readings at the same times, every value changed (the
// costliest merge: each blob decoded, merged and rewritten).
func BenchmarkMerge(b *testing.B) {
	for _, rewrite := range []bool{false, true} {
		b.Run(map[bool]string{false: "fresh", true: "rewrite"}[rewrite], func(b *testing.B) {
			e := newEnv(b, Options{})
			batch := bme280("gw", testBase.UnixNano(), 500)
			wall := testBase
			for b.Loop() {
				e.merge(batch, wall)
				if rewrite {
					for i := range batch.Series {
						for j := range batch.Series[i].Floats {
							batch.Series[i].Floats[j]++
						}
					}
				} else {
					wall = wall.Add(500 * time.Second)
					shift(batch, 500*time.Second)
				}
			}
			b.ReportMetric(float64(b.N*batch.Readings())/b.Elapsed().Seconds(), "readings/s")
		})
	}
}

// BenchmarkDue computes closed windows of 20 devices × 3 series × 2 h at
// 1 Hz, 500 per call; the cost per window is mostly reading its blobs (1
// for a minute window, 60 for an hour).
func BenchmarkDue(b *testing.B) {
	for _, size := range []time.Duration{time.Minute, time.Hour} {
		b.Run(size.String(), func(b *testing.B) {
			e := newEnv(b, Options{Sizes: []time.Duration{size}})
			for d := range 20 {
				batch := bme280(fmt.Sprintf("gw-%02d", d), testBase.UnixNano(), 600)
				for range 12 {
					e.merge(batch, testBase.Add(2*time.Hour))
					shift(batch, 600*time.Second)
				}
			}
			now := testBase.Add(3 * time.Hour)
			windows := 0
			for b.Loop() {
				if err := e.db.View(func(tx *bolt.Tx) error {
					aggs, err := e.s.Due(tx, now, 500)
					windows += len(aggs)
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(windows), "ns/window")
		})
	}
}
