package web

import (
	"context"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/influx"
)

// maxCharts bounds the series a device page draws; maxPoints the raw
// readings drawn per series (more are thinned evenly).
const (
	maxCharts = 16
	maxPoints = 600
)

// chart is one series of a device over the last hour.
type chart struct {
	Sensor, Metric, Unit, Labels string
	LastText                     string
	LastTime                     time.Time
	SVG                          template.HTML
}

// charts reads the device's raw series of the last hour and their 1 m
// aggregates from InfluxDB, and draws them.
func (p *Pages) charts(ctx context.Context, device string, now time.Time) ([]chart, error) {
	start, end := now.Add(-time.Hour).UnixNano(), now.UnixNano()+1
	counts, err := p.o.Reader.CountDevice(ctx, device, start, end)
	if err != nil {
		return nil, err
	}
	var raw []influx.SeriesRange
	for _, c := range counts {
		if strings.HasPrefix(c.Measurement, "freshet_") {
			continue // gap notices and findings
		}
		raw = append(raw, influx.SeriesRange{Measurement: c.Measurement, Tags: c.Tags, Start: start, End: end})
	}
	slices.SortFunc(raw, func(a, b influx.SeriesRange) int {
		if c := strings.Compare(tag(a.Tags, "sensor"), tag(b.Tags, "sensor")); c != 0 {
			return c
		}
		return strings.Compare(a.Measurement, b.Measurement)
	})
	raw = raw[:min(len(raw), maxCharts)]
	if len(raw) == 0 {
		return nil, nil
	}
	rows, err := p.o.Reader.Read(ctx, raw, []string{"value"})
	if err != nil {
		return nil, err
	}
	agg := make([]influx.SeriesRange, len(raw))
	for i, r := range raw {
		agg[i] = r
		agg[i].Measurement += p.o.AggregateSuffix
	}
	aggRows, err := p.o.Reader.Read(ctx, agg, []string{"mean", "min", "max"})
	if err != nil {
		return nil, err
	}
	out := make([]chart, 0, len(raw))
	for i, r := range raw {
		c := chart{Sensor: tag(r.Tags, "sensor"), Metric: r.Measurement, Unit: tag(r.Tags, "unit")}
		var labels []string
		for _, t := range r.Tags {
			if t.Key != "device" && t.Key != "sensor" && t.Key != "unit" {
				labels = append(labels, t.Key+"="+t.Value)
			}
		}
		c.Labels = strings.Join(labels, " ")
		if n := len(rows[i].Times); n > 0 {
			c.LastText = fmt.Sprintf("%.4g %s", rows[i].Fields[n-1][0], c.Unit)
			c.LastTime = time.Unix(0, rows[i].Times[n-1]).UTC()
		}
		c.SVG = drawChart(rows[i], aggRows[i], c.Unit, start, end)
		out = append(out, c)
	}
	return out, nil
}

func tag(tags []influx.Tag, key string) string {
	for _, t := range tags {
		if t.Key == key {
			return t.Value
		}
	}
	return ""
}

