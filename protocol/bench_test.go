package protocol_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/freshet-iot/freshet/protocol"
)

// bme280Batch is the realistic workload of the wire-format goal: a BME280
// read at 1 Hz (timestamps in ms with a few ms of scheduling jitter),
// temperature (°C), humidity (%) and pressure (hPa) at resolution 0.01,
// with sensor noise, samples timestamps per series.
func bme280Batch(samples int) *protocol.Batch {
	r := rand.New(rand.NewPCG(42, 42))
	b := &protocol.Batch{Device: "gw-0001", Epoch: 0x5eed5eed5eed5eed, Seq: 123456, SealTime: 1_700_000_600_000_000_000}
	t0 := int64(1_700_000_000_000) // ms
	times := make([]int64, samples)
	for i := range times {
		times[i] = (t0 + int64(i)*1000 + r.Int64N(5) - 2) * 1e6
	}
	for _, m := range []struct {
		metric, unit string
		base, noise  float64
	}{{"temperature", "C", 21.5, 0.02}, {"humidity", "%", 45.2, 0.05}, {"pressure", "hPa", 1013.25, 0.02}} {
		s := protocol.Series{Sensor: "bme280-76", Metric: m.metric, Unit: m.unit, Type: protocol.Float, Resolution: 0.01, Times: times}
		for i := range samples {
			v := m.base + 0.5*math.Sin(float64(i)/3600) + r.NormFloat64()*m.noise
			q, _ := protocol.Quantize(v, 0.01)
			s.Floats = append(s.Floats, q)
		}
		b.Series = append(b.Series, s)
	}
	return b
}

// lineProtocolBytes is the size of the same readings as InfluxDB line
// protocol with the tags the hub writes (one line per reading, ns precision).
func lineProtocolBytes(b *protocol.Batch) int {
	n := 0
	for _, s := range b.Series {
		for i, t := range s.Times {
			line := s.Metric + ",device=" + b.Device + ",sensor=" + s.Sensor + ",unit=" + s.Unit +
				" value=" + strconv.FormatFloat(s.Floats[i], 'f', -1, 64) + " " + strconv.FormatInt(t, 10) + "\n"
			n += len(line)
		}
	}
	return n
}

var workloads = []int{500, 167}

func BenchmarkEncodeBME280(b *testing.B) {
	for _, samples := range workloads {
		b.Run(fmt.Sprintf("samples=%d", samples), func(b *testing.B) {
			batch := bme280Batch(samples)
			c := protocol.NewCodec(protocol.Limits{})
			data, err := c.EncodeBatch(batch)
			if err != nil {
				b.Fatal(err)
			}
			n := batch.Readings()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.EncodeBatch(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(float64(len(data))/float64(n), "B/reading")
			b.ReportMetric(float64(lineProtocolBytes(batch))/float64(n), "lineproto-B/reading")
		})
	}
}

func BenchmarkDecodeBME280(b *testing.B) {
	for _, samples := range workloads {
		b.Run(fmt.Sprintf("samples=%d", samples), func(b *testing.B) {
			batch := bme280Batch(samples)
			c := protocol.NewCodec(protocol.Limits{})
			data, err := c.EncodeBatch(batch)
			if err != nil {
				b.Fatal(err)
			}
			n := batch.Readings()
			var dst protocol.Batch
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := c.DecodeBatch(data, &dst); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(float64(len(data))/float64(n), "B/reading")
		})
	}
}

func BenchmarkPackerBME280(b *testing.B) {
	batch := bme280Batch(500)
	var readings []protocol.Reading
	for i := range batch.Series[0].Times {
		for _, s := range batch.Series {
			readings = append(readings, protocol.Reading{Sensor: s.Sensor, Metric: s.Metric, Unit: s.Unit, Type: s.Type, Resolution: s.Resolution, Time: s.Times[i], Float: s.Floats[i]})
		}
	}
	p, _ := protocol.NewPacker("gw-0001", protocol.Limits{})
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		for i := range readings {
			if err := p.Add(&readings[i]); err != nil {
				b.Fatal(err)
			}
		}
		seq++
		if _, _, err := p.Seal(protocol.Header{Epoch: 1, Seq: seq, SealTime: 1}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(readings))*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}
