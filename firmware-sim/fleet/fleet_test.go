package fleet_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/firmware-sim/opcua"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

func TestMain(m *testing.M) {
	log.SetOutput(io.Discard) // the emulated PLC's OPC UA server logs to the standard logger
	var opts []goleak.Option
	for _, f := range opcua.IgnoreLeaks {
		opts = append(opts, goleak.IgnoreTopFunction(f))
	}
	goleak.VerifyTestMain(m, opts...)
}

// TestFieldGateway: a field gateway delivers its meter's, soil probe's and
// PLC's readings, read over Modbus TCP, Modbus RTU and OPC UA.
func TestFieldGateway(t *testing.T) {
	b := testsvc.StartMochi(t)
	h := testsvc.StartHubStub(t, b.URL())
	f, err := fleet.New(fleet.Options{Devices: 1, Broker: b.URL(), DataDir: t.TempDir(), FieldGateways: 1, HubKeys: []string{h.Key.PubFile},
		Tune: func(c *agent.Config) { c.Outbox.MaxBatchAge = cfgfile.Duration(300 * time.Millisecond) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testsvc.WaitFor(t, 30*time.Second, "the field devices' readings", func() error {
		got := map[string]float64{}
		for _, b := range h.Applied() {
			for _, s := range b.Series {
				if len(s.Floats) > 0 {
					got[s.Sensor+"/"+s.Metric] = s.Floats[len(s.Floats)-1]
				}
				if len(s.Ints) > 0 {
					got[s.Sensor+"/"+s.Metric] = float64(s.Ints[len(s.Ints)-1])
				}
			}
		}
		want := []string{"meter/voltage", "meter/power", "meter/energy", "soil/moisture", "soil/temperature"}
		if sensor.OPCUASupported {
			want = append(want, "line1/temperature", "line1/bottles")
		}
		for _, k := range want {
			if _, ok := got[k]; !ok {
				return fmt.Errorf("no %s yet (have %v)", k, got)
			}
		}
		if v := got["meter/voltage"]; v < 220 || v > 240 {
			return fmt.Errorf("meter voltage %v", v)
		}
		return nil
	})
	want := 5 // bme280, mcp9808, cpu, meter, soil
	if sensor.OPCUASupported {
		want++ // line1
	}
	if st := f.Devices[0].Agent.Status("online"); len(st.Sensors) != want {
		t.Fatalf("%d sensors, want %d", len(st.Sensors), want)
	}
}

// TestFleetDelivers: simulated gateways read their emulated chips through
// the real drivers and deliver to an acking subscriber; a device whose link
// is cut catches up once it is back.
func TestFleetDelivers(t *testing.T) {
	b := testsvc.StartMochi(t)
	h := testsvc.StartHubStub(t, b.URL())
	f, err := fleet.New(fleet.Options{Devices: 3, Seed: 1, Broker: b.URL(), DataDir: t.TempDir(), Interval: 200 * time.Millisecond, HubKeys: []string{h.Key.PubFile}})
	if err != nil {
		t.Fatal(err)
	}
	f.Devices[0].Link.SetDown(true) // before its agent runs: it never reaches the broker until the link is back
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testsvc.WaitFor(t, 30*time.Second, "readings from the two devices with a link", func() error {
		got := map[string]map[string]bool{}
		for _, b := range h.Applied() {
			if got[b.Device] == nil {
				got[b.Device] = map[string]bool{}
			}
			for _, s := range b.Series {
				got[b.Device][s.Sensor+"/"+s.Metric] = true
				for _, v := range s.Floats {
					if s.Metric == "temperature" && (v < -20 || v > 60) {
						return fmt.Errorf("%s %s/%s = %v: not a plausible climate", b.Device, s.Sensor, s.Metric, v)
					}
				}
			}
		}
		for _, d := range []string{"sim-0002", "sim-0003"} {
			if len(got[d]) < 4 { // bme280 x3, mcp9808 (cpu reads every 10 s)
				return fmt.Errorf("%s: %v", d, got[d])
			}
		}
		if len(got["sim-0001"]) != 0 {
			return fmt.Errorf("sim-0001 delivered with its link down")
		}
		return nil
	})
	if st := f.Devices[0].Agent.Outbox(); st.Committed == 0 {
		t.Fatal("the cut-off device committed nothing")
	}
	f.Devices[0].Link.SetDown(false)
	testsvc.WaitFor(t, 30*time.Second, "the cut-off device to catch up", func() error {
		st := f.Devices[0].Agent.Outbox()
		if st.Settled == 0 || st.Backlog.Batches > 1 {
			return fmt.Errorf("settled %d, backlog %+v", st.Settled, st.Backlog)
		}
		return nil
	})
	if s := f.Stats(); s.Devices != 3 || s.Connected != 3 || s.Committed == 0 {
		t.Fatalf("stats %+v", s)
	}
}
