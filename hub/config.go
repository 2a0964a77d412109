// Package hub assembles freshet-hub: the broker session (external, or the
// embedded broker), the ingest pipeline, InfluxDB, the window state and the
// HTTP endpoints.
package hub

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/freshet-iot/freshet/hub/broker"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/internal/ackkey"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/protocol"
)

// Config is freshet-hub's configuration file (deploy/hub.example.yaml).
type Config struct {
	// DataDir holds hub.db: the ledger, the window state, dead letters.
	DataDir string        `yaml:"data_dir"`
	Broker  BrokerConfig  `yaml:"broker"`
	Influx  InfluxConfig  `yaml:"influx"`
	Windows WindowsConfig `yaml:"windows"`
	// Quality sets the data quality checks (hub/quality); all optional.
	Quality quality.Config `yaml:"quality"`
	Workers int            `yaml:"workers"`      // default 4
	Dead    int            `yaml:"dead_letters"` // refused payloads kept; default 1000
	HTTP    struct {
		Listen string `yaml:"listen"` // default 127.0.0.1:9274; "off" serves nothing
		// A token every request needs (but /healthz and /readyz), as
		// "Authorization: Bearer TOKEN" or as the password of HTTP basic
		// authentication (what a browser asks for). Required when Listen
		// is reachable from other machines.
		TokenFile string `yaml:"token_file"`
		TokenEnv  string `yaml:"token_env"`
	} `yaml:"http"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	Memory MemoryConfig `yaml:"memory"`
	// AckKeyFile is the Ed25519 private key (PEM PKCS#8, as `openssl
	// genpkey -algorithm ed25519` or deploy/keys/make-ack-key.sh write it)
	// the hub signs its acks with; agents obey only acks signed by a key
	// in their mqtt.hub_keys. Required, unless InsecureUnsignedAcks.
	AckKeyFile string `yaml:"ack_key_file"`
	// InsecureUnsignedAcks sends acks without a signature: whoever can
	// publish on an agent's ack topic can then make it delete readings.
	// Only for agents that set mqtt.insecure_unsigned_acks too.
	InsecureUnsignedAcks bool         `yaml:"insecure_unsigned_acks"`
	Limits               LimitsConfig `yaml:"limits"`
}

// LimitsConfig bounds what devices can make the hub keep (README.md,
// "Limits"). What a limit refuses is counted
// (freshet_hub_limited_total{reason}) and raises a data quality finding of
// kind limit; a refused batch is not acked, so it stays on its agent's
// disk and comes again. Devices not heard from for
// windows.correction_horizon are forgotten, which makes room.
type LimitsConfig struct {
	// Devices bounds the devices the hub knows. Every hub sees every
	// device's status, so size it for the whole fleet. Default
	// DefaultMaxDevices.
	Devices int `yaml:"devices"`
	// SeriesPerDevice bounds the series (sensor, metric, unit, labels) one
	// device may have. Default DefaultMaxSeriesPerDevice.
	SeriesPerDevice int `yaml:"series_per_device"`
	// EpochsPerDevice bounds the epochs whose ledger the hub keeps per
	// device: beyond it, the ones used longest ago are forgotten. Default
	// DefaultMaxEpochsPerDevice.
	EpochsPerDevice int `yaml:"epochs_per_device"`
}

// Defaults of LimitsConfig.
const (
	// DefaultMaxDevices is 50,000: five times the 10,000 gateways of the
	// surge benchmark, and at most about 250 MB of live heap however many
	// made-up ids a flood brings (TestFlood: 4.4-4.7 KB per device; a real
	// gateway costs about 5 KB, its recent readings included). A group of
	// hubs for 100,000 gateways (README, "Scale") raises it: each hub
	// sees every device's status.
	DefaultMaxDevices = 50_000
	// DefaultMaxSeriesPerDevice is 1,024: a Raspberry Pi with a few
	// sensors has 3-30 series, an industrial gateway reading a PLC or a
	// meter's registers a few hundred.
	DefaultMaxSeriesPerDevice = 1024
	// DefaultMaxEpochsPerDevice is 16: an agent starts a new epoch only
	// when its buffer is lost or unreadable, and sends in one epoch at a
	// time.
	DefaultMaxEpochsPerDevice = 16
)

