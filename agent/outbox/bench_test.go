package outbox_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/protocol"
)

// BenchmarkDurableIngest: readings added and committed with fsync, in
// commits of 10,000 readings (a busy second), including sealing into
// batches and deleting settled ones. Reports readings/s on one goroutine.
func BenchmarkDurableIngest(b *testing.B) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	ob, err := outbox.Open(outbox.Options{Path: filepath.Join(b.TempDir(), "o.db"), Device: "gw-1", Now: clk.Now, MaxBatchAge: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer ob.Close()
	const perCommit = 10_000
	rs := make([]protocol.Reading, perCommit)
	metrics := []string{"temperature", "humidity", "pressure"}
	n := 0
	b.ResetTimer()
	for b.Loop() {
		for i := range rs {
			rs[i] = protocol.Reading{Sensor: "bme280", Metric: metrics[i%3], Unit: "x", Type: protocol.Float, Resolution: 0.01,
				Time: int64(1_700_000_000_000+n/3) * 1e6, Float: 20 + float64(n%97)/100}
			n++
		}
		ob.Add(rs)
		clk.Add(time.Second)
		if err := ob.Commit(); err != nil {
			b.Fatal(err)
		}
		// Settle everything sealed so far, as a connected hub would.
		st := ob.Stats()
		if st.LastSeq > 0 {
			ob.Ack(&protocol.Ack{Device: "gw-1", Epoch: st.Epoch, Through: st.LastSeq})
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
	st := ob.Stats()
	b.ReportMetric(float64(st.FileBytes), "file-bytes")
}

// BenchmarkFlashWrites runs the outbox as the agent does, on a simulated
// clock: sensors read every period, committed every commit interval with
// fsync, sealed at the default MaxBatchAge, each sealed batch marked
// published and acked at once (as a connected hub would), for ten simulated
// minutes per iteration. It reports the bytes this process dirtied toward
// the disk (write_bytes of /proc/self/io, so nothing else may write in the
// process meanwhile) per simulated hour and per commit interval, and fsyncs per hour
// (two per commit that wrote: bbolt's data pages, then its meta page). The
// agent's BenchmarkAgentFlash measures the real binary; this one takes
// seconds.
func BenchmarkFlashWrites(b *testing.B) {
	type flashCase struct {
		sensors        int
		period, commit time.Duration
		page           int  // bbolt page size of the file; 0: outbox.PageSize
		down           bool // no hub: nothing is acked, the backlog grows
	}
	var cases []flashCase
	for _, commit := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second} {
		for _, load := range []struct {
			sensors int
			period  time.Duration
		}{{1, 10 * time.Second}, {1, time.Second}, {10, time.Second}} {
			cases = append(cases, flashCase{sensors: load.sensors, period: load.period, commit: commit})
		}
	}
	cases = append(cases,
		// The hub unreachable.
		flashCase{sensors: 1, period: time.Second, commit: time.Second, down: true},
		flashCase{sensors: 10, period: time.Second, commit: time.Second, down: true},
		// bbolt's default on a 16K-page kernel (Raspberry Pi 5).
		flashCase{sensors: 1, period: time.Second, commit: time.Second, page: 16384},
		flashCase{sensors: 10, period: time.Second, commit: time.Second, page: 16384})
	for _, c := range cases {
		rate := float64(c.sensors) / c.period.Seconds()
		name := fmt.Sprintf("rate=%g/commit=%v", rate, c.commit)
		if c.page != 0 {
			name += fmt.Sprintf("/page=%d", c.page)
		}
		if c.down {
			name += "/hub=down"
		}
		b.Run(name, func(b *testing.B) {
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			opts := outbox.Options{Path: filepath.Join(b.TempDir(), "o.db"), Device: "gw-1", Now: clk.Now}
			outbox.SetPageSize(&opts, c.page)
			ob := coldOpen(b, opts)
			defer ob.Close()
			const simulated = 10 * time.Minute
			var written int64
			commits0 := ob.Stats().Commits
			k := 0
			temps := make([]float64, c.sensors)
			var rs []protocol.Reading
			for b.Loop() {
				w0 := selfIO(b, "write_bytes")
				for range simulated / c.commit {
					rs = rs[:0]
					for at := clk.Now(); at.Before(clk.Now().Add(c.commit)); at = at.Add(time.Second) {
						if at.Sub(time.Unix(0, 0))%c.period != 0 {
							continue
						}
						for z := range temps {
							// Readings wander, and their times jitter by up to
							// 2 ms, as the agent's sensor reads do.
							k++
							temps[z] += float64((k*7+z*3)%11-5) / 1000
							jitter := time.Duration(k*7919%2_000_000) * time.Nanosecond
							rs = append(rs, protocol.Reading{Sensor: fmt.Sprintf("z%d", z), Metric: "temperature", Unit: "C",
								Type: protocol.Float, Resolution: 0.001, Time: at.Add(jitter).UnixNano(), Float: 40 + temps[z]})
						}
					}
					clk.Add(c.commit)
					ob.Add(rs)
					before := ob.Stats().LastSeq
					if err := ob.Commit(); err != nil {
						b.Fatal(err)
					}
					if st := ob.Stats(); st.LastSeq != before && !c.down {
						for seq := before + 1; seq <= st.LastSeq; seq++ {
							if err := ob.MarkPublishing(seq); err != nil {
								b.Fatal(err)
							}
						}
						ob.Ack(&protocol.Ack{Device: "gw-1", Epoch: st.Epoch, Through: st.LastSeq})
					}
				}
				written += selfIO(b, "write_bytes") - w0
			}
			hours := float64(b.N) * simulated.Hours()
			commits := float64(b.N) * float64(simulated/c.commit)
			b.ReportMetric(float64(written)/hours/(1<<20), "flash-MiB/h")
			b.ReportMetric(float64(written)/commits, "B/interval")
			b.ReportMetric(float64(ob.Stats().Commits-commits0)*2/hours, "fsyncs/h")
		})
	}
}

// coldOpen creates the outbox, drops its file from the page cache, and
// opens it again, as the agent finds it after a reboot: Linux 6.16 and
// later keep the 16 KiB that bbolt writes when it creates a file as one
// folio, and write_bytes then counts 16 KiB for every 4 KiB page written
// into it, although only that page goes to the disk.
func coldOpen(b *testing.B, o outbox.Options) *outbox.Outbox {
	ob, err := outbox.Open(o)
	if err != nil {
		b.Fatal(err)
	}
	if err := ob.Close(); err != nil {
		b.Fatal(err)
	}
	dropCache(b, o.Path)
	if ob, err = outbox.Open(o); err != nil {
		b.Fatal(err)
	}
	return ob
}

// dropCache drops the file at path from the page cache.
func dropCache(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatal(err)
	}
}

// selfIO is the counter named key (write_bytes, read_bytes) of /proc/self/io.
func selfIO(b *testing.B, key string) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	b.Fatalf("no %s in /proc/self/io", key)
	return 0
}

