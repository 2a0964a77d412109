package e2e

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/firmware-sim/modbus"
	"github.com/freshet-iot/freshet/internal/cfgfile"
)

type scenario struct {
	name    string
	brokers []string
	fleet   fleet.Options
	setup   func() // runs just before the world is built
	run     func(w *world)
}

// fastClock runs 60 times faster than the wall clock from its start, so
// minute windows close within seconds; shift moves it by event time.
type fastClock struct {
	start time.Time
	base  time.Time
	speed time.Duration
	shift atomic.Int64
}

func newFastClock(offset time.Duration) *fastClock { return newClock(offset, 60) }

func newClock(offset time.Duration, speed int) *fastClock {
	now := time.Now()
	return &fastClock{start: now, base: now.Add(offset), speed: time.Duration(speed)}
}

func (c *fastClock) Now() time.Time {
	return c.base.Add(c.speed*time.Since(c.start) + time.Duration(c.shift.Load()))
}

var jumpClock, skewClock, slowClock, rtcClock, lateClock *fastClock

var scenarios = []scenario{
	// One device of each is a field gateway: an energy meter (Modbus TCP),
	// a soil probe (Modbus RTU) and a PLC (OPC UA).
	{name: "baseline", brokers: []string{"mochi", "mosquitto"}, fleet: fleet.Options{FieldGateways: 1},
		run: func(w *world) { run(4 * time.Second) }},
	{name: "link-cut", brokers: []string{"mochi"}, fleet: fleet.Options{FieldGateways: 1}, run: func(w *world) {
		run(2 * time.Second)
		for _, d := range w.fleet.Devices {
			d.Link.SetDown(true)
		}
		// While cut off, the field devices misbehave too: the meter
		// answers with exceptions, the soil probe falls silent, the PLC
		// restarts. Their failed reads are counted; nothing committed is lost.
		field := w.fleet.Devices[0].Field
		field.Meter.SetFault(modbus.Fault{Exception: modbus.SlaveDeviceBusy})
		field.Probe.SetFault(modbus.Fault{Silent: true})
		field.PLC.Stop()
		run(3 * time.Second)
		field.Meter.SetFault(modbus.Fault{})
		field.Probe.SetFault(modbus.Fault{})
		if err := field.PLC.Start(); err != nil {
			w.t.Fatal(err)
		}
		run(7 * time.Second) // devices keep reading and committing while cut off
		for _, d := range w.fleet.Devices {
			d.Link.SetDown(false)
		}
		run(2 * time.Second)
		faulty := map[string]bool{"meter": true, "soil": true, "line1": sensor.OPCUASupported}
		for _, s := range w.fleet.Devices[0].Agent.Status("online").Sensors {
			if faulty[s.Name] && s.Errors == 0 {
				w.t.Errorf("sensor %s counted no error through its device's fault", s.Name)
			}
		}
	}},
	{name: "broker-restart", brokers: []string{"mochi", "mosquitto"}, run: func(w *world) {
		run(2 * time.Second)
		w.broker.Kill() // persistence off: sessions and queued batches are gone
		run(3 * time.Second)
		if err := w.broker.Start(); err != nil {
			w.t.Fatal(err)
		}
		run(3 * time.Second)
	}},
	{name: "hub-kill9", brokers: []string{"mosquitto"}, run: func(w *world) {
		r := rand.New(rand.NewPCG(5, 5))
		for range 4 {
			run(time.Duration(500+r.IntN(1500)) * time.Millisecond)
			w.killHub()
			w.startHub()
		}
		run(2 * time.Second)
	}},
	{name: "influx-restart", brokers: []string{"mochi"}, run: func(w *world) {
		run(2 * time.Second)
		w.ix.Kill()
		run(4 * time.Second)
		if err := w.ix.Start(); err != nil {
			w.t.Fatal(err)
		}
		run(2 * time.Second)
	}},
	{name: "disk-full-drop-oldest", brokers: []string{"mochi"},
		fleet: fleet.Options{Devices: 2, Tune: func(c *agent.Config) {
			c.Outbox.MaxMessageBytes = 512
			c.Outbox.MaxBytes = 16 * 512
			c.Outbox.MaxBatchAge = cfgfile.Duration(100 * time.Millisecond)
			c.Outbox.CommitInterval = cfgfile.Duration(100 * time.Millisecond) // about ten small batches a second
		}},
		run: func(w *world) {
			run(time.Second)
			for _, d := range w.fleet.Devices {
				d.Link.SetDown(true)
			}
			run(12 * time.Second) // the backlog outgrows 8 KiB: the oldest unsent batches go
			for _, d := range w.fleet.Devices {
				d.Link.SetDown(false)
			}
			run(2 * time.Second)
			for _, d := range w.fleet.Devices {
				if d.Agent.Outbox().DroppedEpoch == 0 {
					w.t.Errorf("%s dropped nothing: the scenario did not fill the disk", d.Name)
				}
			}
		}},
	{name: "clock-skew-and-jump", brokers: []string{"mochi"},
		setup: func() {
			jumpClock, skewClock, slowClock = newFastClock(-time.Hour), newFastClock(time.Hour), newFastClock(-2*time.Hour)
		},
		fleet: fleet.Options{Devices: 3, Clock: func(device string) func() time.Time {
			switch device {
			case "sim-0001":
				return jumpClock.Now // steps back 10 minutes mid-run: corrections
			case "sim-0002":
				return skewClock.Now // an hour ahead of the hub
			}
			return slowClock.Now // two hours behind
		}},
		run: func(w *world) {
			run(6 * time.Second) // six event-minutes
			jumpClock.shift.Add(int64(-10 * time.Minute))
			run(6 * time.Second)
		}},
	{name: "rtc-less-boot-1970", brokers: []string{"mochi"},
		setup: func() {
			rtcClock = newFastClock(-time.Since(time.Unix(0, 0))) // a gateway without a real-time clock
		},
		fleet: fleet.Options{Devices: 2, Clock: func(device string) func() time.Time {
			if device == "sim-0001" {
				return rtcClock.Now
			}
			return time.Now
		}},
		run: func(w *world) {
			run(4 * time.Second)                                   // sim-0001 stamps its readings in January 1970
			rtcClock.shift.Add(int64(time.Since(time.Unix(0, 0)))) // NTP answers: the clock jumps to now
			run(4 * time.Second)
			if st := w.fleet.Devices[0].Agent.Status("online"); !st.ClockSynced {
				w.t.Error("after the jump the agent still reports its clock unsynced")
			}
		}},
	{name: "agents-kill9-and-reboot", brokers: []string{"mochi", "mosquitto"},
		fleet: fleet.Options{Devices: 1},
		run: func(w *world) {
			bin := buildAgent(w.t)
			for i := range 3 {
				w.procs = append(w.procs, newAgentProc(w.t, bin, fmt.Sprintf("proc-%d", i), w.broker.URL(), w.hubKeys()))
			}
			r := rand.New(rand.NewPCG(9, 9))
			for i := range 6 {
				run(time.Duration(300+r.IntN(1200)) * time.Millisecond)
				p := w.procs[r.IntN(len(w.procs))]
				if i%2 == 0 {
					p.kill() // kill -9: only what was never committed may be lost
					p.start()
				} else {
					p.reboot()
				}
			}
			run(2 * time.Second)
			for _, p := range w.procs {
				p.quiesce()
			}
		}},
	{name: "hub-embedded-broker", brokers: []string{"hub-embedded"}, run: func(w *world) {
		run(2 * time.Second)
		w.killHub() // the broker, its sessions and queued batches die with it
		run(2 * time.Second)
		w.startHub()
		run(3 * time.Second)
	}},
	{name: "hours-late", brokers: []string{"mochi"},
		setup: func() { lateClock = newClock(-4*time.Hour, 600) }, // ten event-minutes per second
		fleet: fleet.Options{Devices: 2, Clock: func(device string) func() time.Time {
			if device == "sim-0001" {
				return lateClock.Now
			}
			return time.Now
		}},
		run: func(w *world) {
			run(2 * time.Second)
			w.fleet.Devices[0].Link.SetDown(true)
			run(12 * time.Second) // two event-hours read while cut off, delivered late
			w.fleet.Devices[0].Link.SetDown(false)
			run(3 * time.Second)
		}},
}
