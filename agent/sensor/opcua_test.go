//go:build opcua

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
	"github.com/freshet-iot/freshet/internal/localsvc"
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

// TestOPCUAOpenFiles: the password and certificate files are read when the
// sensor opens, and a missing one is an error naming its key.
func TestOPCUAOpenFiles(t *testing.T) {
	const nodes = "nodes: [{node: 'ns=2;s=T', metric: t}]"
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

// TestCheckNodeID: what the config's node id check accepts, the client
// parses; the forms of OPC UA Part 6 pass both.
func TestCheckNodeID(t *testing.T) {
	for _, id := range []string{"i=2258", "ns=2;s=Line1.Temperature", "ns=3;i=1001", "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63", "ns=1;b=M/RbKBsRVkePCePcx24oRA=="} {
		if _, err := ua.ParseNodeID(id); err != nil {
			t.Errorf("%q: the client refuses it: %v", id, err)
		}
		if err := checkNodeID(id); err != nil {
			t.Errorf("%q: the config check refuses it: %v", id, err)
		}
	}
	for _, id := range []string{"ns=x;i=1", "ns=2;q=1", "i=", "ns=2", "s=", "i=-1", "ns=70000;i=1", "g=123", "b=!!"} {
		if _, err := ua.ParseNodeID(id); err != nil && checkNodeID(id) == nil {
			t.Errorf("%q: the config check accepts what the client refuses (%v)", id, err)
		}
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
				err := localsvc.Poll(30*time.Second, func() error {
					vals, err := readSrc(t, src)
					for _, v := range vals {
						if v.Metric == "count" && v.Int == int64(want) {
							return nil
						}
					}
					return fmt.Errorf("last read: %v %v", vals, err)
				})
				if err != nil {
					t.Fatalf("count %d never read: %v", want, err)
				}
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
