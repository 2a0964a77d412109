// Package web renders the hub's pages: the fleet (/) and one device
// (/device/{id}). Server-rendered html/template and inline SVG, no
// front-end build; each page refreshes itself and reads on a phone.
package web

import (
	"context"
	"fmt"
	"html/template"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ingest"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/protocol"
)

// Fleet is what the pages show of the devices.
type Fleet interface {
	Devices() []fleet.Device
	Device(name string) (fleet.Device, bool)
}

// Totals are the hub's counters the fleet page sums up.
type Totals struct{ Readings, Corrections uint64 }

// Options configure the pages.
type Options struct {
	Fleet Fleet
	// Totals reads the hub's counters.
	Totals func() Totals
	// DeadLetters returns the newest refused payloads (a device page
	// lists its own).
	DeadLetters func(n int) ([]ingest.DeadLetter, error)
	// Reader reads a device's history from InfluxDB: its raw readings,
	// 1 m aggregates (measurement AggregateSuffix), gap notices and
	// quality findings. Nil: the device page shows what the hub holds.
	Reader          *influx.Reader
	AggregateSuffix string // e.g. "_1m"
	Topics          protocol.Topics
	Now             func() time.Time
	Logger          *slog.Logger
}

// Pages serves the fleet and device pages.
type Pages struct{ o Options }

// New returns the pages.
func New(o Options) *Pages {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pages{o: o}
}

// style is shared by both pages.
const style = `<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.2em 0 .4em}
.sum{color:#555;margin-bottom:.5em} .attention{margin-bottom:1em;font-weight:600}
.wrap{overflow-x:auto}
table{border-collapse:collapse} th,td{padding:.35em .7em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{background:#f4f4f4} td.dev,th.dev,td.l,th.l{text-align:left} td.dev{font-family:monospace}
.on{color:#0a0;font-weight:600} .off{color:#b00;font-weight:600} .warn{color:#b60} .ok{color:#0a0}
svg polyline{fill:none;stroke:#36c;stroke-width:1.5} svg .band{fill:#36c;fill-opacity:.15;stroke:none}
svg .mean{stroke:#36c;stroke-width:1;stroke-dasharray:3 2} svg text{font-size:11px;fill:#555} svg .axis{stroke:#bbb}
.charts{display:flex;flex-wrap:wrap;gap:1em} .chart{flex:1 1 360px;max-width:620px}
.chart svg{width:100%;height:auto} .last{font-size:1.2em;font-weight:600}
a{color:#235}
</style>`

// Fleet serves the fleet page (/): devices that need attention first,
// and a line saying what needs attention.
func (p *Pages) Fleet(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	d := fleetData{Devices: p.o.Fleet.Devices(), Now: p.o.Now()}
	if p.o.Totals != nil {
		t := p.o.Totals()
		d.Readings, d.Corrections = t.Readings, t.Corrections
	}
	for _, dev := range d.Devices {
		if dev.State == protocol.StateOnline {
			d.Online++
		}
		d.Rejections += dev.Rejections
		d.Findings += len(dev.Findings)
	}
	sortForAttention(d.Devices)
	d.Attention = attention(d.Devices)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := fleetTmpl.Execute(w, d); err != nil {
		p.o.Logger.Error("fleet page", "err", err)
	}
}

type fleetData struct {
	Devices                           []fleet.Device
	Online                            int
	Readings, Corrections, Rejections uint64
	Findings                          int
	Attention                         string
	Now                               time.Time
}

// rank orders devices for attention: offline, then with open findings,
// then the rest.
func rank(d fleet.Device) int {
	switch {
	case d.State == protocol.StateOffline:
		return 0
	case len(d.Findings) > 0:
		return 1
	}
	return 2
}

func sortForAttention(ds []fleet.Device) {
	slices.SortStableFunc(ds, func(a, b fleet.Device) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Device, b.Device)
	})
}

// findingNoun names a finding kind in the attention line.
var findingNoun = map[quality.Kind][2]string{
	quality.Stuck:      {"stuck sensor", "stuck sensors"},
	quality.Silent:     {"silent series", "silent series"},
	quality.OutOfRange: {"reading out of range", "readings out of range"},
}

// attention says in one line what needs attention: "2 offline, 1 stuck
// sensor, 340 readings waiting on gateway disks".
func attention(ds []fleet.Device) string {
	var offline int
	var backlog uint64
	kinds := map[quality.Kind]int{}
	for _, d := range ds {
		if d.State == protocol.StateOffline {
			offline++
		}
		backlog += d.Backlog.Readings
		for _, f := range d.Findings {
			kinds[f.Kind]++
		}
	}
	var parts []string
	if offline > 0 {
		parts = append(parts, fmt.Sprintf("%d offline", offline))
	}
	names := make([]quality.Kind, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		parts = append(parts, plural(kinds[k], k))
	}
	if backlog > 0 {
		parts = append(parts, plural(int(backlog), "reading")+" waiting on gateway disks")
	}
	if len(parts) == 0 {
		return "All clear: every device online, no open findings, nothing waiting."
	}
	return strings.Join(parts, ", ")
}

