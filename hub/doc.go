// Package hub assembles freshet-hub from its rooms, which follow the data:
//
//	hub/broker   the embedded MQTT broker (optional)
//	hub/ingest   the pipeline: broker session, decode, raw write, ledger and
//	             window commit, acks, dead letters
//	hub/ledger   which batches are applied, per device and epoch
//	hub/window   event-time window state and aggregates
//	hub/emit     closed and corrected windows -> InfluxDB
//	hub/schema   the InfluxDB schema the hub writes
//	hub/influx   the InfluxDB client
//	hub/fleet    what the hub knows of each device (page and API)
//	hub/checks   the scheduled data quality checks (rules in hub/quality)
//
// This package reads the config, builds those parts with one logger, clock
// and Prometheus registry, runs them, and serves HTTP: the fleet page,
// /metrics, /healthz, /readyz and the API.
package hub
