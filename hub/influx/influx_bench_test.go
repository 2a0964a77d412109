package influx

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/internal/testsvc"
)

// bme280 returns n readings of BME280s on devices gateways, shaped as the
// hub writes them: one point per reading, tags device, sensor and unit. With
// grouped the readings come series by series, as Batch.AppendReadings gives
// them; otherwise every point is of another series than the one before.
func bme280(n, devices int, grouped bool) []Point {
	metrics := [...]struct {
		name, unit string
		base       float64
	}{{"temperature", "C", 21.37}, {"humidity", "%", 45.2}, {"pressure", "hPa", 1013.25}}
	t0 := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	series := len(metrics) * devices
	ps := make([]Point, n)
	for i := range ps {
		s, k := i%series, i/series // series s, its k-th reading
		if grouped {
			per := (n + series - 1) / series
			s, k = i/per, i%per
		}
		m := metrics[s%len(metrics)]
		ps[i] = Point{
			Measurement: m.name,
			Tags:        []Tag{{"device", fmt.Sprintf("gw-%04d", s/len(metrics))}, {"sensor", "bme280-0x76"}, {"unit", m.unit}},
			Fields:      []Field{{"value", m.base + float64(k%997)/100}},
			Time:        t0 + int64(k)*int64(time.Second),
		}
	}
	return ps
}

// BenchmarkRender is the CPU cost of line protocol alone.
func BenchmarkRender(b *testing.B) {
	b.Run("grouped", func(b *testing.B) { benchRender(b, bme280(1000, 10, true)) })
	b.Run("interleaved", func(b *testing.B) { benchRender(b, bme280(1000, 10, false)) })
}

// BenchmarkRenderSeries renders the grouped readings through Lines.Series:
// the way the hub renders raw readings.
func BenchmarkRenderSeries(b *testing.B) {
	ps := bme280(1000, 10, true)
	var l Lines
	b.ReportAllocs()
	for b.Loop() {
		l.Reset()
		for i := range ps {
			p := &ps[i]
			if i == 0 || !sameSeries(&ps[i-1], p) {
				l.Series(p.Measurement, p.Tags, "value")
			}
			v := p.Fields[0].Value.(float64)
			l.Decimal(Decimal{Units: int64(math.Round(v * 100)), Exp: -2}, p.Time)
		}
	}
	if l.invalid > 0 {
		b.Fatal(l.first)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ps)), "ns/point")
	b.SetBytes(int64(len(l.buf)))
}

func benchRender(b *testing.B, ps []Point) {
	l := &lineBuf{buf: make([]byte, 0, 128*len(ps)), ends: make([]int, 0, len(ps))}
	b.ReportAllocs()
	for b.Loop() {
		l.reset()
		for i := range ps {
			if err := l.add(&ps[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ps)), "ns/point")
	b.SetBytes(int64(len(l.buf)))
}

// BenchmarkWrite writes 1000-point batches into a real influxd.
func BenchmarkWrite(b *testing.B) {
	in := testsvc.StartInflux(b)
	db := in.NewDatabase(b)
	w, err := New(Options{URL: in.URL, Bucket: db + "/autogen", Token: in.Token, BatchLines: 1000})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	ps := bme280(1000, 10, true)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range ps {
			ps[i].Time += int64(time.Minute) // new points each round, not overwrites
		}
		if err := w.Write(context.Background(), ps); err != nil {
			b.Fatal(err)
		}
		n += len(ps)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "points/s")
}
