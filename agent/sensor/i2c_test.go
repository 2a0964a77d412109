package sensor

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"

	"github.com/freshet-iot/freshet/protocol"
)

// Register traffic of a BME280 at 0x76, recorded from a device by periph's
// bmxx80 tests: 23.72 °C, 1009.42695 hPa, 65.3056 %rH.
var (
	bme280Init = []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x60}}, // chip id: BME280
		{Addr: 0x76, W: []byte{0x88}, R: []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}},
		{Addr: 0x76, W: []byte{0xe1}, R: []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}},
		{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf2, 0x3, 0xf5, 0xa0, 0xf4, 0x6c}},
	}
	bme280Sense = []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xf4, 0x6d}},         // forced mode
		{Addr: 0x76, W: []byte{0xf3}, R: []byte{8}}, // measuring
		{Addr: 0x76, W: []byte{0xf3}, R: []byte{0}}, // idle
		{Addr: 0x76, W: []byte{0xf7}, R: []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}},
	}
	bmp280Init = []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x58}}, // chip id: BMP280
		{Addr: 0x76, W: []byte{0x88}, R: []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}},
		{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf5, 0xa0, 0xf4, 0x6c}},
	}
)

func ops(parts ...[]i2ctest.IO) []i2ctest.IO {
	var out []i2ctest.IO
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// flakyBus fails the transfers whose index (from 0) is in fail, without
// consuming the playback, like a bus glitch.
type flakyBus struct {
	i2ctest.Playback
	mu   sync.Mutex
	n    int
	fail map[int]bool
}

func (b *flakyBus) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	n := b.n
	b.n++
	b.mu.Unlock()
	if b.fail[n] {
		return errors.New("i2c: remote I/O error")
	}
	return b.Playback.Tx(addr, w, r)
}

// envWith is an Env whose bus "1" is bus.
func envWith(bus i2c.BusCloser) Env {
	return Env{OpenI2C: func(name string) (i2c.BusCloser, error) {
		if name != "1" {
			return nil, errors.New("no such bus " + name)
		}
		return bus, nil
	}}
}

// quantized rounds the float values as the wire will carry them.
func quantized(t *testing.T, vals []Value) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, v := range vals {
		if v.Type != protocol.Float {
			t.Fatalf("%s: type %s", v.Metric, v.Type)
		}
		q, err := protocol.Quantize(v.Float, v.Resolution)
		if err != nil {
			t.Fatal(err)
		}
		out[v.Metric+" "+v.Unit] = q
	}
	return out
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// The BME280 is read through periph's driver; a failed transfer fails the
// read (io), and the next read re-initialises the chip before sensing.
func TestBME280(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // the driver sleeps for the conversion
		bus := &flakyBus{
			Playback: i2ctest.Playback{Ops: ops(bme280Init, bme280Sense, bme280Init, bme280Sense), DontPanic: true},
			fail:     map[int]bool{len(bme280Init) + len(bme280Sense): true}, // the second read's forced-mode write
		}
		c := Config{Name: "room", Type: TypeBME280, Bus: "1"}
		src, err := Open(c, envWith(bus))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{"temperature C": 23.72, "humidity %": 65.31, "pressure hPa": 1009.43}
		vals, err := src.Read(t.Context())
		if err != nil {
			t.Fatalf("read 1: %v", err)
		}
		if got := quantized(t, vals); !mapsEqual(got, want) {
			t.Errorf("read 1 = %v, want %v", got, want)
		}
		if vals[0].Resolution != 0.01 || vals[2].Float != 1009.426953125 {
			t.Errorf("read 1 raw: %+v", vals)
		}

		_, err = src.Read(t.Context())
		if err == nil || Reason(err) != ReasonIO || !strings.Contains(err.Error(), "read bme280 at 0x76: ") {
			t.Fatalf("read 2 = %v, want the injected I/O error", err)
		}

		vals, err = src.Read(t.Context())
		if err != nil {
			t.Fatalf("read 3 (re-initialised): %v", err)
		}
		if got := quantized(t, vals); !mapsEqual(got, want) {
			t.Errorf("read 3 = %v, want %v", got, want)
		}
		// Close closes the bus, and the playback checks every transfer happened.
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := src.Read(t.Context()); err == nil {
			t.Error("Read after Close: no error")
		}
	})
}

