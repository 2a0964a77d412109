package sensor

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/protocol"
)

func execConfig(timeout time.Duration, argv ...string) Config {
	return Config{Name: "cmd", Type: TypeExec, Command: argv, Interval: Duration(time.Minute), Timeout: Duration(timeout)}
}

func TestExecCommands(t *testing.T) {
	for _, tc := range []struct {
		name        string
		argv        []string
		timeout     time.Duration
		want        []Value
		reason, msg string
	}{
		{name: "echo", argv: []string{"/bin/echo", "temperature=21.5 C"},
			want: []Value{{Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01, Float: 21.5}}},
		{name: "several lines", argv: []string{"/usr/bin/printf", "# ups\\nbattery=87 %%\\n\\non_battery=false\\nstate=online, charging\\nload=0.125\\n"},
			want: []Value{
				{Metric: "battery", Unit: "%", Type: protocol.Float, Float: 87},
				{Metric: "on_battery", Type: protocol.Bool},
				{Metric: "state", Type: protocol.String, Str: "online, charging"},
				{Metric: "load", Type: protocol.Float, Float: 0.125},
			}},
		{name: "false", argv: []string{"/bin/false"}, reason: ReasonIO, msg: "/bin/false: exit status 1"},
		{name: "stderr tail", argv: []string{"/bin/sh", "-c", "echo starting >&2; echo 'no device at /dev/ttyUSB0' >&2; exit 3"},
			reason: ReasonIO, msg: "exit status 3; stderr: starting no device at /dev/ttyUSB0"},
		{name: "timeout", argv: []string{"/bin/sleep", "10"}, timeout: 200 * time.Millisecond,
			reason: ReasonTimeout, msg: "/bin/sleep still running after 200ms"},
		{name: "unparsable", argv: []string{"/bin/echo", "hello"}, reason: ReasonParse, msg: `line 1: "hello": want metric=value`},
		{name: "no output", argv: []string{"/bin/true"}, reason: ReasonParse, msg: "no metric=value line"},
		{name: "too much output", argv: []string{"/bin/sh", "-c", "yes a=1 | head -c 100000"},
			reason: ReasonParse, msg: "printed more than 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.timeout == 0 {
				tc.timeout = 5 * time.Second
			}
			vals, err := readOnce(t, execConfig(tc.timeout, tc.argv...), Env{})
			if tc.reason != "" {
				if err == nil || Reason(err) != tc.reason || !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("Read = %v, %v; want a %s error containing %q", vals, err, tc.reason, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(vals) != len(tc.want) {
				t.Fatalf("Read = %+v, want %+v", vals, tc.want)
			}
			for i := range vals {
				if vals[i] != tc.want[i] {
					t.Errorf("value %d = %+v, want %+v", i, vals[i], tc.want[i])
				}
			}
		})
	}
}

func TestExecOpen(t *testing.T) {
	if _, err := Open(execConfig(time.Second, "/nonexistent/probe"), Env{}); err == nil || !strings.Contains(err.Error(), `sensor "cmd": open exec`) {
		t.Errorf("Open of a missing program = %v", err)
	}
	// Env.Command builds the process: here it adds an environment variable.
	env := Env{Command: func(ctx context.Context, name string, arg ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, name, arg...)
		cmd.Env = []string{"LEVEL=3"}
		return cmd
	}}
	vals, err := readOnce(t, execConfig(5*time.Second, "/bin/sh", "-c", "echo level=$LEVEL"), env)
	if err != nil || len(vals) != 1 || vals[0].Float != 3 {
		t.Errorf("Read with Env.Command = %+v, %v", vals, err)
	}
}

