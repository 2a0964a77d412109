package sensor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	mb "github.com/freshet-iot/freshet/firmware-sim/modbus"
	"github.com/freshet-iot/freshet/internal/localsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// sdm120 is the register map of an Eastron SDM120 as a config lists it.
const sdm120 = `
      - {metric: voltage, unit: V, kind: input, address: 0x0000, type: float32}
      - {metric: current, unit: A, kind: input, address: 0x0006, type: float32}
      - {metric: power, unit: W, kind: input, address: 0x000c, type: float32}
      - {metric: frequency, unit: Hz, kind: input, address: 0x0046, type: float32}
      - {metric: energy, unit: kWh, kind: input, address: 0x0048, type: float32}`

const soilProbe = `
      - {metric: moisture, unit: "%", address: 0, type: int16, scale: 0.1}
      - {metric: temperature, unit: C, address: 1, type: int16, scale: 0.1}
      - {metric: conductivity, unit: uS/cm, address: 2}`

func modbusConfig(t *testing.T, name, modbus, registers string) Config {
	t.Helper()
	// modbus is "key: value, key: value", with or without braces.
	modbus = strings.ReplaceAll(strings.Trim(modbus, "{}"), ", ", "\n  ")
	c, err := decode(t, fmt.Sprintf("name: %s\ntype: modbus\ninterval: 2s\nmodbus:\n  %s\n  registers:%s\n", name, modbus, registers))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// badConfig is a sensor entry and the text its error must hold (the key).
type badConfig struct{ yaml, key string }

func expectConfigErrors(t *testing.T, cases []badConfig) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			c, err := decode(t, tc.yaml)
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %v, want one naming %q", err, tc.key)
			}
		})
	}
}

func TestModbusConfigBad(t *testing.T) {
	const reg = "registers: [{metric: v, address: 0}]"
	expectConfigErrors(t, []badConfig{
		{"{name: m, type: modbus}", "modbus: required"},
		{"{name: m, type: modbus, modbus: {endpoint: 'h:502', " + reg + "}, command: [x]}", "command: not used"},
		{"{name: m, type: modbus, modbus: {" + reg + "}}", "modbus.endpoint: required"},
		{"{name: m, type: modbus, modbus: {transport: rtu, " + reg + "}}", "modbus.device: required"},
		{"{name: m, type: modbus, modbus: {transport: serial, device: /dev/x, " + reg + "}}", "modbus.transport"},
		{"{name: m, type: modbus, modbus: {endpoint: 'h:502', baud: 9600, " + reg + "}}", "modbus.baud: not used"},
		{"{name: m, type: modbus, modbus: {transport: rtu, device: /dev/x, parity: mark, " + reg + "}}", "modbus.parity"},
		{"{name: m, type: modbus, modbus: {transport: rtu, device: /dev/x, unit: 0, " + reg + "}}", "modbus.unit: 0 is outside 1..247"},
		{"{name: m, type: modbus, modbus: {endpoint: 'h:99999', " + reg + "}}", "modbus.endpoint"},
		{"{name: m, type: modbus, timeout: 1s, modbus: {endpoint: h, request_timeout: 2s, " + reg + "}}", "modbus.request_timeout: 2s exceeds"},
		{"{name: m, type: modbus, modbus: {endpoint: h}}", "modbus.registers: none"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v}]}}", "modbus.registers[0].address: required"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 0, kind: register}]}}", "modbus.registers[0].kind"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 0, type: float16}]}}", "modbus.registers[0].type"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 65535, type: float32}]}}", "modbus.registers[0].address: 65535"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 0, kind: coil, type: int16}]}}", "modbus.registers[0].type"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 0, kind: coil, scale: 2}]}}", "modbus.registers[0].scale: not used"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 0, word_order: low_first}]}}", "modbus.registers[0].word_order"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 0, scale: 0}]}}", "modbus.registers[0].scale"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 0, resolution: 0.3}]}}", "modbus.registers[0].resolution"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: v, address: 0}, {metric: v, address: 1}]}}", "modbus.registers[1].metric"},
		{"{name: m, type: modbus, modbus: {endpoint: h, registers: [{metric: 'a b', address: 0}]}}", "modbus.registers[0].metric"},
		{"{name: m, type: modbus, resolution: {v: 0.1}, modbus: {endpoint: h, " + reg + "}}", "resolution: set the resolution"},
		{"{name: m, type: modbus, plausible: {w: {max: 1}}, modbus: {endpoint: h, " + reg + "}}", "plausible.w"},
	})
	// A typo inside the block is refused by the strict decoder.
	if _, err := decode(t, "{name: m, type: modbus, modbus: {endpoint: h, reigsters: []}}"); err == nil {
		t.Fatal("typo reigsters accepted")
	}
}

