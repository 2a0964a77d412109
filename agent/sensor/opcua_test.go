package sensor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	plc "github.com/freshet-iot/freshet/firmware-sim/opcua"
	"github.com/freshet-iot/freshet/protocol"
)

// plcNodes maps the emulated PLC's tags to metrics.
var plcNodes = fmt.Sprintf(`
      - {node: %q, metric: temperature, unit: C, resolution: 0.01}
      - {node: %q, metric: pressure, unit: bar}
      - {node: %q, metric: running}
      - {node: %q, metric: count}
      - {node: %q, metric: state}`,
	plc.NodeID(plc.Temperature), plc.NodeID(plc.Pressure), plc.NodeID(plc.Running), plc.NodeID(plc.Count), plc.NodeID(plc.State))

func opcuaConfig(t *testing.T, opcua string) Config {
	t.Helper()
	opcua = strings.ReplaceAll(strings.Trim(opcua, "{}"), ", ", "\n  ")
	c, err := decode(t, fmt.Sprintf("name: line1\ntype: opcua\ninterval: 1s\nopcua:\n  %s\n  nodes:%s\n", opcua, plcNodes))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func startPLC(t *testing.T) *plc.PLC {
	t.Helper()
	p, err := plc.StartPLC()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	return p
}

func TestOPCUAConfigBad(t *testing.T) {
	const nodes = "nodes: [{node: 'ns=2;s=T', metric: t}]"
	expectConfigErrors(t, []badConfig{
		{"{name: p, type: opcua}", "opcua: required"},
		{"{name: p, type: opcua, opcua: {" + nodes + "}}", "opcua.endpoint: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'http://h:4840', " + nodes + "}}", "opcua.endpoint"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', security_policy: Basic999, " + nodes + "}}", "opcua.security_policy"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', security_mode: Sign, " + nodes + "}}", "opcua.security_mode"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', security_policy: Basic256Sha256, " + nodes + "}}", "opcua.certificate_file: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', certificate_file: c.pem, " + nodes + "}}", "opcua.certificate_file: certificate_file and private_key_file"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: username, " + nodes + "}}", "opcua.username: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: username, username: u, " + nodes + "}}", "opcua.password_file: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: certificate, " + nodes + "}}", "opcua.certificate_file: required"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: kerberos, " + nodes + "}}", "opcua.auth"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', mode: push, " + nodes + "}}", "opcua.mode"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', sampling_interval: 1s, " + nodes + "}}", "opcua.sampling_interval: only"},
		{"{name: p, type: opcua, interval: 1s, opcua: {endpoint: 'opc.tcp://h:4840', mode: subscribe, sampling_interval: 2s, " + nodes + "}}", "opcua.sampling_interval"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', timestamp: server, " + nodes + "}}", "opcua.timestamp"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840'}}", "opcua.nodes: none"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', nodes: [{node: 'ns=x', metric: t}]}}", "opcua.nodes[0].node"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', nodes: [{node: 'i=1', metric: t}, {node: 'i=2', metric: t}]}}", "opcua.nodes[1].metric"},
		{"{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', nodes: [{node: 'i=1', metric: t, resolution: 0.5}]}}", "opcua.nodes[0].resolution"},
		{"{name: p, type: opcua, resolution: {t: 0.1}, opcua: {endpoint: 'opc.tcp://h:4840', " + nodes + "}}", "resolution: set the resolution of an opcua node"},
	})
	// Files are checked when the sensor opens, naming the key.
	c, _ := decode(t, "{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', auth: username, username: u, password_file: /nonexistent, "+nodes+"}}")
	if _, err := Open(c, Env{}); err == nil || !strings.Contains(err.Error(), "opcua.password_file") {
		t.Fatalf("missing password file: %v", err)
	}
	c, _ = decode(t, "{name: p, type: opcua, opcua: {endpoint: 'opc.tcp://h:4840', security_policy: Basic256Sha256, certificate_file: /nonexistent, private_key_file: /nonexistent, "+nodes+"}}")
	if _, err := Open(c, Env{}); err == nil || !strings.Contains(err.Error(), "opcua.certificate_file") {
		t.Fatalf("missing certificate: %v", err)
	}
}