// MemoryConfig tunes the Go runtime. freshet-hub applies it to its process;
// a Hub in a bigger program leaves it to that program.
type MemoryConfig struct {
	// GCPercent is how far the heap may grow between two collections, in
	// percent of what is live, as GOGC (which it overrides). Default 200:
	// the hub allocates per reading and has memory to spare, and against
	// Go's 100 this takes some 5-10 % off its CPU per reading (half the
	// collections; BenchmarkEndToEndCPU), for a peak heap there of 81 MB
	// against 55.
	// 10..1000.
	GCPercent int `yaml:"gc_percent"`
	// Limit is a soft limit on the process's memory (Go's GOMEMLIMIT,
	// which it overrides): past it the heap is collected more often, so
	// the headroom gc_percent allows never pushes the hub over what its
	// machine or container has. 0 (the default) sets none (GOMEMLIMIT in
	// the environment still does). At least 32MiB.
	Limit cfgfile.Size `yaml:"limit"`
}

// DefaultGCPercent is MemoryConfig.GCPercent's default.
const DefaultGCPercent = 200

// BrokerConfig is the broker side.
type BrokerConfig struct {
	// URL of an external broker (tcp:// or ssl://). With Embedded, the hub
	// connects to its own broker and URL must be empty.
	URL          string          `yaml:"url"`
	Embedded     *EmbeddedConfig `yaml:"embedded"`
	ClientID     string          `yaml:"client_id"` // default freshet-hub; keep it stable
	Username     string          `yaml:"username"`
	PasswordFile string          `yaml:"password_file"`
	PasswordEnv  string          `yaml:"password_env"`
	TLS          TLSFiles        `yaml:"tls"`
	SharedGroup  string          `yaml:"shared_group"`
	TopicPrefix  string          `yaml:"topic_prefix"`
	// MaxInflight is the hub's MQTT 5 Receive Maximum: the broker hands it
	// at most this many unacked batches and keeps the rest queued in its
	// session (size the broker's queue for the fleet's in-flight batches:
	// devices x the agents' window). Default 1000.
	MaxInflight int `yaml:"max_inflight"`
	// SessionExpiry is how long the broker keeps the hub's session while
	// it is away (its queued batches; a removed hub's share stops after
	// it). Default 10m.
	SessionExpiry cfgfile.Duration `yaml:"session_expiry"`
}

// DefaultClientID is the hub's default MQTT client id.
const DefaultClientID = "freshet-hub"

// EmbeddedConfig runs the mochi-mqtt broker inside the hub.
type EmbeddedConfig struct {
	Listen string   `yaml:"listen"` // default 127.0.0.1:1883
	TLS    TLSFiles `yaml:"tls"`    // server certificate; ca_file requires client certificates (mutual TLS)
	// Users, if any, are the only accounts the broker admits: a device may
	// use only its own topics and its own id as client id; role hub may
	// use all. With client certificates (tls.ca_file) a client's identity
	// is its certificate's common name: every certificate of the CA is a
	// device, users give roles (and passwords, optional then). With
	// neither, every client is admitted to everything, which the hub
	// allows on a loopback listener only.
	Users []EmbeddedUser `yaml:"users"`
	// MaxClients bounds the connected clients (each costs the hub's
	// process about 100 KB). Default 10000.
	MaxClients int `yaml:"max_clients"`
}

// EmbeddedUser is an account of the embedded broker.
type EmbeddedUser struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	Role         string `yaml:"role"` // device (default) or hub
}