// BenchmarkOpenLarge opens an outbox holding a full 256 MiB backlog (4,000
// sealed batches of 64 KiB), its file dropped from the page cache first
// (cold, as after a reboot) or not (warm). bbolt does not store its free
// page list (NoFreelistSync: that would write a page or more at every
// commit), so Open rebuilds it by walking every branch and leaf page; after
// an unclean stop (crash) the outbox's consistency check walks them again.
// It reports the time and the bytes read from the disk (read_bytes of
// /proc/self/io) per Open.
func BenchmarkOpenLarge(b *testing.B) {
	dir := b.TempDir()
	opts := outbox.Options{Path: filepath.Join(dir, "o.db"), Device: "gw-1", NoSync: true,
		Now: (&clock{t: time.Unix(1_700_000_000, 0)}).Now}
	ob, err := outbox.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	// Readings of 1000-byte strings fill the bound quickly: 64 to a batch.
	text := strings.Repeat("x", 1000)
	n := 0
	for ob.Stats().Backlog.Bytes < 250<<20 {
		rs := make([]protocol.Reading, 6400)
		for i := range rs {
			rs[i] = protocol.Reading{Sensor: "s", Metric: "log", Type: protocol.String, Str: text, Time: int64(1_700_000_000_000+n) * 1e6}
			n++
		}
		ob.Add(rs)
		if err := ob.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	st := ob.Stats()
	if err := ob.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("backlog %d batches, %d MiB; file %d MiB", st.Backlog.Batches, st.Backlog.Bytes>>20, st.FileBytes>>20)
	opts.NoSync = false
	for _, c := range []struct {
		name        string
		cold, crash bool
	}{{"clean/warm", false, false}, {"clean/cold", true, false}, {"crash/cold", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			var read int64
			for b.Loop() {
				b.StopTimer()
				if c.cold {
					dropCache(b, opts.Path)
				}
				r0 := selfIO(b, "read_bytes")
				b.StartTimer()
				ob, err := outbox.Open(opts)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				read += selfIO(b, "read_bytes") - r0
				if c.crash {
					outbox.Crash(ob)
				} else if err := ob.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(read)/float64(b.N)/(1<<20), "read-MiB/op")
		})
	}
}
