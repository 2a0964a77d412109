package agent

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/internal/ackkey"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/internal/exposure"
	"github.com/freshet-iot/freshet/protocol"
)

// Config is the agent's configuration file. deploy/agent.example.yaml is a
// commented example (a test loads it). Decoding is strict: an unknown key is
// an error naming its line; a bad value is an error naming its key.
type Config struct {
	// Device is this gateway's id: 1..64 bytes of [A-Za-z0-9._-].
	Device string `yaml:"device"`
	// DataDir holds the outbox file (outbox.db). Default /var/lib/freshet-agent.
	DataDir string `yaml:"data_dir"`
	// Labels are added to every sensor's readings (a sensor's own labels win).
	Labels map[string]string `yaml:"labels"`
	MQTT   MQTTConfig        `yaml:"mqtt"`
	Outbox OutboxConfig      `yaml:"outbox"`
	HTTP   HTTPConfig        `yaml:"http"`
	Log    LogConfig         `yaml:"log"`
	Memory MemoryConfig      `yaml:"memory"`
	// SysRoot is where sysfs is mounted for the ds18b20 and cpu_temp
	// sensors. Default "/" (containers may mount the host's /sys elsewhere).
	SysRoot string          `yaml:"sys_root"`
	Sensors []sensor.Config `yaml:"sensors"`
	// CommitLog, if set, appends every committed reading to this file as a
	// line (device, sensor, metric, Unix ns, value): a ground truth for
	// simulations and tests. Leave it empty in production.
	CommitLog string `yaml:"commit_log"`
}

// MQTTConfig is the connection to the broker.
type MQTTConfig struct {
	// Broker URL: tcp://host:1883, or ssl://host:8883 for TLS. Required.
	Broker   string `yaml:"broker"`
	ClientID string `yaml:"client_id"` // default: the device id
	Username string `yaml:"username"`
	// The password comes from a file or an environment variable, never
	// from this file or the command line.
	PasswordFile string          `yaml:"password_file"`
	PasswordEnv  string          `yaml:"password_env"`
	TLS          TLSConfig       `yaml:"tls"`
	TopicPrefix  string          `yaml:"topic_prefix"` // default freshet
	KeepAlive    sensor.Duration `yaml:"keepalive"`    // default 30s
	BackoffMin   sensor.Duration `yaml:"backoff_min"`  // default 1s
	BackoffMax   sensor.Duration `yaml:"backoff_max"`  // default 60s
	// Window bounds the batches in flight (published, unacked). Default 8.
	Window int `yaml:"window"`
	// AckTimeout: a batch unacked this long is sent again. Default 30s.
	AckTimeout sensor.Duration `yaml:"ack_timeout"`
	// StatusInterval republishes the retained status. Default 60s.
	StatusInterval sensor.Duration `yaml:"status_interval"`
	// HubKeys are the public keys of the hubs whose acks the agent obeys:
	// each a PEM file (the hub's hub-ack.pub; one file may hold several
	// keys) or a key in base64 (as freshet-hub -check prints it). An ack
	// not signed by one of them deletes nothing. List old and new keys
	// together during a rotation. Required, unless InsecureUnsignedAcks.
	HubKeys []string `yaml:"hub_keys"`
	// InsecureUnsignedAcks obeys acks without checking who sent them:
	// whoever can publish on the broker can make the agent delete readings.
	InsecureUnsignedAcks bool `yaml:"insecure_unsigned_acks"`
}

// TLSConfig enables TLS and mutual TLS (ca_file, cert_file, key_file, server_name).
type TLSConfig = cfgfile.TLSFiles

// OutboxConfig bounds and paces the on-disk buffer.
type OutboxConfig struct {
	// CommitInterval: readings are durable within this long. Default 1s.
	CommitInterval sensor.Duration `yaml:"commit_interval"`
	// MaxBatchAge seals a batch this long after its first reading. Default 30s.
	MaxBatchAge sensor.Duration `yaml:"max_batch_age"`
	// MaxBytes bounds the backlog on disk: a number of bytes or a size such
	// as 256MiB or 2GB. Default 256MiB.
	MaxBytes Size `yaml:"max_bytes"`
	// DropPolicy at the bound: drop_oldest (default) or drop_newest.
	DropPolicy string `yaml:"drop_policy"`
	// MaxMessageBytes bounds one batch on the wire. Default 65536.
	MaxMessageBytes int `yaml:"max_message_bytes"`
}

