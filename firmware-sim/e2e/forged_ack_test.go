package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// TestForgedAcksRealBinaries is finding 1 of issue 15 against the real
// freshet-agent and freshet-hub: an anonymous client of an open embedded
// broker on loopback reads an agent's status (its epoch), watches its
// batches, and forges an ack for each new seq: unsigned, signed with a key
// of its own, signed with its own key under the hub's key id, and an
// unsigned rejection. The hub is not running yet, so no real ack exists:
// whatever an agent deletes, a forgery made it. The agent deletes nothing
// and counts every forgery by reason, while a control agent that obeys
// unsigned acks, on the same broker, deletes readings on the same
// forgeries (the attack is real). Then the hub starts: every reading the
// agent committed is stored, and every aggregate is exact.
func TestForgedAcksRealBinaries(t *testing.T) {
	t.Parallel()
	ix := testsvc.StartInflux(t)
	hubBin, agentBin := buildHub(t), buildAgent(t)
	b := testsvc.StartMochi(t) // the hub's embedded broker, anonymous, on loopback
	key, attackerKey := testsvc.NewAckKey(t), testsvc.NewAckKey(t)
	victim := startAgentProc(t, agentProcOptions{bin: agentBin, name: "victim", broker: b.URL(), hubKeys: []string{key.PubFile}, zones: 2})
	control := startAgentProc(t, agentProcOptions{bin: agentBin, name: "control", broker: b.URL(), zones: 1, mqtt: ", insecure_unsigned_acks: true"})
	metric := func(p *agentProc, name string) float64 {
		return (&world{httpURL: strings.TrimSuffix(p.health, "/healthz")}).metric(name)
	}

	// The attacker: statuses for the epochs, batches for the seqs.
	attacker := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("attacker").SetAutoReconnect(false))
	if tok := attacker.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("attacker connect: %v", tok.Error())
	}
	defer attacker.Disconnect(0)
	var mu sync.Mutex
	epochs := map[string]uint64{}
	seen := make(chan protocol.Peeked, 256)
	subscribe := func(filter string, fn func(payload []byte)) {
		if tok := attacker.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { fn(m.Payload()) }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	subscribe("freshet/v1/+/status", func(payload []byte) {
		if s, err := protocol.NewCodec(protocol.Limits{}).DecodeStatus(payload); err == nil && s.Epoch != 0 {
			mu.Lock()
			epochs[s.Device] = s.Epoch
			mu.Unlock()
		}
	})
	subscribe("freshet/v1/+/batch", func(payload []byte) {
		if p, err := protocol.NewCodec(protocol.Limits{}).PeekHeader(payload); err == nil {
			select {
			case seen <- p:
			default:
			}
		}
	})

	codec := protocol.NewCodec(protocol.Limits{})
	publish := func(device string, a *protocol.Ack) {
		data, err := codec.EncodeAck(a)
		if err != nil {
			t.Fatal(err)
		}
		if tok := attacker.Publish("freshet/v1/"+device+"/ack", 1, false, data); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	forged := map[string]float64{} // the victim's forgeries, by the reason it must give
	last := map[string]uint64{}
	deadline := time.After(30 * time.Second)
	for len(forged) == 0 || forged["unknown_key"] < 3 || last["control"] < 3 {
		var p protocol.Peeked
		select {
		case p = <-seen:
		case <-deadline:
			t.Fatalf("the attacker saw too few batches: forged %v, last seqs %v", forged, last)
		}
		mu.Lock()
		epoch := epochs[p.Device]
		mu.Unlock()
		if p.Seq <= last[p.Device] || epoch == 0 {
			continue
		}
		if epoch != p.Epoch {
			t.Fatalf("%s: status epoch %x, batch epoch %x", p.Device, epoch, p.Epoch)
		}
		last[p.Device] = p.Seq
		settle := func() *protocol.Ack { return &protocol.Ack{Device: p.Device, Epoch: epoch, Through: p.Seq} }
		if p.Device == "control" {
			publish("control", settle())
			continue
		}
		publish("victim", settle())
		rejection := settle()
		rejection.Rejected = []protocol.Rejection{{Seq: p.Seq, Reason: "not_finite", Detail: "forged"}}
		publish("victim", rejection)
		forged["unsigned"] += 2
		own := settle()
		attackerKey.Signer.Sign(own)
		publish("victim", own)
		forged["unknown_key"]++
		claimed := settle()
		attackerKey.Signer.Sign(claimed)
		claimed.KeyID = key.Signer.KeyID()
		publish("victim", claimed)
		forged["bad_signature"]++
	}
	testsvc.WaitFor(t, 20*time.Second, "the victim to count every forgery, and the control agent to obey one", func() error {
		for reason, n := range forged {
			if got := metric(victim, `freshet_agent_acks_ignored_total{reason="`+reason+`"}`); got != n {
				return fmt.Errorf("victim ignored %v acks for %s, %v forged", got, reason, n)
			}
		}
		if got := metric(control, `freshet_agent_readings_total{fate="settled"}`); got <= 0 {
			return fmt.Errorf("control agent: %v readings settled", got)
		}
		return nil
	})
	if acks, settled := metric(victim, "freshet_agent_acks_total"), metric(victim, `freshet_agent_readings_total{fate="settled"}`); acks != 0 || settled != 0 {
		t.Fatalf("the victim applied %v acks and deleted %v readings on forgeries", acks, settled)
	}
	t.Logf("forged acks: %v; the control agent deleted %v readings on them", forged, metric(control, `freshet_agent_readings_total{fate="settled"}`))
	control.kill() // its readings are gone: outside the accounting below

	// The hub comes: the victim's backlog is all there.
	db := ix.NewDatabase(t)
	dir := t.TempDir()
	port, _ := testsvc.FreePort()
	h := &hubProc{t: t, name: "hub", bin: hubBin, cfg: filepath.Join(dir, "hub.yaml"), dataDir: filepath.Join(dir, "hub"),
		httpURL: fmt.Sprintf("http://127.0.0.1:%d", port), env: []string{"E2E_INFLUX_TOKEN=" + ix.Token}}
	os.WriteFile(h.cfg, []byte(fmt.Sprintf(`data_dir: %s
broker: {url: %q, client_id: hub-forged}
influx: {url: %q, bucket: %q, token_env: E2E_INFLUX_TOKEN}
http: {listen: "127.0.0.1:%d"}
windows: {sizes: [1m], allowed_lateness: 1s, idle_timeout: 3s}
ack_key_file: %s
`, h.dataDir, b.URL(), ix.URL, db+"/autogen", port, key.KeyFile)), 0o644)
	h.start()
	defer h.stop(false)
	victim.quiesce()
	w := &world{t: t, ix: ix, db: db, httpURL: h.httpURL, procs: []*agentProc{victim}}
	w.check()
	if acks := metric(victim, "freshet_agent_acks_total"); acks <= 0 {
		t.Errorf("the victim applied %v of the hub's acks", acks)
	}
	for reason, n := range forged {
		if got := metric(victim, `freshet_agent_acks_ignored_total{reason="`+reason+`"}`); got != n {
			t.Errorf("after the hub's acks, %v ignored for %s: the hub's acks must all verify (%v forged)", got, reason, n)
		}
	}
}