func TestBMP280(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A BMP280 read as a bmp280; the humidity bytes are not read.
		bus := &i2ctest.Playback{Ops: ops(bmp280Init, []i2ctest.IO{
			{Addr: 0x76, W: []byte{0xf4, 0x6d}},
			{Addr: 0x76, W: []byte{0xf3}, R: []byte{0}},
			{Addr: 0x76, W: []byte{0xf7}, R: []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0}},
		}), DontPanic: true}
		vals, err := readOnce(t, Config{Name: "p", Type: TypeBMP280, Bus: "1", Resolution: map[string]float64{"pressure": 0.1}}, envWith(bus))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := quantized(t, vals), map[string]float64{"temperature C": 23.72, "pressure hPa": 1009.4}; !mapsEqual(got, want) {
			t.Errorf("Read = %v, want %v", got, want)
		}

		// A BMP280 where the config says bme280: no humidity, a clear error.
		bus = &i2ctest.Playback{Ops: bmp280Init, DontPanic: true}
		_, err = readOnce(t, Config{Name: "room", Type: TypeBME280, Bus: "1"}, envWith(bus))
		if err == nil || Reason(err) != ReasonIO || !strings.Contains(err.Error(), "found a BMP280, not a BME280") {
			t.Errorf("bme280 config on a BMP280: %v", err)
		}

		// Nothing answers at 0x77.
		bus = &i2ctest.Playback{DontPanic: true}
		_, err = readOnce(t, Config{Name: "room", Type: TypeBME280, Bus: "1", Address: 0x77}, envWith(bus))
		if err == nil || Reason(err) != ReasonIO || !strings.Contains(err.Error(), "init bme280 at 0x77") {
			t.Errorf("absent chip: %v", err)
		}
	})
}

func TestMCP9808(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x1a, W: []byte{0x08, 0x03}},                  // resolution 0.0625
		{Addr: 0x1a, W: []byte{0x01, 0x00, 0x00}},            // enable
		{Addr: 0x1a, W: []byte{0x05}, R: []byte{0x01, 0x94}}, // 25.25 °C
		{Addr: 0x1a, W: []byte{0x05}, R: []byte{0x1f, 0xf3}}, // -0.8125 °C
		{Addr: 0x1a, W: []byte{0x01, 0x01, 0x00}},            // Close: shutdown mode
	}, DontPanic: true}
	src, err := Open(Config{Name: "m", Type: TypeMCP9808, Bus: "1", Address: 0x1a}, envWith(bus))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []float64{25.25, -0.8125} {
		vals, err := src.Read(t.Context())
		wantTemperature(t, vals, err, want, 0.0001)
	}
	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// aht20Bus emulates an AHT20 at 0x38: calibrated, and either busy forever
// or done with the given raw humidity and temperature.
type aht20Bus struct {
	mu   sync.Mutex
	busy bool
	h, t uint32
}

func (b *aht20Bus) String() string                  { return "aht20Bus" }
func (b *aht20Bus) SetSpeed(physic.Frequency) error { return nil }
func (b *aht20Bus) Close() error                    { return nil }
func (b *aht20Bus) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if addr != 0x38 {
		return errors.New("nack")
	}
	switch {
	case len(w) == 1 && w[0] == 0x71 && len(r) == 1: // status
		r[0] = 0x18
	case len(w) == 3 && w[0] == 0xac && len(r) == 0: // trigger a measurement
	case len(w) == 0 && len(r) == 7:
		status := byte(0x18)
		if b.busy {
			status |= 0x80
		}
		d := []byte{status, byte(b.h >> 12), byte(b.h >> 4), byte(b.h<<4) | byte(b.t>>16&0xf), byte(b.t >> 8), byte(b.t)}
		copy(r, append(d, crc8(d)))
	default:
		return errors.New("unexpected transfer")
	}
	return nil
}

// crc8 is the AHT20's check: polynomial 0x31, initial value 0xff.
func crc8(data []byte) byte {
	crc := byte(0xff)
	for _, b := range data {
		crc ^= b
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func TestAHT20(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // the driver sleeps 80 ms per measurement
		// 2^19 of 2^20: 50 %rH; 0x60000: 393216/2^20·200 - 50 = 25 °C.
		bus := &aht20Bus{h: 0x80000, t: 0x60000}
		src, err := Open(Config{Name: "a", Type: TypeAHT20, Bus: "1"}, envWith(bus))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		vals, err := src.Read(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := quantized(t, vals), map[string]float64{"temperature C": 25, "humidity %": 50}; !mapsEqual(got, want) {
			t.Errorf("Read = %v, want %v", got, want)
		}

		// A measurement that never completes is the driver's typed
		// timeout, counted as a timeout.
		bus.mu.Lock()
		bus.busy = true
		bus.mu.Unlock()
		_, err = src.Read(t.Context())
		if Reason(err) != ReasonTimeout || !strings.Contains(err.Error(), "read aht20 at 0x38") {
			t.Errorf("busy chip: %v, want a timeout", err)
		}
	})
}

func TestI2COpenErrors(t *testing.T) {
	if _, err := Open(Config{Name: "x", Type: TypeAHT20, Bus: "1"}, Env{}); err == nil || !strings.Contains(err.Error(), "no I²C bus opener") {
		t.Errorf("no opener: %v", err)
	}
	_, err := Open(Config{Name: "x", Type: TypeAHT20, Bus: "7"}, envWith(&aht20Bus{}))
	if err == nil || !strings.Contains(err.Error(), `sensor "x": open aht20: open I²C bus "7": no such bus 7`) {
		t.Errorf("unknown bus: %v", err)
	}
	if _, err := Open(Config{Name: "x", Type: TypeAHT20}, envWith(&aht20Bus{})); err == nil || !strings.Contains(err.Error(), "bus: required") {
		t.Errorf("invalid config: %v", err)
	}
}
