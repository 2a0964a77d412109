package agent_test

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/firmware-sim/chip/sysfs"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// BenchmarkAgentFlash measures what the real agent binary writes to the
// gateway's disk, with its default outbox settings, at 1 and 10 readings/s
// (one or ten cpu_temp sensors read every second, their temperatures
// wandering) and commit intervals of 1 s and 5 s, each against the embedded
// broker and one acking hub stub.
//
// The four agents run at once: each one's counters are its own. Each
// measures one batch cycle: from the hub's first applied batch to its
// second (about 30 s, max_batch_age), so the window holds one seal and one
// ack deletion, then extrapolates to an hour. The outbox file is created
// beforehand and dropped from the page cache, as on a gateway after a
// reboot: Linux 6.16 and later keep the 16 KiB bbolt writes when it creates
// a file as one 16 KiB folio, and write_bytes then counts 16 KiB for every
// later 4 KiB write into it, although only the 4 KiB block reaches the disk.
// FRESHET_FLASH_FRESH=1 lets the agent create its file instead, and shows
// that.
//
// Per hour:
//   - flash-MiB/h: write_bytes of /proc/PID/io, the page-cache bytes the
//     process dirtied, which writeback sends to the disk (the file system's
//     journal and the card's own write amplification come on top);
//   - syscw/h: its write system calls (socket writes included);
//   - fsyncs/h and pwrite-MiB/h: its fsync and fdatasync calls, and the
//     bytes it wrote with pwrite (bbolt's pages), counted by running the
//     agent under strace (with a seccomp filter only those calls stop it).
//     Without strace these two are not reported.
//
// Run it with: go test ./agent -run '^$' -bench AgentFlash -benchtime 1x
func BenchmarkAgentFlash(b *testing.B) {
	bin := buildReleaseAgent(b)
	strace, _ := exec.LookPath("strace")
	broker := testsvc.StartMochi(b)
	cases := []struct {
		rate   int
		commit time.Duration
	}{{1, time.Second}, {10, time.Second}, {1, 5 * time.Second}, {10, 5 * time.Second}}
	runs := make([]flashRun, len(cases))
	errs := make([]error, len(cases))
	h := testsvc.StartHubStub(b, broker.URL())
	var wg sync.WaitGroup
	for i, c := range cases {
		dir := b.TempDir()
		wg.Go(func() { runs[i], errs[i] = measureFlash(dir, bin, strace, broker.URL(), h, c.rate, c.commit) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	for i, c := range cases {
		b.Run(fmt.Sprintf("rate=%d/commit=%v", c.rate, c.commit), func(b *testing.B) {
			m := runs[i]
			for b.Loop() {
				// Measured above, with the others at once.
			}
			perHour := 3600 / m.window.Seconds()
			b.ReportMetric(float64(m.writeBytes)*perHour/(1<<20), "flash-MiB/h")
			b.ReportMetric(float64(m.syscw)*perHour, "syscw/h")
			if m.fsyncs >= 0 {
				b.ReportMetric(float64(m.fsyncs)*perHour, "fsyncs/h")
				b.ReportMetric(float64(m.pwriteBytes)*perHour/(1<<20), "pwrite-MiB/h")
			}
			b.ReportMetric(float64(m.readings)/m.window.Seconds(), "readings/s")
			b.ReportMetric(m.window.Seconds(), "window-s")
		})
	}
}

type flashRun struct {
	window            time.Duration
	writeBytes, syscw int64
	fsyncs            int   // -1: not counted
	pwriteBytes       int64 // bytes written with pwrite (bbolt's pages); -1: not counted
	readings          int   // applied by the hub stub during the window
}

// measureFlash runs one agent in dir and measures one batch cycle.
func measureFlash(dir, bin, strace, brokerURL string, h *testsvc.HubStub, rate int, commit time.Duration) (run flashRun, err error) {
	device := fmt.Sprintf("gw-flash-%d-%d", rate, commit/time.Second)
	root, data := filepath.Join(dir, "sys"), filepath.Join(dir, "data")
	cfg := fmt.Sprintf("device: %s\ndata_dir: %s\nsys_root: %s\nmqtt: {broker: %s, hub_keys: [%s]}\noutbox: {commit_interval: %v}\nhttp: {listen: \"off\"}\nlog: {level: warn}\nsensors:\n",
		device, data, root, brokerURL, h.Key.PubFile, commit)
	zones := make([]*sysfs.ThermalZone, rate)
	for z := range rate {
		if zones[z], err = sysfs.NewThermalZone(root, z, "zone", 40+float64(z)); err != nil {
			return run, err
		}
		cfg += fmt.Sprintf("  - {name: z%d, type: cpu_temp, zone: %d, interval: 1s}\n", z, z)
	}
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return run, err
	}
	// The temperatures wander as real ones do, so readings are not all
	// the same value (which would encode to almost nothing).
	stop := make(chan struct{})
	wandered := make(chan struct{})
	go func() {
		defer close(wandered)
		rng := rand.New(rand.NewPCG(1, uint64(rate)))
		temps := make([]float64, rate)
		for z := range temps {
			temps[z] = 40 + float64(z)
		}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				for z, zt := range zones {
					temps[z] += (rng.Float64() - 0.5) / 4
					zt.SetTemperature(temps[z])
				}
			}
		}
	}()
	defer func() { close(stop); <-wandered }()

	if os.Getenv("FRESHET_FLASH_FRESH") == "" {
		if err := coldOutbox(filepath.Join(data, "outbox.db"), device); err != nil {
			return run, err
		}
	}
	traceOut := filepath.Join(dir, "strace.txt")
	var cmd *exec.Cmd
	if strace != "" {
		cmd = exec.Command(strace, "-f", "--seccomp-bpf", "-qq", "-ttt", "-s", "0", "-e", "trace=pwrite64,fsync,fdatasync,sync_file_range,syncfs,msync",
			"-e", "signal=none", "-o", traceOut, bin, "-config", cfgPath)
	} else {
		cmd = exec.Command(bin, "-config", cfgPath)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return run, err
	}
	// The agent is the process running bin: strace's child, or cmd itself.
	pid := cmd.Process.Pid
	exe, _ := filepath.EvalSymlinks(bin)
	err = testsvc.Poll(30*time.Second, func() error {
		cand := pid
		if strace != "" {
			kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
			f := strings.Fields(string(kids))
			if len(f) == 0 {
				return errors.New("no child of strace yet")
			}
			cand, _ = strconv.Atoi(f[0])
		}
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cand)); err != nil || got != exe {
			return fmt.Errorf("process %d runs %q (%v), not the agent yet", cand, got, err)
		}
		pid = cand
		return nil
	})
	defer func() {
		// Stop the agent itself (strace exits when its tracee does), and
		// kill both if that takes too long.
		stopped := make(chan struct{})
		syscall.Kill(pid, syscall.SIGTERM)
		go func() { cmd.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(15 * time.Second):
			syscall.Kill(pid, syscall.SIGKILL)
			cmd.Process.Kill()
			<-stopped
		}
	}()
	if err != nil {
		return run, fmt.Errorf("%s: finding the agent's process: %w", device, err)
	}
	// A batch cycle: from one batch applied by the hub to the next.
	batches := func(n int) func() error {
		return func() error {
			if got := len(deviceBatches(h, device)); got < n {
				return fmt.Errorf("%s: %d batches applied, want %d", device, got, n)
			}
			return nil
		}
	}
	if err := testsvc.Poll(3*time.Minute, batches(1)); err != nil {
		return run, err
	}
	io0, err := procIO(pid)
	if err != nil {
		return run, fmt.Errorf("%s: the agent's I/O counters: %w", device, err)
	}
	t0 := time.Now()
	if err := testsvc.Poll(3*time.Minute, batches(2)); err != nil {
		return run, err
	}
	io1, err := procIO(pid)
	if err != nil {
		return run, fmt.Errorf("%s: the agent's I/O counters: %w", device, err)
	}
	t1 := time.Now()
	run = flashRun{window: t1.Sub(t0), writeBytes: io1["write_bytes"] - io0["write_bytes"], syscw: io1["syscw"] - io0["syscw"],
		readings: deviceBatches(h, device)[1].Readings(), fsyncs: -1, pwriteBytes: -1}
	if strace != "" {
		if run.fsyncs, run.pwriteBytes, err = countTraced(traceOut, t0, t1); err != nil {
			return run, err
		}
	}
	return run, nil
}