func TestModbusConfigDefaults(t *testing.T) {
	c := modbusConfig(t, "probe", "endpoint: 10.0.0.5", soilProbe)
	m := c.Modbus
	if m.Transport != ModbusTCP || m.Endpoint != "10.0.0.5:502" || *m.Unit != 1 || time.Duration(m.RequestTimeout) != time.Second {
		t.Fatalf("defaults: %+v", m)
	}
	r := m.Registers[0]
	if r.Kind != KindHolding || r.WordOrder != "high_first" || r.ByteOrder != "big" || *r.Scale != 0.1 || *r.Resolution != 0.1 {
		t.Fatalf("register defaults: %+v", r)
	}
	if r := m.Registers[2]; r.Type != "uint16" || !r.isInt() {
		t.Fatalf("an unscaled uint16 is not sent as an integer: %+v", r)
	}
	c = modbusConfig(t, "line", "{transport: rtu, device: /dev/ttyUSB0}", soilProbe)
	if m := c.Modbus; m.Baud != 9600 || m.Parity != "none" || m.DataBits != 8 || m.StopBits != 1 {
		t.Fatalf("serial defaults: %+v", m)
	}
}

func TestModbusPlan(t *testing.T) {
	ip := func(i int) *int { return &i }
	regs := []ModbusRegister{
		{Metric: "a", Kind: KindInput, Address: ip(0), Type: "float32"},
		{Metric: "b", Kind: KindInput, Address: ip(2), Type: "float32"},   // adjacent: same request
		{Metric: "c", Kind: KindInput, Address: ip(10), Type: "uint16"},   // gap of 6
		{Metric: "d", Kind: KindHolding, Address: ip(10), Type: "uint16"}, // another kind
		{Metric: "e", Kind: KindInput, Address: ip(200), Type: "float64"}, // too far
		{Metric: "f", Kind: KindCoil, Address: ip(0)},
		{Metric: "g", Kind: KindCoil, Address: ip(1999)}, // 0..1999, 2000 bits: one request at most
		{Metric: "h", Kind: KindCoil, Address: ip(2000)}, // 2001 bits: the next
	}
	for i := range regs {
		if err := regs[i].validate(); err != nil {
			t.Fatal(err.err)
		}
	}
	got := func(maxGap int) string {
		var parts []string
		for _, rq := range modbusPlan(regs, maxGap) {
			parts = append(parts, fmt.Sprintf("%s %d+%d", rq.kind, rq.start, rq.count))
		}
		return strings.Join(parts, ", ")
	}
	if g, want := got(0), "coil 0+1, coil 1999+2, holding 10+1, input 0+4, input 10+1, input 200+4"; g != want {
		t.Errorf("max_gap 0: %s\nwant       %s", g, want)
	}
	if g, want := got(6), "coil 0+1, coil 1999+2, holding 10+1, input 0+11, input 200+4"; g != want {
		t.Errorf("max_gap 6: %s\nwant       %s", g, want)
	}
	if g, want := got(1998), "coil 0+2000, coil 2000+1, holding 10+1, input 0+11, input 200+4"; g != want {
		t.Errorf("max_gap 1998: %s\nwant          %s", g, want)
	}
	// 125 registers at most: 63 float32s at 0, 2, ... 124 take two requests.
	regs = nil
	for i := range 63 {
		regs = append(regs, ModbusRegister{Metric: fmt.Sprint("m", i), Kind: KindInput, Address: ip(2 * i), Type: "float32"})
		regs[i].validate()
	}
	plan := modbusPlan(regs, 0)
	if len(plan) != 2 || plan[0].count != 124 || plan[1].start != 124 || plan[1].count != 2 {
		t.Fatalf("plan %+v", plan)
	}
}

