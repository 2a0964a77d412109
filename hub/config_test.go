package hub_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/freshet-iot/freshet/hub"
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
