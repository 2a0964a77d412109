// Package fleet runs many simulated gateways in one process. Each device is
// a real agent (its own bbolt outbox and MQTT connection) reading emulated
// chips through the real periph drivers: a BME280 and an MCP9808 on a
// virtual I2C bus, and a sysfs thermal zone. Signals look like the field
// (daily cycles, noise, drift), deterministic from a seed; in flaky mode
// links are cut for a while now and then, and chips get stuck or spike.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/firmware-sim/chip"
	"github.com/freshet-iot/freshet/firmware-sim/chip/bme280"
	"github.com/freshet-iot/freshet/firmware-sim/chip/mcp9808"
	"github.com/freshet-iot/freshet/firmware-sim/chip/sysfs"
	"github.com/freshet-iot/freshet/firmware-sim/faultnet"
	"github.com/freshet-iot/freshet/internal/cfgfile"
)

// Options configure a fleet.
type Options struct {
	Devices int    // default 20
	Seed    uint64 // the same seed gives the same signals and faults
	Broker  string // MQTT URL
	// HubKeys are the hub's ack public keys, as the agents' mqtt.hub_keys;
	// required unless InsecureUnsignedAcks.
	HubKeys              []string
	InsecureUnsignedAcks bool
	// DataDir holds each device's outbox and sysfs tree; required.
	DataDir string
	// Interval between BME280 reads. Default 1s.
	Interval time.Duration
	// Flaky cuts or stalls links for 5..30 s about every two minutes per
	// device, and now and then makes a chip stuck (a minute) or spike.
	Flaky  bool
	Prefix string // device id prefix, default "sim-"
	Logger *slog.Logger
	// GroundTruth writes every reading each device commits to
	// DataDir/<device>/commits.log (see agent.Config.CommitLog).
	GroundTruth bool
	// Clock, if set, gives a device its clock (skew, RTC-less boots).
	Clock func(device string) func() time.Time
	// Tune, if set, adjusts each device's agent config (disk bound, timeouts).
	Tune func(*agent.Config)
	// FieldGateways makes the first this many devices field gateways: each
	// also reads an SDM120 energy meter over Modbus TCP, a soil probe over
	// Modbus RTU and a PLC over OPC UA, emulated on loopback (see Field).
	FieldGateways int
}

// Device is one simulated gateway.
type Device struct {
	Name  string
	Agent *agent.Agent
	Link  *faultnet.Dialer
	bme   *bme280.Chip
	mcp   *mcp9808.Chip
	zone  *sysfs.ThermalZone
	sig   signal
	down  time.Time // link down until
	stuck time.Time // chip stuck until
	hot   time.Time // BME280 temperature overridden until
	hotC  float64
	mute  time.Time // MCP9808 not answering until
	// Field is the device's field devices; nil unless it is a field gateway.
	Field *Field
}

// Fleet is a set of running devices.
type Fleet struct {
	o       Options
	Devices []*Device
	rnd     *rand.Rand
	start   time.Time
	mu      sync.Mutex // guards the devices' down and stuck times
}

// signal is one device's climate.
type signal struct {
	temp, hum, press float64 // bases: C, %, hPa
	phase, drift     float64 // radians; C per day
	noise            float64
}