func TestDecodeModbusValue(t *testing.T) {
	f := func(x float64) *float64 { return &x }
	ip := func(i int) *int { return &i }
	for _, tc := range []struct {
		reg   ModbusRegister
		words []uint16
		want  Value
	}{
		{ModbusRegister{Type: "float32"}, []uint16{0x4366, 0x199a}, Value{Type: protocol.Float, Float: 230.1}},
		{ModbusRegister{Type: "float32", WordOrder: "low_first"}, []uint16{0x199a, 0x4366}, Value{Type: protocol.Float, Float: 230.1}},
		{ModbusRegister{Type: "float32", ByteOrder: "little"}, []uint16{0x6643, 0x9a19}, Value{Type: protocol.Float, Float: 230.1}},
		{ModbusRegister{Type: "int16", Scale: f(0.1)}, []uint16{0xff9c}, Value{Type: protocol.Float, Float: -10, Resolution: 0.1}},
		{ModbusRegister{Type: "int16"}, []uint16{0xffff}, Value{Type: protocol.Int, Int: -1}},
		{ModbusRegister{Type: "uint16"}, []uint16{0xffff}, Value{Type: protocol.Int, Int: 65535}},
		{ModbusRegister{Type: "int32"}, []uint16{0xffff, 0xfffe}, Value{Type: protocol.Int, Int: -2}},
		{ModbusRegister{Type: "uint32", WordOrder: "low_first"}, []uint16{0x0001, 0x0002}, Value{Type: protocol.Int, Int: 0x20001}},
		{ModbusRegister{Type: "uint64"}, []uint16{0, 0, 1, 0}, Value{Type: protocol.Int, Int: 65536}},
		{ModbusRegister{Type: "int64"}, []uint16{0xffff, 0xffff, 0xffff, 0xfff6}, Value{Type: protocol.Int, Int: -10}},
		{ModbusRegister{Type: "float64"}, []uint16{0x4037, 0x0000, 0x0000, 0x0000}, Value{Type: protocol.Float, Float: 23}},
		{ModbusRegister{Type: "uint16", Scale: f(2), Offset: -40}, []uint16{30}, Value{Type: protocol.Float, Float: 20}},
	} {
		r := tc.reg
		r.Metric, r.Address = "m", ip(0)
		if err := r.validate(); err != nil {
			t.Fatal(err.err)
		}
		got, err := decodeModbusValue(&r, tc.words)
		tc.want.Metric = "m"
		if err != nil || got != tc.want {
			t.Errorf("%+v % x: %+v, %v; want %+v", tc.reg, tc.words, got, err, tc.want)
		}
	}
	r := ModbusRegister{Metric: "m", Address: ip(0), Type: "uint64"}
	r.validate()
	if _, err := decodeModbusValue(&r, []uint16{0xffff, 0, 0, 0}); !errors.Is(err, ErrParse) {
		t.Errorf("uint64 beyond int64 as an integer: %v", err)
	}
}

