// Package cfgfile holds what the agent's and the hub's config files share:
// strict YAML decoding (an unknown key is an error naming its line) and the
// duration and size value types.
package cfgfile

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Decode strictly decodes one YAML document from r into v.
func Decode(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty config")
		}
		return err
	}
	if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	return nil
}

// Duration is a time.Duration written as a Go duration string: "500ms", "10s", "1m30s".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 10s", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (want e.g. 500ms, 10s, 1m30s)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d Duration) String() string { return time.Duration(d).String() }

// Size is a byte count written as a number or with a unit (KB, MB, GB, KiB, MiB, GiB).
type Size int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return fmt.Errorf("line %d: %q is not a size (want e.g. 268435456, 256MiB, 2GB)", n.Line, n.Value)
	}
	*s = Size(v)
	return nil
}

// ParseSize parses "1048576", "512KiB", "256MiB", "2GB".
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.m
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mult, nil
}

// Secret reads a secret from a file (trailing newline removed) or an
// environment variable; key names the config key in errors. Both empty: "".
func Secret(key, file, env string) (string, error) {
	switch {
	case file != "" && env != "":
		return "", fmt.Errorf("%s_file and %s_env: set only one", key, key)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", key, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", fmt.Errorf("%s_env: $%s is not set", key, env)
		}
		return v, nil
	}
	return "", nil
}

// TLSFiles name the PEM files of a TLS client or server.
type TLSFiles struct {
	CAFile     string `yaml:"ca_file"`     // CA bundle; empty: the system's roots (client) or no client certificates (server)
	CertFile   string `yaml:"cert_file"`   // own certificate (mutual TLS for a client)
	KeyFile    string `yaml:"key_file"`    // its private key, unencrypted PEM
	ServerName string `yaml:"server_name"` // client: the name to verify; default the host dialled
}

// Client builds a client TLS configuration; key names the config key in errors.
func (f TLSFiles) Client(key string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pool, err := LoadCertPool(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: %w", key, err)
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file/key_file: %w", key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// LoadCertPool reads a PEM bundle of CA certificates.
func LoadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// Parse strictly decodes a config of type T from r and validates it.
func Parse[T any, PT interface {
	*T
	Validate() error
}](r io.Reader) (*T, error) {
	var c T
	if err := Decode(r, &c); err != nil {
		return nil, err
	}
	if err := PT(&c).Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads, decodes and validates the config file at path; errors name the file.
func Load[T any, PT interface {
	*T
	Validate() error
}](path string) (*T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := Parse[T, PT](f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Redact returns a URL fit for a log line or a response: any password in
// it is replaced by "xxxxx" (what does not parse as a URL is returned as
// "<unparsable URL>", since it may hold one anyway).
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}