// plural counts n of a finding kind or a noun.
func plural[K ~string](n int, k K) string {
	if nouns, ok := findingNoun[quality.Kind(k)]; ok {
		if n == 1 {
			return "1 " + nouns[0]
		}
		return fmt.Sprintf("%d %s", n, nouns[1])
	}
	word := strings.ReplaceAll(string(k), "_", " ")
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

var funcs = template.FuncMap{
	"ago":       ago,
	"sparkline": sparkline,
	"offset":    offset,
	"last":      last,
	"ns":        func(t int64) time.Time { return time.Unix(0, t).UTC() },
}

var fleetTmpl = template.Must(template.New("fleet").Funcs(funcs).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>freshet fleet</title>` + style + `</head><body>
<h1>freshet fleet</h1>
<div class="sum" id="summary">{{len .Devices}} devices, {{.Online}} online · open findings {{.Findings}} · readings stored {{.Readings}} · late corrections {{.Corrections}} · rejections {{.Rejections}} · as of {{.Now.Format "15:04:05 MST"}}</div>
<div class="attention" id="attention">{{.Attention}}</div>
<div class="wrap"><table id="devices">
<tr><th class="dev">device</th><th>state</th><th>last seen</th><th>backlog</th><th>dropped</th><th>gap readings</th><th>late corrections</th><th>rejections</th><th>clock offset</th><th>temperature</th><th></th><th class="l">open findings</th></tr>
{{range .Devices}}<tr class="device" data-device="{{.Device}}">
<td class="dev"><a href="/device/{{.Device}}">{{.Device}}</a></td>
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
<td class="l findings">{{range $i, $f := .Findings}}{{if $i}}<br>{{end}}<span class="warn" title="{{$f.Detail}}">{{$f.Kind}}{{if $f.Sensor}} {{$f.Sensor}}/{{$f.Metric}}{{end}}</span>{{else}}–{{end}}</td>
</tr>{{end}}
</table></div></body></html>
`))

// Device serves /device/{id}: the device's series over the last hour (raw
// readings and the 1 m mean, min and max), its sensors, open and recent
// findings, gap notices, late corrections and refused batches.
func (p *Pages) Device(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("id")
	dev, ok := p.o.Fleet.Device(name)
	if !ok {
		http.Error(w, fmt.Sprintf("no device %q has reported to this hub", clip(name)), http.StatusNotFound)
		return
	}
	d := deviceData{Device: dev, Now: p.o.Now()}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var problems []string
	if p.o.Reader != nil {
		var err error
		if d.Charts, err = p.charts(ctx, name, d.Now); err != nil {
			problems = append(problems, "series: "+err.Error())
		}
		if d.Gaps, err = p.o.Reader.Latest(ctx, "freshet_gaps", name, 20); err != nil {
			problems = append(problems, "gap notices: "+err.Error())
		}
		d.Gaps = pick(d.Gaps, "time", "readings", "seqs", "first_time", "last_time", "epoch", "seq")
		if d.History, err = p.o.Reader.Latest(ctx, "freshet_quality", name, 20); err != nil {
			problems = append(problems, "findings: "+err.Error())
		}
		d.History = pick(d.History, "time", "state", "kind", "sensor", "metric", "value", "count", "detail")
	}
	if p.o.DeadLetters != nil {
		dl, err := p.o.DeadLetters(1000)
		if err != nil {
			problems = append(problems, "refused batches: "+err.Error())
		}
		for _, l := range dl {
			if dev, _, err := p.o.Topics.Parse(l.Topic); err == nil && dev == name && len(d.Refused) < 20 {
				d.Refused = append(d.Refused, l)
			}
		}
	}
	d.Problem = strings.Join(problems, "; ")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := deviceTmpl.Execute(w, d); err != nil {
		p.o.Logger.Error("device page", "device", name, "err", err)
	}
}

type deviceData struct {
	Device  fleet.Device
	Now     time.Time
	Charts  []chart
	Gaps    influx.Table
	History influx.Table
	Refused []ingest.DeadLetter
	Problem string
}

var deviceTmpl = template.Must(template.New("device").Funcs(funcs).Funcs(template.FuncMap{
	"cell": cell,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<title>{{.Device.Device}} · freshet</title>` + style + `</head><body>
<p><a href="/">← fleet</a></p>
<h1 id="device">{{.Device.Device}}</h1>
<div class="sum" id="summary">{{if eq .Device.State "offline"}}<span class="off">offline</span>{{else if eq .Device.State "online"}}<span class="on">online</span>{{else}}no status yet{{end}}
· last seen {{ago .Device.LastSeen .Now}}{{with .Device.AgentVersion}} · agent {{.}}{{end}}
· backlog {{.Device.Backlog.Readings}} readings · dropped {{.Device.Dropped}} · gap readings {{.Device.GapReadings}}
· late corrections {{.Device.Corrections}} · too late {{.Device.TooLate}} · rejections {{.Device.Rejections}}
· clock offset {{offset .Device.ClockOffsetSeconds}}{{if not .Device.ClockSynced}} <span class="warn">(clock not synced)</span>{{end}}</div>
{{with .Device.Notice}}<p class="warn">{{.}}</p>{{end}}
{{with .Problem}}<p class="warn" id="problem">InfluxDB: {{.}}</p>{{end}}

<h2>Series, last hour</h2>
<div class="charts" id="charts">{{range .Charts}}<div class="chart" data-series="{{.Sensor}}/{{.Metric}}">
<div><b>{{.Sensor}}</b> {{.Metric}} · <span class="last">{{.LastText}}</span> at {{.LastTime.Format "15:04:05"}}{{if .Labels}} · {{.Labels}}{{end}}</div>
{{.SVG}}</div>{{else}}<p>No readings in the last hour.</p>{{end}}</div>

<h2>Findings</h2>
<div class="wrap"><table id="findings"><tr><th class="l">open</th><th class="l">series</th><th>since</th><th>value</th><th>count</th><th class="l">detail</th></tr>
{{range .Device.Findings}}<tr><td class="l warn">{{.Kind}}</td><td class="l">{{if .Sensor}}{{.Sensor}}/{{.Metric}}{{end}}</td><td>{{.Opened.Format "Jan 2 15:04:05"}}</td><td>{{printf "%.4g" .Value}}</td><td>{{.Count}}</td><td class="l">{{.Detail}}</td></tr>
{{else}}<tr><td class="l ok" colspan="6">none open</td></tr>{{end}}
</table></div>
{{with .History}}{{if .Rows}}<h2>Recent finding changes</h2>
<div class="wrap"><table id="history"><tr>{{range .Columns}}<th class="l">{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range $i, $v := .}}<td class="l">{{cell (index $.History.Columns $i) $v}}</td>{{end}}</tr>{{end}}</table></div>{{end}}{{end}}

<h2>Sensors</h2>
<div class="wrap"><table id="sensors"><tr><th class="l">sensor</th><th>interval</th><th>reads</th><th>errors</th><th class="l">last error</th></tr>
{{range .Device.Sensors}}<tr><td class="l">{{.Name}}</td><td>{{.IntervalSeconds}} s</td><td>{{.Reads}}</td><td{{if .Errors}} class="warn"{{end}}>{{.Errors}}</td><td class="l">{{.LastError}}</td></tr>
{{else}}<tr><td class="l" colspan="5">no status yet</td></tr>{{end}}
</table></div>

<h2>Gap notices</h2>
{{with .Gaps}}{{if .Rows}}<div class="wrap"><table id="gaps"><tr>{{range .Columns}}<th class="l">{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range $i, $v := .}}<td class="l">{{cell (index $.Gaps.Columns $i) $v}}</td>{{end}}</tr>{{end}}</table></div>{{else}}<p class="ok">none</p>{{end}}{{end}}

<h2>Refused batches</h2>
{{if .Refused}}<div class="wrap"><table id="refused"><tr><th class="l">time</th><th class="l">reason</th><th>bytes</th><th class="l">detail</th></tr>
{{range .Refused}}<tr><td class="l">{{.Time.Format "Jan 2 15:04:05"}}</td><td class="l warn">{{.Reason}}</td><td>{{.Bytes}}</td><td class="l">{{.Detail}}</td></tr>{{end}}
</table></div>{{else}}<p class="ok">none</p>{{end}}
<p class="sum">as of {{.Now.Format "15:04:05 MST"}}</p>
</body></html>
`))

// pick keeps the columns named, in that order (those the table has).
func pick(t influx.Table, cols ...string) influx.Table {
	var idx []int
	out := influx.Table{}
	for _, c := range cols {
		if i := slices.Index(t.Columns, c); i >= 0 {
			idx = append(idx, i)
			out.Columns = append(out.Columns, c)
		}
	}
	for _, row := range t.Rows {
		r := make([]any, len(idx))
		for j, i := range idx {
			if i < len(row) {
				r[j] = row[i]
			}
		}
		out.Rows = append(out.Rows, r)
	}
	return out
}

// cell shows one value of an InfluxDB row: the time column and the
// *_time columns (Unix ns) as times.
func cell(column string, v any) string {
	if v == nil {
		return ""
	}
	s := fmt.Sprint(v)
	if column == "time" || strings.HasSuffix(column, "_time") {
		var ns int64
		if _, err := fmt.Sscan(s, &ns); err == nil {
			return time.Unix(0, ns).UTC().Format("Jan 2 15:04:05")
		}
	}
	return clip(s)
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
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
