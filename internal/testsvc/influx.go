package testsvc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Influx is a running InfluxDB 1.8 with authentication on and Flux enabled,
// reachable through its v2 compatibility API (bucket "db/rp", token
// "user:password") as well as InfluxQL.
type Influx struct {
	// URL is the HTTP base URL, e.g. http://127.0.0.1:41234.
	URL string
	// User and Password of the admin user; Token is "User:Password".
	User, Password, Token string
	p                     *proc
	addr                  string
	dbSeq                 atomic.Int64
}

// InfluxOptions adjust StartInflux. The zero value is fine.
type InfluxOptions struct {
	// Dir holds the data and config; default a new temporary directory.
	Dir string
}

// StartInflux starts influxd (built by `make tools` into .tools/bin, or
// $FRESHET_INFLUXD) for the duration of tb, or skips (fails when services
// are required) if it is not built.
func StartInflux(tb testing.TB) *Influx {
	tb.Helper()
	skipShort(tb, "influxd")
	path, err := ToolPath("influxd", "FRESHET_INFLUXD")
	if err != nil {
		missing(tb, "influxd 1.8", err.Error())
	}
	i, err := NewInflux(path, tb.TempDir())
	if err != nil {
		tb.Fatalf("start influxd: %v", err)
	}
	tb.Cleanup(func() {
		i.Stop()
		if tb.Failed() {
			tb.Logf("influxd log:\n%s", i.p.tail(30))
		}
	})
	return i
}

// NewInflux starts the influxd binary at path with its state under dir and
// returns once it answers with an admin user created. Stop it with Stop.
func NewInflux(path, dir string) (*Influx, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	rpc, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
  trace-logging-enabled = false
  cache-snapshot-write-cold-duration = "10s"
[http]
  bind-address = %q
  auth-enabled = true
  flux-enabled = true
  log-enabled = false
  pprof-enabled = false
[logging]
  level = "warn"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
`, rpc, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), addr)
	confPath := filepath.Join(dir, "influxdb.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	i := &Influx{
		URL: "http://" + addr, User: "freshet", Password: "freshet-test", addr: addr,
		p: &proc{name: "influxd", path: path, args: []string{"run", "-config", confPath}, logPath: filepath.Join(dir, "influxd.log")},
	}
	i.Token = i.User + ":" + i.Password
	if err := i.Start(); err != nil {
		return nil, err
	}
	// With no users yet, influxd lets the first admin be created without credentials.
	if _, err := i.query("", fmt.Sprintf("CREATE USER %q WITH PASSWORD '%s' WITH ALL PRIVILEGES", i.User, i.Password), false); err != nil {
		// A data directory used before already has the user.
		if _, aerr := i.query("", "SHOW DATABASES", true); aerr != nil {
			i.Stop()
			return nil, fmt.Errorf("create admin user: %w", err)
		}
	}
	return i, nil
}

// Start starts a stopped influxd again on the same port with the same data.
func (i *Influx) Start() error {
	if i.p.running() {
		return fmt.Errorf("influxd on %s is already running", i.addr)
	}
	if err := i.p.start(); err != nil {
		return err
	}
	err := Poll(60*time.Second, func() error {
		if !i.p.running() {
			return fmt.Errorf("influxd exited (%v); log:\n%s", i.p.waitErr, i.p.tail(20))
		}
		resp, err := http.Get(i.URL + "/ping")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("ping: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		i.p.kill()
	}
	return err
}

// Stop stops influxd gracefully.
func (i *Influx) Stop() { i.p.stop(10 * time.Second) }

// Kill stops influxd with SIGKILL.
func (i *Influx) Kill() { i.p.kill() }

// NewDatabase creates a database with a fresh name and returns the name.
// Its v2 bucket is name + "/autogen".
func (i *Influx) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("test_%d", i.dbSeq.Add(1))
	if err := i.CreateDatabase(name); err != nil {
		tb.Fatal(err)
	}
	return name
}

// CreateDatabase creates the database name (idempotent).
func (i *Influx) CreateDatabase(name string) error {
	_, err := i.query("", fmt.Sprintf("CREATE DATABASE %q", name), true)
	return err
}

// Series is one series of an InfluxQL result.
type Series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// Query runs an InfluxQL query against db and returns the series of its
// first statement. Numbers come back as json.Number.
func (i *Influx) Query(db, q string) ([]Series, error) {
	return i.query(db, q, true)
}

func (i *Influx) query(db, q string, auth bool) ([]Series, error) {
	form := url.Values{"q": {q}, "epoch": {"ns"}}
	if db != "" {
		form.Set("db", db)
	}
	req, err := http.NewRequest(http.MethodPost, i.URL+"/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth {
		req.SetBasicAuth(i.User, i.Password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("influxql %q: %s: %s", q, resp.Status, body)
	}
	var out struct {
		Results []struct {
			Series []Series `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("influxql %q: %w", q, err)
	}
	if out.Error != "" {
		return nil, fmt.Errorf("influxql %q: %s", q, out.Error)
	}
	if len(out.Results) == 0 {
		return nil, nil
	}
	if e := out.Results[0].Error; e != "" {
		return nil, fmt.Errorf("influxql %q: %s", q, e)
	}
	return out.Results[0].Series, nil
}
