package agent

import (
	"io"
	"time"
)

// The agent's metrics, in a VictoriaMetrics/metrics Set rather than
// prometheus/client_golang: client_golang and the protobuf runtime it needs
// were 2.2 MB of a binary whose budget is 10 MB, and most of the binary's
// pages end up resident. Names, types and labels are those of the
// client_golang version; the library writes HELP lines without text, so
// what each metric means is written here:
//
//	freshet_agent_readings_total{fate}          counter  readings by fate: committed to disk, settled (acked by the hub),
//	                                                     dropped (disk bound), rejected (by the hub), invalid (refused by the packer)
//	freshet_agent_backlog{unit}                 gauge    what waits on disk for the hub's ack: readings, batches, bytes
//	freshet_agent_pending_readings              gauge    readings read but not yet committed
//	freshet_agent_outbox_file_bytes             gauge    size of the outbox's bbolt file
//	freshet_agent_commits_total{result}         counter  outbox commits: ok, error
//	freshet_agent_batches_total{event}          counter  batches sealed, published and republished
//	freshet_agent_connected                     gauge    1 while connected to the broker
//	freshet_agent_connects_total{result}        counter  connection attempts: ok, error
//	freshet_agent_acks_total                    counter  acks applied
//	freshet_agent_acks_ignored_total{reason}    counter  acks ignored, by reason: unsigned, unknown_key, bad_signature (not the hub's),
//	                                                     malformed, foreign_topic, queue_full (agent/forward), foreign_device,
//	                                                     unknown_epoch, unsent_seq (agent/outbox)
//	freshet_agent_last_ack_age_seconds          gauge    seconds since the last ack (absent before the first)
//	freshet_agent_outbox_reset                  gauge    1 if the outbox was found corrupt at start and a new epoch began
//	freshet_agent_sensor_reads_total{sensor}    counter  sensor read attempts, failed ones included (agent/sensor)
//	freshet_agent_sensor_errors_total{sensor,reason}
//	                                            counter  failed sensor reads by reason: io, timeout, implausible, parse
//	freshet_agent_http_unauthorized_total       counter  HTTP requests refused for a missing or wrong token (http.token_file;
//	                                                     present only when one is set)

// writeMetrics copies the outbox's and the forwarder's counters into the
// set and writes it in the Prometheus text format.
func (a *Agent) writeMetrics(w io.Writer) {
	st, fs := a.ob.Stats(), a.fw.Stats()
	counter := func(name string, v uint64) { a.metrics.GetOrCreateCounter(name).Set(v) }
	gauge := func(name string, v float64) { a.metrics.GetOrCreateGauge(name, nil).Set(v) }
	counter(`freshet_agent_readings_total{fate="committed"}`, st.Committed)
	counter(`freshet_agent_readings_total{fate="settled"}`, st.Settled)
	counter(`freshet_agent_readings_total{fate="dropped"}`, st.Dropped)
	counter(`freshet_agent_readings_total{fate="rejected"}`, st.Rejected)
	counter(`freshet_agent_readings_total{fate="invalid"}`, st.Invalid)
	gauge(`freshet_agent_backlog{unit="readings"}`, float64(st.Backlog.Readings))
	gauge(`freshet_agent_backlog{unit="batches"}`, float64(st.Backlog.Batches))
	gauge(`freshet_agent_backlog{unit="bytes"}`, float64(st.Backlog.Bytes))
	gauge(`freshet_agent_pending_readings`, float64(st.Pending))
	gauge(`freshet_agent_outbox_file_bytes`, float64(st.FileBytes))
	counter(`freshet_agent_commits_total{result="ok"}`, st.Commits)
	counter(`freshet_agent_commits_total{result="error"}`, st.CommitErrors)
	counter(`freshet_agent_batches_total{event="sealed"}`, st.SealedBatches)
	counter(`freshet_agent_batches_total{event="published"}`, fs.Published)
	counter(`freshet_agent_batches_total{event="republished"}`, fs.Republished)
	gauge(`freshet_agent_connected`, boolGauge(fs.Connected))
	counter(`freshet_agent_connects_total{result="ok"}`, fs.Connects)
	counter(`freshet_agent_connects_total{result="error"}`, fs.ConnectFailures)
	counter(`freshet_agent_acks_total`, fs.Acks)
	ignored := map[string]uint64{}
	for k, v := range fs.AcksIgnored {
		ignored[k] += v
	}
	for k, v := range st.AcksIgnored {
		ignored[k] += v
	}
	for k, v := range ignored {
		counter(`freshet_agent_acks_ignored_total{reason="`+k+`"}`, v)
	}
	if !fs.LastAck.IsZero() {
		gauge(`freshet_agent_last_ack_age_seconds`, time.Since(fs.LastAck).Seconds())
	}
	gauge(`freshet_agent_outbox_reset`, boolGauge(st.Notice != ""))
	a.metrics.WritePrometheus(w)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
