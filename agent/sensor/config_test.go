package sensor

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// decode reads one sensor entry the way the agent's config loader does.
func decode(t *testing.T, src string) (Config, error) {
	t.Helper()
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	return c, err
}

func TestConfigGood(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(t *testing.T, c Config)
	}{
		{"bme280 defaults", `{name: room, type: bme280, bus: "1"}`, func(t *testing.T, c Config) {
			if c.Address != 0x76 || c.Interval != Duration(10*time.Second) || c.Timeout != Duration(5*time.Second) {
				t.Errorf("defaults: address 0x%x interval %v timeout %v", c.Address, c.Interval, c.Timeout)
			}
		}},
		{"bme280 full", `
name: room.kitchen:1
type: bme280
bus: /dev/i2c-1
address: 0x77
interval: 2s
timeout: 500ms
labels: {room: kitchen, floor: "1"}
resolution: {pressure: 0.1, humidity: 0}
plausible: {temperature: {min: -20, max: 60}, humidity: {max: 95}}
`, func(t *testing.T, c Config) {
			if c.Address != 0x77 || c.Timeout != Duration(500*time.Millisecond) || c.Labels["floor"] != "1" {
				t.Errorf("got %+v", c)
			}
			if lo, hi := c.bounds("humidity", "%"); lo != 0 || hi != 95 {
				t.Errorf("humidity bounds %g..%g, want the default min and the override max 0..95", lo, hi)
			}
		}},
		{"bmp280 bus as a number", "{name: p, type: bmp280, bus: 1}", func(t *testing.T, c Config) {
			if c.Bus != "1" {
				t.Errorf("bus %q", c.Bus)
			}
		}},
		{"mcp9808", "{name: m, type: mcp9808, bus: I2C1, address: 0x1a}", nil},
		{"mcp9808 default address", "{name: m, type: mcp9808, bus: '1'}", func(t *testing.T, c Config) {
			if c.Address != 0x18 {
				t.Errorf("address 0x%x", c.Address)
			}
		}},
		{"aht20", "{name: a, type: aht20, bus: '1', address: 0x38}", nil},
		{"ds18b20", "{name: probe, type: ds18b20, device: 28-00000a1b2c3d, interval: 30s}", nil},
		{"cpu_temp short interval", "{name: cpu, type: cpu_temp, zone: 1, interval: 1s}", func(t *testing.T, c Config) {
			if c.Timeout != Duration(time.Second) {
				t.Errorf("timeout %v, want the interval", c.Timeout)
			}
		}},
		{"exec", `{name: ups, type: exec, command: [/usr/local/bin/ups, -v], interval: 1m, timeout: 10s,
			resolution: {battery: 1}, plausible: {battery: {min: 0, max: 100}}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decode(t, tc.yaml)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			again := c
			if err := again.Validate(); err != nil {
				t.Fatalf("second Validate: %v", err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestConfigBad(t *testing.T) {
	for _, tc := range []struct {
		yaml, key, want string
	}{
		{"{type: bme280, bus: '1'}", "name", "empty"},
		{"{name: 'a b', type: bme280, bus: '1'}", "name", "not allowed"},
		{"{name: x}", "type", "required"},
		{"{name: x, type: bme281}", "type", `unknown type "bme281"`},
		{"{name: x, type: cpu_temp, interval: 10ms}", "interval", "outside"},
		{"{name: x, type: cpu_temp, interval: 48h}", "interval", "outside"},
		{"{name: x, type: cpu_temp, interval: 10s, timeout: 20s}", "timeout", "exceeds the interval"},
		{"{name: x, type: cpu_temp, timeout: -1s}", "timeout", "negative"},
		{"{name: bme, type: bme280}", "bus", "required for type bme280"},
		{"{name: x, type: bme280, bus: '1', address: 0x40}", "address", "0x40 is not an address of a bme280"},
		{"{name: x, type: aht20, bus: '1', address: 0x39}", "address", "not an address"},
		{"{name: x, type: mcp9808, bus: '1', address: 0x20}", "address", "not an address"},
		{"{name: x, type: mcp9808, bus: '1', device: 28-00000a1b2c3d}", "device", "not used by type mcp9808"},
		{"{name: x, type: ds18b20}", "device", "required for type ds18b20"},
		{"{name: x, type: ds18b20, device: 28-xyz}", "device", "1-Wire id"},
		{"{name: x, type: ds18b20, device: ../../etc/pa}", "device", "1-Wire id"},
		{"{name: x, type: ds18b20, device: 28-00000a1b2c3d, bus: '1'}", "bus", "not used by type ds18b20"},
		{"{name: x, type: cpu_temp, zone: -1}", "zone", "negative"},
		{"{name: x, type: cpu_temp, command: [/bin/true]}", "command", "not used"},
		{"{name: x, type: cpu_temp, address: 0x76}", "address", "not used"},
		{"{name: x, type: exec}", "command", "required for type exec"},
		{"{name: x, type: exec, command: ['']}", "command", "empty program"},
		{"{name: x, type: cpu_temp, labels: {1abc: v}}", "labels.1abc", "want [A-Za-z]"},
		{"{name: x, type: cpu_temp, labels: {device: v}}", "labels.device", "reserved"},
		{"{name: x, type: cpu_temp, labels: {room: ''}}", "labels.room", "empty"},
		{"{name: x, type: cpu_temp, labels: {a: 1, b: 1, c: 1, d: 1, e: 1, f: 1, g: 1, h: 1, i: 1, j: 1, k: 1, l: 1, m: 1, n: 1, o: 1, p: 1, q: 1}}", "labels", "17 labels"},
		{"{name: x, type: bme280, bus: '1', resolution: {pressure: 0.5}}", "resolution.pressure", "power of ten"},
		{"{name: x, type: bmp280, bus: '1', resolution: {humidity: 0.1}}", "resolution.humidity", `no metric "humidity"`},
		{"{name: x, type: exec, command: [/bin/true], resolution: {'a b': 1}}", "resolution.a b", "metric name"},
		{"{name: x, type: cpu_temp, plausible: {temperature: {}}}", "plausible.temperature", "want min, max"},
		{"{name: x, type: cpu_temp, plausible: {temperature: {min: 30, max: 20}}}", "plausible.temperature", "min 30 exceeds max 20"},
		{"{name: x, type: cpu_temp, plausible: {temperature: {min: 200}}}", "plausible.temperature", "min 200 exceeds max 125"},
		{"{name: x, type: cpu_temp, plausible: {voltage: {max: 5}}}", "plausible.voltage", "no metric"},
	} {
		t.Run(tc.key+"/"+tc.want, func(t *testing.T) {
			c, err := decode(t, tc.yaml)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			err = c.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate(%s) = %v, want a *ConfigError", tc.yaml, err)
			}
			if ce.Key != tc.key {
				t.Errorf("key %q, want %q (%v)", ce.Key, tc.key, err)
			}
			if prefix := `sensor "` + c.Name + `": ` + tc.key + ": "; !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// Mistakes the decoder catches, before Validate: they must name the key or the line.
func TestConfigDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"name: x\ntype: bme280\nadress: 0x76\n", "adress"},
		{"name: x\ntype: cpu_temp\ninterval: 10\n", `line 3: "10" is not a duration`},
		{"name: x\ntype: cpu_temp\ninterval: [1s]\n", "line 3: want a duration"},
		{"name: x\ntype: bme280\naddress: 0x10000\n", "0x10000"},
	} {
		_, err := decode(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decode(%q) = %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

func TestDurationRoundTrip(t *testing.T) {
	in := Config{Name: "x", Type: TypeCPUTemp, Interval: Duration(90 * time.Second)}
	var buf bytes.Buffer
	if err := yaml.NewEncoder(&buf).Encode(&in); err != nil {
		t.Fatal(err)
	}
	out, err := decode(t, buf.String())
	if err != nil {
		t.Fatalf("decode %q: %v", buf.String(), err)
	}
	if out.Interval != in.Interval {
		t.Errorf("interval %v, want %v", out.Interval, in.Interval)
	}
}
