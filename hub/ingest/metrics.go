package ingest

import (
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/protocol"
)

// Collector exposes the hub's counters to Prometheus.
func (h *Hub) Collector() prometheus.Collector { return &collector{h} }

type collector struct{ h *Hub }

var (
	descBatches     = prometheus.NewDesc("freshet_hub_batches_total", "Batches by result: applied, duplicate (already in the ledger), rejected (refused, agent told), dropped (refused, no seq to answer).", []string{"result"}, nil)
	descRejections  = prometheus.NewDesc("freshet_hub_rejections_total", "Refused batches and statuses by reason.", []string{"reason"}, nil)
	descReadings    = prometheus.NewDesc("freshet_hub_readings_total", "Readings stored raw and applied to the windows.", nil, nil)
	descTooLate     = prometheus.NewDesc("freshet_hub_readings_too_late_total", "Readings older than the correction horizon: stored raw, not aggregated.", nil, nil)
	descCorrections = prometheus.NewDesc("freshet_hub_window_corrections_total", "Windows reopened by late readings after they were written.", nil, nil)
	descAggregates  = prometheus.NewDesc("freshet_hub_aggregates_written_total", "Window aggregates written (corrections included).", nil, nil)
	descGap         = prometheus.NewDesc("freshet_hub_gap_readings_total", "Readings the agents reported dropped (gap notices).", nil, nil)
	descOverflow    = prometheus.NewDesc("freshet_hub_intake_overflows_total", "Times the intake queue was full and the session was restarted.", nil, nil)
	descQueue       = prometheus.NewDesc("freshet_hub_intake_queue", "Messages taken from the broker and waiting for a worker.", nil, nil)
	descConnected   = prometheus.NewDesc("freshet_hub_broker_connected", "1 while the broker session is up.", nil, nil)
	descCommits     = prometheus.NewDesc("freshet_hub_commits_total", "Group commits of the ledger and window state.", nil, nil)
	descDevices     = prometheus.NewDesc("freshet_hub_devices", "Devices seen since start.", nil, nil)
	descQualityEv   = prometheus.NewDesc("freshet_hub_quality_findings_total", "Data quality findings by kind and state change (opened, resolved).", []string{"kind", "state"}, nil)
	descQualityOpen = prometheus.NewDesc("freshet_hub_quality_open_findings", "Data quality findings open now, by kind.", []string{"kind"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBatches, descRejections, descReadings, descTooLate, descCorrections, descAggregates,
		descGap, descOverflow, descQueue, descConnected, descCommits, descDevices, descQualityEv, descQualityOpen} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := &c.h.stats
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	each := func(m *sync.Map, d *prometheus.Desc) {
		m.Range(func(k, v any) bool {
			counter(d, v.(*atomic.Uint64).Load(), k.(string))
			return true
		})
	}
	for _, r := range []string{"applied", "duplicate", "rejected", "dropped"} {
		s.batches.LoadOrStore(r, new(atomic.Uint64))
	}
	for _, r := range protocol.Reasons() {
		s.rejections.LoadOrStore(r, new(atomic.Uint64))
	}
	each(&s.batches, descBatches)
	each(&s.rejections, descRejections)
	counter(descReadings, s.readings.Load())
	counter(descTooLate, s.tooLate.Load())
	counter(descCorrections, s.corrections.Load())
	counter(descAggregates, s.aggregates.Load())
	counter(descGap, s.gapReadings.Load())
	counter(descOverflow, s.overflows.Load())
	counter(descCommits, s.commits.Load())
	ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(len(c.h.in)))
	conn := 0.0
	if c.h.connected.Load() {
		conn = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, conn)
	c.h.fleet.mu.Lock()
	n := len(c.h.fleet.devices)
	c.h.fleet.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(n))
	var open map[quality.Kind]int
	if p := s.qualityOpen.Load(); p != nil {
		open = *p
	}
	for _, k := range quality.Kinds() {
		for _, st := range []string{quality.StateOpened, quality.StateResolved} {
			v, _ := s.qualityEvents.LoadOrStore(string(k)+"/"+st, new(atomic.Uint64))
			counter(descQualityEv, v.(*atomic.Uint64).Load(), string(k), st)
		}
		ch <- prometheus.MustNewConstMetric(descQualityOpen, prometheus.GaugeValue, float64(open[k]), string(k))
	}
}

// Stat returns a counter by name, for tests: readings, too_late,
// corrections, aggregates, gap_readings, batches:<result>, rejections:<reason>,
// quality:<kind>/<opened|resolved>.
func (h *Hub) Stat(name string) uint64 {
	s := &h.stats
	load := func(m *sync.Map, k string) uint64 {
		if v, ok := m.Load(k); ok {
			return v.(*atomic.Uint64).Load()
		}
		return 0
	}
	switch {
	case name == "readings":
		return s.readings.Load()
	case name == "too_late":
		return s.tooLate.Load()
	case name == "corrections":
		return s.corrections.Load()
	case name == "aggregates":
		return s.aggregates.Load()
	case name == "gap_readings":
		return s.gapReadings.Load()
	case len(name) > 8 && name[:8] == "batches:":
		return load(&s.batches, name[8:])
	case len(name) > 11 && name[:11] == "rejections:":
		return load(&s.rejections, name[11:])
	case len(name) > 8 && name[:8] == "quality:":
		return load(&s.qualityEvents, name[8:])
	}
	return 0
}

// MetricNames lists the names of the metrics the pipeline exposes (for
// checking dashboards against them).
func MetricNames() []string {
	ch := make(chan *prometheus.Desc, 64)
	(&collector{}).Describe(ch)
	close(ch)
	var out []string
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)