// A canceled read (agent shutdown) is not a timeout.
func TestExecCanceled(t *testing.T) {
	src, err := Open(execConfig(5*time.Second, "/bin/sleep", "10"), Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := src.Read(ctx); err != context.Canceled {
		t.Errorf("Read after cancel = %v, want context.Canceled", err)
	}
}

func TestParseExecOutput(t *testing.T) {
	c := Config{Resolution: map[string]float64{"rssi": 1, "temperature": 0.1}}
	for _, tc := range []struct {
		out  string
		want []Value
		msg  string // a parse error containing msg
	}{
		{out: "temperature=21.375 C", want: []Value{{Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.1, Float: 21.375}}},
		{out: "humidity=40.5 %\r\npressure=1013.2 hPa\r\n", want: []Value{
			{Metric: "humidity", Unit: "%", Type: protocol.Float, Resolution: 0.01, Float: 40.5},
			{Metric: "pressure", Unit: "hPa", Type: protocol.Float, Resolution: 0.01, Float: 1013.2}}},
		{out: "rssi = -67 dBm", want: []Value{{Metric: "rssi", Unit: "dBm", Type: protocol.Float, Resolution: 1, Float: -67}}},
		{out: "temperature=70 F", want: []Value{{Metric: "temperature", Unit: "F", Type: protocol.Float, Resolution: 0.1, Float: 70}}},
		{out: "x=1e-3\ny=.5\nz=+2.", want: []Value{
			{Metric: "x", Type: protocol.Float, Float: 1e-3}, {Metric: "y", Type: protocol.Float, Float: .5}, {Metric: "z", Type: protocol.Float, Float: 2}}},
		{out: "up=true\ndown=false", want: []Value{{Metric: "up", Type: protocol.Bool, Bool: true}, {Metric: "down", Type: protocol.Bool}}},
		{out: "fw=v1.2.3\nhex=0x10\nmsg=a=b", want: []Value{
			{Metric: "fw", Type: protocol.String, Str: "v1.2.3"},
			{Metric: "hex", Type: protocol.String, Str: "0x10"},
			{Metric: "msg", Type: protocol.String, Str: "a=b"}}},
		{out: "empty=", want: []Value{{Metric: "empty", Type: protocol.String}}},
		{out: "no equals sign", msg: "line 1"},
		{out: "ok=1\nte mp=1", msg: "line 2: metric name"},
		{out: "=1", msg: "metric name bad name: empty name"},
		{out: "a=1\na=2", msg: "line 2: metric a printed twice"},
		{out: "a=1 C extra", msg: "at most one unit"},
		{out: "a=1 \x01", msg: "unit"},
		{out: "s=\xff", msg: "not valid UTF-8"},
		{out: "state=on\x00line", msg: "metric state: the value holds a control character U+0000"},
		{out: "state=\x1b[31mred\x1b[0m", msg: "control character U+001B"},
		{out: "state=a\tb", msg: "control character U+0009"},
		{out: "s=" + strings.Repeat("x", 1025), msg: "1025 bytes"},
		{out: "# only a comment\n\n", msg: "no metric=value line"},
	} {
		vals, err := parseExecOutput([]byte(tc.out), &c)
		if tc.msg != "" {
			if Reason(err) != ReasonParse || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("parse(%q) = %+v, %v; want a parse error containing %q", tc.out, vals, err, tc.msg)
			}
			continue
		}
		if err != nil {
			t.Errorf("parse(%q): %v", tc.out, err)
			continue
		}
		if len(vals) != len(tc.want) {
			t.Errorf("parse(%q) = %+v, want %+v", tc.out, vals, tc.want)
			continue
		}
		for i := range vals {
			if vals[i] != tc.want[i] {
				t.Errorf("parse(%q) value %d = %+v, want %+v", tc.out, i, vals[i], tc.want[i])
			}
		}
	}

	// NaN and out-of-range numbers parse, as floats the runner then refuses.
	vals, err := parseExecOutput([]byte("a=NaN\nb=1e400\nc=-Inf"), &c)
	if err != nil || len(vals) != 3 || !math.IsNaN(vals[0].Float) || !math.IsInf(vals[1].Float, 1) || !math.IsInf(vals[2].Float, -1) {
		t.Fatalf("parse NaN/Inf = %+v, %v", vals, err)
	}
	if Reason(c.checkSample(vals[:1])) != ReasonImplausible || Reason(c.checkSample(vals[1:2])) != ReasonImplausible {
		t.Error("NaN or Inf from a command is not implausible")
	}

	var many strings.Builder
	for i := range maxExecValues + 1 {
		fmt.Fprintf(&many, "m%d=1\n", i)
	}
	if _, err := parseExecOutput([]byte(many.String()), &c); Reason(err) != ReasonParse || !strings.Contains(err.Error(), "more than 256 values") {
		t.Errorf("257 values: %v", err)
	}
}

func TestTailBuffer(t *testing.T) {
	b := tailBuffer{max: 8}
	for _, s := range []string{"hello ", "world", ", and more!"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := string(b.buf); got != "nd more!" {
		t.Errorf("tail %q", got)
	}
	c := capBuffer{max: 4}
	if n, err := c.Write([]byte("abcdef")); n != 6 || err != nil || c.buf.String() != "abcd" || !c.overflow {
		t.Errorf("capBuffer: %d %v %q %v", n, err, c.buf.String(), c.overflow)
	}
}
