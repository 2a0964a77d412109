package sensor

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/protocol"
)

// OPC UA defaults.
const (
	DefaultOPCUARequestTimeout = 5 * time.Second
	// DefaultOPCUAClockTolerance is how far in the future of the agent's
	// clock a source timestamp may be and still be the event time.
	DefaultOPCUAClockTolerance = 5 * time.Minute
	// opcuaMaxAge is how far in the past a source timestamp may be and still
	// be the event time (a PLC whose clock was reset reports 2000 or 1601).
	opcuaMaxAge   = 7 * 24 * time.Hour
	maxOPCUANodes = 256
)

// OPCUAConfig is the opcua block of a sensor of type opcua: one server and
// the nodes to read from it.
//
//   - name: line1
//     type: opcua
//     interval: 5s
//     opcua:
//     endpoint: opc.tcp://10.0.0.20:4840
//     security_policy: Basic256Sha256
//     security_mode: SignAndEncrypt
//     certificate_file: /etc/freshet/opcua-cert.pem
//     private_key_file: /etc/freshet/opcua-key.pem
//     auth: username
//     username: freshet
//     password_file: /etc/freshet/opcua.password
//     mode: subscribe
//     nodes:
//   - {node: "ns=2;s=Line1.Temperature", metric: temperature, unit: C, resolution: 0.1}
type OPCUAConfig struct {
	// Endpoint is the server's opc.tcp:// URL. Required.
	Endpoint string `yaml:"endpoint"`
	// SecurityPolicy: None (default), Basic128Rsa15, Basic256,
	// Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss.
	SecurityPolicy string `yaml:"security_policy"`
	// SecurityMode: None (the default, and the only mode of policy None),
	// Sign or SignAndEncrypt (the default of the other policies).
	SecurityMode string `yaml:"security_mode"`
	// CertificateFile and PrivateKeyFile are the client's certificate
	// (PEM or DER) and RSA key (PEM), required by a policy other than None
	// and by auth certificate.
	CertificateFile string `yaml:"certificate_file"`
	PrivateKeyFile  string `yaml:"private_key_file"`
	// Auth: anonymous (default), username (with password_file) or
	// certificate (the client certificate as the user identity).
	Auth         string `yaml:"auth"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// Mode: poll (default) reads every node each interval; subscribe has
	// the server sample the nodes (monitored items) and push changes, of
	// which each read reports the latest per node.
	Mode string `yaml:"mode"`
	// SamplingInterval of the monitored items in subscribe mode. Default:
	// the sensor's interval.
	SamplingInterval Duration `yaml:"sampling_interval"`
	// Timestamp: source (default) stamps a value with its source timestamp
	// when the server sends one that is plausible (at most clock_tolerance
	// ahead of the agent's clock, at most 7 days behind), else with the read
	// time, and reports a node only when its value or source timestamp
	// changed; read stamps every value with the read time.
	Timestamp      string   `yaml:"timestamp"`
	ClockTolerance Duration `yaml:"clock_tolerance"`
	// RequestTimeout bounds one request. Default 5s, at most the sensor's timeout.
	RequestTimeout Duration `yaml:"request_timeout"`
	// Nodes to read, each one metric. At least one, at most 256.
	Nodes []OPCUANode `yaml:"nodes"`
}

// OPCUANode maps one node's value to a metric.
type OPCUANode struct {
	// Node is the node id: ns=2;s=Line1.Temperature, ns=3;i=1001, i=2258.
	Node   string `yaml:"node"`
	Metric string `yaml:"metric"`
	Unit   string `yaml:"unit"`
	// Resolution of a float value: 0 (as is, the default) or a power of ten.
	Resolution float64 `yaml:"resolution"`
}

var opcuaPolicies = []string{"None", "Basic128Rsa15", "Basic256", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}

func (o *OPCUAConfig) validate(c *Config) error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{Sensor: c.Name, Key: "opcua." + key, Err: fmt.Errorf(format, args...)}
	}
	if o.Endpoint == "" {
		return bad("endpoint", "required (e.g. opc.tcp://10.0.0.20:4840)")
	}
	if u, err := url.Parse(o.Endpoint); err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		return bad("endpoint", "%q: want opc.tcp://host:port", o.Endpoint)
	}
	if o.SecurityPolicy == "" {
		o.SecurityPolicy = "None"
	}
	if !slices.Contains(opcuaPolicies, o.SecurityPolicy) {
		return bad("security_policy", "%q: want one of %v", o.SecurityPolicy, opcuaPolicies)
	}
	if o.SecurityMode == "" {
		o.SecurityMode = "SignAndEncrypt"
		if o.SecurityPolicy == "None" {
			o.SecurityMode = "None"
		}
	}
	switch o.SecurityMode {
	case "None":
		if o.SecurityPolicy != "None" {
			return bad("security_mode", "None with policy %s: want Sign or SignAndEncrypt", o.SecurityPolicy)
		}
	case "Sign", "SignAndEncrypt":
		if o.SecurityPolicy == "None" {
			return bad("security_mode", "%s needs a security_policy other than None", o.SecurityMode)
		}
	default:
		return bad("security_mode", "%q: want None, Sign or SignAndEncrypt", o.SecurityMode)
	}
	if (o.CertificateFile == "") != (o.PrivateKeyFile == "") {
		return bad("certificate_file", "certificate_file and private_key_file go together")
	}
	if o.Auth == "" {
		o.Auth = "anonymous"
	}
	switch o.Auth {
	case "anonymous":
		if o.Username != "" || o.PasswordFile != "" {
			return bad("username", "set with auth anonymous (want auth: username)")
		}
	case "username":
		if o.Username == "" {
			return bad("username", "required with auth username")
		}
		if o.PasswordFile == "" {
			return bad("password_file", "required with auth username (the password is never in the config)")
		}
	case "certificate":
		if o.CertificateFile == "" {
			return bad("certificate_file", "required with auth certificate")
		}
		if o.Username != "" || o.PasswordFile != "" {
			return bad("username", "set with auth certificate")
		}
	default:
		return bad("auth", "%q: want anonymous, username or certificate", o.Auth)
	}
	if o.SecurityPolicy != "None" && o.CertificateFile == "" {
		return bad("certificate_file", "required with security_policy %s", o.SecurityPolicy)
	}
	if o.Mode == "" {
		o.Mode = "poll"
	}
	switch o.Mode {
	case "poll":
		if o.SamplingInterval != 0 {
			return bad("sampling_interval", "only used with mode subscribe")
		}
	case "subscribe":
	default:
		return bad("mode", "%q: want poll or subscribe", o.Mode)
	}
	if o.Mode == "subscribe" {
		if o.SamplingInterval == 0 {
			o.SamplingInterval = c.Interval
		}
		if o.SamplingInterval < Duration(10*time.Millisecond) || o.SamplingInterval > c.Interval {
			return bad("sampling_interval", "%v: want 10ms up to the interval %v", time.Duration(o.SamplingInterval), time.Duration(c.Interval))
		}
	}
	switch o.Timestamp {
	case "":
		o.Timestamp = "source"
	case "source", "read":
	default:
		return bad("timestamp", "%q: want source or read", o.Timestamp)
	}
	if o.ClockTolerance == 0 {
		o.ClockTolerance = Duration(DefaultOPCUAClockTolerance)
	}
	if o.ClockTolerance < 0 {
		return bad("clock_tolerance", "negative")
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = Duration(min(DefaultOPCUARequestTimeout, time.Duration(c.Timeout)))
	}
	if o.RequestTimeout < Duration(10*time.Millisecond) || o.RequestTimeout > c.Timeout {
		return bad("request_timeout", "%v: want 10ms up to the sensor's timeout %v", time.Duration(o.RequestTimeout), time.Duration(c.Timeout))
	}
	if len(o.Nodes) == 0 {
		return bad("nodes", "none listed")
	}
	if len(o.Nodes) > maxOPCUANodes {
		return bad("nodes", "%d listed, limit %d", len(o.Nodes), maxOPCUANodes)
	}
	seen := map[string]int{}
	for i := range o.Nodes {
		n := &o.Nodes[i]
		key := fmt.Sprintf("nodes[%d].", i)
		if err := checkNodeID(n.Node); err != nil {
			return bad(key+"node", "%q: %v (want e.g. ns=2;s=Line1.Temperature or ns=3;i=1001)", n.Node, err)
		}
		if err := checkName(n.Metric); err != nil {
			return bad(key+"metric", "%v", err)
		}
		if err := checkPrintable(n.Unit, true); err != nil {
			return bad(key+"unit", "%v", err)
		}
		if n.Resolution != 0 {
			if _, err := protocol.ResolutionExp(n.Resolution); err != nil {
				return bad(key+"resolution", "%g is not 0 or a power of ten from 1e-9 to 1e9", n.Resolution)
			}
		}
		if j, dup := seen[n.Metric]; dup {
			return bad(key+"metric", "%q is also nodes[%d]", n.Metric, j)
		}
		seen[n.Metric] = i
	}
	return nil
}

// checkNodeID checks the string form of a node id (OPC UA Part 6, 5.3.1.10):
// an optional ns=<namespace>; then i=<number>, s=<string>, g=<guid> or
// b=<base64>. It is the form the client parses, checked here without it so
// that a build without OPC UA still validates the config.
func checkNodeID(s string) error {
	rest := s
	if v, ok := strings.CutPrefix(rest, "ns="); ok {
		ns, r, ok := strings.Cut(v, ";")
		if _, err := strconv.ParseUint(ns, 10, 16); !ok || err != nil {
			return errors.New("namespace: want ns=<0..65535>;")
		}
		rest = r
	}
	kind, v, ok := strings.Cut(rest, "=")
	if !ok || v == "" {
		return errors.New("want i=, s=, g= or b= and an identifier")
	}
	switch kind {
	case "i":
		if _, err := strconv.ParseUint(v, 10, 32); err != nil {
			return errors.New("i= takes a number 0..4294967295")
		}
	case "s":
		if err := checkText(v); err != nil {
			return err
		}
	case "g":
		ok := len(v) == 36
		for i := 0; ok && i < len(v); i++ {
			c := v[i] | 0x20
			if i == 8 || i == 13 || i == 18 || i == 23 {
				ok = v[i] == '-'
			} else {
				ok = c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
			}
		}
		if !ok {
			return errors.New("g= takes a GUID like 72962b91-fa75-4ae6-8d28-b404dc7daf63")
		}
	case "b":
		if _, err := base64.StdEncoding.DecodeString(v); err != nil {
			return errors.New("b= takes base64")
		}
	default:
		return fmt.Errorf("identifier type %q", kind)
	}
	return nil
}
