package localsvc

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
	p                     *Proc
	addr                  string
	dbSeq                 atomic.Int64
}

// InfluxOptions adjust StartInflux. The zero value is fine.
type InfluxOptions struct {
	// Dir holds the data and config; default a new temporary directory.
	Dir string
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
		p: &Proc{Name: "influxd", Path: path, Args: []string{"run", "-config", confPath}, LogPath: filepath.Join(dir, "influxd.log")},
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
	if i.p.Running() {
		return fmt.Errorf("influxd on %s is already running", i.addr)
	}
	if err := i.p.Start(); err != nil {
		return err
	}
	err := Poll(60*time.Second, func() error {
		if !i.p.Running() {
			return fmt.Errorf("influxd exited (%v); log:\n%s", i.p.ExitErr(), i.p.Tail(20))
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
		i.p.Kill()
	}
	return err
}

// Stop stops influxd gracefully.
func (i *Influx) Stop() { i.p.Stop(10 * time.Second) }

// Kill stops influxd with SIGKILL.
func (i *Influx) Kill() { i.p.Kill() }

// NewDatabaseName returns a fresh database name and creates the database.
// Its v2 bucket is name + "/autogen".
func (i *Influx) NewDatabaseName() (string, error) {
	name := fmt.Sprintf("test_%d", i.dbSeq.Add(1))
	return name, i.CreateDatabase(name)
}

// LogTail returns the last n lines of influxd's log.
func (i *Influx) LogTail(n int) string { return i.p.Tail(n) }

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

// QueryToken runs an InfluxQL query as Grafana's InfluxQL data source and
// InfluxDB 2.x and 3.x clients send it: db and epoch=ms in the URL, q in a
// POST body, and the credentials in an "Authorization: Token" header
// (which 1.8 takes as "Token user:password"). Times come back in ms.
func (i *Influx) QueryToken(db, q string) ([]Series, error) {
	req, err := http.NewRequest(http.MethodPost, i.URL+"/query?"+url.Values{"db": {db}, "epoch": {"ms"}}.Encode(),
		strings.NewReader(url.Values{"q": {q}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Token "+i.Token)
	return i.do(req, q)
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
	return i.do(req, q)
}

// do sends a /query request and returns the series of its first statement.
func (i *Influx) do(req *http.Request, q string) ([]Series, error) {
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
