package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	hubfleet "github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// TestQualityFindings injects each data fault into a simulated fleet and
// checks that the hub finds each once, on the right device and series,
// resolves it when it ends, and finds nothing else: the clean device and
// every other series of the faulty ones raise nothing, and a device that
// delivers its readings late raises no gap.
func TestQualityFindings(t *testing.T) {
	hubBin := buildHub(t)
	ix := testsvc.StartInflux(t)
	rtc := newClock(-time.Since(time.Unix(0, 0)), 1) // sim-0006 boots without a real-time clock
	fo := fleet.Options{Devices: 6, Interval: time.Second, Clock: func(device string) func() time.Time {
		if device == "sim-0006" {
			return rtc.Now
		}
		return time.Now
	}}
	w := newWorld(t, ix, hubBin, "mochi", fo,
		"windows: {sizes: [1m], allowed_lateness: 3s, idle_timeout: 5s}",
		"quality:",
		"  interval: 500ms",
		"  offline_after: 6s",
		"  sensors:",
		"    - {sensor: bme280, stuck_count: 20}",
		"    - {sensor: bme280, metric: temperature, max: 45}")
	dev := func(name string) *fleet.Device {
		i := slices.IndexFunc(w.fleet.Devices, func(d *fleet.Device) bool { return d.Name == name })
		return w.fleet.Devices[i]
	}
	run(6 * time.Second)
	w.fleet.Stick(dev("sim-0002"), 35*time.Second)   // every BME280 metric repeats
	w.fleet.Heat(dev("sim-0003"), 60, 3*time.Second) // above the 45 C configured for it
	w.fleet.Silence(dev("sim-0004"), 35*time.Second) // the MCP9808 stops answering
	dev("sim-0005").Link.SetDown(true)               // offline; its readings wait on its disk
	testsvc.WaitFor(t, 30*time.Second, "sim-0005 shown offline with an open finding", func() error {
		return w.openFinding("sim-0005", "offline")
	})
	testsvc.WaitFor(t, 30*time.Second, "sim-0004's MCP9808 shown silent", func() error {
		return w.openFinding("sim-0004", "silent")
	})
	// kill -9 the hub with findings open: they stay open, found once.
	w.killHub()
	w.startHub()
	run(2 * time.Second)
	rtc.shift.Add(int64(time.Since(time.Unix(0, 0)))) // NTP answers sim-0006
	dev("sim-0005").Link.SetDown(false)               // back: delivers late

	want := []string{
		"sim-0002 stuck bme280/humidity", "sim-0002 stuck bme280/pressure", "sim-0002 stuck bme280/temperature",
		"sim-0003 out_of_range bme280/temperature",
		"sim-0004 silent mcp9808/temperature",
		"sim-0005 offline",
		"sim-0006 clock_unset",
	}
	w.resolved = map[string]qrow{}
	var rows map[string][]string
	testsvc.WaitFor(t, 90*time.Second, "every finding opened and resolved", func() error {
		rows = w.qualityRows()
		for _, k := range want {
			if got := rows[k]; len(got) < 2 {
				return fmt.Errorf("%s: %v", k, got)
			}
		}
		return nil
	})
	// Judge the findings now: once drained the fleet reads nothing more, and
	// devices that only send a status a minute are rightly offline after 6 s.
	w.qualityLog = nil
	rows = w.qualityRows()
	devices := w.devices()
	t.Logf("freshet_quality:\n%s", strings.Join(w.qualityLog, "\n"))
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !slices.Equal(keys, want) {
		t.Errorf("findings on\n  %s\nwant exactly\n  %s", strings.Join(keys, "\n  "), strings.Join(want, "\n  "))
	}
	for _, k := range want {
		if got := rows[k]; !slices.Equal(got, []string{"opened", "resolved"}) {
			t.Errorf("%s: state changes %v, want opened then resolved, once", k, got)
		}
	}
	// What each resolved row says: the backlog the device came back with,
	// the readings missed, the hottest value, the run stuck.
	checks := []struct {
		key      string
		field    int
		min, max float64
	}{
		{"sim-0005 offline", 0, 1, 1e6},                         // readings waiting on its disk
		{"sim-0004 silent mcp9808/temperature", 0, 4, 8},        // 35 s silent at 5 s
		{"sim-0003 out_of_range bme280/temperature", 1, 60, 60}, // the value
		{"sim-0002 stuck bme280/temperature", 0, 20, 40},        // readings in the run
		{"sim-0006 clock_unset", 0, 1, 1e6},                     // readings stamped in 1970
	}
	for _, c := range checks {
		if v := w.resolved[c.key].f[c.field]; v < c.min || v > c.max {
			t.Errorf("%s: resolved with %v, want %v..%v", c.key, v, c.min, c.max)
		}
	}
	for _, d := range devices {
		if len(d.Findings) > 0 {
			t.Errorf("%s still shows open findings %+v", d.Device, d.Findings)
		}
	}
	if v := w.metric(`freshet_hub_quality_findings_total{kind="stuck",state="resolved"}`); v != 3 {
		t.Errorf("stuck resolved counter %v, want 3", v)
	}
	w.drain()
	w.check()
	// The late deliveries of the drain raise nothing either; only a quiet
	// device may now be offline.
	for k, states := range w.qualityRows() {
		if !slices.Contains(want, k) && !strings.HasSuffix(k, " offline") {
			t.Errorf("after the drain: %s %v", k, states)
		}
	}
}

// qualityRows returns the state changes in freshet_quality in time order,
// by "device kind[ sensor/metric]".
func (w *world) qualityRows() map[string][]string {
	series, err := w.ix.Query(w.db, `SELECT "state","count","value","detail" FROM "`+schema.QualityMeasurement+`" GROUP BY "device","kind","sensor","metric"`)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string][]string{}
	for _, s := range series {
		k := s.Tags["device"] + " " + s.Tags["kind"]
		if s.Tags["sensor"] != "" {
			k += " " + s.Tags["sensor"] + "/" + s.Tags["metric"]
		}
		for _, v := range s.Values {
			out[k] = append(out[k], fmt.Sprint(v[1]))
			w.qualityLog = append(w.qualityLog, fmt.Sprintf("%s %v count=%v value=%v %v", k, v[1], v[2], v[3], v[4]))
			if v[1] == "resolved" {
				w.resolved[k] = qrow{f: []float64{num(v[2]), num(v[3])}}
			}
		}
	}
	return out
}

func num(v any) float64 {
	f, _ := strconv.ParseFloat(fmt.Sprint(v), 64)
	return f
}

func (w *world) devices() []hubfleet.Device {
	resp, err := http.Get(w.httpURL + "/api/v1/devices")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Devices []hubfleet.Device }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		w.t.Fatal(err)
	}
	return body.Devices
}

// openFinding reports whether the hub's API shows an open finding of kind
// on the device.
func (w *world) openFinding(device, kind string) error {
	for _, d := range w.devices() {
		if d.Device != device {
			continue
		}
		for _, f := range d.Findings {
			if string(f.Kind) == kind {
				return nil
			}
		}
		return fmt.Errorf("open findings %+v", d.Findings)
	}
	return fmt.Errorf("%s not listed", device)
}