// TLSFiles name PEM files (ca_file, cert_file, key_file, server_name).
type TLSFiles = cfgfile.TLSFiles

// InfluxConfig reaches InfluxDB 2.x (org, bucket, token) or 1.8+ (bucket
// "db/rp", token "user:password", org empty).
type InfluxConfig struct {
	URL        string `yaml:"url"`
	Org        string `yaml:"org"`
	Bucket     string `yaml:"bucket"`
	TokenFile  string `yaml:"token_file"`
	TokenEnv   string `yaml:"token_env"`
	BatchLines int    `yaml:"batch_lines"` // default 5000
	// Database and RetentionPolicy are where InfluxQL (on /query) reads the
	// bucket back: the hub rebuilds windows that another hub may share from
	// their raw rows. Default from the bucket: "db/rp" gives db and rp; a
	// 2.x or 3.x bucket name maps to the database of that name (2.x: a
	// DBRP mapping, automatic for buckets since 2.1).
	Database        string `yaml:"database"`
	RetentionPolicy string `yaml:"retention_policy"`
}

// WindowsConfig sets the aggregation.
type WindowsConfig struct {
	Sizes             []cfgfile.Duration `yaml:"sizes"`              // default [1m, 1h]
	AllowedLateness   cfgfile.Duration   `yaml:"allowed_lateness"`   // default 2m
	IdleTimeout       cfgfile.Duration   `yaml:"idle_timeout"`       // default 5m
	CorrectionHorizon cfgfile.Duration   `yaml:"correction_horizon"` // default 72h
	// VerifyAfter: a window rebuilt from InfluxDB because another hub may
	// share it is read back and verified this long after it was written
	// (default 30s).
	VerifyAfter cfgfile.Duration `yaml:"verify_after"`
}

// LoadConfig reads and validates a config file.
func LoadConfig(path string) (*Config, error) { return cfgfile.Load[Config](path) }

// ParseConfig strictly decodes and validates a config.
func ParseConfig(r io.Reader) (*Config, error) { return cfgfile.Parse[Config](r) }

