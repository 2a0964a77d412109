package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/firmware-sim/modbus"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// armTarget is an agent binary we ship and the qemu-user command that runs
// it on this amd64 machine.
type armTarget struct {
	name          string // the suffix of make cross: armv6, armv7, arm64
	goarch, goarm string
	qemu          []string
}

var armTargets = []armTarget{
	{"armv6", "arm", "6", []string{"qemu-arm-static", "-cpu", "arm1176"}}, // Raspberry Pi Zero and 1
	{"armv7", "arm", "7", []string{"qemu-arm-static"}},                    // Pi 2
	{"arm64", "arm64", "", []string{"qemu-aarch64-static"}},               // Pi 3, 4, 5 on a 64-bit OS
}

// requireQemu finds qemu-user-static's emulators: a missing one skips the
// test, or fails it when services are required (CI installs them).
func requireQemu(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the arm agents under qemu did not run")
	}
	for _, name := range []string{"qemu-arm-static", "qemu-aarch64-static"} {
		if _, err := exec.LookPath(name); err != nil {
			const hint = "apt-get install qemu-user-static"
			if testsvc.Required() {
				t.Fatalf("%s is not available and %s=1: %s", name, testsvc.RequireEnv, hint)
			}
			t.Skipf("%s is not available, so the arm agents did not run under emulation: %s", name, hint)
		}
	}
}

// buildArmAgents cross-compiles the agent for every target as make cross
// does (static, stripped), in parallel, once per test run.
func buildArmAgents(t *testing.T) map[string]string {
	dir := t.TempDir()
	bins := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, tg := range armTargets {
		wg.Go(func() {
			bin := filepath.Join(dir, "freshet-agent-linux-"+tg.name)
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "../../agent/cmd/freshet-agent")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+tg.goarch, "GOARM="+tg.goarm)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("build %s: %v\n%s", tg.name, err, out)
				return
			}
			mu.Lock()
			bins[tg.name] = bin
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return bins
}

// TestArmAgentsUnderQemu is the baseline scenario with the gateways as they
// run in the field: the agent binaries we ship for armv6, armv7 and arm64,
// each under qemu-user-static, read an emulated SDM120 meter behind a
// Modbus TCP gateway and their thermal zones, and deliver through the
// amd64 hub into InfluxDB: every reading committed is stored exactly once.
func TestArmAgentsUnderQemu(t *testing.T) {
	t.Parallel()
	requireQemu(t)
	bins := buildArmAgents(t)
	hubBin := buildHub(t)
	ix := testsvc.StartInflux(t)
	meters := map[byte]*modbus.Slave{}
	for i := range armTargets {
		m := modbus.NewMeter()
		m.Set(229+float64(i), 3+float64(i), 0.95, 50, time.Now())
		meters[byte(i+1)] = m.Slave
	}
	gw, err := modbus.ListenTCP("127.0.0.1:0", meters)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Stop()
	w := newWorld(t, ix, hubBin, "mochi", fleet.Options{Devices: 1})
	for i, tg := range armTargets {
		sensors := fmt.Sprintf(`  - name: meter
    type: modbus
    interval: 200ms
    modbus:
      endpoint: %s
      unit: %d
      registers:
        - {metric: voltage, unit: V, kind: input, address: 0x0000, type: float32}
        - {metric: power, unit: W, kind: input, address: 0x000c, type: float32}
        - {metric: energy, unit: kWh, kind: input, address: 0x0048, type: float32}
`, gw.Addr, i+1)
		w.procs = append(w.procs, startAgentProc(t, agentProcOptions{bin: bins[tg.name], name: "pi-" + tg.name,
			broker: w.broker.URL(), hubKeys: w.hubKeys(), prefix: tg.qemu, zones: 1, sensors: sensors}))
	}
	run(6 * time.Second)
	for _, s := range meters {
		s.SetFault(modbus.Fault{Silent: true}) // no more readings: the backlogs can drain
	}
	for _, p := range w.procs {
		p.quiesce()
	}
	w.drain()
	w.check()
	// Each arm agent committed meter readings, so the check above covered them.
	truth := w.truth()
	for _, tg := range armTargets {
		n := 0
		for k := range truth {
			if k.device == "pi-"+tg.name && k.sensor == "meter" {
				n++
			}
		}
		if n == 0 {
			t.Errorf("the %s agent under %v committed no meter reading", tg.name, tg.qemu)
		}
		t.Logf("%s agent under %v: %d meter readings", tg.name, tg.qemu, n)
	}
}
