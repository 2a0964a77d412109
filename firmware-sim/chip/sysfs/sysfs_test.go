package sysfs

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCRC8 uses scratchpads as real probes report them in w1_slave: the
// 85 °C power-on value and a 23.125 °C reading.
func TestCRC8(t *testing.T) {
	for _, tc := range []struct {
		rom  []byte
		want byte
	}{
		{[]byte{0x50, 0x05, 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10}, 0x1c},
		{[]byte{0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10}, 0x57},
	} {
		if got := crc8(tc.rom); got != tc.want {
			t.Errorf("crc8(% x) = %02x, want %02x", tc.rom, got, tc.want)
		}
	}
}

func TestDS18B20Files(t *testing.T) {
	root := t.TempDir()
	d, err := NewDS18B20(root, "0316A279F0FF", 21.375)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "sys/bus/w1/devices/28-0316a279f0ff")
	if d.Dir() != dir {
		t.Fatalf("Dir() = %s, want %s", d.Dir(), dir)
	}
	// The power-on line is as real probes print it; the CRCs of the others
	// come from crc8, which TestCRC8 pins to real probes' output.
	for _, tc := range []struct {
		name          string
		set           float64
		slave, millis string
	}{
		{"initial", 21.375, "56 01 4b 46 7f ff 0c 10 7b : crc=7b YES\n56 01 4b 46 7f ff 0c 10 7b t=21375\n", "21375\n"},
		{"power-on value", 85, "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n", "85000\n"},
		// -10.1 °C rounds to -162/16 = -10.125 °C.
		{"negative", -10.1, "5e ff 4b 46 7f ff 0c 10 6a : crc=6a YES\n5e ff 4b 46 7f ff 0c 10 6a t=-10125\n", "-10125\n"},
		// The kernel's raw*1000/16 truncates: -1/16 °C is -62 m°C.
		{"truncation", -0.0625, "ff ff 4b 46 7f ff 0c 10 13 : crc=13 YES\nff ff 4b 46 7f ff 0c 10 13 t=-62\n", "-62\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.SetTemperature(tc.set); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, filepath.Join(dir, "w1_slave")); got != tc.slave {
				t.Errorf("w1_slave:\n%s\nwant:\n%s", got, tc.slave)
			}
			if got := readFile(t, filepath.Join(dir, "temperature")); got != tc.millis {
				t.Errorf("temperature = %q, want %q", got, tc.millis)
			}
		})
	}
	if got := readFile(t, filepath.Join(dir, "name")); got != "28-0316a279f0ff\n" {
		t.Errorf("name = %q", got)
	}
}

func TestDS18B20CRCError(t *testing.T) {
	d, err := NewDS18B20(t.TempDir(), "000000000001", 20)
	if err != nil {
		t.Fatal(err)
	}
	good := readFile(t, filepath.Join(d.Dir(), "w1_slave"))
	if err := d.SetCRCError(true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(readFile(t, filepath.Join(d.Dir(), "w1_slave")), "\n")
	if !strings.HasSuffix(lines[0], " NO") || strings.Contains(lines[0], "YES") {
		t.Errorf("line 1 under a CRC error: %q, want it to end in NO", lines[0])
	}
	// The crc= field is the CRC computed over the 8 bytes read, which then
	// differs from the 9th byte.
	fields := strings.Fields(lines[0])
	if fields[8] == strings.TrimPrefix(fields[10], "crc=") {
		t.Errorf("line 1 %q: CRC byte matches crc=, want a mismatch", lines[0])
	}
	if got := readFile(t, filepath.Join(d.Dir(), "temperature")); got != "" {
		t.Errorf("temperature under a CRC error = %q, want empty", got)
	}
	if err := d.SetCRCError(false); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(d.Dir(), "w1_slave")); got != good {
		t.Errorf("w1_slave after the CRC error cleared:\n%s\nwant:\n%s", got, good)
	}
}

func TestDS18B20Rejects(t *testing.T) {
	root := t.TempDir()
	for _, serial := range []string{"", "0316a279f0f", "0316a279f0fff", "0316a279f0fg", "28-0316a279f0"} {
		if _, err := NewDS18B20(root, serial, 20); !errors.Is(err, ErrSerial) {
			t.Errorf("NewDS18B20(%q): %v, want ErrSerial", serial, err)
		}
	}
	d, err := NewDS18B20(root, "0316a279f0ff", 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), -128.1, 128} {
		if err := d.SetTemperature(v); !errors.Is(err, ErrValue) {
			t.Errorf("SetTemperature(%v): %v, want ErrValue", v, err)
		}
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("probe directory after Remove: %v", err)
	}
}

// TestDS18B20ConcurrentReads is for the race detector and checks that a
// reader never sees a partial file while the temperature changes.
func TestDS18B20ConcurrentReads(t *testing.T) {
	d, err := NewDS18B20(t.TempDir(), "0316a279f0ff", 20)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d.Dir(), "w1_slave")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Error(err)
				return
			}
			if lines := strings.Split(string(b), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "t=") {
				t.Errorf("partial w1_slave: %q", b)
				return
			}
		}
	})
	for i := range 200 {
		if err := d.SetTemperature(float64(i) / 10); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

func TestThermalZone(t *testing.T) {
	root := t.TempDir()
	z, err := NewThermalZone(root, 0, "cpu-thermal", 48.312)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "sys/class/thermal/thermal_zone0")
	if z.Dir() != dir {
		t.Fatalf("Dir() = %s, want %s", z.Dir(), dir)
	}
	if got := readFile(t, filepath.Join(dir, "type")); got != "cpu-thermal\n" {
		t.Errorf("type = %q", got)
	}
	for _, tc := range []struct {
		set  float64
		want string
	}{{48.312, "48312\n"}, {-5.5, "-5500\n"}, {85.0004, "85000\n"}} {
		if err := z.SetTemperature(tc.set); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(dir, "temp")); got != tc.want {
			t.Errorf("temp after SetTemperature(%v) = %q, want %q", tc.set, got, tc.want)
		}
	}
	if err := z.SetTemperature(math.NaN()); !errors.Is(err, ErrValue) {
		t.Errorf("SetTemperature(NaN): %v, want ErrValue", err)
	}
	if _, err := NewThermalZone(root, -1, "cpu-thermal", 40); err == nil {
		t.Error("NewThermalZone(-1) succeeded")
	}
}
