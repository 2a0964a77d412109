package quality

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/internal/cfgfile"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC).UnixNano()

const sec = int64(time.Second)

type rec struct{ evs []Event }

func (r *rec) emit(e Event) { r.evs = append(r.evs, e) }

func (r *rec) kinds() string {
	var s []string
	for _, e := range r.evs {
		s = append(s, string(e.Kind)+":"+e.State)
	}
	return strings.Join(s, " ")
}

func meta(metric, unit string, c *Config) *SeriesMeta {
	if c == nil {
		c = &Config{}
	}
	return &SeriesMeta{Device: "gw-1", Sensor: "bme280", Metric: metric, Unit: unit, Limits: c.For("gw-1", "bme280", metric, unit),
		Interval: time.Second, Floor: DefaultClockFloor.UnixNano()}
}

// feed gives the state readings v(i) at t0+i s for i in [from, to), then
// advances to the last one.
func feed(s *SeriesState, m *SeriesMeta, r *rec, from, to int, v func(i int) float64) {
	for i := from; i < to; i++ {
		s.Observe(m, t0+int64(i)*sec, v(i), r.emit)
	}
	s.Advance(m, t0+int64(to-1)*sec, r.emit)
}

func noisy(seed uint64) func(int) float64 {
	rnd := rand.New(rand.NewPCG(seed, seed))
	return func(i int) float64 {
		return math.Round((21+3*math.Sin(float64(i)/600)+0.05*rnd.NormFloat64())*100) / 100
	}
}

func TestCleanSeriesRaisesNothing(t *testing.T) {
	s, m, r := NewSeriesState(), meta("temperature", "C", nil), &rec{}
	feed(s, m, r, 0, 20000, noisy(1))
	if len(r.evs) != 0 {
		t.Fatalf("clean series raised %s", r.kinds())
	}
}

func TestStuckFoundOnceAndResolved(t *testing.T) {
	n := 25
	c := &Config{Sensors: []SensorRule{{Sensor: "bme280", Rule: Rule{StuckCount: &n}}}}
	s, m, r := NewSeriesState(), meta("temperature", "C", c), &rec{}
	clean := noisy(2)
	v := func(i int) float64 {
		if i >= 100 && i < 160 {
			return 22.5
		}
		return clean(i)
	}
	feed(s, m, r, 0, 300, v)
	if r.kinds() != "stuck:opened stuck:resolved" {
		t.Fatalf("events %s", r.kinds())
	}
	op, res := r.evs[0], r.evs[1]
	if op.Opened != t0+100*sec || res.Resolved != t0+159*sec+1 || res.Count != 60 || res.Value != 22.5 || res.Sensor != "bme280" || res.Metric != "temperature" {
		t.Errorf("opened %+v resolved %+v", op, res)
	}
}

func TestStuckByDuration(t *testing.T) {
	s, m, r := NewSeriesState(), meta("humidity", "%", nil), &rec{}
	m.Interval = time.Minute
	// Every minute for three hours the same value: stuck after 2 h.
	for i := range 181 {
		s.Observe(m, t0+int64(i)*60*sec, 55, r.emit)
	}
	if r.kinds() != "stuck:opened" || r.evs[0].Opened != t0 {
		t.Fatalf("events %s", r.kinds())
	}
}

func TestOutOfRangeSpikeIsOneFindingNotARate(t *testing.T) {
	s, m, r := NewSeriesState(), meta("temperature", "C", nil), &rec{}
	clean := noisy(3)
	feed(s, m, r, 0, 200, func(i int) float64 {
		if i == 50 {
			return 150
		}
		return clean(i)
	})
	if r.kinds() != "out_of_range:opened out_of_range:resolved" {
		t.Fatalf("events %s", r.kinds())
	}
	if f := r.evs[1]; f.Opened != t0+50*sec || f.Resolved != t0+51*sec || f.Count != 1 || f.Value != 150 {
		t.Errorf("finding %+v", f)
	}
}

