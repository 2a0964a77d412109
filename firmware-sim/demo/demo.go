// Package demo is `make run`: a local influxd (unless FRESHET_INFLUX_URL is
// set), the freshet-hub binary with its embedded broker, and a fleet of
// simulated gateways on flaky links, with a live progress line. Stopping it
// (Ctrl-C) stops everything it started.
package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/internal/ackkey"
	"github.com/freshet-iot/freshet/internal/localsvc"
)

// Options configure the demo.
type Options struct {
	Devices int
	// FieldGateways of the devices also read an energy meter (Modbus TCP),
	// a soil probe (Modbus RTU) and a PLC (OPC UA).
	FieldGateways int
	Seed          uint64
	WorkDir       string // state of every part; kept between runs
	HubBin        string // the freshet-hub binary
	Out           io.Writer
	Logger        *slog.Logger
}

// Run runs the demo until ctx ends.
func Run(ctx context.Context, o Options) error {
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return err
	}
	out := o.Out
	influxURL, bucket, token := os.Getenv("FRESHET_INFLUX_URL"), os.Getenv("FRESHET_INFLUX_BUCKET"), os.Getenv("FRESHET_INFLUX_TOKEN")
	db := "freshet"
	if influxURL == "" {
		path, err := localsvc.ToolPath("influxd", "FRESHET_INFLUXD")
		if err != nil {
			return fmt.Errorf("influxd: %w", err)
		}
		fmt.Fprintln(out, "starting influxd ...")
		dir := filepath.Join(o.WorkDir, "influxdb")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		ix, err := localsvc.NewInflux(path, dir)
		if err != nil {
			return err
		}
		defer ix.Stop()
		if err := ix.CreateDatabase(db); err != nil {
			return err
		}
		influxURL, bucket, token = ix.URL, db+"/autogen", ix.Token
	} else if bucket == "" {
		bucket = db
	} else {
		db, _, _ = strings.Cut(bucket, "/") // InfluxDB 2.x maps a database of the bucket's name to it
	}
	brokerPort, err := localsvc.FreePort()
	if err != nil {
		return err
	}
	httpAddr := "127.0.0.1:9274"
	if l, err := net.Listen("tcp", httpAddr); err != nil {
		p, _ := localsvc.FreePort()
		httpAddr = fmt.Sprintf("127.0.0.1:%d", p)
	} else {
		l.Close()
	}
	hubDir := filepath.Join(o.WorkDir, "hub")
	os.MkdirAll(hubDir, 0o755)
	// The hub signs its acks and the gateways obey only its key, as in
	// production. The key stays with the hub's state between runs.
	keyDir := filepath.Join(hubDir, "ack-key")
	signer, err := ackkey.LoadSigner(filepath.Join(keyDir, ackkey.KeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		signer, err = ackkey.Generate(keyDir)
	}
	if err != nil {
		return fmt.Errorf("ack key: %w", err)
	}
	cfgPath := filepath.Join(hubDir, "hub.yaml")
	// A short allowed lateness so the demo's 1 m aggregates appear within a
	// couple of minutes (production default: 2 m). The flaky fleet's chips
	// get stuck for a minute now and then: a stuck_count shows those as data
	// quality findings (the production default waits 2 h).
	cfg := fmt.Sprintf("data_dir: %s\nbroker: {embedded: {listen: \"127.0.0.1:%d\"}}\ninflux: {url: %q, bucket: %q, token_env: FRESHET_DEMO_INFLUX_TOKEN}\nwindows: {allowed_lateness: 15s}\nquality: {sensors: [{sensor: bme280, stuck_count: 30}]}\nhttp: {listen: %q}\nack_key_file: %s\n",
		hubDir, brokerPort, influxURL, bucket, httpAddr, filepath.Join(keyDir, ackkey.KeyFile))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(o.WorkDir, "hub.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	hub := exec.Command(o.HubBin, "-config", cfgPath)
	hub.Env = append(os.Environ(), "FRESHET_DEMO_INFLUX_TOKEN="+token)
	hub.Stdout, hub.Stderr = logf, logf
	hub.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	fmt.Fprintln(out, "starting freshet-hub ...")
	if err := hub.Start(); err != nil {
		return fmt.Errorf("start freshet-hub: %w", err)
	}
	hubDone := make(chan error, 1)
	go func() { hubDone <- hub.Wait() }()
	defer func() {
		hub.Process.Signal(syscall.SIGTERM)
		select {
		case <-hubDone:
		case <-time.After(10 * time.Second):
			hub.Process.Kill()
			<-hubDone
		}
	}()
	base := "http://" + httpAddr
	if err := localsvc.Poll(30*time.Second, func() error {
		select {
		case err := <-hubDone:
			hubDone <- err
			return fmt.Errorf("freshet-hub exited (%v); see %s", err, logf.Name())
		default:
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("freshet-hub not ready: %w", err)
	}
	f, err := fleet.New(fleet.Options{Devices: o.Devices, Seed: o.Seed, Broker: fmt.Sprintf("tcp://127.0.0.1:%d", brokerPort),
		DataDir: filepath.Join(o.WorkDir, "fleet"), Flaky: true, Logger: o.Logger, FieldGateways: o.FieldGateways,
		HubKeys: []string{filepath.Join(keyDir, ackkey.PubFile)}})
	if err != nil {
		return err
	}
	fleetCtx, stopFleet := context.WithCancel(context.Background())
	fleetDone := make(chan struct{})
	go func() { defer close(fleetDone); f.Run(fleetCtx) }()
	defer func() { stopFleet(); <-fleetDone }()

	qs := Queries()
	raw, aggs, findings, gaps, meter := qs[0], qs[1], qs[2], qs[3], qs[4]
	field := ""
	for _, d := range f.Devices {
		if d.Field != nil {
			field += fmt.Sprintf("  field        %s reads an Eastron SDM120 meter (Modbus TCP %s), a soil probe (Modbus RTU on %s) and a PLC (OPC UA %s)\n",
				d.Name, d.Field.TCP.Addr, d.Field.RTU.Path, d.Field.PLC.URL)
		}
	}
	if field != "" {
		field += fmt.Sprintf("  %-12s the same with 'q=%s'\n", meter.Name, meter.InfluxQL)
	}
	fmt.Fprintf(out, `
freshet demo: %d simulated gateways on flaky links -> freshet-hub (embedded broker) -> InfluxDB
  fleet page   %s/   (JSON: %s/api/v1/devices)
  metrics      %s/metrics
  InfluxDB     %s  bucket %s
  %-12s curl -G %s/query -H "Authorization: Token %s" --data-urlencode "db=%s" --data-urlencode 'q=%s'
  %-12s the same with 'q=%s' (1 m windows close about 75 s after their end)
  %-12s the same with 'q=%s' (data quality: stuck chips, offline gateways ...)
  %-12s the same with 'q=%s' (readings gateways dropped under their disk bound)
%s  acks         signed by the hub's key %s (%s); the gateways obey no other
  logs         %s
Ctrl-C stops everything.

`, o.Devices, base, base, base, influxURL, bucket, raw.Name, influxURL, token, db, raw.InfluxQL,
		aggs.Name, aggs.InfluxQL, findings.Name, findings.InfluxQL, gaps.Name, gaps.InfluxQL, field, signer.KeyID(), keyDir, logf.Name())
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "\nstopping ...")
			return nil
		case err := <-hubDone:
			hubDone <- err
			return fmt.Errorf("freshet-hub exited: %v (see %s)", err, logf.Name())
		case <-tick.C:
			s := f.Stats()
			m := scrape(base + "/metrics")
			fmt.Fprintf(out, "\rstored %d readings | on devices %d | links down %d/%d | late corrections %d | dropped %d | refused %d   ",
				int64(m["freshet_hub_readings_total"]), s.BacklogReadings, s.LinksDown, s.Devices,
				int64(m["freshet_hub_window_corrections_total"]), s.Dropped, int64(m["freshet_hub_batches_total{result=\"rejected\"}"]))
		}
	}
}

