package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// TestExposureRefused: the real freshet-hub refuses, at -check and at
// start, an embedded broker or an HTTP port reachable from other machines
// without authentication, naming the key (issue 15, finding 3); so does
// the real freshet-agent for its metrics port.
func TestExposureRefused(t *testing.T) {
	t.Parallel()
	hubBin, agentBin := buildHub(t), buildAgent(t)
	dir := t.TempDir()
	for name, c := range map[string]struct{ cfg, want string }{
		"open broker": {`broker: {embedded: {listen: "0.0.0.0:18830"}}`, "broker.embedded.listen: 0.0.0.0:18830 is reachable from other machines"},
		"open http": {`broker: {embedded: {listen: "127.0.0.1:0"}}
http: {listen: "0.0.0.0:19274"}`, "http.token_file: required"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
		os.WriteFile(path, []byte(c.cfg+"\ninflux: {url: \"http://127.0.0.1:9\", bucket: db/autogen}\ndata_dir: "+dir+"\n"), 0o644)
		for _, args := range [][]string{{"-check", "-config", path}, {"-config", path}} {
			out, err := exec.Command(hubBin, args...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) {
				t.Errorf("%s, freshet-hub %v: err %v, output %q; want a failure saying %q", name, args, err, out, c.want)
			}
		}
	}
	path := filepath.Join(dir, "agent.yaml")
	os.WriteFile(path, []byte(`device: gw-1
data_dir: `+dir+`
mqtt: {broker: "tcp://127.0.0.1:9", hub_keys: [/etc/freshet/hub-ack.pub]}
http: {listen: "0.0.0.0:19273"}
sensors: [{name: cpu, type: cpu_temp}]
`), 0o644)
	const want = "http.token_file: required: http.listen 0.0.0.0:19273 is reachable from other machines"
	for _, args := range [][]string{{"-check", "-config", path}, {"-config", path}} {
		out, err := exec.Command(agentBin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("open agent http, freshet-agent %v: err %v, output %q; want a failure saying %q", args, err, out, want)
		}
	}
}

// TestAttacks runs the attacks of issue 15 that the broker and the hub
// stop, against the real freshet-hub (its embedded broker with accounts)
// and a real freshet-agent, gw-1: a second device account, gw-evil, tries
// to take over gw-1's session, to publish batches as gw-1 (on gw-1's topic,
// and on its own topic naming gw-1), to read gw-1's acks and status, and
// sends an oversized packet. Every attempt is refused and counted, gw-1
// keeps its session, and every reading gw-1 committed is stored once.
func TestAttacks(t *testing.T) {
	t.Parallel()
	ix := testsvc.StartInflux(t)
	hubBin, agentBin := buildHub(t), buildAgent(t)
	db, err := ix.NewDatabaseName()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, pw := range map[string]string{"gw-1": "pw-one", "gw-evil": "pw-evil"} {
		os.WriteFile(filepath.Join(dir, name+".pw"), []byte(pw+"\n"), 0o600)
	}
	bp, _ := testsvc.FreePort()
	hp, _ := testsvc.FreePort()
	brokerURL := fmt.Sprintf("tcp://127.0.0.1:%d", bp)
	key := testsvc.NewAckKey(t)
	h := &hubProc{name: "hub", bin: hubBin, cfg: filepath.Join(dir, "hub.yaml"), dataDir: filepath.Join(dir, "hub"),
		httpURL: fmt.Sprintf("http://127.0.0.1:%d", hp), env: []string{"E2E_INFLUX_TOKEN=" + ix.Token}}
	os.WriteFile(h.cfg, []byte(fmt.Sprintf(`data_dir: %s
broker:
  embedded:
    listen: "127.0.0.1:%d"
    users:
      - {username: gw-1, password_file: %s/gw-1.pw}
      - {username: gw-evil, password_file: %s/gw-evil.pw}
influx: {url: %q, bucket: %q, token_env: E2E_INFLUX_TOKEN}
http: {listen: "127.0.0.1:%d"}
windows: {sizes: [1m]}
ack_key_file: %s
`, h.dataDir, bp, dir, dir, ix.URL, db+"/autogen", hp, key.KeyFile)), 0o644)
	h.startTB(t)
	defer h.stop(false)
	testsvc.WaitFor(t, 20*time.Second, "the hub serving", func() error {
		if h.metric("freshet_hub_broker_connected") != 1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	agent := startAgentProc(t, agentProcOptions{bin: agentBin, name: "gw-1", broker: brokerURL, hubKeys: []string{key.PubFile}, zones: 2,
		mqtt: fmt.Sprintf(", username: gw-1, password_file: %s/gw-1.pw", dir)})
	testsvc.WaitFor(t, 30*time.Second, "gw-1's first batches applied", func() error {
		if n := h.metric(`freshet_hub_batches_total{result="applied"}`); n < 3 {
			return fmt.Errorf("%v applied", n)
		}
		return nil
	})

	evil := func(clientID string) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID(clientID).SetUsername("gw-evil").
			SetPassword("pw-evil").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4))
		tok := c.Connect()
		if !tok.WaitTimeout(30 * time.Second) {
			return nil, fmt.Errorf("connect timeout")
		}
		return c, tok.Error()
	}
	// Take over gw-1's session.
	if c, err := evil("gw-1"); err == nil {
		c.Disconnect(0)
		t.Fatal("gw-evil connected with gw-1's client id")
	}
	c, err := evil("gw-evil")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(0)
	// Read gw-1's status and acks (the status names its epoch and seqs).
	spied := make(chan string, 16)
	for _, topic := range []string{"freshet/v1/gw-1/status", "freshet/v1/gw-1/ack", "freshet/v1/+/batch"} {
		c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { spied <- m.Topic() }).WaitTimeout(30 * time.Second)
	}
	// Publish batches as gw-1: its next seqs in an epoch of our own (the
	// real one is unknown to gw-evil), on gw-evil's topic, then on gw-1's
	// (the broker disconnects a client for a refused publish: reconnect).
	codec := protocol.NewCodec(protocol.Limits{})
	forged := func(seq uint64) []byte {
		now := time.Now().UnixNano()
		b, err := codec.EncodeBatch(&protocol.Batch{Device: "gw-1", Epoch: 0xbad, Seq: seq, SealTime: now,
			Series: []protocol.Series{{Sensor: "zone0", Metric: "temperature", Unit: "C", Type: protocol.Float, Times: []int64{now}, Floats: []float64{99}}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	c.Publish("freshet/v1/gw-evil/batch", 1, false, forged(1)).WaitTimeout(30 * time.Second)
	c.Publish("freshet/v1/gw-1/batch", 1, false, forged(2)).WaitTimeout(30 * time.Second)
	c2, err := evil("gw-evil")
	if err != nil {
		t.Fatal(err)
	}
	c2.Publish("freshet/v1/gw-evil/batch", 1, false, make([]byte, 80<<10)).WaitTimeout(30 * time.Second)

	testsvc.WaitFor(t, 20*time.Second, "every attack counted", func() error {
		for name, want := range map[string]float64{
			`freshet_hub_broker_refused_connections_total{reason="client_id_not_identity"}`: 1,
			`freshet_hub_broker_acl_denied_total{access="read"}`:                            3,
			`freshet_hub_broker_acl_denied_total{access="write"}`:                           1,
			`freshet_hub_rejections_total{reason="device_mismatch"}`:                        1,
			`freshet_hub_broker_too_large_total`:                                            1,
		} {
			if got := h.metric(name); got != want {
				return fmt.Errorf("%s = %v, want %v", name, got, want)
			}
		}
		return nil
	})
	select {
	case topic := <-spied:
		t.Fatalf("gw-evil read %s", topic)
	default:
	}

	// gw-1 kept its session and lost nothing: every committed reading is
	// stored, and nothing of the forged epoch.
	agent.quiesce()
	if n := h.metric("freshet_hub_broker_refused_connections_total{reason=\"hub_client_id\"}"); n != 0 {
		t.Errorf("hub_client_id refusals %v", n)
	}
	committed := 0
	if b, err := os.ReadFile(agent.commitLog); err == nil {
		committed = strings.Count(string(b), "\n")
	}
	testsvc.WaitFor(t, 30*time.Second, "gw-1's committed readings stored", func() error {
		s, err := ix.Query(db, `SELECT count("value") FROM "temperature" WHERE "device" = 'gw-1'`)
		if err != nil || len(s) == 0 {
			return fmt.Errorf("count: %v", err)
		}
		n, _ := s[0].Values[0][1].(json.Number).Int64()
		if int(n) != committed {
			return fmt.Errorf("%d stored, %d committed", n, committed)
		}
		return nil
	})
	if committed < 10 {
		t.Fatalf("only %d readings committed", committed)
	}
	if s, _ := ix.Query(db, `SELECT count("value") FROM "temperature" WHERE "value" = 99`); len(s) > 0 {
		t.Fatalf("a forged reading was stored: %v", s)
	}
}
