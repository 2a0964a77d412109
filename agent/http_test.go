package agent_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/firmware-sim/chip/sysfs"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// TestHTTPToken: with http.token_file, /metrics needs the token (bearer, or
// basic authentication's password) and refusals are counted; /healthz
// stays open for probes but tells the device, epoch and backlog only to a
// request with the token. An empty token file is an error naming its key.
func TestHTTPToken(t *testing.T) {
	root, data := t.TempDir(), t.TempDir()
	if _, err := sysfs.NewThermalZone(root, 0, "cpu-thermal", 48.5); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(data, "http-token")
	os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600)
	cfgText := fmt.Sprintf(`
device: gw-http
data_dir: %s
sys_root: %s
mqtt: {broker: "tcp://127.0.0.1:9", hub_keys: [%s]}
http: {listen: "0.0.0.0:0", token_file: %s}
sensors: [{name: cpu, type: cpu_temp}]
`, data, root, testsvc.NewAckKey(t).PubFile, tokenFile)
	cfg, err := agent.ParseConfig(strings.NewReader(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h := a.Handler()
	get := func(path string, auth func(*http.Request)) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		if auth != nil {
			auth(req)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	basic := func(r *http.Request) { r.SetBasicAuth("anyone", "s3cret-token") }

	for _, auth := range []func(*http.Request){nil, bearer("wrong"), bearer(""), func(r *http.Request) { r.SetBasicAuth("x", "wrong") }} {
		if rec := get("/metrics", auth); rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "http.token_file") {
			t.Errorf("/metrics without the right token: %d %q", rec.Code, rec.Body)
		} else if rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("/metrics refused without a challenge for a browser")
		}
	}
	for _, auth := range []func(*http.Request){bearer("s3cret-token"), basic} {
		rec := get("/metrics", auth)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "freshet_agent_http_unauthorized_total 4\n") {
			t.Errorf("/metrics with the token: %d, want 4 refusals counted in:\n%s", rec.Code, rec.Body)
		}
		if rec := get("/healthz", auth); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"device":"gw-http"`) {
			t.Errorf("/healthz with the token: %d %s", rec.Code, rec.Body)
		}
	}
	if rec := get("/healthz", nil); rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"status":"ok"}` {
		t.Errorf("/healthz without the token: %d %s, want only the status", rec.Code, rec.Body)
	}

	os.WriteFile(tokenFile, []byte("\n"), 0o600)
	if _, err := agent.New(cfg, agent.Options{}); err == nil || !strings.Contains(err.Error(), "http.token_file") {
		t.Errorf("an empty token file: %v, want an error naming http.token_file", err)
	}
}
