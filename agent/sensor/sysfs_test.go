package sensor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/freshet-iot/freshet/protocol"
)

// writeFile creates root/rel with content.
func writeFile(t *testing.T, root, rel, content string) {
	t.Helper()
	path := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readOnce opens c under root and reads it once.
func readOnce(t *testing.T, c Config, env Env) ([]Value, error) {
	t.Helper()
	src, err := Open(c, env)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	return src.Read(t.Context())
}

func wantTemperature(t *testing.T, vals []Value, err error, want, res float64) {
	t.Helper()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(vals) != 1 {
		t.Fatalf("Read = %+v, want one value", vals)
	}
	v := vals[0]
	if v.Metric != "temperature" || v.Unit != "C" || v.Type != protocol.Float || v.Resolution != res || v.Float != want {
		t.Errorf("Read = %+v, want temperature %g C at %g", v, want, res)
	}
}

const w1Dir = "sys/bus/w1/devices/28-00000a1b2c3d"

func TestDS18B20(t *testing.T) {
	c := Config{Name: "probe", Type: TypeDS18B20, Device: "28-00000a1b2c3d"}
	for _, tc := range []struct {
		name        string
		files       map[string]string
		want        float64
		reason, msg string
	}{
		{name: "temperature file", files: map[string]string{"temperature": "21375\n"}, want: 21.375},
		{name: "temperature file wins", files: map[string]string{"temperature": "-1250\n", "w1_slave": "x"}, want: -1.25},
		{name: "w1_slave YES", files: map[string]string{
			"w1_slave": "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"}, want: 23.125},
		{name: "w1_slave negative", files: map[string]string{
			"w1_slave": "5e ff 4b 46 7f ff 02 10 d8 : crc=d8 YES\n5e ff 4b 46 7f ff 02 10 d8 t=-10125\n"}, want: -10.125},
		{name: "w1_slave NO", files: map[string]string{
			"w1_slave": "72 01 4b 46 7f ff 0e 10 57 : crc=ff NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"},
			reason: ReasonIO, msg: "CRC check failed"},
		{name: "all zeros", files: map[string]string{
			"w1_slave": "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"},
			reason: ReasonIO, msg: "all zeros"},
		{name: "w1_slave one line", files: map[string]string{"w1_slave": "72 01 : crc=57 YES\n"}, reason: ReasonParse, msg: "1 lines, want 2"},
		{name: "w1_slave no t=", files: map[string]string{"w1_slave": "72 : crc=57 YES\n72 01\n"}, reason: ReasonParse, msg: "no t="},
		{name: "w1_slave garbage", files: map[string]string{"w1_slave": "hello\nworld\n"}, reason: ReasonParse, msg: "neither YES nor NO"},
		{name: "temperature garbage", files: map[string]string{"temperature": "21.3\n"}, reason: ReasonParse, msg: `"21.3" is not an integer`},
		{name: "temperature empty", files: map[string]string{"temperature": ""}, reason: ReasonParse, msg: "not an integer"},
		{name: "temperature huge", files: map[string]string{"temperature": strings.Repeat("1", 5000)}, reason: ReasonParse, msg: "longer than"},
		{name: "absent", files: nil, reason: ReasonIO, msg: "no 1-Wire device 28-00000a1b2c3d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tc.files {
				writeFile(t, root, filepath.Join(w1Dir, name), content)
			}
			vals, err := readOnce(t, c, Env{SysRoot: root})
			if tc.reason == "" {
				wantTemperature(t, vals, err, tc.want, 0.001)
				return
			}
			if err == nil || Reason(err) != tc.reason || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Read = %v, %v; want a %s error containing %q", vals, err, tc.reason, tc.msg)
			}
		})
	}
}

func TestCPUTemp(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "sys/class/thermal/thermal_zone0/temp", "48312\n")
	writeFile(t, root, "sys/class/thermal/thermal_zone2/temp", "-5000\n")

	vals, err := readOnce(t, Config{Name: "cpu", Type: TypeCPUTemp}, Env{SysRoot: root})
	wantTemperature(t, vals, err, 48.312, 0.001)

	c := Config{Name: "cpu", Type: TypeCPUTemp, Zone: 2, Resolution: map[string]float64{"temperature": 0.1}}
	vals, err = readOnce(t, c, Env{SysRoot: root})
	wantTemperature(t, vals, err, -5, 0.1)

	_, err = readOnce(t, Config{Name: "cpu", Type: TypeCPUTemp, Zone: 7}, Env{SysRoot: root})
	if err == nil || Reason(err) != ReasonIO || !strings.Contains(err.Error(), "thermal_zone7") {
		t.Errorf("missing zone: %v, want an io error naming the file", err)
	}
}

// The layers together: a thermal zone read by the runner, its file changing
// between reads; a reading above 125 °C is refused as implausible.
func TestRunnerWithThermalZone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		const zone = "sys/class/thermal/thermal_zone0/temp"
		writeFile(t, root, zone, "45000\n")
		c := Config{Name: "cpu", Type: TypeCPUTemp, Interval: Duration(10 * time.Second), Labels: map[string]string{"board": "pi4"}}
		src, err := Open(c, Env{SysRoot: root})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		var got []protocol.Reading
		r, err := NewRunner([]Sensor{{c, src}}, func(rs []protocol.Reading) { got = append(got, rs...) }, RunnerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		t0 := time.Now()

		time.Sleep(5 * time.Second) // read at 0: 45 °C
		writeFile(t, root, zone, "130000\n")
		time.Sleep(7 * time.Second) // read at 10: implausible; retry at 11 (backoff 1 s) too
		writeFile(t, root, zone, "46500\n")
		time.Sleep(3 * time.Second) // retry at 13 (backoff 2 s): 46.5 °C
		cancel()
		<-done

		if len(got) != 2 {
			t.Fatalf("sink got %+v, want 2 readings", got)
		}
		for i, want := range []struct {
			at time.Duration
			v  float64
		}{{0, 45}, {13 * time.Second, 46.5}} {
			r := got[i]
			if r.Sensor != "cpu" || r.Metric != "temperature" || r.Unit != "C" || r.Resolution != 0.001 ||
				r.Float != want.v || r.Time != t0.Add(want.at).UnixNano() ||
				len(r.Labels) != 1 || r.Labels[0] != (protocol.Label{Key: "board", Value: "pi4"}) {
				t.Errorf("reading %d = %+v, want %g at %v", i, r, want.v, want.at)
			}
		}
		if st := r.Status()[0]; st.Reads != 4 || st.Errors != 2 || !strings.Contains(st.LastError, "temperature 130 C outside -60..125") {
			t.Errorf("status %+v", st)
		}
	})
}