// FuzzDecodeModbusValue: any register contents decode, under any type and
// order, without a panic, to a value of the register's type.
func FuzzDecodeModbusValue(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint16(0x4366), uint16(0x1999), uint16(0), uint16(0))
	f.Add(uint8(7), uint8(3), uint16(0xffff), uint16(0xffff), uint16(0xffff), uint16(0xffff))
	types := []string{"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"}
	f.Fuzz(func(t *testing.T, typ, order uint8, a, b, c, d uint16) {
		addr := 0
		r := ModbusRegister{Metric: "m", Address: &addr, Type: types[int(typ)%len(types)]}
		if order&1 != 0 && r.words() > 1 {
			r.WordOrder = "low_first"
		}
		if order&2 != 0 {
			r.ByteOrder = "little"
		}
		if order&4 != 0 {
			s := 0.1
			r.Scale = &s
		}
		if err := r.validate(); err != nil {
			t.Fatal(err.err)
		}
		v, err := decodeModbusValue(&r, []uint16{a, b, c, d})
		if err != nil {
			// Only a uint64 beyond int64 sent as an integer, or a value too
			// large for its resolution, is refused.
			if !(errors.Is(err, ErrParse) && r.Type == "uint64") && !errors.Is(err, ErrImplausible) {
				t.Fatalf("%s: %v", r.Type, err)
			}
			return
		}
		if v.Type != protocol.Int && v.Type != protocol.Float || v.Type == protocol.Int && !r.isInt() {
			t.Fatalf("%s decoded to %+v", r.Type, v)
		}
	})
}

func serveTCP(t *testing.T, units map[byte]*mb.Slave) *mb.TCPServer {
	t.Helper()
	srv, err := mb.ListenTCP("127.0.0.1:0", units)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	return srv
}

