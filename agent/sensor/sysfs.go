package sensor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/freshet-iot/freshet/protocol"
)

// maxSysfsFile bounds what is read of a sysfs file; the ones read here hold
// a line or two.
const maxSysfsFile = 4 << 10

// readSmall reads at most maxSysfsFile bytes of path.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSysfsFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSysfsFile {
		return nil, fmt.Errorf("%w: %s is longer than %d bytes", ErrParse, path, maxSysfsFile)
	}
	return b, nil
}

// parseMilli parses a decimal integer in thousandths, such as "21375\n".
func parseMilli(b []byte, path string) (float64, error) {
	s := string(bytes.TrimSpace(b))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %q is not an integer", ErrParse, path, clip(s, 40))
	}
	return float64(n) / 1000, nil
}

func sysRoot(root string) string {
	if root == "" {
		return "/"
	}
	return root
}

// w1Source reads a DS18B20 through the kernel's w1 driver (w1-gpio and
// w1_therm on Raspberry Pi OS): the temperature file of newer kernels, which
// holds millidegrees C, else the w1_slave file of older ones:
//
//	72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//	72 01 4b 46 7f ff 0e 10 57 t=23125
//
// where a NO on the first line is a failed CRC, a read error.
type w1Source struct {
	dir    string
	metric metricSpec
}

func newW1Source(root, id string, m metricSpec) *w1Source {
	return &w1Source{dir: filepath.Join(sysRoot(root), "sys", "bus", "w1", "devices", id), metric: m}
}

func (s *w1Source) Read(ctx context.Context) ([]Value, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path := filepath.Join(s.dir, "temperature")
	b, err := readSmall(path)
	var c float64
	switch {
	case err == nil:
		c, err = parseMilli(b, path)
	case errors.Is(err, fs.ErrNotExist):
		path = filepath.Join(s.dir, "w1_slave")
		if b, err = readSmall(path); err == nil {
			c, err = parseW1Slave(b, path)
		} else if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("no 1-Wire device %s (wiring, or the w1-gpio overlay?): %w", filepath.Base(s.dir), err)
		}
	}
	if err != nil {
		return nil, err
	}
	return []Value{{Metric: s.metric.name, Unit: s.metric.unit, Type: protocol.Float, Resolution: s.metric.res, Float: c}}, nil
}

func (s *w1Source) Close() error { return nil }

// parseW1Slave parses the two lines of a w1_slave file into degrees C.
func parseW1Slave(b []byte, path string) (float64, error) {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		return 0, fmt.Errorf("%w: %s: %d lines, want 2", ErrParse, path, len(lines))
	}
	crc := strings.Fields(lines[0])
	switch {
	case len(crc) == 0:
		return 0, fmt.Errorf("%w: %s: empty CRC line", ErrParse, path)
	case crc[len(crc)-1] == "NO":
		return 0, fmt.Errorf("%s: CRC check failed: %q", path, clip(lines[0], 60))
	case crc[len(crc)-1] != "YES":
		return 0, fmt.Errorf("%w: %s: CRC line %q ends in neither YES nor NO", ErrParse, path, clip(lines[0], 60))
	}
	// A bus held low reads nine zero bytes, whose CRC is zero too: "YES".
	if len(crc) >= 9 && strings.Join(crc[:9], "") == strings.Repeat("0", 18) {
		return 0, fmt.Errorf("%s: scratchpad reads all zeros (sensor disconnected?)", path)
	}
	_, t, ok := strings.Cut(lines[1], "t=")
	if !ok {
		return 0, fmt.Errorf("%w: %s: no t= on line 2", ErrParse, path)
	}
	return parseMilli([]byte(t), path)
}

// thermalSource reads a thermal zone, in millidegrees C.
type thermalSource struct {
	path   string
	metric metricSpec
}

func newThermalSource(root string, zone int, m metricSpec) *thermalSource {
	return &thermalSource{
		path:   filepath.Join(sysRoot(root), "sys", "class", "thermal", "thermal_zone"+strconv.Itoa(zone), "temp"),
		metric: m,
	}
}

func (s *thermalSource) Read(ctx context.Context) ([]Value, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := readSmall(s.path)
	if err != nil {
		return nil, err
	}
	c, err := parseMilli(b, s.path)
	if err != nil {
		return nil, err
	}
	return []Value{{Metric: s.metric.name, Unit: s.metric.unit, Type: protocol.Float, Resolution: s.metric.res, Float: c}}, nil
}

func (s *thermalSource) Close() error { return nil }

// clip shortens s for an error message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
