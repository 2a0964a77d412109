package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector reads the outbox's and forwarder's counters at scrape time.
type collector struct{ a *Agent }

var (
	descReadings = prometheus.NewDesc("freshet_agent_readings_total",
		"Readings by fate: committed to disk, settled (acked by the hub), dropped (disk bound), rejected (by the hub), invalid (refused by the packer).", []string{"fate"}, nil)
	descBacklog = prometheus.NewDesc("freshet_agent_backlog",
		"What waits on disk for the hub's ack, by unit: readings, batches, bytes.", []string{"unit"}, nil)
	descPending    = prometheus.NewDesc("freshet_agent_pending_readings", "Readings read but not yet committed.", nil, nil)
	descFile       = prometheus.NewDesc("freshet_agent_outbox_file_bytes", "Size of the outbox's bbolt file.", nil, nil)
	descCommits    = prometheus.NewDesc("freshet_agent_commits_total", "Outbox commits, by result.", []string{"result"}, nil)
	descBatches    = prometheus.NewDesc("freshet_agent_batches_total", "Batches sealed, published and published again.", []string{"event"}, nil)
	descConnected  = prometheus.NewDesc("freshet_agent_connected", "1 while connected to the broker.", nil, nil)
	descConnects   = prometheus.NewDesc("freshet_agent_connects_total", "Connection attempts, by result.", []string{"result"}, nil)
	descAcks       = prometheus.NewDesc("freshet_agent_acks_total", "Acks applied.", nil, nil)
	descAcksIgn    = prometheus.NewDesc("freshet_agent_acks_ignored_total", "Acks ignored, by reason.", []string{"reason"}, nil)
	descLastAckAge = prometheus.NewDesc("freshet_agent_last_ack_age_seconds", "Seconds since the last ack (absent before the first).", nil, nil)
	descCorrupt    = prometheus.NewDesc("freshet_agent_outbox_reset", "1 if the outbox was found corrupt at start and a new epoch began.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReadings, descBacklog, descPending, descFile, descCommits, descBatches,
		descConnected, descConnects, descAcks, descAcksIgn, descLastAckAge, descCorrupt} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st, fs := c.a.ob.Stats(), c.a.fw.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descReadings, st.Committed, "committed")
	counter(descReadings, st.Settled, "settled")
	counter(descReadings, st.Dropped, "dropped")
	counter(descReadings, st.Rejected, "rejected")
	counter(descReadings, st.Invalid, "invalid")
	gauge(descBacklog, float64(st.Backlog.Readings), "readings")
	gauge(descBacklog, float64(st.Backlog.Batches), "batches")
	gauge(descBacklog, float64(st.Backlog.Bytes), "bytes")
	gauge(descPending, float64(st.Pending))
	gauge(descFile, float64(st.FileBytes))
	counter(descCommits, st.Commits, "ok")
	counter(descCommits, st.CommitErrors, "error")
	counter(descBatches, st.SealedBatches, "sealed")
	counter(descBatches, fs.Published, "published")
	counter(descBatches, fs.Republished, "republished")
	connected := 0.0
	if fs.Connected {
		connected = 1
	}
	gauge(descConnected, connected)
	counter(descConnects, fs.Connects, "ok")
	counter(descConnects, fs.ConnectFailures, "error")
	counter(descAcks, fs.Acks)
	ignored := map[string]uint64{}
	for k, v := range fs.AcksIgnored {
		ignored[k] += v
	}
	for k, v := range st.AcksIgnored {
		ignored[k] += v
	}
	for k, v := range ignored {
		counter(descAcksIgn, v, k)
	}
	if !fs.LastAck.IsZero() {
		gauge(descLastAckAge, time.Since(fs.LastAck).Seconds())
	}
	reset := 0.0
	if st.Notice != "" {
		reset = 1
	}
	gauge(descCorrupt, reset)
}
