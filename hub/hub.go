package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/broker"
	"github.com/freshet-iot/freshet/hub/checks"
	"github.com/freshet-iot/freshet/hub/emit"
	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ingest"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/hub/web"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/protocol"
)

// Options are what the hub takes from its host besides the config.
type Options struct {
	Logger    *slog.Logger
	Registry  *prometheus.Registry
	Now       func() time.Time
	Failpoint func(step string) // crash tests' hook, see ingest.Options
}

// Hub is one running freshet-hub.
type Hub struct {
	cfg      *Config
	o        Options
	log      *slog.Logger
	db       *bolt.DB
	broker   *broker.Broker
	influx   *influx.Writer
	fleet    *fleet.Fleet
	windows  *window.Store
	pipeline *ingest.Pipeline
	emitter  *emit.Emitter
	checks   *checks.Runner
	reg      *prometheus.Registry
	// httpToken, if set, is required by the page, the API and /metrics.
	httpToken    string
	unauthorized prometheus.Counter
	pages        *web.Pages
}

// New opens the state file, starts the embedded broker if configured, and
// builds the pipeline. Run it with Run.
func New(cfg *Config, o Options) (*Hub, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Hub{cfg: cfg, o: o, log: o.Logger, reg: o.Registry}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(cfg.DataDir, "hub.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	h.db = db
	fail := func(err error) (*Hub, error) { h.Close(); return nil, err }

	brokerURL := cfg.Broker.URL
	if e := cfg.Broker.Embedded; e != nil {
		tlsConf, err := serverTLS(e.TLS)
		if err != nil {
			return fail(err)
		}
		topics, _ := protocol.NewTopics(cfg.Broker.TopicPrefix)
		bo := broker.Options{Addr: e.Listen, TLS: tlsConf, Topics: topics, HubClientIDs: []string{cfg.Broker.ClientID},
			MaxClients: e.MaxClients, Registerer: o.Registry, Logger: o.Logger.With("part", "broker")}
		if len(e.Users) > 0 {
			var users []broker.User
			for i, u := range e.Users {
				pw, err := cfgfile.Secret(fmt.Sprintf("broker.embedded.users[%d].password", i), u.PasswordFile, u.PasswordEnv)
				if err != nil {
					return fail(err)
				}
				users = append(users, broker.User{Name: u.Username, Password: pw, Hub: u.Role == "hub"})
			}
			bo.Users = users
		}
		h.broker, err = broker.Start(bo)
		if err != nil {
			return fail(err)
		}
		scheme := "tcp"
		if tlsConf != nil {
			scheme = "ssl"
		}
		brokerURL = scheme + "://" + h.broker.Addr()
		h.log.Info("embedded broker listening", "addr", h.broker.Addr())
	}
	if h.httpToken, err = cfgfile.Secret("http.token", cfg.HTTP.TokenFile, cfg.HTTP.TokenEnv); err != nil {
		return fail(err)
	}
	if h.httpToken == "" && (cfg.HTTP.TokenFile != "" || cfg.HTTP.TokenEnv != "") {
		return fail(errors.New("http.token_file: the token is empty"))
	}
	h.unauthorized = prometheus.NewCounter(prometheus.CounterOpts{Name: "freshet_hub_http_unauthorized_total",
		Help: "HTTP requests refused for a missing or wrong token (http.token_file)."})
	o.Registry.MustRegister(h.unauthorized)
	token, err := cfgfile.Secret("influx.token", cfg.Influx.TokenFile, cfg.Influx.TokenEnv)
	if err != nil {
		return fail(err)
	}
	h.influx, err = influx.New(influx.Options{URL: cfg.Influx.URL, Org: cfg.Influx.Org, Bucket: cfg.Influx.Bucket, Token: token,
		BatchLines: cfg.Influx.BatchLines, Logger: o.Logger.With("part", "influx"), Registerer: o.Registry})
	if err != nil {
		return fail(err)
	}
	sizes := make([]time.Duration, len(cfg.Windows.Sizes))
	for i, s := range cfg.Windows.Sizes {
		sizes[i] = time.Duration(s)
	}
	win, err := window.New(window.Options{Sizes: sizes, AllowedLateness: time.Duration(cfg.Windows.AllowedLateness),
		IdleTimeout: time.Duration(cfg.Windows.IdleTimeout), CorrectionHorizon: time.Duration(cfg.Windows.CorrectionHorizon)})
	if err != nil {
		return fail(fmt.Errorf("windows: %w", err))
	}
	h.windows = win
	password, err := cfgfile.Secret("broker.password", cfg.Broker.PasswordFile, cfg.Broker.PasswordEnv)
	if err != nil {
		return fail(err)
	}
	tlsConf, err := clientTLS(cfg.Broker.TLS, "broker.tls")
	if err != nil {
		return fail(err)
	}
	signer, err := cfg.AckSigner()
	if err != nil {
		return fail(err)
	}
	if signer != nil {
		h.log.Info("signing acks", "key_id", signer.KeyID())
	} else {
		h.log.Warn("acks are NOT signed (insecure_unsigned_acks): whoever can publish on the broker can make agents delete readings")
	}
	topics, _ := protocol.NewTopics(cfg.Broker.TopicPrefix)
	h.fleet = fleet.New(fleet.Options{ClockFloor: cfg.Quality.Floor(), MaxDevices: cfg.Limits.Devices, Registerer: o.Registry})
	// The pipeline first: it creates the ledger and window buckets.
	findings := checks.NewMetrics(o.Registry)
	bopt := ingest.BrokerOptions{URL: brokerURL, ClientID: cfg.Broker.ClientID, Username: cfg.Broker.Username, Password: password,
		TLS: tlsConf, SharedGroup: cfg.Broker.SharedGroup, MaxInflight: cfg.Broker.MaxInflight, SessionExpiry: time.Duration(cfg.Broker.SessionExpiry)}
	if h.broker != nil {
		bopt.Local = h.broker // in this process: no session, no flow control to negotiate
	}
	h.pipeline, err = ingest.New(ingest.Options{
		DB: db, Influx: h.influx, Windows: win, Topics: topics, Workers: cfg.Workers, DeadLetters: cfg.Dead,
		Broker: bopt, AckSigner: signer,
		Fleet: h.fleet, MaxSeriesPerDevice: cfg.Limits.SeriesPerDevice, MaxEpochsPerDevice: cfg.Limits.EpochsPerDevice,
		Findings: findings, Registerer: o.Registry,
		Logger: o.Logger.With("part", "ingest"), Now: o.Now, Failpoint: o.Failpoint,
	})
	if err != nil {
		return fail(err)
	}
	reader, err := influx.NewReader(influx.ReaderOptions{URL: cfg.Influx.URL, Database: cfg.Influx.Database,
		RetentionPolicy: cfg.Influx.RetentionPolicy, Token: token, Client: h.influx.HTTPClient()})
	if err != nil {
		return fail(err)
	}
	smallest := slices.Min(sizes)
	h.pages = web.New(web.Options{Fleet: h.fleet, Reader: reader, AggregateSuffix: "_" + schema.WindowName(smallest), Topics: topics,
		DeadLetters: h.pipeline.DeadLetters, Now: o.Now, Logger: o.Logger.With("part", "web"),
		Totals: func() web.Totals {
			m := h.pipeline.Metrics()
			return web.Totals{Readings: counterValue(m.Readings), Corrections: counterValue(m.Corrections)}
		}})
	h.emitter, err = emit.New(emit.Options{DB: db, Windows: win, Influx: h.influx, Reader: reader, Statuses: h.fleet,
		VerifyAfter: time.Duration(cfg.Windows.VerifyAfter), AuditSpan: auditSpan(cfg), AuditEvery: time.Duration(cfg.Windows.VerifyAfter),
		Registerer: o.Registry, Logger: o.Logger.With("part", "emit"), Now: o.Now})
	if err != nil {
		return fail(err)
	}
	h.checks, err = checks.New(checks.Options{DB: db, Windows: win, Influx: h.influx, Fleet: h.fleet, Config: &cfg.Quality,
		Metrics: findings, Logger: o.Logger.With("part", "checks"), Now: o.Now})
	if err != nil {
		return fail(err)
	}
	if err := h.seed(); err != nil {
		return fail(fmt.Errorf("read the devices known: %w", err))
	}
	return h, nil
}

// BrokerAddr returns the embedded broker's address ("" without one).
func (h *Hub) BrokerAddr() string {
	if h.broker == nil {
		return ""
	}
	return h.broker.Addr()
}

// Pipeline returns the ingest pipeline (its counters, connection state
// and dead letters).
func (h *Hub) Pipeline() *ingest.Pipeline { return h.pipeline }

// Fleet returns the hub's view of the devices.
func (h *Hub) Fleet() *fleet.Fleet { return h.fleet }

// Checks returns the data quality checks' runner.
func (h *Hub) Checks() *checks.Runner { return h.checks }

// Emitter returns the window emitter.
func (h *Hub) Emitter() *emit.Emitter { return h.emitter }

// Run serves until ctx ends, then stops: in-flight batches stay unacked at
// the broker and are redelivered to the next run.
func (h *Hub) Run(ctx context.Context) error {
	defer h.Close()
	var srv *http.Server
	if h.cfg.HTTP.Listen != "off" {
		l, err := net.Listen("tcp", h.cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
		srv = &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		h.log.Info("serving http", "addr", l.Addr().String())
	}
	var wg sync.WaitGroup
	for _, run := range []func(context.Context){func(ctx context.Context) { h.pipeline.Run(ctx) }, h.emitter.Run, h.checks.Run, h.pruneLoop} {
		wg.Add(1)
		go func() { defer wg.Done(); run(ctx) }()
	}
	<-ctx.Done()
	wg.Wait()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.Shutdown(sctx)
		cancel()
	}
	return nil
}

// Close releases the state file and the embedded broker.
func (h *Hub) Close() error {
	var errs []error
	if h.influx != nil {
		h.influx.Close()
		h.influx = nil
	}
	if h.broker != nil {
		errs = append(errs, h.broker.Close())
		h.broker = nil
	}
	if h.db != nil {
		errs = append(errs, h.db.Close())
		h.db = nil
	}
	return errors.Join(errs...)
}

// MetricNames lists the names of the metrics the hub exposes on /metrics,
// as its registry has them (the deploy tests check dashboards and alerts
// against it).
func (h *Hub) MetricNames() ([]string, error) {
	mfs, err := h.reg.Gather()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(mfs))
	for _, mf := range mfs {
		out = append(out, mf.GetName())
	}
	return out, nil
}

// auditSpan is how far back a hub compares a device's readings with
// InfluxDB when the device comes from another hub: every window the other
// hub may not have written yet (the largest size, the allowed lateness and
// the idle timeout), with a minute to spare.
func auditSpan(cfg *Config) time.Duration {
	largest := time.Duration(0)
	for _, s := range cfg.Windows.Sizes {
		largest = max(largest, time.Duration(s))
	}
	return largest + time.Duration(cfg.Windows.AllowedLateness) + time.Duration(cfg.Windows.IdleTimeout) + time.Minute
}

// counterValue reads a counter's value.
func counterValue(c prometheus.Counter) uint64 {
	var m dto.Metric
	if c.Write(&m) != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}
