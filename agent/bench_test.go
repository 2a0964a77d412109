package agent_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/chip/sysfs"
	"github.com/freshet-iot/freshet/internal/localsvc"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// BenchmarkAgentRSS runs the real agent binary at 100 readings/s (ten
// sensors at 10 Hz) against the embedded broker and an acking hub stub for
// FRESHET_RSS_SECONDS (default 60) and reports its peak resident memory and
// the CPU time it used. The binary is built as released (static, stripped):
// a cgo build maps libc as well. File-backed RSS is mostly the binary's own
// pages, so it follows the binary's size.
// Run it with: go test ./agent -run '^$' -bench AgentRSS -benchtime 1x
func BenchmarkAgentRSS(b *testing.B) {
	secs := 60
	if v, err := strconv.Atoi(os.Getenv("FRESHET_RSS_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	bin := buildReleaseAgent(b)
	broker := testsvc.StartMochi(b)
	h := testsvc.StartHubStub(b, broker.URL())
	root, data := b.TempDir(), b.TempDir()
	cfg := fmt.Sprintf("device: gw-rss\ndata_dir: %s\nsys_root: %s\nmqtt: {broker: %s, hub_keys: [%s]}\noutbox: {max_batch_age: 2s}\nhttp: {listen: \"off\"}\nsensors:\n", data, root, broker.URL(), h.Key.PubFile)
	for z := range 10 {
		sysfs.NewThermalZone(root, z, "zone", 40+float64(z))
		cfg += fmt.Sprintf("  - {name: z%d, type: cpu_temp, zone: %d, interval: 100ms}\n", z, z)
	}
	cfgPath := filepath.Join(data, "agent.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	for b.Loop() {
		cmd := exec.Command(bin, "-config", cfgPath)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		var peak int64
		for range secs {
			time.Sleep(time.Second) // sampling interval of a measurement, not a synchronisation
			if rss := localsvc.ProcStatusBytes(cmd.Process.Pid, "VmRSS"); rss > peak {
				peak = rss
			}
		}
		hwm := localsvc.ProcStatusBytes(cmd.Process.Pid, "VmHWM")
		anon, file := localsvc.ProcStatusBytes(cmd.Process.Pid, "RssAnon"), localsvc.ProcStatusBytes(cmd.Process.Pid, "RssFile")
		cpu := localsvc.ProcCPU(cmd.Process.Pid).Seconds()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		b.ReportMetric(float64(peak)/1e6, "peak-RSS-MB")
		b.ReportMetric(float64(hwm)/1e6, "VmHWM-MB")
		b.ReportMetric(float64(anon)/1e6, "RssAnon-MB")
		b.ReportMetric(float64(file)/1e6, "RssFile-MB")
		b.ReportMetric(cpu, "CPU-s")
		b.ReportMetric(float64(h.Readings())/float64(secs), "readings/s")
	}
}

// buildReleaseAgent builds the agent binary as released (static, stripped).
func buildReleaseAgent(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "freshet-agent")
	// FRESHET_RSS_TAGS=opcua builds the agent with OPC UA.
	build := exec.Command("go", "build", "-trimpath", "-tags", os.Getenv("FRESHET_RSS_TAGS"), "-ldflags", "-s -w", "-o", bin, "./cmd/freshet-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}
