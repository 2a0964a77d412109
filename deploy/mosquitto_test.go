package deploy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/firmware-sim/chip/sysfs"
	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// recipe makes certificates with make-certs.sh and starts Mosquitto with
// the shipped mosquitto.conf and acl (only the port and file paths differ).
func recipe(t *testing.T) (dir string, b *testsvc.Broker) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if testsvc.Required() {
			t.Fatalf("openssl is not installed and %s=1", testsvc.RequireEnv)
		}
		t.Skip("openssl is not installed, so the TLS recipe did not run (apt-get install openssl)")
	}
	dir = t.TempDir()
	if out, err := exec.Command("./mosquitto/make-certs.sh", dir, "127.0.0.1", "gw-1", "gw-2").CombinedOutput(); err != nil {
		t.Fatalf("make-certs.sh: %v\n%s", err, out)
	}
	acl, err := os.ReadFile("mosquitto/acl")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "acl"), acl, 0o644)
	conf, err := os.ReadFile("mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(conf), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "listener ") || strings.HasPrefix(l, "per_listener_settings") {
			continue // testsvc writes its own listener on a free port
		}
		l = strings.ReplaceAll(l, "/etc/mosquitto/certs/", dir+"/")
		l = strings.ReplaceAll(l, "/etc/mosquitto/acl", filepath.Join(dir, "acl"))
		lines = append(lines, l)
	}
	return dir, testsvc.StartMosquittoWith(t, testsvc.MosquittoOptions{Config: lines})
}

func tlsConf(t *testing.T, dir, name string) *tls.Config {
	t.Helper()
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &tls.Config{RootCAs: pool}
	if name != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c
}

func connect(b *testsvc.Broker, id string, c *tls.Config) (paho.Client, error) {
	cl := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + b.Addr).SetClientID(id).SetTLSConfig(c).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	tok := cl.Connect()
	if !tok.WaitTimeout(30 * time.Second) {
		return nil, fmt.Errorf("timeout")
	}
	return cl, tok.Error()
}

