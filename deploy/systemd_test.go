package deploy_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/internal/ackkey"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// unit parses a systemd unit file into section -> key -> values.
func unit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		l := strings.TrimSpace(s.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s: line %q", path, l)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestAgentUnit checks the systemd unit against the agent: where it keeps
// its state and config, how long it may take to stop, and its hardening;
// then systemd-analyze verify must have nothing to say about it.
func TestAgentUnit(t *testing.T) {
	u := unit(t, "systemd/freshet-agent.service")
	svc := u["Service"]
	get := func(k string) string {
		if len(svc[k]) == 0 {
			t.Fatalf("[Service] lacks %s", k)
		}
		return svc[k][len(svc[k])-1]
	}
	if get("ExecStart") != "/usr/local/bin/freshet-agent -config /etc/freshet/agent.yaml" {
		t.Errorf("ExecStart %q", get("ExecStart"))
	}
	// The agent's default data_dir is the unit's StateDirectory, and the
	// example config (what install.sh installs) keeps it.
	def, err := agent.ParseConfig(strings.NewReader("device: x\nmqtt: {broker: tcp://h:1883, hub_keys: [/etc/freshet/hub-ack.pub]}\nsensors: [{name: c, type: cpu_temp}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := agent.LoadConfig("agent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	state := "/var/lib/" + get("StateDirectory")
	if def.DataDir != state || ex.DataDir != state {
		t.Errorf("StateDirectory %s, agent default data_dir %s, example %s", state, def.DataDir, ex.DataDir)
	}
	if stop, err := time.ParseDuration(get("TimeoutStopSec") + "s"); err != nil || stop < 5*time.Second {
		t.Errorf("TimeoutStopSec %s: the agent needs 5 s to stop cleanly", get("TimeoutStopSec"))
	}
	for k, want := range map[string]string{"User": "freshet", "Restart": "always", "ProtectSystem": "strict",
		"NoNewPrivileges": "yes", "PrivateTmp": "yes", "DevicePolicy": "closed", "CapabilityBoundingSet": ""} {
		if got := get(k); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	// Devices: I2C buses and the serial ports Modbus RTU adapters appear as.
	if got, want := strings.Join(svc["DeviceAllow"], ", "), "char-i2c rw, char-ttyUSB rw, char-ttyACM rw, char-ttyAMA rw, char-ttyS rw"; got != want {
		t.Errorf("DeviceAllow %s, want %s", got, want)
	}
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if testsvc.Required() {
			t.Fatalf("systemd-analyze is not installed and %s=1", testsvc.RequireEnv)
		}
		t.Skip("systemd-analyze is not installed, so the unit was not verified by systemd")
	}
	// Verify a copy whose ExecStart exists here.
	data, _ := os.ReadFile("systemd/freshet-agent.service")
	bin, _ := exec.LookPath("true")
	copyPath := filepath.Join(t.TempDir(), "freshet-agent.service")
	os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/freshet-agent", bin)), 0o644)
	out, err := exec.Command(tool, "verify", copyPath).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestAddHubKey: add-hub-key.sh (install.sh's, and a rotation's) builds a
// key file the agent loads, one key per hub key added, never twice, and
// refuses a private key; install.sh parses.
func TestAddHubKey(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	sa, err := ackkey.Generate(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := ackkey.Generate(b)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "hub-ack.pub")
	run := func(src string) (string, error) {
		out, err := exec.Command("./systemd/add-hub-key.sh", dest, src).CombinedOutput()
		return string(out), err
	}
	for _, src := range []string{filepath.Join(a, ackkey.PubFile), filepath.Join(a, ackkey.PubFile), filepath.Join(b, ackkey.PubFile)} {
		if out, err := run(src); err != nil {
			t.Fatalf("add-hub-key.sh %s: %v\n%s", src, err, out)
		}
	}
	keys, err := ackkey.LoadKeys([]string{dest}, "mqtt.hub_keys")
	if err != nil {
		t.Fatal(err)
	}
	ids := keys.IDs()
	slices.Sort(ids)
	want := []string{sa.KeyID(), sb.KeyID()}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("key file holds %v, want %v", ids, want)
	}
	if data, _ := os.ReadFile(dest); strings.Count(string(data), "BEGIN PUBLIC KEY") != 2 {
		t.Errorf("key file:\n%s", data)
	}
	if out, err := run(filepath.Join(a, ackkey.KeyFile)); err == nil || !strings.Contains(out, "holds a private key") {
		t.Errorf("a private key: %v\n%s", err, out)
	}
	if out, err := exec.Command("bash", "-n", "systemd/install.sh").CombinedOutput(); err != nil {
		t.Errorf("install.sh: %v\n%s", err, out)
	}
}
