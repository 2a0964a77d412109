package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/firmware-sim/demo"
	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// The dashboard as far as the query tests read it.
type dashboard struct {
	Templating struct {
		List []struct {
			Name     string `json:"name"`
			Query    string `json:"query"`
			Multi    bool   `json:"multi"`
			All      bool   `json:"includeAll"`
			AllValue string `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashPanel `json:"panels"`
}

type dashPanel struct {
	Title      string               `json:"title"`
	Type       string               `json:"type"`
	Repeat     string               `json:"repeat"`
	Datasource struct{ UID string } `json:"datasource"`
	Targets    []struct {
		Query        string `json:"query"`
		Expr         string `json:"expr"`
		RawQuery     bool   `json:"rawQuery"`
		ResultFormat string `json:"resultFormat"`
		Alias        string `json:"alias"`
	} `json:"targets"`
	FieldConfig struct {
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options any    `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string `json:"id"`
				Value any    `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Transformations []struct {
		ID      string          `json:"id"`
		Options json.RawMessage `json:"options"`
	} `json:"transformations"`
}

func readDashboard(t *testing.T) *dashboard {
	t.Helper()
	data, err := os.ReadFile("compose/grafana/dashboards/freshet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

const (
	dashDevices  = 3
	heatedDevice = "gw-0002" // its BME280 reads 60 C, above the 45 C configured: out_of_range
	gapDevice    = "gw-0003" // its disk bound overflows while its link is down: a gap notice
	backdate     = 3 * time.Minute
	clockSpeed   = 60 // the devices' clocks catch up on the wall clock at this speed
)

// TestDashboardQueries runs every InfluxQL query we hand users against a
// real influxd, after a real hub (embedded broker) has stored what a short
// run of real agents sent: each Grafana panel's and template variable's,
// with the macros filled in as Grafana fills them; each query `make run`
// prints; and each one README.md shows. A query that errors or returns no
// rows, or no values in a column its panel maps, fails with its title.
//
// The agents' clocks start 3 minutes back and catch up at 60x, so 1 m
// windows close within seconds; gw-0001 is a field gateway (meter, soil
// probe), gw-0002's BME280 reads above its configured range, and gw-0003
// drops readings under its disk bound while its link is down.
func TestDashboardQueries(t *testing.T) {
	ix := testsvc.StartInflux(t)
	db := ix.NewDatabase(t)
	devices := runDashboardFleet(t, ix, db)
	// As the provisioned datasource makes Grafana send them: POST, db, the
	// token in an "Authorization: Token" header.
	q := func(query string) ([]testsvc.Series, error) { return ix.QueryToken(db, query) }

	t.Run("dashboard", func(t *testing.T) {
		d := readDashboard(t)
		now := time.Now()
		from, to := now.Add(-6*time.Hour), now.Add(time.Second) // the dashboard's now-6h .. now
		all := grafanaVars{"device": {all: true}, "sensor": {values: []string{"bme280"}}}
		several := grafanaVars{"device": {values: devices}, "sensor": {values: []string{"bme280"}}}
		for _, v := range d.Templating.List {
			if v.Multi != (v.Name == "device") || v.All != v.Multi || (v.All && v.AllValue != ".*") {
				t.Errorf("variable %s: multi %v, include all %v, all value %q", v.Name, v.Multi, v.All, v.AllValue)
			}
			for _, vars := range []grafanaVars{all, several} {
				filled, err := vars.fill(v.Query, from, to, "1m")
				if err != nil {
					t.Errorf("variable %s: %v", v.Name, err)
					continue
				}
				got := tagValues(t, "variable "+v.Name, q, filled)
				want := map[string][]string{"device": devices, "sensor": {"bme280", "mcp9808"}}[v.Name]
				for _, w := range want {
					if !slices.Contains(got, w) {
						t.Errorf("variable %s: %s gives %v, not %s", v.Name, filled, got, w)
					}
				}
			}
		}
		ran := 0
		for _, p := range d.Panels {
			if p.Datasource.UID != "freshet-influx" {
				continue
			}
			settings := []grafanaVars{all, several}
			if p.Repeat == "device" { // one panel per device, each with that device
				settings = nil
				for _, dev := range devices {
					settings = append(settings, grafanaVars{"device": {values: []string{dev}}, "sensor": {values: []string{"bme280"}}})
				}
			}
			for i, tg := range p.Targets {
				if !tg.RawQuery || (tg.ResultFormat != "time_series" && tg.ResultFormat != "table") {
					t.Errorf("panel %q target %d: rawQuery %v, resultFormat %q", p.Title, i, tg.RawQuery, tg.ResultFormat)
				}
				for _, vars := range settings {
					filled, err := vars.fill(tg.Query, from, to, "1m")
					if err != nil {
						t.Errorf("panel %q: %v", p.Title, err)
						continue
					}
					series, err := q(filled)
					if err != nil {
						t.Errorf("panel %q: %v", p.Title, err)
						continue
					}
					names, err := checkResult(filled, series)
					if err != nil {
						t.Errorf("panel %q: %s: %v", p.Title, filled, err)
						continue
					}
					if err := p.checkMapping(tg.Alias, tg.ResultFormat, filled, series, names); err != nil {
						t.Errorf("panel %q: %s: %v", p.Title, filled, err)
					}
					ran++
				}
			}
		}
		if ran < 8 {
			t.Errorf("ran %d panel queries", ran)
		}
	})

	t.Run("make run", func(t *testing.T) {
		for _, dq := range demo.Queries() {
			series, err := q(dq.InfluxQL)
			if err == nil {
				_, err = checkResult(dq.InfluxQL, series)
			}
			if err != nil {
				t.Errorf("make run's %s query: %v", dq.Name, err)
			}
		}
	})

	t.Run("README", func(t *testing.T) {
		queries := readmeQueries(t)
		if len(queries) < 5 {
			t.Fatalf("README.md shows %d InfluxQL queries: %q", len(queries), queries)
		}
		for _, rq := range queries {
			if strings.HasPrefix(rq, "SHOW TAG VALUES") {
				if vals := tagValues(t, "README.md's "+rq, q, rq); !slices.Contains(vals, devices[0]) {
					t.Errorf("README.md's %s gives %v", rq, vals)
				}
				continue
			}
			series, err := q(rq)
			if err == nil {
				_, err = checkResult(rq, series)
			}
			if err != nil {
				t.Errorf("README.md's %s: %v", rq, err)
			}
		}
	})
}

// runDashboardFleet runs a hub and a short fleet run into db and returns
// the devices' names once the data every query reads is stored.
func runDashboardFleet(t *testing.T, ix *testsvc.Influx, db string) []string {
	t.Helper()
	t.Setenv("DASH_TEST_INFLUX_TOKEN", ix.Token)
	key := testsvc.NewAckKey(t)
	cfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`data_dir: %s
broker: {embedded: {listen: "127.0.0.1:0"}}
influx: {url: %q, bucket: %q, token_env: DASH_TEST_INFLUX_TOKEN}
windows: {sizes: [1m], allowed_lateness: 2s, idle_timeout: 1s}
quality: {interval: 200ms, sensors: [{sensor: bme280, metric: temperature, max: 45}]}
http: {listen: "off"}
ack_key_file: %s
`, t.TempDir(), ix.URL, db+"/autogen", key.KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(cfg, hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	testsvc.WaitFor(t, 30*time.Second, "the hub connected to its broker", func() error {
		if !h.Pipeline().Connected() {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	// The devices' clocks: backdate behind at start (set again when the
	// fleet starts running), then catching up at clockSpeed.
	var startNs atomic.Int64
	startNs.Store(time.Now().UnixNano())
	clock := func(string) func() time.Time {
		return func() time.Time {
			now, start := time.Now(), time.Unix(0, startNs.Load())
			if t := start.Add(-backdate + clockSpeed*now.Sub(start)); t.Before(now) {
				return t
			}
			return now
		}
	}
	dur := func(d time.Duration) cfgfile.Duration { return cfgfile.Duration(d) }
	f, err := fleet.New(fleet.Options{Devices: dashDevices, FieldGateways: 1, Seed: 7, Prefix: "gw-",
		Broker: "tcp://" + h.BrokerAddr(), DataDir: t.TempDir(), Interval: 250 * time.Millisecond, Clock: clock, HubKeys: []string{key.PubFile},
		Tune: func(c *agent.Config) {
			c.Outbox.CommitInterval, c.Outbox.MaxBatchAge = dur(100*time.Millisecond), dur(500*time.Millisecond)
			if c.Device == gapDevice { // many small batches into the smallest disk bound
				c.Outbox.MaxMessageBytes, c.Outbox.MaxBytes = 512, 16*512
				c.Outbox.CommitInterval, c.Outbox.MaxBatchAge = dur(10*time.Millisecond), dur(10*time.Millisecond)
				c.Sensors[0].Interval = dur(100 * time.Millisecond)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Devices {
		names = append(names, d.Name)
		if d.Name == heatedDevice {
			f.Heat(d, 60, time.Hour)
		}
	}
	start := time.Now()
	startNs.Store(start.UnixNano())
	wg.Add(1)
	go func() { defer wg.Done(); f.Run(ctx) }()
	// Once the clocks have caught up, gw-0003's link goes down until its
	// disk bound overflows: the backdated minutes are delivered (their
	// windows close), and the readings it drops make a gap notice.
	caughtUp := start.Add(backdate / clockSpeed)
	testsvc.WaitFor(t, 30*time.Second, "the devices' clocks caught up", func() error {
		if time.Now().Before(caughtUp) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	gap := f.Devices[slices.Index(names, gapDevice)]
	gap.Link.SetDown(true)
	testsvc.WaitFor(t, 30*time.Second, gapDevice+" dropping readings", func() error {
		if n := gap.Agent.Outbox().Dropped; n == 0 {
			return fmt.Errorf("nothing dropped yet")
		}
		return nil
	})
	gap.Link.SetDown(false)

	count := func(q string) (map[string]int64, error) {
		series, err := ix.Query(db, q)
		if err != nil {
			return nil, err
		}
		out := map[string]int64{}
		for _, s := range series {
			for _, row := range s.Values {
				if n, ok := row[1].(json.Number); ok {
					v, _ := n.Int64()
					out[s.Tags["device"]] += v
				}
			}
		}
		return out, nil
	}
	testsvc.WaitFor(t, 60*time.Second, "closed windows, a gap notice, a finding and meter readings in InfluxDB", func() error {
		for _, c := range []struct {
			what, q string
			devices int
		}{
			{"closed 1 m windows of each BME280", `SELECT count("mean") FROM "temperature_1m" WHERE "sensor" = 'bme280' GROUP BY "device"`, dashDevices},
			{"a gap notice", `SELECT count("readings") FROM "freshet_gaps" GROUP BY "device"`, 1},
			{"an open out_of_range finding", `SELECT sum("open") FROM "freshet_quality" WHERE "kind" = 'out_of_range' GROUP BY "device"`, 1},
			{"meter readings", `SELECT count("value") FROM "energy" GROUP BY "device"`, 1},
		} {
			got, err := count(c.q)
			if err != nil {
				return err
			}
			if n := len(got); n < c.devices {
				return fmt.Errorf("%s: %v", c.what, got)
			}
		}
		return nil
	})
	return names
}

// grafanaVars are the template variables' selections: All, or values.
type grafanaVars map[string]struct {
	all    bool
	values []string
}

var grafanaVarRe = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]`)

// fill fills an InfluxQL query's macros as Grafana's InfluxDB data source
// (InfluxQL, raw query) does: $timeFilter is the dashboard's range as
// "time >= <from>ms and time <= <to>ms", $__interval the interval Grafana
// picked, and a template variable of a multi-value or include-all
// variable is its allValue when All is selected, else its value
// regex-escaped, or several as (a|b). A name it does not know is an error.
func (vars grafanaVars) fill(q string, from, to time.Time, interval string) (string, error) {
	var err error
	out := grafanaVarRe.ReplaceAllStringFunc(q, func(m string) string {
		sub := grafanaVarRe.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		switch name {
		case "timeFilter":
			return fmt.Sprintf("time >= %dms and time <= %dms", from.UnixMilli(), to.UnixMilli())
		case "__interval", "interval":
			return interval
		}
		v, ok := vars[name]
		if !ok {
			err = fmt.Errorf("unknown macro or variable %s in %s", m, q)
			return m
		}
		if v.all {
			return ".*"
		}
		esc := make([]string, len(v.values))
		for i, s := range v.values {
			esc[i] = regexp.QuoteMeta(s)
		}
		if len(esc) == 1 {
			return esc[0]
		}
		return "(" + strings.Join(esc, "|") + ")"
	})
	return out, err
}

// tagValues runs a SHOW TAG VALUES query and returns the values.
func tagValues(t *testing.T, what string, q func(string) ([]testsvc.Series, error), query string) []string {
	t.Helper()
	series, err := q(query)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return nil
	}
	var vals []string
	for _, s := range series {
		if !slices.Equal(s.Columns, []string{"key", "value"}) {
			t.Errorf("%s: %s gives columns %v", what, query, s.Columns)
			continue
		}
		for _, row := range s.Values {
			if v, ok := row[1].(string); ok && !slices.Contains(vals, v) {
				vals = append(vals, v)
			}
		}
	}
	sort.Strings(vals)
	return vals
}

var (
	selectRe  = regexp.MustCompile(`(?is)^\s*SELECT\s+(.+?)\s+FROM\s`)
	groupByRe = regexp.MustCompile(`(?is)\sGROUP BY\s+(.+?)(?:\s+fill\(\w+\))?\s*$`)
	asRe      = regexp.MustCompile(`(?i)\s+AS\s+"?(\w+)"?$`)
	funcRe    = regexp.MustCompile(`^(\w+)\(`)
)

// selected parses what a SELECT returns: its columns (a field's name, a
// function's, or the alias) and the tags it groups by.
func selected(q string) (cols, tags []string, err error) {
	m := selectRe.FindStringSubmatch(q)
	if m == nil {
		return nil, nil, fmt.Errorf("not a SELECT")
	}
	for _, item := range strings.Split(m[1], ",") {
		item = strings.TrimSpace(item)
		switch {
		case asRe.MatchString(item):
			cols = append(cols, asRe.FindStringSubmatch(item)[1])
		case funcRe.MatchString(item):
			cols = append(cols, strings.ToLower(funcRe.FindStringSubmatch(item)[1]))
		default:
			cols = append(cols, strings.Trim(item, `"`))
		}
	}
	if g := groupByRe.FindStringSubmatch(q); g != nil {
		for _, item := range strings.Split(g[1], ",") {
			if item = strings.TrimSpace(item); !strings.HasPrefix(item, "time(") {
				tags = append(tags, strings.Trim(item, `"`))
			}
		}
	}
	return cols, tags, nil
}

// checkResult checks that a SELECT returned rows with every column it
// selects and every tag it groups by, and a value in each column, and
// returns the names Grafana gives the series' values (column names
// qualified by tags, for the panel checks).
func checkResult(q string, series []testsvc.Series) ([]map[string]string, error) {
	cols, tags, err := selected(q)
	if err != nil {
		return nil, err
	}
	if len(series) == 0 {
		return nil, fmt.Errorf("no rows")
	}
	seen := map[string]bool{}
	var got []map[string]string
	for _, s := range series {
		if len(s.Values) == 0 {
			return nil, fmt.Errorf("series %s %v has no rows", s.Name, s.Tags)
		}
		for _, tag := range tags {
			if _, ok := s.Tags[tag]; !ok {
				return nil, fmt.Errorf("series %s has tags %v, not %s", s.Name, s.Tags, tag)
			}
		}
		for _, c := range cols {
			i := slices.Index(s.Columns, c)
			if i < 0 {
				return nil, fmt.Errorf("series %s has columns %v, not %s", s.Name, s.Columns, c)
			}
			for _, row := range s.Values {
				if row[i] != nil {
					seen[c] = true
				}
			}
			names := map[string]string{"col": c, "m": s.Name, "measurement": s.Name}
			for k, v := range s.Tags {
				names["tag_"+k] = v
			}
			got = append(got, names)
		}
	}
	for _, c := range cols {
		if !seen[c] {
			return nil, fmt.Errorf("column %s has no values", c)
		}
	}
	return got, nil
}

var aliasRe = regexp.MustCompile(`\$(\w+)|\[\[(\w+)\]\]`)

// checkMapping checks what the panel makes of the result: its alias names
// only tags the query groups by, its overrides match series it gets, and
// its transformations use columns it gets (and a value filter keeps rows).
func (p *dashPanel) checkMapping(alias, format, q string, series []testsvc.Series, names []map[string]string) error {
	display := map[string]bool{}
	for _, n := range names {
		var missing error
		name := aliasRe.ReplaceAllStringFunc(alias, func(m string) string {
			sub := aliasRe.FindStringSubmatch(m)
			v, ok := n[sub[1]+sub[2]]
			if !ok {
				missing = fmt.Errorf("alias %q uses %s, which the result does not have", alias, m)
			}
			return v
		})
		if missing != nil {
			return missing
		}
		display[name] = true
	}
	for _, o := range p.FieldConfig.Overrides {
		if o.Matcher.ID != "byName" {
			continue
		}
		if name, _ := o.Matcher.Options.(string); !display[name] {
			return fmt.Errorf("override for %q: the panel shows %v", name, display)
		}
		for _, prop := range o.Properties {
			if prop.ID == "custom.fillBelowTo" {
				if to, _ := prop.Value.(string); !display[to] {
					return fmt.Errorf("%v fills below to %q: the panel shows %v", o.Matcher.Options, to, display)
				}
			}
		}
	}
	if len(p.Transformations) > 0 && format != "table" {
		return fmt.Errorf("transformations on a %s result", format)
	}
	cols, tags, _ := selected(q)
	fields := append(append([]string{"Time"}, cols...), tags...) // Grafana's table: Time, tags, columns
	for _, tr := range p.Transformations {
		var o struct {
			Filters []struct {
				FieldName string `json:"fieldName"`
				Config    struct {
					ID      string `json:"id"`
					Options struct {
						Value any `json:"value"`
					} `json:"options"`
				} `json:"config"`
			} `json:"filters"`
			Sort []struct {
				Field string `json:"field"`
			} `json:"sort"`
			Exclude map[string]bool `json:"excludeByName"`
		}
		if err := json.Unmarshal(tr.Options, &o); err != nil {
			return fmt.Errorf("transformation %s: %v", tr.ID, err)
		}
		var used []string
		for _, f := range o.Filters {
			used = append(used, f.FieldName)
		}
		for _, s := range o.Sort {
			used = append(used, s.Field)
		}
		for k := range o.Exclude {
			used = append(used, k)
		}
		for _, f := range used {
			if !slices.Contains(fields, f) {
				return fmt.Errorf("transformation %s uses field %s; the table has %v", tr.ID, f, fields)
			}
		}
		for _, f := range o.Filters {
			if f.Config.ID != "equal" {
				return fmt.Errorf("transformation %s: filter %s not checked here", tr.ID, f.Config.ID)
			}
			kept := 0
			for _, s := range series {
				i := slices.Index(s.Columns, f.FieldName)
				for _, row := range s.Values {
					if i >= 0 && fmt.Sprint(row[i]) == fmt.Sprint(f.Config.Options.Value) {
						kept++
					}
				}
			}
			if kept == 0 {
				return fmt.Errorf("no row has %s = %v", f.FieldName, f.Config.Options.Value)
			}
		}
	}
	return nil
}

var (
	readmeBlockRe  = regexp.MustCompile("(?s)```sql\n(.*?)```")
	readmeInlineRe = regexp.MustCompile("`((?:SELECT|SHOW) [^`]* FROM [^`]+)`")
)

// readmeQueries returns README.md's InfluxQL: every ```sql block and every
// inline `SELECT ... FROM ...` or `SHOW ... FROM ...`.
func readmeQueries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range readmeBlockRe.FindAllStringSubmatch(string(data), -1) {
		out = append(out, strings.Join(strings.Fields(m[1]), " "))
	}
	for _, m := range readmeInlineRe.FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1])
	}
	return out
}
