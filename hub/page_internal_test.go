package hub

import (
	"strings"
	"testing"

	"github.com/freshet-iot/freshet/hub/fleet"
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