// New builds the devices (opening their outboxes); Run starts them.
func New(o Options) (*Fleet, error) {
	if o.Devices <= 0 {
		o.Devices = 20
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Prefix == "" {
		o.Prefix = "sim-"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.DataDir == "" || o.Broker == "" {
		return nil, errors.New("fleet: DataDir and Broker are required")
	}
	f := &Fleet{o: o, rnd: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), start: time.Now()}
	for i := range o.Devices {
		d, err := f.newDevice(fmt.Sprintf("%s%04d", o.Prefix, i+1), i < o.FieldGateways)
		if err != nil {
			f.close()
			return nil, err
		}
		f.Devices = append(f.Devices, d)
	}
	return f, nil
}

func (f *Fleet) newDevice(name string, field bool) (*Device, error) {
	dir := filepath.Join(f.o.DataDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := f.rnd
	d := &Device{Name: name, Link: &faultnet.Dialer{}, sig: signal{
		temp: 12 + 14*r.Float64(), hum: 30 + 40*r.Float64(), press: 995 + 30*r.Float64(),
		phase: 2 * math.Pi * r.Float64(), drift: r.NormFloat64() * 0.2, noise: 0.02 + 0.05*r.Float64(),
	}}
	var err error
	if d.bme, err = bme280.New(nil); err != nil {
		return nil, err
	}
	d.mcp = mcp9808.New()
	if d.zone, err = sysfs.NewThermalZone(dir, 0, "cpu-thermal", 45); err != nil {
		return nil, err
	}
	bus := chip.NewBus("sim")
	bus.Attach(0x76, d.bme)
	bus.Attach(0x18, d.mcp)
	d.update(time.Now(), r)
	dur := func(t time.Duration) cfgfile.Duration { return cfgfile.Duration(t) }
	cfg := &agent.Config{
		Device: name, DataDir: dir, SysRoot: dir, Labels: map[string]string{"fleet": "sim"},
		MQTT: agent.MQTTConfig{Broker: f.o.Broker, BackoffMin: dur(200 * time.Millisecond), BackoffMax: dur(5 * time.Second), AckTimeout: dur(10 * time.Second),
			HubKeys: f.o.HubKeys, InsecureUnsignedAcks: f.o.InsecureUnsignedAcks},
		Outbox: agent.OutboxConfig{MaxBatchAge: dur(10 * time.Second)},
		HTTP:   agent.HTTPConfig{Listen: "off"},
		Sensors: []sensor.Config{
			{Name: "bme280", Type: sensor.TypeBME280, Bus: "sim", Address: 0x76, Interval: dur(f.o.Interval)},
			{Name: "mcp9808", Type: sensor.TypeMCP9808, Bus: "sim", Address: 0x18, Interval: dur(5 * time.Second)},
			{Name: "cpu", Type: sensor.TypeCPUTemp, Interval: dur(10 * time.Second)},
		},
	}
	if field {
		fd, sensors, err := startField(r, f.o.Interval)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		d.Field = fd
		cfg.Sensors = append(cfg.Sensors, sensors...)
	}
	if f.o.GroundTruth {
		cfg.CommitLog = filepath.Join(dir, "commits.log")
	}
	if f.o.Tune != nil {
		f.o.Tune(cfg)
	}
	if err := cfg.Validate(); err != nil {
		d.closeField()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var now func() time.Time
	if f.o.Clock != nil {
		now = f.o.Clock(name)
	}
	env := &sensor.Env{OpenI2C: func(string) (i2c.BusCloser, error) { return nopClose{bus}, nil }, SysRoot: dir}
	d.Agent, err = agent.New(cfg, agent.Options{Env: env, Version: "sim", Logger: f.o.Logger.With("device", name), Now: now,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.Link.DialContext(ctx, network, addr)
		}})
	if err != nil {
		d.closeField()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

func (d *Device) closeField() {
	if d.Field != nil {
		d.Field.Close()
	}
}

// nopClose shares one virtual bus between a device's sensors.
type nopClose struct{ *chip.Bus }

func (nopClose) Close() error { return nil }

// Stick makes the device's BME280 stop converting for dur: each of its
// metrics repeats its last value.
func (f *Fleet) Stick(d *Device, dur time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d.bme.SetFault(chip.Stuck)
	d.stuck = time.Now().Add(dur)
}

// Heat makes the device's BME280 read temperature c for dur (a heat gun,
// a probe in the sun): real readings the agent accepts, outside whatever
// range the hub expects.
func (f *Fleet) Heat(d *Device, c float64, dur time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d.hot, d.hotC = time.Now().Add(dur), c
	d.update(time.Now(), f.rnd)
}

// Silence makes the device's MCP9808 stop answering (NACK) for dur.
func (f *Fleet) Silence(d *Device, dur time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d.mcp.SetFault(chip.NACK)
	d.mute = time.Now().Add(dur)
}

// update sets the chips to the device's climate at t.
func (d *Device) update(t time.Time, r *rand.Rand) {
	s := d.sig
	day := float64(t.Unix()%86400) / 86400
	days := float64(t.Unix()) / 86400
	temp := s.temp + 6*math.Sin(2*math.Pi*day+s.phase) + s.drift*math.Mod(days, 30) + s.noise*r.NormFloat64()
	hum := min(100, max(0, s.hum-1.5*(temp-s.temp)+0.3*r.NormFloat64()))
	press := s.press + 3*math.Sin(2*math.Pi*days/3+s.phase) + 0.05*r.NormFloat64()
	if t.Before(d.hot) {
		d.bme.Set(d.hotC, hum, press*100)
	} else {
		d.bme.Set(temp, hum, press*100)
	}
	d.mcp.Set(temp + 0.2 + 0.01*r.NormFloat64())
	d.zone.SetTemperature(45 + 5*math.Sin(2*math.Pi*day) + r.NormFloat64())
}

// Run runs every device until ctx ends.
func (f *Fleet) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, d := range f.Devices {
		wg.Add(1)
		go func() { defer wg.Done(); d.Agent.Run(ctx) }()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			for _, d := range f.Devices {
				d.closeField()
			}
			return nil
		case now := <-t.C:
			f.mu.Lock()
			for _, d := range f.Devices {
				if d.Field != nil {
					d.Field.update(now, f.rnd)
				}
				if now.After(d.stuck) {
					d.update(now, f.rnd)
					if !d.stuck.IsZero() {
						d.bme.SetFault(chip.Healthy)
						d.stuck = time.Time{}
					}
				}
				if !d.mute.IsZero() && now.After(d.mute) {
					d.mcp.SetFault(chip.Healthy)
					d.mute = time.Time{}
				}
				if !f.o.Flaky {
					continue
				}
				switch {
				case !d.down.IsZero() && now.After(d.down):
					d.Link.SetDown(false)
					d.Link.SetStalled(false)
					d.down = time.Time{}
				case d.down.IsZero() && f.rnd.IntN(120) == 0:
					if f.rnd.IntN(2) == 0 {
						d.Link.SetDown(true) // the link drops
					} else {
						d.Link.SetStalled(true) // the link dies silently: only keepalives notice
					}
					d.down = now.Add(time.Duration(5+f.rnd.IntN(25)) * time.Second)
				}
				switch f.rnd.IntN(3000) {
				case 0:
					d.bme.SetFault(chip.Stuck)
					d.stuck = now.Add(time.Minute)
				case 1:
					d.bme.SpikeNext(1)
				}
			}
			f.mu.Unlock()
		}
	}
}

// StopSensors stops every device's sensors; the agents keep forwarding
// their backlog.
func (f *Fleet) StopSensors() {
	for _, d := range f.Devices {
		d.Agent.StopSensors()
	}
}

func (f *Fleet) close() {
	for _, d := range f.Devices {
		if d.Agent != nil {
			d.Agent.Close()
		}
		d.closeField()
	}
}

// Stats sums the fleet's counters.
type Stats struct {
	Devices, Connected                 int
	Committed, Settled, Dropped        uint64
	BacklogReadings, LinksDown, Reconn uint64
}

// Stats returns the fleet's counters now.
func (f *Fleet) Stats() Stats {
	s := Stats{Devices: len(f.Devices)}
	for _, d := range f.Devices {
		ob, fw := d.Agent.Outbox(), d.Agent.Forwarder()
		if fw.Connected {
			s.Connected++
		}
		s.Committed += ob.Committed
		s.Settled += ob.Settled
		s.Dropped += ob.Dropped
		s.BacklogReadings += ob.Backlog.Readings
		s.Reconn += fw.Connects
		f.mu.Lock()
		if !d.down.IsZero() {
			s.LinksDown++
		}
		f.mu.Unlock()
	}
	return s
}