// TestMosquittoACL: with the shipped recipe a client without a certificate
// is refused, and a device can neither publish on nor read another
// device's topics.
func TestMosquittoACL(t *testing.T) {
	dir, b := recipe(t)
	if _, err := connect(b, "anon", tlsConf(t, dir, "")); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	hubc, err := connect(b, "hub", tlsConf(t, dir, "hub"))
	if err != nil {
		t.Fatal(err)
	}
	defer hubc.Disconnect(0)
	var mu sync.Mutex
	got := map[string]bool{}
	if tok := hubc.Subscribe("freshet/v1/+/batch", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got[m.Topic()+" "+string(m.Payload())] = true
		mu.Unlock()
	}); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	gw1, err := connect(b, "gw-1", tlsConf(t, dir, "devices/gw-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer gw1.Disconnect(0)
	gw2, err := connect(b, "gw-2", tlsConf(t, dir, "devices/gw-2"))
	if err != nil {
		t.Fatal(err)
	}
	defer gw2.Disconnect(0)
	// Mosquitto 2 grants the subscription and applies the read ACL at
	// delivery: what matters is that gw-1 never receives gw-2's acks.
	spied := make(chan string, 8)
	gw1.Subscribe("freshet/v1/gw-2/ack", 1, func(_ paho.Client, m paho.Message) { spied <- string(m.Payload()) }).WaitTimeout(30 * time.Second)
	own := make(chan string, 8)
	gw2.Subscribe("freshet/v1/gw-2/ack", 1, func(_ paho.Client, m paho.Message) { own <- string(m.Payload()) }).WaitTimeout(30 * time.Second)
	hubc.Publish("freshet/v1/gw-2/ack", 1, false, "ack for gw-2").WaitTimeout(30 * time.Second)
	select {
	case <-own:
	case <-time.After(30 * time.Second):
		t.Fatal("gw-2 did not get its own ack")
	}
	gw1.Publish("freshet/v1/gw-2/batch", 1, false, "forged").WaitTimeout(30 * time.Second)
	gw1.Publish("freshet/v1/gw-1/batch", 1, false, "own").WaitTimeout(30 * time.Second)
	gw2.Publish("freshet/v1/gw-2/batch", 1, false, "barrier").WaitTimeout(30 * time.Second)
	testsvc.WaitFor(t, 30*time.Second, "own batch and barrier", func() error {
		mu.Lock()
		defer mu.Unlock()
		if !got["freshet/v1/gw-1/batch own"] || !got["freshet/v1/gw-2/batch barrier"] {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if got["freshet/v1/gw-2/batch forged"] {
		t.Fatal("gw-1 published on gw-2's topic")
	}
	select {
	case m := <-spied: // the barrier above came after the ack, from the same broker
		t.Fatalf("gw-1 read gw-2's ack %q", m)
	default:
	}
}

// TestMosquittoIdentity: with the shipped recipe a device cannot take over
// the hub's session or another device's by asking for their client id
// (Mosquitto gives it its certificate's name), and a packet over the size
// limit is refused (issue 15, findings 4 and 6).
func TestMosquittoIdentity(t *testing.T) {
	dir, b := recipe(t)
	hubc, err := connect(b, "freshet-hub", tlsConf(t, dir, "hub"))
	if err != nil {
		t.Fatal(err)
	}
	defer hubc.Disconnect(0)
	gw1, err := connect(b, "gw-1", tlsConf(t, dir, "devices/gw-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer gw1.Disconnect(0)
	got := make(chan string, 8)
	if tok := hubc.Subscribe("freshet/v1/+/batch", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// gw-2 asks for the hub's client id, then for gw-1's.
	for _, id := range []string{"freshet-hub", "gw-1"} {
		thief, err := connect(b, id, tlsConf(t, dir, "devices/gw-2"))
		if err != nil {
			t.Fatal(err)
		}
		thief.Disconnect(0)
	}
	// Mosquitto handles one client at a time: had a takeover happened, the
	// victims' sockets would be closed before these round trips.
	for name, c := range map[string]paho.Client{"hub": hubc, "gw-1": gw1} {
		if tok := c.Publish("freshet/v1/"+name+"/status", 1, false, "alive"); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("%s lost its session to a device that asked for its client id: %v", name, tok.Error())
		}
	}
	// An oversized batch never reaches the hub; the next one does.
	big, err := connect(b, "gw-2", tlsConf(t, dir, "devices/gw-2"))
	if err != nil {
		t.Fatal(err)
	}
	big.Publish("freshet/v1/gw-2/batch", 1, false, make([]byte, 70<<10)).WaitTimeout(30 * time.Second)
	gw1.Publish("freshet/v1/gw-1/batch", 1, false, "barrier").WaitTimeout(30 * time.Second)
	select {
	case topic := <-got:
		if topic != "freshet/v1/gw-1/batch" {
			t.Fatalf("the hub got %s: the oversized batch went through", topic)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the barrier did not reach the hub")
	}
	testsvc.WaitFor(t, 30*time.Second, "the oversized publisher disconnected", func() error {
		if big.IsConnectionOpen() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
}

// TestMutualTLSEndToEnd: a real agent and a real hub talk through the
// recipe's Mosquitto over mutual TLS, the hub signing its acks with the key
// make-ack-key.sh made, and the readings reach InfluxDB.
func TestMutualTLSEndToEnd(t *testing.T) {
	dir, b := recipe(t)
	keyDir, _ := makeAckKey(t)
	ix := testsvc.StartInflux(t)
	db := ix.NewDatabase(t)
	t.Setenv("DEPLOY_TEST_TOKEN", ix.Token)
	hcfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`data_dir: %s
broker: {url: "ssl://%s", tls: {ca_file: %s/ca.pem, cert_file: %s/hub.pem, key_file: %s/hub.key}}
influx: {url: %q, bucket: %q, token_env: DEPLOY_TEST_TOKEN}
http: {listen: "off"}
ack_key_file: %s/hub-ack.key
`, t.TempDir(), b.Addr, dir, dir, dir, ix.URL, db+"/autogen", keyDir)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(hcfg, hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	sysfs.NewThermalZone(root, 0, "cpu", 51.5)
	acfg, err := agent.ParseConfig(strings.NewReader(fmt.Sprintf(`device: gw-1
data_dir: %s
sys_root: %s
mqtt:
  broker: ssl://%s
  tls: {ca_file: %s/ca.pem, cert_file: %s/devices/gw-1.pem, key_file: %s/devices/gw-1.key}
  hub_keys: [%s/hub-ack.pub]
outbox: {commit_interval: 100ms, max_batch_age: 200ms}
http: {listen: "off"}
sensors: [{name: cpu, type: cpu_temp, interval: 100ms}]
`, t.TempDir(), root, b.Addr, dir, dir, dir, keyDir)))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(acfg, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.Run(ctx) }()
	go func() { defer wg.Done(); a.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	testsvc.WaitFor(t, 30*time.Second, "readings in InfluxDB over mutual TLS", func() error {
		if n := uint64(promtest.ToFloat64(h.Pipeline().Metrics().Readings)); n < 10 {
			return fmt.Errorf("%d readings stored", n)
		}
		if st := a.Outbox(); st.Settled < 10 {
			return fmt.Errorf("%d readings acked", st.Settled)
		}
		if n := promtest.ToFloat64(h.Pipeline().Metrics().AcksUnsigned.WithLabelValues("no_key")); n != 0 {
			return fmt.Errorf("%v acks sent unsigned", n)
		}
		return nil
	})
}
