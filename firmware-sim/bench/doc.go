// Package bench holds benchmarks of the whole data flow: simulated agents
// (firmware-sim/fleet) with their real outboxes, a real broker, the real
// freshet-hub binary and a real influxd. They run only with -bench, e.g.
//
//	go test ./firmware-sim/bench -run '^$' -bench BacklogDrain -benchtime 1x
//
// and `make bench` runs them with the other benchmarks and prints one table.
package bench
