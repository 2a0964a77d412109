package benchtable

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Figures are the rows of the table, in the order of the data flow, with
// the commands that measure them (run in this order, each once).
func Figures(o Options) []Figure {
	goTest := func(pkg string, args ...string) *Cmd {
		return &Cmd{Args: append([]string{o.Go, "test", pkg, "-run", "^$"}, args...)}
	}
	proto := goTest("./protocol", "-bench", ".", "-benchtime", "2s")
	ingest := goTest("./agent/outbox", "-bench", "DurableIngest", "-benchtime", "3s")
	forward := goTest("./agent/forward", "-bench", "Drain", "-benchtime", "3x")
	rss := goTest("./agent", "-bench", "AgentRSS", "-benchtime", "1x", "-timeout", "5m")
	flash := goTest("./agent", "-bench", "AgentFlash", "-benchtime", "1x", "-timeout", "5m")
	bin := filepath.Join(os.TempDir(), "freshet-agent-linux-arm64")
	size := &Cmd{Env: []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"},
		Args: []string{o.Go, "build", "-trimpath", "-ldflags", o.LDFlags, "-o", bin, "./agent/cmd/freshet-agent"}, Size: bin}
	pipeline := goTest("./hub/ingest", "-bench", "Pipeline", "-benchtime", "5s")
	cpu := goTest("./hub", "-bench", "EndToEndCPU", "-benchtime", "3x", "-timeout", "10m")
	drain := goTest("./firmware-sim/bench", "-bench", "BacklogDrain", "-benchtime", "1x", "-timeout", "20m")
	surge := goTest("./firmware-sim/e2e", "-bench", "Surge", "-benchtime", "1x", "-timeout", "30m")

	perSec := func(v float64) string { return count(v) + " readings/s" }
	mb := func(v float64) string { return num(v) + " MB" }
	return append([]Figure{
		{What: "wire bytes per reading: BME280 at 1 Hz, batches of 500 samples × 3 metrics", Cmd: proto,
			Bench: "BenchmarkEncodeBME280/samples=500", Unit: "B/reading", Format: func(v float64) string { return num(v) + " B" },
			Goal: &Goal{Value: 4},
			Note: func(rs []Result) string {
				wire, _ := Find(rs, "BenchmarkEncodeBME280/samples=500", "B/reading")
				lp, ok := Find(rs, "BenchmarkEncodeBME280/samples=500", "lineproto-B/reading")
				if !ok || wire == 0 {
					return ""
				}
				return fmt.Sprintf("InfluxDB line protocol for the same readings: %s B, %s× more", num(lp), num(lp/wire))
			}},
		{What: "decode, same workload, one core", Cmd: proto,
			Bench: "BenchmarkDecodeBME280/samples=500", Unit: "readings/s", Format: perSec, Goal: &Goal{AtLeast: true, Value: 10e6}},
		{What: "agent durable ingest into the outbox, fsync per commit, one core", Cmd: ingest,
			Bench: "BenchmarkDurableIngest", Unit: "readings/s", Format: perSec, Goal: &Goal{AtLeast: true, Value: 200e3}},
		{What: "agent backlog drain, 1 M readings through the embedded broker to an acking stub", Cmd: forward,
			Bench: "BenchmarkDrain", Unit: "readings/s", Format: perSec},
		{What: "agent peak RSS at 100 readings/s for 60 s", Cmd: rss,
			Bench: "BenchmarkAgentRSS", Unit: "peak-RSS-MB", Format: mb, Goal: &Goal{Value: 12},
			Note: func(rs []Result) string {
				anon, ok1 := Find(rs, "BenchmarkAgentRSS", "RssAnon-MB")
				file, ok2 := Find(rs, "BenchmarkAgentRSS", "RssFile-MB")
				if !ok1 || !ok2 {
					return ""
				}
				return fmt.Sprintf("at the end: %s MB anonymous + %s MB file-backed", num(anon), num(file))
			}},
		flashFigure(flash, 1, 1, 32),
		flashFigure(flash, 10, 1, 32),
		flashFigure(flash, 1, 5, 11),
		flashFigure(flash, 10, 5, 11),
		{What: "agent binary, stripped, linux/arm64", Cmd: size,
			Bench: bin, Unit: "bytes", Format: func(v float64) string { return mb(v / 1e6) }, Goal: &Goal{Value: 10e6},
			Note: func(rs []Result) string {
				v, _ := Find(rs, bin, "bytes")
				return num(v/(1<<20)) + " MiB"
			}},
		{What: "hub in-process pipeline (decode, ledger, window merge, group commit), one core", Cmd: pipeline,
			Bench: "BenchmarkPipeline", Unit: "readings/s", Format: perSec, Goal: &Goal{AtLeast: true, Value: 2e6}},
		{What: "hub CPU per 1 M readings end to end into influxd (hub, its embedded broker and the publisher in one process)", Cmd: cpu,
			Bench: "BenchmarkEndToEndCPU", Unit: "cpu-s/1M-readings", Format: func(v float64) string { return num(v) + " CPU-s" },
			Goal: &Goal{Value: 0.9}},
		{What: "end-to-end throughput, simulated agents into influxd, this machine (from the backlog drain below)", Cmd: drain,
			Bench: "BenchmarkBacklogDrain", Unit: "readings/s", Format: perSec,
			Note: func(rs []Result) string {
				v, ok := Find(rs, "BenchmarkEndToEndCPU", "readings/s")
				if !ok {
					return ""
				}
				return "EndToEndCPU's one publisher with full batches: " + perSec(v)
			}},
		{What: "backlog drain: 50 agents back from a 1 h outage at 10 readings/s (1.8 M readings) until all are in influxd, as a multiple of real time", Cmd: drain,
			Bench: "BenchmarkBacklogDrain", Unit: "x-realtime", Format: func(v float64) string { return num(v) + "×" },
			Goal: &Goal{AtLeast: true, Value: 20},
			Note: func(rs []Result) string {
				v, ok := Find(rs, "BenchmarkBacklogDrain", "x-realtime")
				if !ok || v == 0 {
					return ""
				}
				note := fmt.Sprintf("drained in %s s", num(3600/v))
				hub, ok1 := Find(rs, "BenchmarkBacklogDrain", "hub-cpu-s/1M")
				ix, ok2 := Find(rs, "BenchmarkBacklogDrain", "influxd-cpu-s/1M")
				agents, ok3 := Find(rs, "BenchmarkBacklogDrain", "agents-broker-cpu-s/1M")
				if ok1 && ok2 && ok3 {
					note += fmt.Sprintf("; CPU-s per 1 M readings: hub %s, influxd %s, agents and broker %s", num(hub), num(ix), num(agents))
				}
				return note
			}},
	}, append(surgeFigures(surge, "embedded"), surgeFigures(surge, "mosquitto")...)...)
}

