// Package e2e holds the end-to-end fault matrix: real freshet-hub
// processes, real agents (a simulated fleet), real brokers and a real
// influxd, with faults injected; after each scenario InfluxDB must equal
// the agents' ground truth minus exactly the readings they reported
// dropped, and every aggregate must equal the one computed from the rows.
package e2e
