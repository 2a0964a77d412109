package hub

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/hub/ingest"
)

// The fleet page: server-rendered, no front-end build, refreshes itself.
var pageTmpl = template.Must(template.New("fleet").Funcs(template.FuncMap{
	"ago":       ago,
	"sparkline": sparkline,
	"last": func(r []ingest.RecentPoint) string {
		if len(r) == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", r[len(r)-1].V)
	},
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
<td>{{printf "%+.1f s" .ClockOffsetSeconds}}</td>
<td>{{sparkline .Recent}}</td>
<td class="last">{{last .Recent}}</td>
<td class="dev findings">{{range $i, $f := .Findings}}{{if $i}}<br>{{end}}<span class="warn" title="{{$f.Detail}}">{{$f.Kind}}{{if $f.Sensor}} {{$f.Sensor}}/{{$f.Metric}}{{end}}</span>{{else}}–{{end}}</td>
</tr>{{end}}
</table></body></html>
`))

type pageData struct {
	Devices                           []ingest.DeviceInfo
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
	d := pageData{Devices: h.ingest.Devices(), Now: h.o.Now(), Readings: h.ingest.Stat("readings"), Corrections: h.ingest.Stat("corrections")}
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

// sparkline draws recent values as a 120x28 inline SVG.
func sparkline(pts []ingest.RecentPoint) template.HTML {
	if len(pts) < 2 {
		return ""
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	t0, t1 := pts[0].T, pts[len(pts)-1].T
	for _, p := range pts {
		lo, hi = min(lo, p.V), max(hi, p.V)
		t0, t1 = min(t0, p.T), max(t1, p.T)
	}
	if hi == lo {
		hi = lo + 1
	}
	if t1 == t0 {
		t1 = t0 + 1
	}
	var b strings.Builder
	for _, p := range pts {
		x := 2 + 116*float64(p.T-t0)/float64(t1-t0)
		y := 26 - 24*(p.V-lo)/(hi-lo)
		fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
	}
	return template.HTML(`<svg width="120" height="28" viewBox="0 0 120 28" role="img" aria-label="recent temperature"><polyline points="` + strings.TrimSpace(b.String()) + `"/></svg>`)
}