// HTTPConfig is the metrics and health endpoint.
type HTTPConfig struct {
	// Listen address; default 127.0.0.1:9273; "off" disables it.
	Listen string `yaml:"listen"`
	// A token /metrics needs, as "Authorization: Bearer TOKEN" or as the
	// password of HTTP basic authentication, read from a file or an
	// environment variable. Required when Listen is reachable from other
	// machines. /healthz stays open, but says only "ok" without it.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
}

// Token returns the HTTP token from its file or environment variable ("" if
// none is configured).
func (h *HTTPConfig) Token() (string, error) {
	tok, err := cfgfile.Secret("http.token", h.TokenFile, h.TokenEnv)
	if err == nil && tok == "" && (h.TokenFile != "" || h.TokenEnv != "") {
		err = errors.New("http.token_file: the token is empty")
	}
	return tok, err
}

// LogConfig selects the log output.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// MemoryConfig tunes the Go runtime for a small device. freshet-agent
// applies it to its process; an Agent in a bigger program leaves it to that
// program.
type MemoryConfig struct {
	// GCPercent is how far the heap may grow between two collections, in
	// percent of what is live, as GOGC (which it overrides). Default 25:
	// the agent's live heap is well under a megabyte, and Go's 100 with
	// its floor of 4 MB of heap would keep some 2.5 MB more resident, for
	// a little less CPU. 10..1000.
	GCPercent int `yaml:"gc_percent"`
}

// DefaultGCPercent is MemoryConfig.GCPercent's default.
const DefaultGCPercent = 25

// Size is a byte count written as a number or with a unit (KB, MB, GB, KiB, MiB, GiB).
type Size = cfgfile.Size

// ParseSize parses "1048576", "512KiB", "256MiB", "2GB".
func ParseSize(s string) (int64, error) { return cfgfile.ParseSize(s) }

// LoadConfig reads, strictly decodes and validates the config file at path.
func LoadConfig(path string) (*Config, error) { return cfgfile.Load[Config](path) }

// ParseConfig strictly decodes and validates a config.
func ParseConfig(r io.Reader) (*Config, error) { return cfgfile.Parse[Config](r) }

