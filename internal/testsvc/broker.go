package testsvc

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/hub/broker"
	"github.com/freshet-iot/freshet/internal/localsvc"
)

// Broker is a running MQTT broker on 127.0.0.1. Stop and Start keep its
// port, so clients can reconnect to the same address after a restart.
type Broker struct {
	// Name is "mochi" or "mosquitto".
	Name string
	// Addr is host:port.
	Addr string
	impl interface {
		start() error
		stop()
		kill()
	}
}

// URL returns the broker's address for MQTT clients (tcp://host:port).
func (b *Broker) URL() string { return "tcp://" + b.Addr }

// Stop stops the broker gracefully; its sessions and queued messages are
// gone (persistence is off).
func (b *Broker) Stop() { b.impl.stop() }

// Kill stops the broker abruptly (SIGKILL for a process).
func (b *Broker) Kill() { b.impl.kill() }

// Start starts a stopped broker again on the same port.
func (b *Broker) Start() error { return b.impl.start() }

// BrokerNames are the brokers EachBroker runs a test against.
var BrokerNames = []string{"mochi", "mosquitto"}

// EachBroker runs f as a subtest against every broker: the embedded mochi
// broker always, and Mosquitto (skipped with a message when it is not
// installed, failed when FRESHET_REQUIRE_SERVICES=1).
func EachBroker(t *testing.T, f func(t *testing.T, b *Broker)) {
	for _, name := range BrokerNames {
		t.Run(name, func(t *testing.T) {
			f(t, StartBroker(t, name))
		})
	}
}

// StartBroker starts the named broker for the duration of tb.
func StartBroker(tb testing.TB, name string) *Broker {
	tb.Helper()
	switch name {
	case "mochi":
		return StartMochi(tb)
	case "mosquitto":
		return StartMosquitto(tb)
	}
	tb.Fatalf("unknown broker %q", name)
	return nil
}

// StartMochi starts the embedded mochi-mqtt broker, the one freshet-hub
// embeds (hub/broker), allowing every client.
func StartMochi(tb testing.TB) *Broker {
	tb.Helper()
	m := &mochi{addr: "127.0.0.1:0"}
	if err := m.start(); err != nil {
		tb.Fatalf("start mochi: %v", err)
	}
	tb.Cleanup(m.stop)
	return &Broker{Name: "mochi", Addr: m.addr, impl: m}
}

type mochi struct {
	addr string
	b    *broker.Broker
}

func (m *mochi) start() error {
	if m.b != nil {
		return fmt.Errorf("mochi on %s is already running", m.addr)
	}
	b, err := broker.Start(broker.Options{Addr: m.addr})
	if err != nil {
		return err
	}
	m.addr, m.b = b.Addr(), b
	return nil
}

func (m *mochi) stop() {
	if m.b != nil {
		m.b.Close()
		m.b = nil
	}
}

func (m *mochi) kill() { m.stop() }

// MosquittoPath finds the mosquitto binary: $FRESHET_MOSQUITTO, $PATH, or
// /usr/sbin (where Debian installs it, outside a normal user's PATH).
func MosquittoPath() (string, error) {
	if p := os.Getenv("FRESHET_MOSQUITTO"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("mosquitto not found in $FRESHET_MOSQUITTO, $PATH or /usr/sbin")
}

// MosquittoOptions adjust the Mosquitto configuration.
type MosquittoOptions struct {
	// Config lines added to the generated mosquitto.conf (after the
	// listener), for TLS, ACLs or queue limits.
	Config []string
}

// StartMosquitto starts Mosquitto with persistence off and anonymous access.
func StartMosquitto(tb testing.TB) *Broker { return StartMosquittoWith(tb, MosquittoOptions{}) }

// StartMosquittoWith starts Mosquitto with extra configuration.
func StartMosquittoWith(tb testing.TB, o MosquittoOptions) *Broker {
	tb.Helper()
	skipShort(tb, "mosquitto")
	path, err := MosquittoPath()
	if err != nil {
		missing(tb, "mosquitto", err.Error()+"; install it with `apt-get install mosquitto`")
	}
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"persistence false",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
	}
	if u, err := user.Current(); err == nil {
		// As root, mosquitto drops to this user; stay who we are.
		conf = append(conf, "user "+u.Username)
	}
	if !hasPrefix(o.Config, "allow_anonymous") {
		conf = append(conf, "allow_anonymous true")
	}
	conf = append(conf, o.Config...)
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	m := &mosquitto{addr: addr, p: &localsvc.Proc{Name: "mosquitto", Path: path, Args: []string{"-c", confPath}, LogPath: filepath.Join(dir, "mosquitto.log")}}
	if err := m.start(); err != nil {
		tb.Fatalf("start mosquitto: %v", err)
	}
	tb.Cleanup(func() {
		m.stop()
		if tb.Failed() {
			tb.Logf("mosquitto log:\n%s", m.p.Tail(30))
		}
	})
	return &Broker{Name: "mosquitto", Addr: addr, impl: m}
}

func hasPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return true
		}
	}
	return false
}

type mosquitto struct {
	addr string
	p    *localsvc.Proc
}

func (m *mosquitto) start() error {
	if m.p.Running() {
		return fmt.Errorf("mosquitto on %s is already running", m.addr)
	}
	if err := m.p.Start(); err != nil {
		return err
	}
	if err := localsvc.WaitTCP(m.p, m.addr, 10*time.Second); err != nil {
		m.p.Kill()
		return err
	}
	return nil
}

func (m *mosquitto) stop() { m.p.Stop(5 * time.Second) }
func (m *mosquitto) kill() { m.p.Kill() }
