package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/chip/sysfs"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// agentProc is a freshet-agent process reading sysfs thermal zones (and,
// for the arm agents under qemu, an emulated meter).
type agentProc struct {
	t         *testing.T
	bin, cfg  string
	prefix    []string // an emulator to run bin under: qemu-arm-static -cpu arm1176
	commitLog string
	root      string
	health    string
	cmd       *exec.Cmd
	out       *strings.Builder
}

func buildAgent(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "freshet-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../../agent/cmd/freshet-agent").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func newAgentProc(t *testing.T, bin, name, brokerURL string, hubKeys []string) *agentProc {
	return startAgentProc(t, agentProcOptions{bin: bin, name: name, broker: brokerURL, hubKeys: hubKeys, zones: 4})
}

type agentProcOptions struct {
	bin, name, broker string
	hubKeys           []string // mqtt.hub_keys
	prefix            []string // run bin under this emulator
	zones             int      // cpu_temp sensors
	sensors           string   // more sensors, as YAML list items
	mqtt              string   // more mqtt keys, as YAML flow mapping items: ", username: gw-1"
}

func startAgentProc(t *testing.T, o agentProcOptions) *agentProc {
	bin, name, brokerURL := o.bin, o.name, o.broker
	dir := t.TempDir()
	p := &agentProc{t: t, bin: bin, prefix: o.prefix, root: filepath.Join(dir, "sys-root"), commitLog: filepath.Join(dir, "commits.log")}
	port, _ := testsvc.FreePort()
	p.health = fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	cfg := fmt.Sprintf(`device: %s
data_dir: %s
sys_root: %s
commit_log: %s
mqtt: {broker: %q, hub_keys: [%s], backoff_min: 50ms, backoff_max: 500ms, ack_timeout: 2s%s}
outbox: {commit_interval: 200ms, max_batch_age: 500ms}
http: {listen: "127.0.0.1:%d"}
sensors:
`, name, dir, p.root, p.commitLog, brokerURL, strings.Join(o.hubKeys, ", "), o.mqtt, port)
	for z := range o.zones {
		if _, err := sysfs.NewThermalZone(p.root, z, "zone", 40+float64(z)); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("  - {name: zone%d, type: cpu_temp, zone: %d, interval: 100ms}\n", z, z)
	}
	cfg += o.sensors
	p.cfg = filepath.Join(dir, "agent.yaml")
	os.WriteFile(p.cfg, []byte(cfg), 0o644)
	p.start()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *agentProc) start() {
	argv := append(append([]string{}, p.prefix...), p.bin, "-config", p.cfg)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.out = &strings.Builder{}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *agentProc) kill() {
	if p.cmd != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// reboot stops the agent cleanly (SIGTERM) and starts it again.
func (p *agentProc) reboot() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		p.t.Fatalf("clean stop: %v\n%s", err, p.out)
	}
	p.start()
}

// quiesce stops the sensors (their sysfs files disappear, so reads fail and
// are counted) and waits until the agent reports an empty backlog.
func (p *agentProc) quiesce() {
	os.RemoveAll(filepath.Join(p.root, "sys"))
	testsvc.WaitFor(p.t, 60*time.Second, "agent backlog drained", func() error {
		resp, err := http.Get(p.health)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var h struct {
			Backlog struct{ Readings, Batches uint64 }
		}
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			return err
		}
		if h.Backlog.Readings != 0 || h.Backlog.Batches != 0 {
			return fmt.Errorf("backlog %+v", h.Backlog)
		}
		return nil
	})
}

// hubProc is a freshet-hub process (a scenario's hub, or one of a cluster).
type hubProc struct {
	t       testing.TB
	name    string
	bin     string
	cfg     string
	dataDir string
	httpURL string
	env     []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	out     *strings.Builder
	done    chan error
}

// startTB starts the hub for tb.
func (h *hubProc) startTB(tb testing.TB) {
	h.t = tb
	h.start()
}

// pid is the running hub's process id (0 if none).
func (h *hubProc) pid() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

func (h *hubProc) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	cmd := exec.Command(h.bin, "-config", h.cfg)
	cmd.Env = append(os.Environ(), h.env...)
	h.out = &strings.Builder{}
	cmd.Stdout, cmd.Stderr = h.out, h.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.cmd, h.done = cmd, make(chan error, 1)
	go func(done chan error) { done <- cmd.Wait() }(h.done)
}

// stop ends the hub: SIGKILL (kill) or SIGTERM.
func (h *hubProc) stop(kill bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return
	}
	if kill {
		h.cmd.Process.Kill()
	} else {
		h.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-h.done
	}
	h.cmd = nil
}

// metric reads one sample of the hub's /metrics (-1 if unreachable).
func (h *hubProc) metric(name string) float64 {
	w := &world{httpURL: h.httpURL}
	return w.metric(name)
}