// Validate checks every key and fills in defaults.
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...))
	}
	if err := protocol.ValidDevice(c.Device); err != nil {
		return bad("device", "%v", err)
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/freshet-agent"
	}
	if c.SysRoot == "" {
		c.SysRoot = "/"
	}
	m := &c.MQTT
	if m.Broker == "" {
		return bad("mqtt.broker", "required (e.g. tcp://hub.example.com:1883 or ssl://hub.example.com:8883)")
	}
	u, err := url.Parse(m.Broker)
	if err != nil || u.Host == "" {
		return bad("mqtt.broker", "%q is not a URL such as tcp://host:1883", m.Broker)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		if m.TLS != (TLSConfig{}) {
			return bad("mqtt.tls", "set, but mqtt.broker %q is not ssl://", m.Broker)
		}
	case "ssl", "tls", "mqtts", "tcps":
	default:
		return bad("mqtt.broker", "scheme %q: want tcp:// or ssl://", u.Scheme)
	}
	if m.PasswordFile != "" && m.PasswordEnv != "" {
		return bad("mqtt.password_file", "set only one of password_file and password_env")
	}
	if (m.PasswordFile != "" || m.PasswordEnv != "") && m.Username == "" {
		return bad("mqtt.username", "required with a password")
	}
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		return bad("mqtt.tls.cert_file", "cert_file and key_file go together")
	}
	if _, err := protocol.NewTopics(m.TopicPrefix); err != nil {
		return bad("mqtt.topic_prefix", "%v", err)
	}
	def := func(d *sensor.Duration, v time.Duration, key string, lo time.Duration) error {
		if *d == 0 {
			*d = sensor.Duration(v)
		}
		if time.Duration(*d) < lo {
			return bad(key, "%v is below %v", time.Duration(*d), lo)
		}
		return nil
	}
	for _, x := range []struct {
		d     *sensor.Duration
		v, lo time.Duration
		key   string
	}{
		{&m.KeepAlive, 30 * time.Second, time.Second, "mqtt.keepalive"},
		{&m.BackoffMin, time.Second, 10 * time.Millisecond, "mqtt.backoff_min"},
		{&m.BackoffMax, time.Minute, 10 * time.Millisecond, "mqtt.backoff_max"},
		{&m.AckTimeout, 30 * time.Second, 100 * time.Millisecond, "mqtt.ack_timeout"},
		{&m.StatusInterval, time.Minute, time.Second, "mqtt.status_interval"},
		{&c.Outbox.CommitInterval, time.Second, 10 * time.Millisecond, "outbox.commit_interval"},
		{&c.Outbox.MaxBatchAge, 30 * time.Second, 10 * time.Millisecond, "outbox.max_batch_age"},
	} {
		if err := def(x.d, x.v, x.key, x.lo); err != nil {
			return err
		}
	}
	if m.BackoffMax < m.BackoffMin {
		return bad("mqtt.backoff_max", "below backoff_min")
	}
	if m.Window == 0 {
		m.Window = 8
	}
	if m.Window < 1 || m.Window > 1024 {
		return bad("mqtt.window", "%d: want 1..1024", m.Window)
	}
	o := &c.Outbox
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = protocol.DefaultMaxMessageBytes
	}
	if err := (protocol.Limits{MaxMessageBytes: o.MaxMessageBytes}).Validate(); err != nil {
		return bad("outbox.max_message_bytes", "%v", err)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 256 << 20
	}
	if min := Size(16 * o.MaxMessageBytes); o.MaxBytes < min {
		return bad("outbox.max_bytes", "%d: at least 16 batches (%d bytes)", o.MaxBytes, min)
	}
	switch outbox.DropPolicy(o.DropPolicy) {
	case "":
		o.DropPolicy = string(outbox.DropOldest)
	case outbox.DropOldest, outbox.DropNewest:
	default:
		return bad("outbox.drop_policy", "%q: want drop_oldest or drop_newest", o.DropPolicy)
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:9273"
	}
	switch {
	case c.HTTP.TokenFile != "" && c.HTTP.TokenEnv != "":
		return bad("http.token_file", "set only one of token_file and token_env")
	case c.HTTP.Listen != "off" && !exposure.IsLoopback(c.HTTP.Listen) && c.HTTP.TokenFile == "" && c.HTTP.TokenEnv == "":
		return bad("http.token_file", "required: http.listen %s is reachable from other machines, and /metrics and /healthz show the device's backlog and epoch (or listen on 127.0.0.1)", c.HTTP.Listen)
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
	if c.Memory.GCPercent == 0 {
		c.Memory.GCPercent = DefaultGCPercent
	}
	if c.Memory.GCPercent < 10 || c.Memory.GCPercent > 1000 {
		return bad("memory.gc_percent", "%d: want 10..1000", c.Memory.GCPercent)
	}
	if len(c.Sensors) == 0 {
		return bad("sensors", "none configured")
	}
	names := map[string]bool{}
	for i := range c.Sensors {
		s := &c.Sensors[i]
		for k, v := range c.Labels {
			if _, own := s.Labels[k]; !own {
				if s.Labels == nil {
					s.Labels = map[string]string{}
				}
				s.Labels[k] = v
			}
		}
		if err := s.Validate(); err != nil {
			return fmt.Errorf("sensors[%d]: %w", i, err)
		}
		if names[s.Name] {
			return bad(fmt.Sprintf("sensors[%d].name", i), "%q is used twice", s.Name)
		}
		names[s.Name] = true
	}
	switch {
	case len(m.HubKeys) == 0 && !m.InsecureUnsignedAcks:
		return bad("mqtt.hub_keys", "required: the hub's ack public key (a PEM file such as /etc/freshet/hub-ack.pub, or the key in base64; README \"Signed acks\"), or insecure_unsigned_acks: true")
	case len(m.HubKeys) > 0 && m.InsecureUnsignedAcks:
		return bad("mqtt.insecure_unsigned_acks", "set, with hub_keys: set only one")
	}
	for i, k := range m.HubKeys {
		if strings.TrimSpace(k) == "" {
			return bad(fmt.Sprintf("mqtt.hub_keys[%d]", i), "empty")
		}
	}
	return nil
}

// Password returns the MQTT password from its file or environment variable.
func (m *MQTTConfig) Password() (string, error) {
	return cfgfile.Secret("mqtt.password", m.PasswordFile, m.PasswordEnv)
}

// AckKeys loads the hub keys acks must be signed with (nil with
// insecure_unsigned_acks).
func (m *MQTTConfig) AckKeys() (*protocol.AckKeys, error) {
	if len(m.HubKeys) == 0 {
		return nil, nil
	}
	return ackkey.LoadKeys(m.HubKeys, "mqtt.hub_keys")
}

// TLSClientConfig builds the TLS configuration, or nil for tcp:// brokers.
func (m *MQTTConfig) TLSClientConfig() (*tls.Config, error) {
	u, _ := url.Parse(m.Broker)
	if u == nil || u.Scheme == "tcp" || u.Scheme == "mqtt" {
		return nil, nil
	}
	return m.TLS.Client("mqtt.tls")
}
