package deploy_test

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/hub/schema"
)

type composeFile struct {
	Services map[string]struct {
		Image       string                                `yaml:"image"`
		Build       *struct{ Context, Dockerfile string } `yaml:"build"`
		Command     []string                              `yaml:"command"`
		Ports       []string                              `yaml:"ports"`
		Environment map[string]string                     `yaml:"environment"`
		Volumes     []string                              `yaml:"volumes"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// TestComposeStack checks the compose file against the hub's config and
// schema (there is no container engine here to run it): every service is
// pinned and health-checked, volumes exist, the hub config loads and points
// at the stack's services, secrets flow by the names the configs use, the
// mounted files exist, and the ports line up.
func TestComposeStack(t *testing.T) {
	data, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mosquitto", "influxdb", "freshet-hub", "prometheus", "grafana"} {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("%s has no health check", name)
		}
		if s.Build == nil && (!strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest")) {
			t.Errorf("%s image %q is not pinned", name, s.Image)
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if src == "./certs" || src == "./hub-http-token" {
					continue // made by make-certs.sh, and by openssl rand (step 2 in compose.yaml)
				}
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("%s mounts %s: %v", name, src, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("%s uses volume %s, not declared", name, src)
			}
		}
	}
	hubSvc := c.Services["freshet-hub"]
	if _, err := os.Stat(filepath.Join("..", hubSvc.Build.Dockerfile)); err != nil {
		t.Errorf("Dockerfile: %v", err)
	}
	df, _ := os.ReadFile(filepath.Join("..", hubSvc.Build.Dockerfile))
	if !strings.Contains(string(df), "./hub/cmd/freshet-hub") {
		t.Error("the Dockerfile does not build ./hub/cmd/freshet-hub")
	}
	// The hub's config loads and refers to the stack.
	cfg, err := hub.LoadConfig("compose/hub.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bu, _ := url.Parse(cfg.Broker.URL)
	iu, _ := url.Parse(cfg.Influx.URL)
	if _, ok := c.Services[bu.Hostname()]; !ok || bu.Port() != "8883" {
		t.Errorf("hub broker %s is not the mosquitto service's TLS port", cfg.Broker.URL)
	}
	if _, ok := c.Services[iu.Hostname()]; !ok {
		t.Errorf("hub influx %s is not a service", cfg.Influx.URL)
	}
	if _, ok := hubSvc.Environment[cfg.Influx.TokenEnv]; !ok {
		t.Errorf("hub reads the token from $%s, which the service does not set", cfg.Influx.TokenEnv)
	}
	if cfg.Influx.Org != c.Services["influxdb"].Environment["DOCKER_INFLUXDB_INIT_ORG"] || cfg.Influx.Bucket != c.Services["influxdb"].Environment["DOCKER_INFLUXDB_INIT_BUCKET"] {
		t.Errorf("hub org/bucket %s/%s differ from InfluxDB's set-up", cfg.Influx.Org, cfg.Influx.Bucket)
	}
	mounted := func(svc, target string) bool {
		for _, v := range c.Services[svc].Volumes {
			if parts := strings.Split(v, ":"); len(parts) >= 2 && strings.HasPrefix(target, parts[1]) {
				return true
			}
		}
		return false
	}
	for _, f := range []string{cfg.Broker.TLS.CAFile, cfg.Broker.TLS.CertFile, cfg.Broker.TLS.KeyFile, cfg.DataDir, cfg.HTTP.TokenFile} {
		if !mounted("freshet-hub", f) {
			t.Errorf("hub path %s is not mounted", f)
		}
	}
	_, port, _ := strings.Cut(cfg.HTTP.Listen, ":")
	if !slices.Contains(hubSvc.Ports, port+":"+port) || !strings.Contains(strings.Join(hubSvc.Healthcheck.Test, " "), ":"+port+"/readyz") {
		t.Errorf("hub listens on %s; ports %v, health check %v", port, hubSvc.Ports, hubSvc.Healthcheck.Test)
	}
	prom, _ := os.ReadFile("compose/prometheus.yml")
	if !strings.Contains(string(prom), "freshet-hub:"+port) {
		t.Error("prometheus does not scrape the hub's port")
	}
	if cfg.HTTP.TokenFile == "" || !strings.Contains(string(prom), "credentials_file: /etc/prometheus/hub-http-token") || !mounted("prometheus", "/etc/prometheus/hub-http-token") {
		t.Error("the hub's published HTTP port needs a token, which prometheus must send")
	}
	// Mosquitto's config refers to what the service mounts.
	conf, _ := os.ReadFile("mosquitto/mosquitto.conf")
	for _, m := range regexp.MustCompile(`(?m)^(?:cafile|certfile|keyfile|acl_file) (\S+)`).FindAllStringSubmatch(string(conf), -1) {
		if !mounted("mosquitto", m[1]) {
			t.Errorf("mosquitto.conf uses %s, which the service does not mount", m[1])
		}
	}
}

// TestDashboard checks the Grafana dashboard against the hub: every
// InfluxDB measurement it reads is one the hub writes, every Prometheus
// metric is one the hub exposes, and every datasource is provisioned.
func TestDashboard(t *testing.T) {
	var dash struct {
		Panels []struct {
			Title      string               `json:"title"`
			Datasource struct{ UID string } `json:"datasource"`
			Targets    []struct {
				Query string `json:"query"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	data, err := os.ReadFile("compose/grafana/dashboards/freshet.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	ds, _ := os.ReadFile("compose/grafana/datasources/datasources.yaml")
	metricNames := hubMetricNames(t)
	measurements := map[string]bool{schema.GapMeasurement: true, schema.QualityMeasurement: true, "temperature": true} // raw: the metric name (the fleet's)
	for _, size := range []time.Duration{time.Minute, time.Hour} {
		measurements["temperature_"+schema.WindowName(size)] = true
	}
	if len(dash.Panels) < 8 {
		t.Fatalf("%d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		if !strings.Contains(string(ds), "uid: "+p.Datasource.UID) {
			t.Errorf("panel %q: datasource %q is not provisioned", p.Title, p.Datasource.UID)
		}
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`_measurement == "([^"]+)"`).FindAllStringSubmatch(tg.Query, -1) {
				if !measurements[m[1]] {
					t.Errorf("panel %q reads measurement %s, which the hub does not write", p.Title, m[1])
				}
			}
			for _, m := range regexp.MustCompile(`freshet_hub_[a-z_]+`).FindAllString(tg.Expr, -1) {
				if !slices.Contains(metricNames, m) {
					t.Errorf("panel %q uses metric %s, which the hub does not expose (%v)", p.Title, m, metricNames)
				}
			}
		}
	}
}

// hubMetricNames builds a hub (not run: it connects to nothing) and lists
// the metrics its registry exposes.
func hubMetricNames(t *testing.T) []string {
	t.Helper()
	t.Setenv("FRESHET_TEST_METRICS_TOKEN", "user:password")
	cfg, err := hub.ParseConfig(strings.NewReader(`
data_dir: ` + t.TempDir() + `
broker: {url: "tcp://127.0.0.1:1"}
influx: {url: "http://127.0.0.1:1", bucket: x/autogen, token_env: FRESHET_TEST_METRICS_TOKEN}
http: {listen: "off"}
`))
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(cfg, hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	names, err := h.MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, "freshet_hub_readings_total") || !slices.Contains(names, "freshet_hub_quality_open_findings") {
		t.Fatalf("the hub's registry lists %v", names)
	}
	return names
}
