package web

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/quality"
)

func TestOffsetNeverNegativeZero(t *testing.T) {
	for in, want := range map[float64]string{-0.04: "0.0 s", 0.04: "0.0 s", 0: "0.0 s", -0.05: "-0.1 s", 2: "+2.0 s", -3600: "-3600.0 s"} {
		if got := offset(in); got != want {
			t.Errorf("offset(%v) = %q, want %q", in, got, want)
		}
	}
}

// Two sensors of one device are two lines on one scale, never one line
// jumping between them.
func TestSparklineOneLinePerSensor(t *testing.T) {
	series := []fleet.Series{
		{Sensor: "cpu", Metric: "temperature", Recent: []fleet.Point{{T: 1e9, V: 48}, {T: 2e9, V: 48.5}, {T: 3e9, V: 47.9}}},
		{Sensor: "bme280", Metric: "temperature", Recent: []fleet.Point{{T: 1e9, V: 21}, {T: 2e9, V: 21.1}, {T: 3e9, V: 21.2}}},
		{Sensor: "one-reading", Metric: "temperature", Recent: []fleet.Point{{T: 1e9, V: 5}}},
	}
	svg := string(sparkline(series))
	if n := strings.Count(svg, "<polyline"); n != 2 {
		t.Fatalf("%d lines, want 2 (a series needs two readings): %s", n, svg)
	}
	for _, s := range []string{"<title>cpu</title>", "<title>bme280</title>"} {
		if !strings.Contains(svg, s) {
			t.Errorf("no %s in %s", s, svg)
		}
	}
	// Each line has its own three points: the CPU zone at the top (y 2..),
	// the BME280 at the bottom (..26).
	for _, line := range strings.Split(svg, "<polyline")[1:] {
		pts := strings.Fields(line[strings.Index(line, `"`)+1 : strings.Index(line, `">`)])
		if len(pts) != 3 {
			t.Errorf("line with %d points: %s", len(pts), line)
		}
	}
	if got := last(series); got != "47.90 / 21.20 / 5.00" {
		t.Errorf("last values %q", got)
	}
	if sparkline(nil) != "" {
		t.Error("a device without readings gets a sparkline")
	}
}

// The fleet table puts offline devices first, then those with open
// findings; the attention line says what needs attention in words.
func TestAttention(t *testing.T) {
	ds := []fleet.Device{
		{Device: "a-fine", State: "online"},
		{Device: "b-stuck", State: "online", Backlog: fleet.Backlog{Readings: 300},
			Findings: []fleet.Finding{{Kind: quality.Stuck}, {Kind: quality.Silent}}},
		{Device: "c-off", State: "offline", Backlog: fleet.Backlog{Readings: 40}},
		{Device: "d-off", State: "offline", Findings: []fleet.Finding{{Kind: quality.Stuck}}},
		{Device: "e-new"},
	}
	sortForAttention(ds)
	var order []string
	for _, d := range ds {
		order = append(order, d.Device)
	}
	if got := strings.Join(order, " "); got != "c-off d-off b-stuck a-fine e-new" {
		t.Errorf("order %s", got)
	}
	if got, want := attention(ds), "2 offline, 1 silent series, 2 stuck sensors, 340 readings waiting on gateway disks"; got != want {
		t.Errorf("attention %q, want %q", got, want)
	}
	if got := attention(ds[3:4]); !strings.HasPrefix(got, "All clear") {
		t.Errorf("attention for a fine device %q", got)
	}
	if got := attention([]fleet.Device{{Device: "x", Findings: []fleet.Finding{{Kind: "clock_unsynced"}}}}); got != "1 clock unsynced" {
		t.Errorf("attention for another kind %q", got)
	}
}

// A chart draws the readings over the 1 m band, with the range and the
// times at its axes; NaN fields are left out.
func TestDrawChart(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano()
	raw := influx.Rows{Times: []int64{t0 + 1e9, t0 + 61e9, t0 + 62e9}, Fields: [][]float64{{20}, {22.5}, {math.NaN()}}}
	agg := influx.Rows{Times: []int64{t0, t0 + 60e9}, Fields: [][]float64{{20, 19.5, 20.5}, {22, 21, 23}}}
	svg := string(drawChart(raw, agg, "C", t0, t0+int64(time.Hour)))
	for _, want := range []string{`class="ymax"`, ">23 C<", ">19.5 C<", ">12:00<", ">13:00 UTC<", `class="band"`, `class="mean"`, `class="raw"`} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %s: %s", want, svg)
		}
	}
	line := svg[strings.Index(svg, `class="raw" points="`)+len(`class="raw" points="`):]
	if pts := strings.Fields(line[:strings.Index(line, `"`)]); len(pts) != 2 {
		t.Errorf("raw line of %d points, want 2 (NaN left out)", len(pts))
	}
	if drawChart(influx.Rows{}, influx.Rows{}, "", t0, t0+1) != "" {
		t.Error("a chart without data")
	}
}
