package hub

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/freshet-iot/freshet/hub/fleet"
)

// The fleet page: server-rendered, no front-end build, refreshes itself.
var pageTmpl = template.Must(template.New("fleet").Funcs(template.FuncMap{
	"ago":       ago,
	"sparkline": sparkline,
	"offset":    offset,
	"last":      last,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>freshet fleet</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} .sum{color:#555;margin-bottom:1em}
table{border-collapse:collapse} th,td{padding:.35em .7em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{background:#f4f4f4} td.dev,th.dev{text-align:left;font-family:monospace}
.on{color:#0a0;font-weight:600} .off{color:#b00;font-weight:600} .warn{color:#b60}
svg polyline{fill:none;stroke:#36c;stroke-width:1.5}
</style></head><body>
<h1>freshet fleet</h1>
<div class="sum" id="summary">{{len .Devices}} devices, {{.Online}} online · open findings {{.Findings}} · readings stored {{.Readings}} · late corrections {{.Corrections}} · rejections {{.Rejections}} · as of {{.Now.Format "15:04:05 MST"}}</div>
<table id="devices">
<tr><th class="dev">device</th><th>state</th><th>last seen</th><th>backlog</th><th>dropped</th><th>gap readings</th><th>late corrections</th><th>rejections</th><th>clock offset</th><th>temperature</th><th></th><th class="dev">open findings</th></tr>
{{range .Devices}}<tr class="device" data-device="{{.Device}}">
<td class="dev">{{.Device}}</td>
<td>{{if eq .State "offline"}}<span class="off">offline</span>{{else if eq .State "online"}}<span class="on">online</span>{{else}}–{{end}}</td>
<td>{{ago .LastSeen $.Now}}</td>
<td>{{.Backlog.Readings}}</td>
<td{{if .Dropped}} class="warn"{{end}}>{{.Dropped}}</td>
<td{{if .GapReadings}} class="warn"{{end}}>{{.GapReadings}}</td>
<td>{{.Corrections}}</td>
<td{{if .Rejections}} class="warn"{{end}}>{{.Rejections}}</td>
<td>{{offset .ClockOffsetSeconds}}</td>
<td>{{sparkline .Series}}</td>
<td class="last">{{last .Series}}</td>
<td class="dev findings">{{range $i, $f := .Findings}}{{if $i}}<br>{{end}}<span class="warn" title="{{$f.Detail}}">{{$f.Kind}}{{if $f.Sensor}} {{$f.Sensor}}/{{$f.Metric}}{{end}}</span>{{else}}–{{end}}</td>
</tr>{{end}}
</table></body></html>
`))

type pageData struct {
	Devices                           []fleet.Device
	Online                            int
	Readings, Corrections, Rejections uint64
	Findings                          int
	Now                               time.Time
}

func (h *Hub) page(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	m := h.pipeline.Metrics()
	d := pageData{Devices: h.fleet.Devices(), Now: h.o.Now(), Readings: counterValue(m.Readings), Corrections: counterValue(m.Corrections)}
	for _, dev := range d.Devices {
		if dev.State == "online" {
			d.Online++
		}
		d.Rejections += dev.Rejections
		d.Findings += len(dev.Findings)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, d); err != nil {
		h.log.Error("fleet page", "err", err)
	}
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

// offset prints a clock offset to a tenth of a second ("+2.0 s"), and
// one that rounds to zero as "0.0 s", never "-0.0 s".
func offset(s float64) string {
	if math.Abs(s) < 0.05 {
		return "0.0 s"
	}
	return fmt.Sprintf("%+.1f s", s)
}

// last prints each series' latest value, sensor by sensor.
func last(series []fleet.Series) string {
	var parts []string
	for _, s := range series {
		if len(s.Recent) > 0 {
			parts = append(parts, fmt.Sprintf("%.2f", s.Recent[len(s.Recent)-1].V))
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, " / ")
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

// counterValue reads a counter's value.
func counterValue(c prometheus.Counter) uint64 {
	var m dto.Metric
	if c.Write(&m) != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}
