package deploy_test

import (
	"fmt"
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
	"github.com/freshet-iot/freshet/internal/testsvc"
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
				if src == "./certs" || src == "./hub-http-token" || src == "./ack-key" {
					continue // made by make-certs.sh, by openssl rand (step 3 in compose.yaml) and by make-ack-key.sh
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
	for _, f := range []string{cfg.Broker.TLS.CAFile, cfg.Broker.TLS.CertFile, cfg.Broker.TLS.KeyFile, cfg.DataDir, cfg.HTTP.TokenFile, cfg.AckKeyFile} {
		if !mounted("freshet-hub", f) {
			t.Errorf("hub path %s is not mounted", f)
		}
	}
	// The ack key signs what makes agents delete readings: only the hub has it.
	for name := range c.Services {
		if name != "freshet-hub" && mounted(name, cfg.AckKeyFile) {
			t.Errorf("%s mounts the hub's ack key %s", name, cfg.AckKeyFile)
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

// TestDashboard checks the Grafana dashboard against the hub and the
// stack: every InfluxDB measurement its InfluxQL reads is one the hub
// writes, every Prometheus metric is one the hub exposes, every datasource
// is provisioned, and the InfluxDB datasource speaks InfluxQL to the
// compose stack's bucket with its token. TestDashboardQueries runs the
// queries.
func TestDashboard(t *testing.T) {
	dash := readDashboard(t)
	metricNames := hubMetricNames(t)
	measurements := map[string]bool{schema.GapMeasurement: true, schema.QualityMeasurement: true, "temperature": true} // raw: the metric name (the fleet's)
	for _, size := range []time.Duration{time.Minute, time.Hour} {
		measurements["temperature_"+schema.WindowName(size)] = true
	}
	fromRe := regexp.MustCompile(`(?i)\bFROM\s+("[^"]+"(?:\s*,\s*"[^"]+")*)`)
	checkInfluxQL := func(what, q string) {
		froms := fromRe.FindAllStringSubmatch(q, -1)
		if strings.Contains(q, "|>") || len(froms) == 0 {
			t.Errorf("%s: not InfluxQL reading a measurement: %s", what, q)
		}
		for _, f := range froms {
			for _, m := range regexp.MustCompile(`"([^"]+)"`).FindAllStringSubmatch(f[1], -1) {
				if !measurements[m[1]] {
					t.Errorf("%s reads measurement %s, which the hub does not write", what, m[1])
				}
			}
		}
	}
	ds := provisionedDatasources(t)
	panels := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		panels++
		if _, ok := ds[p.Datasource.UID]; !ok {
			t.Errorf("panel %q: datasource %q is not provisioned", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			if ds[p.Datasource.UID].Type == "influxdb" {
				checkInfluxQL(fmt.Sprintf("panel %q", p.Title), tg.Query)
			}
			for _, m := range regexp.MustCompile(`freshet_hub_[a-z_]+`).FindAllString(tg.Expr, -1) {
				if !slices.Contains(metricNames, m) {
					t.Errorf("panel %q uses metric %s, which the hub does not expose (%v)", p.Title, m, metricNames)
				}
			}
		}
	}
	if panels < 12 {
		t.Errorf("%d panels", panels)
	}
	for _, v := range dash.Templating.List {
		checkInfluxQL("variable "+v.Name, v.Query)
	}

	// The InfluxDB datasource: InfluxQL on the stack's bucket (2.x maps a
	// database of the bucket's name to it), the token in the header.
	var c composeFile
	data, _ := os.ReadFile("compose/compose.yaml")
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	ix := ds["freshet-influx"]
	influxSvc := c.Services["influxdb"]
	u, _ := url.Parse(ix.URL)
	if ix.Type != "influxdb" || ix.JSONData["version"] != "InfluxQL" || ix.JSONData["dbName"] != influxSvc.Environment["DOCKER_INFLUXDB_INIT_BUCKET"] ||
		u == nil || u.Hostname() != "influxdb" {
		t.Errorf("InfluxDB datasource %+v: want InfluxQL on database %q at the influxdb service", ix, influxSvc.Environment["DOCKER_INFLUXDB_INIT_BUCKET"])
	}
	if ix.JSONData["httpHeaderName1"] != "Authorization" || ix.SecureJSONData["httpHeaderValue1"] != "Token ${INFLUX_TOKEN}" ||
		c.Services["grafana"].Environment["INFLUX_TOKEN"] != influxSvc.Environment["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] {
		t.Errorf("InfluxDB datasource sends header %v: %v; grafana's $INFLUX_TOKEN is %q", ix.JSONData["httpHeaderName1"],
			ix.SecureJSONData["httpHeaderValue1"], c.Services["grafana"].Environment["INFLUX_TOKEN"])
	}
	if prom := ds["freshet-prometheus"]; prom.Type != "prometheus" {
		t.Errorf("Prometheus datasource %+v", prom)
	}
}

type datasource struct {
	Type           string            `yaml:"type"`
	URL            string            `yaml:"url"`
	JSONData       map[string]string `yaml:"jsonData"`
	SecureJSONData map[string]string `yaml:"secureJsonData"`
}

// provisionedDatasources reads Grafana's provisioned datasources by uid.
func provisionedDatasources(t *testing.T) map[string]datasource {
	t.Helper()
	data, err := os.ReadFile("compose/grafana/datasources/datasources.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Datasources []struct {
			UID        string `yaml:"uid"`
			datasource `yaml:",inline"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]datasource{}
	for _, d := range f.Datasources {
		out[d.UID] = d.datasource
	}
	return out
}

// hubMetricNames builds a hub with its embedded broker (not run: it
// connects to nothing) and lists the metrics its registry exposes: the
// pipeline's, and the embedded broker's, which a hub on another broker
// does not have.
func hubMetricNames(t *testing.T) []string {
	t.Helper()
	t.Setenv("FRESHET_TEST_METRICS_TOKEN", "user:password")
	cfg, err := hub.ParseConfig(strings.NewReader(`
data_dir: ` + t.TempDir() + `
broker: {embedded: {listen: "127.0.0.1:0"}}
influx: {url: "http://127.0.0.1:1", bucket: x/autogen, token_env: FRESHET_TEST_METRICS_TOKEN}
http: {listen: "off"}
ack_key_file: ` + testsvc.NewAckKey(t).KeyFile + `
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
	if !slices.Contains(names, "freshet_hub_readings_total") || !slices.Contains(names, "freshet_hub_quality_open_findings") ||
		!slices.Contains(names, "freshet_hub_broker_refused_connections_total") {
		t.Fatalf("the hub's registry lists %v", names)
	}
	return names
}