// coldOutbox creates the outbox file at path and drops it from the page cache.
func coldOutbox(path, device string) error {
	ob, err := outbox.Open(outbox.Options{Path: path, Device: device})
	if err != nil {
		return err
	}
	if err := ob.Close(); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// procIO reads /proc/<pid>/io.
func procIO(pid int) (map[string]int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k], _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return m, nil
}

// deviceBatches are the batches of device the hub stub applied, in order.
func deviceBatches(h *testsvc.HubStub, device string) []*protocol.Batch {
	var out []*protocol.Batch
	for _, bt := range h.Applied() {
		if bt.Device == device {
			out = append(out, bt)
		}
	}
	return out
}

// countTraced counts the sync calls strace logged (-ttt timestamps) in
// [t0, t1), and sums the bytes of the pwrite64 calls that returned then. A
// call another thread interrupted is logged as "<unfinished ...>" and
// completed in a "<... resumed>" line.
func countTraced(path string, t0, t1 time.Time) (syncs int, pwritten int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		fs := strings.Fields(line) // pid, seconds.micros, call(...) = result
		if len(fs) < 3 {
			continue
		}
		sec, err := strconv.ParseFloat(fs[1], 64)
		if err != nil {
			continue
		}
		if at := time.Unix(0, int64(sec*1e9)); at.Before(t0) || !at.Before(t1) {
			continue
		}
		resumed := strings.HasPrefix(fs[2], "<...")
		call := fs[2]
		if resumed && len(fs) > 3 {
			call = fs[3]
		}
		call, _, _ = strings.Cut(call, "(")
		if call == "pwrite64" {
			if _, res, ok := strings.Cut(line, ") = "); ok {
				n, _ := strconv.ParseInt(strings.Fields(res)[0], 10, 64)
				pwritten += max(n, 0)
			}
		} else if !resumed {
			syncs++
		}
	}
	return syncs, pwritten, s.Err()
}
