package ingest

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/internal/bolttest"
	"github.com/freshet-iot/freshet/protocol"
)

// BenchmarkPipeline measures the hub's in-process pipeline without
// InfluxDB: decode and validate, then the group commit of ledger and window
// merge (bbolt without fsync), 16 batches of 1,500 BME280-like readings
// (3 series at 1 Hz) per commit, from 16 devices. Reports readings/s on one
// goroutine.
func BenchmarkPipeline(b *testing.B) {
	db := bolttest.Open(b, &bolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	win, _ := window.New(window.Options{})
	h := &Pipeline{o: Options{DB: db, Windows: win, Limits: protocol.Limits{}.WithDefaults(), Now: time.Now, Fleet: fleet.New(fleet.Options{}), Findings: nobody{}},
		metrics: newMetrics(nil, nil, nil, nil)}
	db.Update(func(tx *bolt.Tx) error { return win.Init(tx) })
	db.Update(func(tx *bolt.Tx) error { return ledger.Init(tx) })
	const devices, samples = 16, 500
	payloads := make([][][]byte, devices)
	r := rand.New(rand.NewPCG(1, 2))
	t0 := time.Now().Add(-30 * 24 * time.Hour).Truncate(time.Second) // every wrap stays in the past
	rounds := 40
	for d := range devices {
		p, _ := protocol.NewPacker(fmt.Sprintf("gw-%d", d), protocol.Limits{})
		for round := range rounds {
			for i := range samples {
				ts := t0.Add(time.Duration(round*samples+i) * time.Second).UnixNano()
				for _, m := range []string{"temperature", "humidity", "pressure"} {
					p.Add(&protocol.Reading{Sensor: "bme280", Metric: m, Type: protocol.Float, Resolution: 0.01, Time: ts, Float: 20 + r.Float64()})
				}
			}
			_, data, err := p.Seal(protocol.Header{Epoch: 1, Seq: uint64(round + 1), SealTime: t0.UnixNano()})
			if err != nil {
				b.Fatal(err)
			}
			payloads[d] = append(payloads[d], data)
		}
	}
	codec := protocol.NewCodec(protocol.Limits{})
	n := 0
	round := 0
	b.ResetTimer()
	for b.Loop() {
		if round == rounds {
			b.StopTimer() // fresh epochs so every batch is new work
			for d := range devices {
				for i, data := range payloads[d] {
					var bt protocol.Batch
					codec.DecodeBatch(data, &bt)
					bt.Epoch++
					for k := range bt.Series { // new minutes: every merge is new work
						for j := range bt.Series[k].Times {
							bt.Series[k].Times[j] += int64(rounds*samples) * int64(time.Second)
						}
					}
					payloads[d][i], _ = codec.EncodeBatch(&bt)
				}
			}
			round = 0
			b.StartTimer()
		}
		group := make([]*record, 0, devices)
		for d := range devices {
			bt := new(protocol.Batch)
			if err := codec.DecodeBatch(payloads[d][round], bt); err != nil {
				b.Fatal(err)
			}
			group = append(group, &record{kind: kindApply, batch: bt, device: bt.Device, epoch: bt.Epoch, seq: bt.Seq})
			n += bt.Readings()
		}
		if err := h.commit(group); err != nil {
			b.Fatal(err)
		}
		round++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
}
