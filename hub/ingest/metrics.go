package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/freshet-iot/freshet/protocol"
)

// Metrics are the pipeline's counters. Adding one: a field here, built and
// registered in newMetrics.
type Metrics struct {
	// Batches counts batches by result: applied, duplicate (already in the
	// ledger), rejected (refused, agent told), dropped (refused, no seq to
	// answer).
	Batches *prometheus.CounterVec
	// Rejections counts refused batches and statuses by reason.
	Rejections *prometheus.CounterVec
	// Readings counts readings stored raw and applied to the windows.
	Readings prometheus.Counter
	// TooLate counts readings older than the correction horizon: stored
	// raw, not aggregated.
	TooLate prometheus.Counter
	// Corrections counts windows reopened by late readings after they were written.
	Corrections prometheus.Counter
	// GapReadings counts readings the agents reported dropped (gap notices).
	GapReadings prometheus.Counter
	// Overflows counts messages the broker sent beyond the hub's Receive
	// Maximum (they wait; a correct broker never does it).
	Overflows prometheus.Counter
	// Connects counts broker sessions started (1 + reconnects).
	Connects prometheus.Counter
	// AcksUnsent counts agents' acks the session could not send (the agent
	// sends the batch again, and the hub acks it again).
	AcksUnsent prometheus.Counter
	// Commits counts group commits of the ledger and window state.
	Commits prometheus.Counter
	// AcksUnsigned counts acks sent without a signature, by reason:
	// no_key (insecure_unsigned_acks), version_1 (an old agent's batch,
	// answered in version 1, which has no signature).
	AcksUnsigned *prometheus.CounterVec
	// Limited counts what the limits of the hub's config turned away, by
	// reason: devices (a batch of a device beyond limits.devices),
	// device_statuses (a status of one), series (a batch that would take
	// its device past limits.series_per_device), epochs (ledger epochs
	// forgotten beyond limits.epochs_per_device). Refused batches are not
	// acked: they stay on the agents' disks.
	Limited *prometheus.CounterVec
}

// Limit reasons, the values of Metrics.Limited's label.
const (
	LimitDevices        = "devices"
	LimitDeviceStatuses = "device_statuses"
	LimitSeries         = "series"
	LimitEpochs         = "epochs"
)

// Batch results, the values of Metrics.Batches' label.
const (
	resultApplied   = "applied"
	resultDuplicate = "duplicate"
	resultRejected  = "rejected"
	resultDropped   = "dropped"
	resultLimited   = "limited"
)

// Reasons for an unsigned ack, the values of Metrics.AcksUnsigned' label.
const (
	unsignedNoKey    = "no_key"
	unsignedVersion1 = "version_1"
)

func newMetrics(reg prometheus.Registerer, signer *protocol.AckSigner, queued, connected func() float64) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &Metrics{
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "freshet_hub_batches_total",
			Help: "Batches by result: applied, duplicate (already in the ledger), rejected (refused, agent told), dropped (refused, no seq to answer), limited (refused by a limit, not answered: the agent keeps it and sends it again)."}, []string{"result"}),
		Rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "freshet_hub_rejections_total",
			Help: "Refused batches and statuses by reason."}, []string{"reason"}),
		Readings:    counter("freshet_hub_readings_total", "Readings stored raw and applied to the windows."),
		TooLate:     counter("freshet_hub_readings_too_late_total", "Readings older than the correction horizon: stored raw, not aggregated."),
		Corrections: counter("freshet_hub_window_corrections_total", "Windows reopened by late readings after they were written."),
		GapReadings: counter("freshet_hub_gap_readings_total", "Readings the agents reported dropped (gap notices)."),
		Overflows:   counter("freshet_hub_intake_overflows_total", "Messages the broker sent beyond the hub's Receive Maximum (they wait; a correct broker never does it)."),
		Connects:    counter("freshet_hub_broker_connects_total", "Broker sessions started: one, plus one per reconnect."),
		AcksUnsent:  counter("freshet_hub_acks_unsent_total", "Agents' acks the broker session could not send (the batch comes again and is acked again)."),
		Commits:     counter("freshet_hub_commits_total", "Group commits of the ledger and window state."),
		AcksUnsigned: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "freshet_hub_acks_unsigned_total",
			Help: "Acks sent without a signature, by reason: no_key (insecure_unsigned_acks), version_1 (answers to old agents)."}, []string{"reason"}),
		Limited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "freshet_hub_limited_total",
			Help: "What the hub's limits turned away, by reason: devices (a batch of a device beyond limits.devices), device_statuses (a status of one), series (a batch that would take its device past limits.series_per_device), epochs (ledger epochs forgotten beyond limits.epochs_per_device). Refused batches are not acked: they stay on the agents' disks."},
			[]string{"reason"}),
	}
	for _, r := range []string{unsignedNoKey, unsignedVersion1} {
		m.AcksUnsigned.WithLabelValues(r)
	}
	for _, r := range []string{resultApplied, resultDuplicate, resultRejected, resultDropped, resultLimited} {
		m.Batches.WithLabelValues(r)
	}
	for _, r := range []string{LimitDevices, LimitDeviceStatuses, LimitSeries, LimitEpochs} {
		m.Limited.WithLabelValues(r)
	}
	for _, r := range protocol.Reasons() {
		m.Rejections.WithLabelValues(r)
	}
	if reg != nil {
		key := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "freshet_hub_ack_key_info",
			Help: "1, labelled with the id of the key the hub signs acks with; absent when it sends them unsigned."}, []string{"key_id"})
		if signer != nil {
			key.WithLabelValues(signer.KeyID()).Set(1)
		}
		reg.MustRegister(m.Batches, m.Rejections, m.Readings, m.TooLate, m.Corrections, m.GapReadings, m.Overflows, m.Commits, m.Connects, m.AcksUnsent, m.AcksUnsigned, m.Limited, key,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "freshet_hub_intake_queue",
				Help: "Messages taken from the broker and waiting for a worker."}, queued),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "freshet_hub_broker_connected",
				Help: "1 while the broker session is up."}, connected))
	}
	return m
}