func openSrc(t *testing.T, c Config, env Env) Source {
	t.Helper()
	src, err := Open(c, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func readSrc(t *testing.T, src Source) ([]Value, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return src.Read(ctx)
}

func valueMap(vals []Value) map[string]float64 {
	m := map[string]float64{}
	for _, v := range vals {
		if v.Type == protocol.Int {
			m[v.Metric] = float64(v.Int)
		} else {
			m[v.Metric] = v.Float
		}
	}
	return m
}

// TestModbusTCPMeter reads an emulated SDM120 over Modbus TCP: the values,
// the requests it takes, an exception named and counted by its code, and a
// server restart survived by reconnecting.
func TestModbusTCPMeter(t *testing.T) {
	meter := mb.NewMeter()
	t0 := time.Unix(1_800_000_000, 0)
	meter.Set(231.4, 4.2, 0.9, 49.98, t0)
	srv := serveTCP(t, map[byte]*mb.Slave{1: meter.Slave})
	pool := &ModbusPool{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	c := modbusConfig(t, "meter", "endpoint: "+srv.Addr, sdm120)
	src, err := Open(c, Env{Modbus: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	before := meter.Reads()
	vals, err := readSrc(t, src)
	if err != nil {
		t.Fatal(err)
	}
	got := valueMap(vals)
	want := map[string]float64{"voltage": 231.4, "current": 4.2, "power": float64(float32(231.4 * 4.2 * 0.9)), "frequency": 49.98, "energy": 1234.5}
	for k, w := range want {
		if math.Abs(got[k]-w) > 1e-3 {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	if got["voltage"] != 231.4 {
		t.Errorf("voltage %v: the float32's shortest decimal is 231.4", got["voltage"])
	}
	// 0x00, 0x06, 0x0c are not adjacent, nor are 0x46 and 0x48... 0x46+2 = 0x48 is.
	if n := meter.Reads() - before; n != 4 {
		t.Errorf("%d requests, want 4 (voltage, current, power, frequency+energy)", n)
	}
	// The energy only grows.
	meter.Set(231.4, 4.2, 0.9, 49.98, t0.Add(time.Hour))
	vals, _ = readSrc(t, src)
	if e := valueMap(vals)["energy"]; e <= 1234.5 {
		t.Errorf("energy %v after an hour at 875 W", e)
	}

	meter.SetFault(mb.Fault{Exception: mb.SlaveDeviceBusy})
	_, err = readSrc(t, src)
	if Reason(err) != "modbus_slave_device_busy" || !strings.Contains(err.Error(), "slave_device_busy") {
		t.Fatalf("busy slave: %v (reason %s)", err, Reason(err))
	}
	meter.SetFault(mb.Fault{})

	srv.Stop()
	if _, err := readSrc(t, src); err == nil || Reason(err) != ReasonIO {
		t.Fatalf("read from a stopped server: %v (reason %s)", err, Reason(err))
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := localsvc.Poll(30*time.Second, func() error { _, err := readSrc(t, src); return err }); err != nil {
		t.Fatalf("no recovery after the server restarted: %v", err)
	}
}

// TestModbusTCPGateway: two slaves behind one TCP gateway share its
// connection; one falling silent fails only its own sensor.
func TestModbusTCPGateway(t *testing.T) {
	meter, probe := mb.NewMeter(), mb.NewSoilProbe()
	probe.Set(31.7, -2.5, 410)
	srv := serveTCP(t, map[byte]*mb.Slave{1: meter.Slave, 2: probe.Slave})
	pool := NewModbusPool()
	m := openSrc(t, modbusConfig(t, "meter", "{endpoint: '"+srv.Addr+"', unit: 1}", sdm120), Env{Modbus: pool})
	p := openSrc(t, modbusConfig(t, "soil", "{endpoint: '"+srv.Addr+"', unit: 2}", soilProbe), Env{Modbus: pool})
	if len(pool.buses) != 1 {
		t.Fatalf("%d connections for one gateway", len(pool.buses))
	}
	vals, err := readSrc(t, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := valueMap(vals); got["moisture"] != 31.7 || got["temperature"] != -2.5 || got["conductivity"] != 410 {
		t.Fatalf("soil probe read %v", got)
	}
	meter.SetFault(mb.Fault{Silent: true})
	if _, err := readSrc(t, m); Reason(err) != "modbus_gateway_target_failed_to_respond" {
		t.Fatalf("silent meter behind the gateway: %v", err)
	}
	if _, err := readSrc(t, p); err != nil {
		t.Fatalf("the probe failed with the meter: %v", err)
	}
}

// TestModbusTCPHang: a gateway that stops answering fails the read at the
// request timeout; a second sensor waiting for the same connection gives up
// at its own read's deadline instead of queueing behind it; when the
// gateway answers again, a fresh connection reads.
func TestModbusTCPHang(t *testing.T) {
	meter, probe := mb.NewMeter(), mb.NewSoilProbe()
	srv := serveTCP(t, map[byte]*mb.Slave{1: meter.Slave, 2: probe.Slave})
	pool := NewModbusPool()
	m := openSrc(t, modbusConfig(t, "meter", "endpoint: "+srv.Addr+", unit: 1, request_timeout: 1s", sdm120), Env{Modbus: pool})
	p := openSrc(t, modbusConfig(t, "soil", "endpoint: "+srv.Addr+", unit: 2, request_timeout: 1s", soilProbe), Env{Modbus: pool})
	if _, err := readSrc(t, m); err != nil {
		t.Fatal(err)
	}
	srv.SetHang(true)
	meterErr := make(chan error, 1)
	go func() { _, err := readSrc(t, m); meterErr <- err }()
	// The meter's request holds the connection for up to 1 s; the probe's
	// read, with 50 ms to go, waits for it no longer than that.
	pool.mu.Lock()
	bus := pool.buses["tcp://"+srv.Addr]
	pool.mu.Unlock()
	if err := localsvc.Poll(30*time.Second, func() error {
		if len(bus.turn) == 0 {
			return errors.New("the connection is free")
		}
		return nil
	}); err != nil {
		t.Fatalf("the meter's request never took the connection: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := p.Read(ctx)
	cancel()
	if Reason(err) != ReasonTimeout || !strings.Contains(err.Error(), "busy with another sensor's request") {
		t.Fatalf("waiting behind a hung request: %v", err)
	}
	if err := <-meterErr; Reason(err) != ReasonTimeout {
		t.Fatalf("hung gateway: %v (reason %s)", err, Reason(err))
	}
	srv.SetHang(false)
	if _, err := readSrc(t, p); err != nil {
		t.Fatalf("after the gateway answers again: %v", err)
	}
}

// TestModbusRTUSharedLine: a meter and a soil probe on one RS-485 line (a
// pseudo-terminal, the emulator framing RTU itself), read by two sensors
// concurrently: requests never overlap, so every read succeeds. Then the
// meter falls silent (only its sensor times out) and the line turns noisy
// (bad CRC, counted as bad_frame).
func TestModbusRTUSharedLine(t *testing.T) {
	meter, probe := mb.NewMeter(), mb.NewSoilProbe()
	port, err := mb.ListenRTUPTY(map[byte]*mb.Slave{1: meter.Slave, 2: probe.Slave})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	pool := NewModbusPool()
	line := "transport: rtu, device: " + port.Path + ", baud: 19200, request_timeout: 300ms"
	m := openSrc(t, modbusConfig(t, "meter", "{"+line+", unit: 1}", sdm120), Env{Modbus: pool})
	p := openSrc(t, modbusConfig(t, "soil", "{"+line+", unit: 2}", soilProbe), Env{Modbus: pool})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for _, src := range []Source{m, p} {
		wg.Go(func() {
			for range 10 {
				if _, err := readSrc(t, src); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent read on a shared line: %v", err)
	}
	if bad := port.Server.BadFrames(); bad != 0 {
		t.Errorf("%d bad frames on the line: requests collided", bad)
	}

	meter.SetFault(mb.Fault{Silent: true})
	if _, err := readSrc(t, m); Reason(err) != ReasonTimeout {
		t.Fatalf("silent meter: %v (reason %s)", err, Reason(err))
	}
	if _, err := readSrc(t, p); err != nil {
		t.Fatalf("probe after the meter fell silent: %v", err)
	}
	meter.SetFault(mb.Fault{Garble: true})
	if _, err := readSrc(t, m); Reason(err) != ReasonBadFrame {
		t.Fatalf("garbled response: %v (reason %s)", err, Reason(err))
	}
	meter.SetFault(mb.Fault{})
	if _, err := readSrc(t, m); err != nil {
		t.Fatalf("meter after the line recovered: %v", err)
	}
	// A second sensor on the port with other line settings is refused by name.
	_, err = Open(modbusConfig(t, "other", "{transport: rtu, device: "+port.Path+", baud: 9600, unit: 3, request_timeout: 300ms}", soilProbe), Env{Modbus: pool})
	if err == nil || !strings.Contains(err.Error(), "modbus.baud") {
		t.Fatalf("conflicting baud on a shared port: %v", err)
	}
}

// TestModbusRTUOverTCP reads the meter through a serial server.
func TestModbusRTUOverTCP(t *testing.T) {
	meter := mb.NewMeter()
	srv, err := mb.ListenRTUOverTCP("127.0.0.1:0", map[byte]*mb.Slave{7: meter.Slave})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	src := openSrc(t, modbusConfig(t, "meter", "{transport: rtu_over_tcp, endpoint: '"+srv.Addr+"', unit: 7, max_gap: 80}", sdm120), Env{})
	before := meter.Reads()
	vals, err := readSrc(t, src)
	if err != nil {
		t.Fatal(err)
	}
	if got := valueMap(vals); got["voltage"] != 230 || got["energy"] != 1234.5 {
		t.Fatalf("read %v", got)
	}
	if n := meter.Reads() - before; n != 1 {
		t.Fatalf("%d requests with max_gap 80, want 1 (0x00..0x49)", n)
	}
}

// TestModbusRunnerCounts: a Runner counts exceptions under their names.
func TestModbusRunnerCounts(t *testing.T) {
	probe := mb.NewSoilProbe()
	srv := serveTCP(t, map[byte]*mb.Slave{1: probe.Slave})
	// Register 3 does not exist: illegal data address on every read.
	c := modbusConfig(t, "soil", "endpoint: "+srv.Addr+", request_timeout: 100ms", soilProbe+"\n      - {metric: ph, address: 3, scale: 0.1}")
	c.Interval = Duration(100 * time.Millisecond)
	c.Timeout = Duration(100 * time.Millisecond)
	src, err := Open(c, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	set := metrics.NewSet()
	r, err := NewRunner([]Sensor{{Config: c, Source: src}}, func([]protocol.Reading) {}, RunnerOptions{MinBackoff: 10 * time.Millisecond, Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	localsvc.Poll(30*time.Second, func() error { // the status is checked below, after the runner stops
		if r.Status()[0].Errors < 2 {
			return errors.New("fewer than 2 errors")
		}
		return nil
	})
	cancel()
	<-done
	st := r.Status()[0]
	if st.Errors < 2 || st.Errors != st.Reads || !strings.Contains(st.LastError, "illegal_data_address") {
		t.Fatalf("status %+v", st)
	}
	_, errs := errorCounts(t, set)
	if got := errs["soil/modbus_illegal_data_address"]; got != float64(st.Errors) {
		t.Fatalf("errors_total{reason=modbus_illegal_data_address} %v, want %d (all: %v)", got, st.Errors, errs)
	}
	if _, ok := errs["soil/bad_frame"]; !ok {
		t.Fatal("bad_frame is not counted from zero")
	}
}

// TestModbusGarbage: a device answering Modbus TCP requests with garbage
// (a torn header, a length past the frame limit, a zero length, another
// protocol id, a short register payload, an exception without its code,
// another function) fails the read with a named reason and never panics;
// the next request starts on a fresh connection.
func TestModbusGarbage(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mbap := func(txn []byte, pdu ...byte) []byte {
		return append([]byte{txn[0], txn[1], 0, 0, 0, byte(len(pdu) + 1), 1}, pdu...)
	}
	answers := []func(txn []byte) []byte{
		func(txn []byte) []byte { return []byte{txn[0], txn[1], 0} }, // torn header, then the connection closes
		func(txn []byte) []byte { return []byte{txn[0], txn[1], 0, 0, 0xff, 0xff, 1} },
		func(txn []byte) []byte { return []byte{txn[0], txn[1], 0, 0, 0, 0, 1} },
		func(txn []byte) []byte { return []byte{txn[0], txn[1], 0, 7, 0, 5, 1, 3, 2, 0, 1} },
		func(txn []byte) []byte { return mbap(txn, 3, 2, 0) },    // 2 bytes promised, 1 sent
		func(txn []byte) []byte { return mbap(txn, 0x83) },       // exception without its code
		func(txn []byte) []byte { return mbap(txn, 4, 2, 0, 1) }, // answers another function
		func(txn []byte) []byte { return mbap(txn, 3, 4, 0, 1, 0, 2) },
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer l.Close() // first: it ends the accept loop
	wg.Go(func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			req := make([]byte, 12)
			if _, err := io.ReadFull(c, req); err == nil && i < len(answers) {
				c.Write(answers[i](req[:2]))
			}
			c.Close()
		}
	})
	src := openSrc(t, modbusConfig(t, "junk", "endpoint: "+l.Addr().String()+", request_timeout: 200ms",
		"\n      - {metric: v, address: 0}"), Env{Modbus: &ModbusPool{MinBackoff: time.Millisecond}})
	for i := range answers {
		_, err := readSrc(t, src)
		if err == nil {
			t.Fatalf("garbage answer %d read as a value", i)
		}
		if r := Reason(err); r != ReasonBadFrame && r != ReasonIO && r != ReasonTimeout {
			t.Errorf("garbage answer %d: reason %s (%v)", i, r, err)
		}
		t.Logf("answer %d: %s: %v", i, Reason(err), err)
	}
}