// surgeFigures are the rows of BenchmarkSurge through one broker: 10,000
// gateways back at once (issue 19's goals).
func surgeFigures(c *Cmd, broker string) []Figure {
	bench := "BenchmarkSurge/broker=" + broker
	what := "surge: 10,000 gateways back within 10 s with 12 batches of 30 readings each (3.6 M), window 8, real hub, " + broker + " broker"
	zero := &Goal{Value: 0}
	return []Figure{
		{What: what + ": drain rate as a fraction of influxd's own line-protocol ingest in the same run", Cmd: c,
			Bench: bench, Unit: "x-influxd", Format: func(v float64) string { return num(v) + "×" }, Goal: &Goal{AtLeast: true, Value: 0.9},
			Note: func(rs []Result) string {
				d, ok1 := Find(rs, bench, "drain-s")
				r, ok2 := Find(rs, bench, "readings/s")
				ix, ok3 := Find(rs, bench, "influxd-readings/s")
				if !ok1 || !ok2 || !ok3 {
					return ""
				}
				return fmt.Sprintf("drained in %s s, %s readings/s; influxd alone %s readings/s", num(d), count(r), count(ix))
			}},
		{What: what + ": hub broker reconnects, batches sent again, messages the broker dropped", Cmd: c,
			Bench: bench, Unit: "hub-reconnects", Format: num, Goal: zero,
			Note: func(rs []Result) string {
				re, ok1 := Find(rs, bench, "resends")
				dr, ok2 := Find(rs, bench, "broker-dropped")
				dup, ok3 := Find(rs, bench, "duplicates")
				if !ok1 || !ok2 || !ok3 {
					return ""
				}
				return fmt.Sprintf("resends %s, dropped %s, duplicate batches %s", num(re), num(dr), num(dup))
			}},
		{What: what + ": hub peak RSS (memory.limit 176MiB with Mosquitto, as deploy/k8s; none with the embedded broker)", Cmd: c,
			Bench: bench, Unit: "hub-peak-RSS-MB", Format: func(v float64) string { return num(v) + " MB" }, Goal: &Goal{Value: 256},
			Note: func(rs []Result) string {
				anon, ok1 := Find(rs, bench, "hub-peak-anon-MB")
				v, ok2 := Find(rs, bench, "hub-cpu-s/1M")
				if !ok1 || !ok2 {
					return ""
				}
				return fmt.Sprintf("anonymous (heap, stacks) at most %s MB, the rest hub.db's pages; hub CPU %s CPU-s per 1 M readings", num(anon), num(v))
			}},
	}
}

// flashFigure is the flash writes of the real agent at rate readings/s and
// a commit interval of commit seconds, from BenchmarkAgentFlash. Goals from
// issue 17: at most 32 MiB/h at the default 1 s, and at 5 s a tenth of the
// 111 MiB/h measured before.
func flashFigure(c *Cmd, rate, commit int, goal float64) Figure {
	bench := fmt.Sprintf("BenchmarkAgentFlash/rate=%d/commit=%ds", rate, commit)
	readings, dflt := "readings", ""
	if rate == 1 {
		readings = "reading"
	}
	if commit == 1 {
		dflt = " (the default)"
	}
	return Figure{
		What: fmt.Sprintf("agent flash writes at %d %s/s, commit_interval %d s%s: write_bytes of the real binary, its outbox cold as after a reboot, over one 30 s batch cycle, extrapolated to an hour",
			rate, readings, commit, dflt),
		Cmd: c, Bench: bench, Unit: "flash-MiB/h", Format: func(v float64) string { return num(v) + " MiB/h" },
		Goal: &Goal{Value: goal},
		Note: func(rs []Result) string {
			var parts []string
			if v, ok := Find(rs, bench, "fsyncs/h"); ok {
				parts = append(parts, count(v)+" fsyncs/h")
			}
			if v, ok := Find(rs, bench, "pwrite-MiB/h"); ok {
				parts = append(parts, "pwrite "+num(v)+" MiB/h")
			}
			return strings.Join(parts, ", ")
		},
	}
}