func TestRateJumpWithinRange(t *testing.T) {
	s, m, r := NewSeriesState(), meta("temperature", "C", nil), &rec{}
	clean := noisy(4)
	feed(s, m, r, 0, 200, func(i int) float64 {
		if i >= 100 {
			return clean(i) - 15 // the probe fell out of its housing
		}
		return clean(i)
	})
	if r.kinds() != "rate:opened rate:resolved" {
		t.Fatalf("events %s", r.kinds())
	}
	if f := r.evs[1]; f.Opened != t0+100*sec || f.Resolved != t0+101*sec || f.Value < 14 {
		t.Errorf("finding %+v", f)
	}
}

func TestSilentOpensWithProgressAndResolvesWithMissingCount(t *testing.T) {
	s, m, r := NewSeriesState(), meta("temperature", "C", nil), &rec{}
	clean := noisy(5)
	feed(s, m, r, 0, 100, clean)
	// The device goes on (its other series advance its progress): silent.
	s.Advance(m, t0+110*sec, r.emit)
	if r.kinds() != "silent:opened" || r.evs[0].Opened != t0+100*sec {
		t.Fatalf("events %s", r.kinds())
	}
	feed(s, m, r, 130, 200, clean)
	if r.kinds() != "silent:opened silent:resolved" {
		t.Fatalf("events %s", r.kinds())
	}
	if f := r.evs[1]; f.Count != 30 || f.Resolved != t0+130*sec {
		t.Errorf("resolved %+v, want 30 missing at +130s", f)
	}
}

func TestLateDeliveryClosesItsOwnGaps(t *testing.T) {
	// Six hours offline: the device's progress stays at its last reading,
	// then six hours of readings arrive in order. Nothing is found.
	s, m, r := NewSeriesState(), meta("temperature", "C", nil), &rec{}
	clean := noisy(6)
	feed(s, m, r, 0, 100, clean)
	s.Advance(m, t0+99*sec, r.emit) // no progress while offline
	feed(s, m, r, 100, 100+6*3600, clean)
	if len(r.evs) != 0 {
		t.Fatalf("late delivery raised %s", r.kinds())
	}
}

func TestUnsetClockReadingsAreNotSeriesFindings(t *testing.T) {
	s, m, r := NewSeriesState(), meta("temperature", "C", nil), &rec{}
	for i := range 100 { // January 1970, the same value: neither stuck nor gap
		s.Observe(m, int64(i)*sec, 21, r.emit)
	}
	feed(s, m, r, 0, 100, noisy(7)) // the clock jumps to 2026
	if len(r.evs) != 0 {
		t.Fatalf("events %s", r.kinds())
	}
}

func TestStatePersistsMidFinding(t *testing.T) {
	n := 10
	c := &Config{Sensors: []SensorRule{{Metric: "temperature", Rule: Rule{StuckCount: &n}}}}
	m, r := meta("temperature", "C", c), &rec{}
	s := NewSeriesState()
	feed(s, m, r, 0, 30, func(int) float64 { return 20 })
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var s2 SeriesState
	if err := json.Unmarshal(b, &s2); err != nil {
		t.Fatal(err)
	}
	feed(&s2, m, r, 30, 60, func(i int) float64 {
		if i < 40 {
			return 20
		}
		return 20 + float64(i-39)/10
	})
	if r.kinds() != "stuck:opened stuck:resolved" || r.evs[1].Count != 40 || r.evs[1].Resolved != t0+39*sec+1 {
		t.Fatalf("events %s %+v", r.kinds(), r.evs)
	}
}

