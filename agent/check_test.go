package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/agent/sensor"
	mb "github.com/freshet-iot/freshet/firmware-sim/modbus"
	plc "github.com/freshet-iot/freshet/firmware-sim/opcua"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// TestCheckFieldDevices: -check reads every slave and node once and prints
// the decoded values; a slave answering with an exception is a problem
// named by its exception.
func TestCheckFieldDevices(t *testing.T) {
	meter, probe, broken := mb.NewMeter(), mb.NewSoilProbe(), mb.NewSoilProbe()
	broken.SetFault(mb.Fault{Exception: mb.SlaveDeviceFailure})
	tcp, err := mb.ListenTCP("127.0.0.1:0", map[byte]*mb.Slave{1: meter.Slave, 3: broken.Slave})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Stop()
	port, err := mb.ListenRTUPTY(map[byte]*mb.Slave{2: probe.Slave})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	p, err := plc.StartPLC()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	dir := t.TempDir()
	key := testsvc.NewAckKey(t)
	cfg := fmt.Sprintf(`device: gw-1
data_dir: %s
mqtt: {broker: "tcp://127.0.0.1:1", hub_keys: [%s]}
sensors:
  - name: meter
    type: modbus
    modbus:
      endpoint: %s
      registers:
        - {metric: voltage, unit: V, kind: input, address: 0x0000, type: float32}
        - {metric: energy, unit: kWh, kind: input, address: 0x0156, type: float32}
  - name: soil
    type: modbus
    modbus:
      transport: rtu
      device: %s
      unit: 2
      registers:
        - {metric: moisture, unit: "%%", address: 0, type: int16, scale: 0.1}
        - {metric: temperature, unit: C, address: 1, type: int16, scale: 0.1}
        - {metric: conductivity, unit: uS/cm, address: 2}
        - {metric: status, kind: coil, address: 0}
  - name: broken
    type: modbus
    modbus: {endpoint: %q, unit: 3, registers: [{metric: moisture, address: 0}]}
  - name: line1
    type: opcua
    opcua:
      endpoint: %s
      nodes:
        - {node: %q, metric: temperature, unit: C}
        - {node: %q, metric: count}
        - {node: %q, metric: state}
        - {node: %q, metric: running}
`, dir, key.PubFile, tcp.Addr, port.Path, tcp.Addr, p.URL, plc.NodeID(plc.Temperature), plc.NodeID(plc.Count), plc.NodeID(plc.State), plc.NodeID(plc.Running))
	path := filepath.Join(dir, "agent.yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	c, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	problems := agent.Check(c, nil, &out)
	t.Log("\n" + out.String())
	// The probe has no coil 0: exception 2, a second problem.
	want := []string{
		"voltage=230V energy=1234.5kWh",
		"(modbus rtu " + port.Path + " 9600 none 8/1 unit 2)",
		"modbus exception 2 (illegal_data_address)",
		"modbus exception 4 (slave_device_failure)",
		"reason modbus_slave_device_failure",
		"acks        signed by hub key " + key.Signer.KeyID(),
	}
	wantProblems := 2
	if sensor.OPCUASupported {
		want = append(want, "temperature          21.5 C at ", "count                0", `state                "RUNNING"`)
	} else {
		want = append(want, "built without OPC UA: run freshet-agent-opcua")
		wantProblems++
	}
	if problems != wantProblems {
		t.Errorf("%d problems, want %d (the broken slave, the missing coil; OPC UA where it is not built)", problems, wantProblems)
	}
	for _, want := range want {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