// Validate checks every key and fills in defaults.
func (c *Config) Validate() error {
	bad := func(key, f string, a ...any) error { return fmt.Errorf("%s: %s", key, fmt.Sprintf(f, a...)) }
	if c.DataDir == "" {
		c.DataDir = "/var/lib/freshet-hub"
	}
	b := &c.Broker
	switch {
	case b.Embedded == nil && b.URL == "":
		return bad("broker.url", "required (or configure broker.embedded)")
	case b.Embedded != nil && b.URL != "":
		return bad("broker.url", "leave it empty with broker.embedded: the hub connects to its own broker")
	}
	if b.Embedded != nil {
		if b.Embedded.Listen == "" {
			b.Embedded.Listen = "127.0.0.1:1883"
		}
		if _, _, err := net.SplitHostPort(b.Embedded.Listen); err != nil {
			return bad("broker.embedded.listen", "%v", err)
		}
		t := b.Embedded.TLS
		if (t.CertFile == "") != (t.KeyFile == "") || t.CAFile != "" && t.CertFile == "" {
			return bad("broker.embedded.tls", "cert_file and key_file go together; ca_file needs them")
		}
		clientCerts := t.CAFile != ""
		if len(b.Embedded.Users) == 0 && !clientCerts && !broker.IsLoopback(b.Embedded.Listen) {
			return bad("broker.embedded.listen", "%s is reachable from other machines: configure broker.embedded.users or client certificates (broker.embedded.tls.ca_file); anonymous access is for a loopback address only",
				b.Embedded.Listen)
		}
		if b.Embedded.MaxClients == 0 {
			b.Embedded.MaxClients = broker.DefaultMaxClients
		}
		if b.Embedded.MaxClients < 1 {
			return bad("broker.embedded.max_clients", "%d: want at least 1", b.Embedded.MaxClients)
		}
		for i := range b.Embedded.Users {
			u := &b.Embedded.Users[i]
			key := fmt.Sprintf("broker.embedded.users[%d]", i)
			if u.Role == "" {
				u.Role = "device"
			}
			switch {
			case u.Username == "":
				return bad(key+".username", "required")
			case u.Role != "device" && u.Role != "hub":
				return bad(key+".role", "%q: want device or hub", u.Role)
			case u.PasswordFile == "" && u.PasswordEnv == "" && !clientCerts:
				return bad(key+".password_file", "a password_file or password_env is required (without client certificates)")
			case u.PasswordFile != "" && u.PasswordEnv != "":
				return bad(key+".password_file", "set only one of password_file and password_env")
			case u.Role == "device" && protocol.ValidDevice(u.Username) != nil:
				return bad(key+".username", "%q is not a device id", u.Username)
			case u.Role == "device" && (u.Username == os.ExpandEnv(b.ClientID) || b.ClientID == "" && u.Username == DefaultClientID):
				return bad(key+".username", "%q is the hub's client id (broker.client_id): a device's client id is its name", u.Username)
			}
		}
	} else {
		u, err := url.Parse(b.URL)
		if err != nil || u.Host == "" || (u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "mqtt" && u.Scheme != "mqtts") {
			return bad("broker.url", "%q: want tcp://host:1883 or ssl://host:8883", b.URL)
		}
	}
	b.ClientID = os.ExpandEnv(b.ClientID)
	if b.ClientID == "" {
		b.ClientID = DefaultClientID
	}
	if b.MaxInflight == 0 {
		b.MaxInflight = 1000
	}
	if b.MaxInflight < 1 || b.MaxInflight > 65535 {
		return bad("broker.max_inflight", "%d: want 1..65535", b.MaxInflight)
	}
	if b.SessionExpiry == 0 {
		b.SessionExpiry = cfgfile.Duration(10 * time.Minute)
	}
	if b.SessionExpiry < cfgfile.Duration(time.Second) || time.Duration(b.SessionExpiry) > 49*24*time.Hour {
		return bad("broker.session_expiry", "%v: want 1s..49 days (MQTT's limit is 2^32 s; 0 means the default)", time.Duration(b.SessionExpiry))
	}
	if _, err := protocol.NewTopics(b.TopicPrefix); err != nil {
		return bad("broker.topic_prefix", "%v", err)
	}
	if b.PasswordFile != "" && b.PasswordEnv != "" {
		return bad("broker.password_file", "set only one of password_file and password_env")
	}
	in := &c.Influx
	if in.URL == "" {
		return bad("influx.url", "required (e.g. http://127.0.0.1:8086)")
	}
	if u, err := url.Parse(in.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("influx.url", "%q: want http(s)://host:port", in.URL)
	}
	if in.Bucket == "" {
		return bad("influx.bucket", "required (InfluxDB 1.8: database/retention-policy, e.g. freshet/autogen)")
	}
	if in.TokenFile != "" && in.TokenEnv != "" {
		return bad("influx.token_file", "set only one of token_file and token_env")
	}
	if in.BatchLines == 0 {
		in.BatchLines = 5000
	}
	if in.Database == "" {
		in.Database, in.RetentionPolicy = influx.DatabaseOf(in.Bucket)
	}
	w := &c.Windows
	if len(w.Sizes) == 0 {
		w.Sizes = []cfgfile.Duration{cfgfile.Duration(time.Minute), cfgfile.Duration(time.Hour)}
	}
	for i, x := range []struct {
		d *cfgfile.Duration
		v time.Duration
	}{{&w.AllowedLateness, 2 * time.Minute}, {&w.IdleTimeout, 5 * time.Minute}, {&w.CorrectionHorizon, 72 * time.Hour}, {&w.VerifyAfter, 30 * time.Second}} {
		if *x.d == 0 {
			*x.d = cfgfile.Duration(x.v)
		}
		if *x.d < 0 {
			return bad([]string{"windows.allowed_lateness", "windows.idle_timeout", "windows.correction_horizon", "windows.verify_after"}[i], "negative")
		}
	}
	if err := c.Quality.Validate(); err != nil {
		return err
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.Workers < 1 || c.Workers > 256 {
		return bad("workers", "%d: want 1..256", c.Workers)
	}
	if c.Dead == 0 {
		c.Dead = 1000
	}
	if c.Memory.GCPercent == 0 {
		c.Memory.GCPercent = DefaultGCPercent
	}
	if c.Memory.GCPercent < 10 || c.Memory.GCPercent > 1000 {
		return bad("memory.gc_percent", "%d: want 10..1000", c.Memory.GCPercent)
	}
	if c.Memory.Limit != 0 && c.Memory.Limit < 32<<20 {
		return bad("memory.limit", "%d bytes: want at least 32MiB (or 0 for none)", c.Memory.Limit)
	}
	l := &c.Limits
	for _, x := range []struct {
		key      string
		v        *int
		def, max int
	}{
		{"limits.devices", &l.Devices, DefaultMaxDevices, 100_000_000},
		{"limits.series_per_device", &l.SeriesPerDevice, DefaultMaxSeriesPerDevice, 1 << 20},
		{"limits.epochs_per_device", &l.EpochsPerDevice, DefaultMaxEpochsPerDevice, 4096},
	} {
		if *x.v == 0 {
			*x.v = x.def
		}
		if *x.v < 1 || *x.v > x.max {
			return bad(x.key, "%d: want 1..%d (0 means the default, %d)", *x.v, x.max, x.def)
		}
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:9274"
	}
	if c.HTTP.Listen != "off" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			return bad("http.listen", "%v (want host:port or off)", err)
		}
	}
	switch {
	case c.HTTP.TokenFile != "" && c.HTTP.TokenEnv != "":
		return bad("http.token_file", "set only one of token_file and token_env")
	case c.HTTP.Listen != "off" && !broker.IsLoopback(c.HTTP.Listen) && c.HTTP.TokenFile == "" && c.HTTP.TokenEnv == "":
		return bad("http.token_file", "required: http.listen %s is reachable from other machines, and the page and API show every device (or listen on 127.0.0.1)", c.HTTP.Listen)
	}
	switch c.Log.Level {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = "text"
	case "text", "json":
	default:
		return bad("log.format", "%q: want text or json", c.Log.Format)
	}
	switch {
	case c.AckKeyFile == "" && !c.InsecureUnsignedAcks:
		return bad("ack_key_file", "required: the Ed25519 key the hub signs its acks with (deploy/keys/make-ack-key.sh or freshet-hub -genkey DIR make one), or insecure_unsigned_acks: true")
	case c.AckKeyFile != "" && c.InsecureUnsignedAcks:
		return bad("insecure_unsigned_acks", "set, with ack_key_file: set only one")
	}
	return nil
}

// AckSigner loads the ack signing key (nil with insecure_unsigned_acks).
func (c *Config) AckSigner() (*protocol.AckSigner, error) {
	if c.AckKeyFile == "" {
		return nil, nil
	}
	s, err := ackkey.LoadSigner(c.AckKeyFile)
	if err != nil {
		return nil, fmt.Errorf("ack_key_file: %w", err)
	}
	return s, nil
}

// clientTLS builds a client TLS config from files (nil when none is set).
func clientTLS(f TLSFiles, key string) (*tls.Config, error) {
	if f == (TLSFiles{}) {
		return nil, nil
	}
	return f.Client(key)
}

// serverTLS builds the embedded broker's TLS config (mutual TLS with a CA).
func serverTLS(f TLSFiles) (*tls.Config, error) {
	if f.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("broker.embedded.tls.cert_file: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if f.CAFile != "" {
		pool, err := cfgfile.LoadCertPool(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("broker.embedded.tls.ca_file: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