// TestOPCUAPoll reads the emulated PLC's tags: types, source timestamps as
// event time, nothing new reported twice, implausible or absent source
// timestamps replaced by the read time, a Bad status named and counted.
func TestOPCUAPoll(t *testing.T) {
	t.Parallel()
	p := startPLC(t)
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	p.Set(plc.Temperature, 63.25, at)
	p.Set(plc.Pressure, float32(2.7), at)
	p.Set(plc.Count, uint32(1200), at)
	src := openSrc(t, opcuaConfig(t, "endpoint: "+p.URL), Env{})
	vals, err := readSrc(t, src)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Value{}
	for _, v := range vals {
		got[v.Metric] = v
	}
	if v := got["temperature"]; v.Type != protocol.Float || v.Float != 63.25 || v.Resolution != 0.01 || v.Time != at.UnixNano() {
		t.Errorf("temperature %+v, want 63.25 at %v", v, at)
	}
	if v := got["pressure"]; v.Float != 2.7 {
		t.Errorf("pressure %v: a float32's shortest decimal is 2.7", v.Float)
	}
	if v := got["running"]; v.Type != protocol.Bool || !v.Bool {
		t.Errorf("running %+v", v)
	}
	if v := got["count"]; v.Type != protocol.Int || v.Int != 1200 {
		t.Errorf("count %+v", v)
	}
	if v := got["state"]; v.Type != protocol.String || v.Str != "RUNNING" {
		t.Errorf("state %+v", v)
	}
	// Nothing changed: nothing new.
	if _, err := readSrc(t, src); !errors.Is(err, ErrNoChange) {
		t.Fatalf("second read: %v, want ErrNoChange", err)
	}
	// One tag changes: only it is reported.
	p.Set(plc.Count, uint32(1201), at.Add(time.Second))
	vals, err = readSrc(t, src)
	if err != nil || len(vals) != 1 || vals[0].Int != 1201 || vals[0].Time != at.Add(time.Second).UnixNano() {
		t.Fatalf("after one change: %+v, %v", vals, err)
	}
	// A PLC clock a day ahead: its timestamps are not believed.
	p.SetClockOffset(24 * time.Hour)
	p.Set(plc.Count, uint32(1202), at.Add(2*time.Second))
	vals, err = readSrc(t, src)
	if err != nil || len(vals) != 5 { // every source timestamp moved
		t.Fatalf("with the PLC's clock a day ahead: %+v, %v", vals, err)
	}
	for _, v := range vals {
		if v.Time != 0 {
			t.Fatalf("%s stamped %v with the PLC's clock a day ahead; want the read time", v.Metric, time.Unix(0, v.Time))
		}
	}
	p.SetClockOffset(0)
	// No source timestamps: every read reports every tag at the read time.
	p.SetNoSourceTimestamps(true)
	for range 2 {
		vals, err = readSrc(t, src)
		if err != nil || len(vals) != 5 || vals[0].Time != 0 {
			t.Fatalf("without source timestamps: %d values, %v", len(vals), err)
		}
	}
	p.SetBad(plc.Pressure, ua.StatusBadSensorFailure)
	_, err = readSrc(t, src)
	if Reason(err) != ReasonBadStatus || !strings.Contains(err.Error(), plc.Pressure) {
		t.Fatalf("bad status: %v (reason %s)", err, Reason(err))
	}
}

// TestOPCUARestart: the server restarts (no session survives); reads fail
// while it is down and recover with a new session, in both modes.
func TestOPCUARestart(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"poll", "subscribe"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			p := startPLC(t)
			src := openSrc(t, opcuaConfig(t, "endpoint: "+p.URL+", mode: "+mode+", request_timeout: 500ms"), Env{})
			count := uint32(1)
			// waitFor reads until the count tag shows want.
			waitFor := func(want uint32) {
				t.Helper()
				var last string
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					vals, err := readSrc(t, src)
					last = fmt.Sprint(vals, err)
					for _, v := range vals {
						if v.Metric == "count" && v.Int == int64(want) {
							return
						}
					}
				}
				t.Fatalf("count %d never read; last read: %s", want, last)
			}
			p.Set(plc.Count, count, time.Now())
			waitFor(count)
			p.Stop()
			if _, err := readSrc(t, src); err == nil {
				t.Fatal("read from a stopped server succeeded")
			}
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			count++
			p.Set(plc.Count, count, time.Now())
			waitFor(count)
		})
	}
}

// TestOPCUAUsername logs in with a user name and a password from a file.
// (The emulated server accepts any identity: this checks the client side.)
func TestOPCUAUsername(t *testing.T) {
	t.Parallel()
	p := startPLC(t)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	src := openSrc(t, opcuaConfig(t, "endpoint: "+p.URL+", auth: username, username: freshet, password_file: "+pw), Env{})
	if _, err := readSrc(t, src); err != nil {
		t.Fatal(err)
	}
	if s := src.(*opcuaSource); s.password != "s3cret" {
		t.Fatalf("password %q: the file's trailing newline is not part of it", s.password)
	}
}
