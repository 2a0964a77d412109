package agent_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent"
)

// TestConfigFixtures loads every testdata/config/*.good.yaml (must load)
// and *.bad.yaml (must fail with the error its first line names).
func TestConfigFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	if len(files) < 10 {
		t.Fatalf("only %d fixtures", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := agent.LoadConfig(f)
			if strings.HasSuffix(f, ".good.yaml") {
				if err != nil {
					t.Fatalf("good config refused: %v", err)
				}
				return
			}
			want := firstLineError(t, f)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v, want one containing %q", err, want)
			}
		})
	}
}

func firstLineError(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan()
	want, ok := strings.CutPrefix(s.Text(), "# error: ")
	if !ok {
		t.Fatalf("%s: first line must be '# error: <text>'", path)
	}
	return want
}

// TestExampleConfig: the commented example users start from always loads.
func TestExampleConfig(t *testing.T) {
	c, err := agent.LoadConfig("../deploy/agent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sensors) < 6 || c.MQTT.Window != 8 || time.Duration(c.Outbox.CommitInterval) != time.Second {
		t.Fatalf("example config decoded to %+v", c)
	}
	if c.Sensors[0].Labels["site"] != "north-barn" || c.Sensors[0].Labels["room"] != "attic" {
		t.Fatalf("agent labels not merged into sensors: %v", c.Sensors[0].Labels)
	}
}

func TestDefaults(t *testing.T) {
	c, err := agent.LoadConfig("testdata/config/minimal.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/lib/freshet-agent" || c.HTTP.Listen != "127.0.0.1:9273" || c.Outbox.DropPolicy != "drop_oldest" ||
		int64(c.Outbox.MaxBytes) != 256<<20 || time.Duration(c.MQTT.AckTimeout) != 30*time.Second ||
		c.Memory.GCPercent != agent.DefaultGCPercent {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret\n"), 0o600)
	m := agent.MQTTConfig{PasswordFile: filepath.Join(dir, "pw")}
	if pw, err := m.Password(); err != nil || pw != "s3cret" {
		t.Fatalf("password file: %q, %v", pw, err)
	}
	t.Setenv("FRESHET_TEST_PW", "from-env")
	m = agent.MQTTConfig{PasswordEnv: "FRESHET_TEST_PW"}
	if pw, err := m.Password(); err != nil || pw != "from-env" {
		t.Fatalf("password env: %q, %v", pw, err)
	}
	m = agent.MQTTConfig{PasswordEnv: "FRESHET_TEST_UNSET_PW"}
	if _, err := m.Password(); err == nil || !strings.Contains(err.Error(), "mqtt.password_env") {
		t.Fatalf("unset env: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "64KiB": 64 << 10, "256MiB": 256 << 20, "2GB": 2e9, "1 GiB": 1 << 30} {
		if got, err := agent.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1TB", "9999999999GiB"} {
		if _, err := agent.ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}