func TestRulesLayer(t *testing.T) {
	lo, hi, rate := 0.0, 8.0, 0.0
	c := &Config{
		Metrics: map[string]Rule{"temperature": {MaxRate: &rate}},
		Sensors: []SensorRule{{Device: "fridge-1", Sensor: "probe", Rule: Rule{Min: &lo, Max: &hi}}},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if l := c.For("gw-1", "probe", "temperature", "C"); l.Min != -60 || l.Max != 125 || l.MaxRate != 0 {
		t.Errorf("gw-1 probe: %+v", l)
	}
	if l := c.For("fridge-1", "probe", "temperature", "C"); l.Min != 0 || l.Max != 8 || l.StuckAfter != DefaultStuckAfter {
		t.Errorf("fridge-1 probe: %+v", l)
	}
	if l := c.For("gw-1", "x", "lux", ""); !math.IsInf(l.Min, -1) || l.MaxRate != 0 || l.SilentIntervals != 3 {
		t.Errorf("lux: %+v", l)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	neg, one := -1.0, 1
	lo, hi := 10.0, 5.0
	for want, c := range map[string]Config{
		"quality.metrics.temperature.max_rate": {Metrics: map[string]Rule{"temperature": {MaxRate: &neg}}},
		"quality.sensors[0].stuck_count":       {Sensors: []SensorRule{{Sensor: "a", Rule: Rule{StuckCount: &one}}}},
		"quality.sensors[1].max":               {Sensors: []SensorRule{{Sensor: "a"}, {Sensor: "b", Rule: Rule{Min: &lo, Max: &hi}}}},
		"quality.sensors[0]":                   {Sensors: []SensorRule{{}}},
		"quality.clock_floor":                  {ClockFloor: "yesterday"},
		"quality.interval":                     {Interval: cfgfile.Duration(time.Millisecond)},
	} {
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), want+":") {
			t.Errorf("%s: got %v", want, err)
		}
	}
}

func TestDeviceOffline(t *testing.T) {
	c := &Config{}
	c.Validate()
	d, r := &DeviceState{}, &rec{}
	o := &DeviceObs{Device: "gw-1", Now: t0, LastAlive: t0}
	d.Check(c, o, r.emit)
	o.Now = t0 + int64(2*time.Minute)
	d.Check(c, o, r.emit)
	if len(r.evs) != 0 {
		t.Fatalf("early: %s", r.kinds())
	}
	o.Now, o.LastWill = t0+int64(4*time.Minute), true
	d.Check(c, o, r.emit)
	d.Check(c, o, r.emit)
	if r.kinds() != "offline:opened" || r.evs[0].Opened != t0+int64(3*time.Minute) || !strings.Contains(r.evs[0].Detail, "connection lost") {
		t.Fatalf("events %s %+v", r.kinds(), r.evs)
	}
	o.Now, o.LastAlive, o.Backlog = t0+int64(time.Hour), t0+int64(time.Hour), 36000
	d.Check(c, o, r.emit)
	if r.kinds() != "offline:opened offline:resolved" || r.evs[1].Count != 36000 || r.evs[1].Resolved != o.LastAlive {
		t.Fatalf("events %s %+v", r.kinds(), r.evs)
	}
}

func TestDeviceClock(t *testing.T) {
	c := &Config{}
	c.Validate()
	d, r := &DeviceState{}, &rec{}
	o := &DeviceObs{Device: "gw-1", Now: t0, LastAlive: t0, ClockUnset: true, UnsetSince: t0, UnsetReadings: 40, ClockOffset: -1.7e9, OffsetKnown: true}
	d.Check(c, o, r.emit)
	if r.kinds() != "clock_unset:opened" {
		t.Fatalf("unset: %s", r.kinds())
	}
	o.ClockUnset, o.ClockSetAt, o.ClockOffset, o.Now = false, t0+5*sec, 0.2, t0+6*sec
	d.Check(c, o, r.emit)
	if r.kinds() != "clock_unset:opened clock_unset:resolved" || r.evs[1].Resolved != t0+5*sec {
		t.Fatalf("set: %s", r.kinds())
	}
	o.ClockOffset = 3600
	d.Check(c, o, r.emit)
	o.OffsetKnown = false // delivering a backlog: not judged
	o.ClockOffset = 0
	d.Check(c, o, r.emit)
	o.OffsetKnown, o.ClockOffset, o.Now = true, 1, t0+60*sec
	d.Check(c, o, r.emit)
	if got := r.kinds(); got != "clock_unset:opened clock_unset:resolved clock_offset:opened clock_offset:resolved" {
		t.Fatalf("offset: %s", got)
	}
}

func TestDroppedEvents(t *testing.T) {
	evs := DroppedEvents("gw-1", 500, t0, t0)
	if len(evs) != 2 || evs[0].State != StateOpened || evs[1].State != StateResolved || evs[1].Time <= evs[0].Time || evs[1].Count != 500 {
		t.Fatalf("%+v", evs)
	}
}