// drawChart draws raw readings as a line over the band of the 1 m min and
// max with the 1 m mean dashed, on [t0, t1), with the value range and the
// times at the axes.
func drawChart(raw, agg influx.Rows, unit string, t0, t1 int64) template.HTML {
	const w, h, left, right, top, bottom = 600.0, 170.0, 56.0, 592.0, 8.0, 150.0
	lo, hi := math.Inf(1), math.Inf(-1)
	see := func(v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	for _, f := range raw.Fields {
		see(f[0])
	}
	for _, f := range agg.Fields {
		see(f[1])
		see(f[2])
	}
	if math.IsInf(lo, 1) {
		return ""
	}
	if hi == lo {
		lo, hi = lo-1, hi+1
	}
	x := func(t int64) float64 { return left + (right-left)*float64(t-t0)/float64(t1-t0) }
	y := func(v float64) float64 { return bottom - (bottom-top)*(v-lo)/(hi-lo) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" role="img" aria-label="last hour">`, w, h)
	fmt.Fprintf(&b, `<line class="axis" x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f"/><line class="axis" x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f"/>`,
		left, top, left, bottom, left, bottom, right, bottom)
	label := func(v float64) string {
		return template.HTMLEscapeString(strings.TrimSpace(fmt.Sprintf("%.4g %s", v, unit)))
	}
	fmt.Fprintf(&b, `<text class="ymax" x="%.0f" y="%.0f" text-anchor="end">%s</text>`, left-4, top+9, label(hi))
	fmt.Fprintf(&b, `<text class="ymin" x="%.0f" y="%.0f" text-anchor="end">%s</text>`, left-4, bottom, label(lo))
	fmt.Fprintf(&b, `<text class="xmin" x="%.0f" y="%.0f">%s</text>`, left, h-4, time.Unix(0, t0).UTC().Format("15:04"))
	fmt.Fprintf(&b, `<text class="xmax" x="%.0f" y="%.0f" text-anchor="end">%s UTC</text>`, right, h-4, time.Unix(0, t1).UTC().Format("15:04"))
	// The band: the 1 m max forward, the 1 m min back.
	var band, mean []string
	for i, t := range agg.Times {
		if f := agg.Fields[i]; !math.IsNaN(f[1]) && !math.IsNaN(f[2]) {
			band = append(band, fmt.Sprintf("%.1f,%.1f", x(t), y(f[2])))
			mean = append(mean, fmt.Sprintf("%.1f,%.1f", x(t), y(f[0])))
		}
	}
	if len(band) > 0 {
		for i := len(agg.Times) - 1; i >= 0; i-- {
			if f := agg.Fields[i]; !math.IsNaN(f[1]) && !math.IsNaN(f[2]) {
				band = append(band, fmt.Sprintf("%.1f,%.1f", x(agg.Times[i]), y(f[1])))
			}
		}
		fmt.Fprintf(&b, `<polygon class="band" points="%s"><title>1 m min and max</title></polygon>`, strings.Join(band, " "))
		fmt.Fprintf(&b, `<polyline class="mean" points="%s"><title>1 m mean</title></polyline>`, strings.Join(mean, " "))
	}
	step := max(1, (len(raw.Times)+maxPoints-1)/maxPoints)
	var line []string
	for i := 0; i < len(raw.Times); i += step {
		if v := raw.Fields[i][0]; !math.IsNaN(v) {
			line = append(line, fmt.Sprintf("%.1f,%.1f", x(raw.Times[i]), y(v)))
		}
	}
	if len(line) > 0 {
		fmt.Fprintf(&b, `<polyline class="raw" points="%s"><title>readings</title></polyline>`, strings.Join(line, " "))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// sparkline draws the recent readings of a device's series as a 120x28
// inline SVG, one line per series (sensor) on a shared scale, each titled
// with its sensor.
func sparkline(series []fleet.Series) template.HTML {
	lo, hi := math.Inf(1), math.Inf(-1)
	t0, t1 := int64(math.MaxInt64), int64(math.MinInt64)
	lines := 0
	for _, s := range series {
		if len(s.Recent) < 2 {
			continue
		}
		lines++
		for _, p := range s.Recent {
			lo, hi = min(lo, p.V), max(hi, p.V)
			t0, t1 = min(t0, p.T), max(t1, p.T)
		}
	}
	if lines == 0 {
		return ""
	}
	if hi == lo {
		hi = lo + 1
	}
	if t1 == t0 {
		t1 = t0 + 1
	}
	var b strings.Builder
	b.WriteString(`<svg width="120" height="28" viewBox="0 0 120 28" role="img" aria-label="recent temperature">`)
	for _, s := range series {
		if len(s.Recent) < 2 {
			continue
		}
		b.WriteString(`<polyline points="`)
		for i, p := range s.Recent {
			x := 2 + 116*float64(p.T-t0)/float64(t1-t0)
			y := 26 - 24*(p.V-lo)/(hi-lo)
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x, y)
		}
		b.WriteString(`"><title>`)
		template.HTMLEscape(&b, []byte(s.Sensor))
		b.WriteString(`</title></polyline>`)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