// Query is an InfluxQL query the demo prints.
type Query struct {
	Name     string // what it shows: raw data, aggregates ...
	InfluxQL string
}

// Queries are the InfluxQL queries the demo prints, in the order printed:
// raw data, aggregates, findings, gaps, and the field gateways' meter. They
// run as they are (no dashboard macros) against the database the hub
// writes; deploy's TestDashboardQueries runs each against a real influxd.
func Queries() []Query {
	return []Query{
		{"raw data", `SELECT last("value") FROM "temperature" WHERE time > now() - 5m GROUP BY "device", "sensor"`},
		{"aggregates", `SELECT "mean", "min", "max", "count" FROM "temperature_1m" WHERE time > now() - 1h GROUP BY "device", "sensor"`},
		{"findings", `SELECT "state", "detail" FROM "freshet_quality" WHERE time > now() - 1h GROUP BY "device", "kind", "sensor", "metric"`},
		{"gaps", `SELECT "readings" FROM "freshet_gaps" WHERE time > now() - 1h GROUP BY "device"`},
		{"meter", `SELECT last("value") FROM "energy", "power", "voltage" WHERE time > now() - 5m GROUP BY "device", "sensor"`},
	}
}

// scrape reads the hub's metrics into a map of "name{labels}" to value.
func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out
}
