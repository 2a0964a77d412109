package hub_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

func TestConfigFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	if len(files) < 5 {
		t.Fatalf("only %d fixtures", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := hub.LoadConfig(f)
			if strings.HasSuffix(f, ".good.yaml") {
				if err != nil {
					t.Fatalf("good config refused: %v", err)
				}
				return
			}
			fh, _ := os.Open(f)
			defer fh.Close()
			s := bufio.NewScanner(fh)
			s.Scan()
			want, _ := strings.CutPrefix(s.Text(), "# error: ")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v, want one containing %q", err, want)
			}
		})
	}
}

func TestExampleConfig(t *testing.T) {
	c, err := hub.LoadConfig("../deploy/hub.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Broker.MaxInflight != 1000 || len(c.Windows.Sizes) != 2 || c.Influx.BatchLines != 5000 || c.Memory.GCPercent != hub.DefaultGCPercent ||
		c.Limits != (hub.LimitsConfig{Devices: hub.DefaultMaxDevices, SeriesPerDevice: hub.DefaultMaxSeriesPerDevice, EpochsPerDevice: hub.DefaultMaxEpochsPerDevice}) {
		t.Fatalf("example decoded to %+v", c)
	}
}

// TestAckKeyFile: the hub's ack key loads, and a missing or wrong file is
// an error that names ack_key_file and what is wrong with it.
func TestAckKeyFile(t *testing.T) {
	key := testsvc.NewAckKey(t)
	load := func(path string) (*protocol.AckSigner, error) {
		c, err := hub.ParseConfig(strings.NewReader("broker: {url: \"tcp://h:1883\"}\ninflux: {url: \"http://h:8086\", bucket: b}\nack_key_file: " + path + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		return c.AckSigner()
	}
	if s, err := load(key.KeyFile); err != nil || s.KeyID() != key.Signer.KeyID() {
		t.Fatalf("AckSigner: %v %v", s, err)
	}
	for path, want := range map[string]string{
		filepath.Join(t.TempDir(), "nope"): "no such file",
		key.PubFile:                        "holds a public key",
		"config_test.go":                   "no PEM block",
	} {
		if _, err := load(path); err == nil || !strings.HasPrefix(err.Error(), "ack_key_file: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ack_key_file: ... %s", path, err, want)
		}
	}
	c, err := hub.ParseConfig(strings.NewReader("broker: {url: \"tcp://h:1883\"}\ninflux: {url: \"http://h:8086\", bucket: b}\ninsecure_unsigned_acks: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.AckSigner(); s != nil || err != nil {
		t.Errorf("insecure_unsigned_acks: signer %v %v", s, err)
	}
}
