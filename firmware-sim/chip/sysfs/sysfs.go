package sysfs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// DS18B20 is an emulated DS18B20 probe on the w1 bus. It is safe for
// concurrent use.
type DS18B20 struct {
	dir string

	mu       sync.Mutex
	raw      int16 // temperature register, 1/16 °C
	crcError bool
	lastGood [9]byte // scratchpad of the last read that passed its CRC
}

// NewDS18B20 creates root/sys/bus/w1/devices/28-<serial>/ with its name,
// w1_slave and temperature files, reading tempC. The serial is the 12
// hexadecimal digits of the probe's ROM id, such as "0316a279f0ff".
func NewDS18B20(root, serial string, tempC float64) (*DS18B20, error) {
	if len(serial) != 12 || strings.Trim(strings.ToLower(serial), "0123456789abcdef") != "" {
		return nil, fmt.Errorf("ds18b20 %q: %w", serial, ErrSerial)
	}
	name := "28-" + strings.ToLower(serial)
	d := &DS18B20{dir: filepath.Join(root, "sys", "bus", "w1", "devices", name)}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return nil, fmt.Errorf("ds18b20 %s: %w", name, err)
	}
	if err := writeFile(d.dir, "name", name+"\n"); err != nil {
		return nil, fmt.Errorf("ds18b20 %s: %w", name, err)
	}
	if err := d.SetTemperature(tempC); err != nil {
		return nil, err
	}
	return d, nil
}

// Dir returns the probe's directory.
func (d *DS18B20) Dir() string { return d.dir }

// SetTemperature updates the files to read tempC, quantized as the probe
// does at its power-on 12-bit resolution (0.0625 °C). The register holds
// -128 to +127.9375 °C; values outside that, NaN and ±Inf fail with
// ErrValue. (The probe itself is specified from -55 to +125 °C.)
func (d *DS18B20) SetTemperature(tempC float64) error {
	v := math.Round(tempC * 16)
	if math.IsNaN(v) || v < math.MinInt16>>4 || v > math.MaxInt16>>4 {
		return fmt.Errorf("ds18b20 %s: set %v °C: %w", filepath.Base(d.dir), tempC, ErrValue)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.raw = int16(v)
	return d.update()
}

// SetCRCError makes the w1_slave file report a failed CRC check ("NO")
// while on, as after electrical noise on the bus; the temperature file is
// then empty, as the kernel returns nothing for it.
func (d *DS18B20) SetCRCError(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.crcError = on
	return d.update()
}

// Remove deletes the probe's directory, as when it is unplugged and the
// kernel drops it.
func (d *DS18B20) Remove() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.RemoveAll(d.dir); err != nil {
		return fmt.Errorf("ds18b20 %s: %w", filepath.Base(d.dir), err)
	}
	return nil
}

// update rewrites both files in the kernel's w1_therm format:
//
//	56 01 4b 46 7f ff 0c 10 7b : crc=7b YES
//	56 01 4b 46 7f ff 0c 10 7b t=21375
//
// The first line is the scratchpad as read with the CRC computed over its
// first 8 bytes and the verdict; the second the last scratchpad that passed
// the CRC and the temperature in m°C, truncated as the kernel's
// raw*1000/16 does.
func (d *DS18B20) update() error {
	rom := [9]byte{byte(d.raw), byte(uint16(d.raw) >> 8), 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10}
	crc := crc8(rom[:8])
	rom[8] = crc
	verdict, temp := "YES", fmt.Sprintf("%d\n", milli(d.raw))
	if d.crcError {
		rom[8] = ^crc
		verdict, temp = "NO", ""
	} else {
		d.lastGood = rom
	}
	slave := fmt.Sprintf("%s: crc=%02x %s\n%st=%d\n", hexBytes(rom), crc, verdict, hexBytes(d.lastGood), milli(d.raw))
	if err := writeFile(d.dir, "w1_slave", slave); err != nil {
		return fmt.Errorf("ds18b20 %s: %w", filepath.Base(d.dir), err)
	}
	if err := writeFile(d.dir, "temperature", temp); err != nil {
		return fmt.Errorf("ds18b20 %s: %w", filepath.Base(d.dir), err)
	}
	return nil
}

func milli(raw int16) int { return int(raw) * 1000 / 16 }

func hexBytes(b [9]byte) string {
	var s strings.Builder
	for _, v := range b {
		fmt.Fprintf(&s, "%02x ", v)
	}
	return s.String()
}

// crc8 is the Dallas/Maxim 1-wire CRC: polynomial x^8 + x^5 + x^4 + 1,
// reflected, initial value 0.
func crc8(b []byte) byte {
	var crc byte
	for _, v := range b {
		for range 8 {
			mix := (crc ^ v) & 1
			crc >>= 1
			if mix != 0 {
				crc ^= 0x8C
			}
			v >>= 1
		}
	}
	return crc
}

// ThermalZone is an emulated thermal zone such as the Raspberry Pi's CPU
// sensor, thermal_zone0.
type ThermalZone struct {
	dir string
}

// NewThermalZone creates root/sys/class/thermal/thermal_zone<zone>/ with a
// type file holding kind (the Raspberry Pi's CPU zone is "cpu-thermal") and
// a temp file reading tempC.
func NewThermalZone(root string, zone int, kind string, tempC float64) (*ThermalZone, error) {
	if zone < 0 {
		return nil, fmt.Errorf("thermal zone %d: negative zone number", zone)
	}
	z := &ThermalZone{dir: filepath.Join(root, "sys", "class", "thermal", "thermal_zone"+strconv.Itoa(zone))}
	if err := os.MkdirAll(z.dir, 0o755); err != nil {
		return nil, fmt.Errorf("thermal zone %d: %w", zone, err)
	}
	if err := writeFile(z.dir, "type", kind+"\n"); err != nil {
		return nil, fmt.Errorf("thermal zone %d: %w", zone, err)
	}
	if err := z.SetTemperature(tempC); err != nil {
		return nil, err
	}
	return z, nil
}

// Dir returns the zone's directory.
func (z *ThermalZone) Dir() string { return z.dir }

// SetTemperature rewrites the temp file with tempC in m°C. NaN, ±Inf and
// values beyond ±1,000,000 °C fail with ErrValue.
func (z *ThermalZone) SetTemperature(tempC float64) error {
	if math.IsNaN(tempC) || math.Abs(tempC) > 1e6 {
		return fmt.Errorf("%s: set %v °C: %w", filepath.Base(z.dir), tempC, ErrValue)
	}
	if err := writeFile(z.dir, "temp", fmt.Sprintf("%d\n", int64(math.Round(tempC*1000)))); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(z.dir), err)
	}
	return nil
}

// writeFile replaces dir/name with content atomically.
func writeFile(dir, name, content string) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, werr := f.WriteString(content)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Chmod(f.Name(), 0o444); err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
