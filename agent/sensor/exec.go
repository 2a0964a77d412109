package sensor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/freshet-iot/freshet/protocol"
)

// Bounds of an exec read.
const (
	maxExecOutput = 64 << 10 // stdout bytes parsed; more is a parse error
	maxExecValues = 256      // values per run (a batch holds at most 256 series)
	stderrTail    = 512      // bytes of stderr kept for error messages
	execWaitDelay = time.Second
)

// execSource runs a command per read and parses its standard output. See the
// package documentation for the format.
type execSource struct {
	argv    []string
	timeout time.Duration
	cfg     Config
	command func(ctx context.Context, name string, arg ...string) *exec.Cmd
}

func newExecSource(c Config, env Env) (*execSource, error) {
	if _, err := exec.LookPath(c.Command[0]); err != nil {
		return nil, err
	}
	cmd := env.Command
	if cmd == nil {
		cmd = exec.CommandContext
	}
	return &execSource{argv: c.Command, timeout: time.Duration(c.Timeout), cfg: c, command: cmd}, nil
}

func (s *execSource) Read(ctx context.Context) ([]Value, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var stdout capBuffer
	var stderr tailBuffer
	stdout.max, stderr.max = maxExecOutput, stderrTail
	cmd := s.command(ctx, s.argv[0], s.argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A child that keeps the pipes open after the command is killed must not
	// hold the read past the timeout for long.
	cmd.WaitDelay = execWaitDelay
	err := cmd.Run()
	switch {
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return nil, fmt.Errorf("%w: %s still running after %v%s", ErrTimeout, s.argv[0], s.timeout, stderr.suffix())
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, fmt.Errorf("%s: %w%s", s.argv[0], err, stderr.suffix())
	case stdout.overflow:
		return nil, fmt.Errorf("%w: %s printed more than %d bytes%s", ErrParse, s.argv[0], maxExecOutput, stderr.suffix())
	}
	vals, err := parseExecOutput(stdout.buf.Bytes(), &s.cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w%s", s.argv[0], err, stderr.suffix())
	}
	return vals, nil
}

func (s *execSource) Close() error { return nil }

// parseExecOutput parses metric=value lines (see the package documentation).
func parseExecOutput(out []byte, c *Config) ([]Value, error) {
	var vals []Value
	for i, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: line %d: %s", ErrParse, i+1, fmt.Sprintf(format, args...))
		}
		metric, rest, ok := strings.Cut(line, "=")
		if !ok {
			return nil, bad("%q: want metric=value [unit]", clip(line, 60))
		}
		metric, rest = strings.TrimSpace(metric), strings.TrimSpace(rest)
		if err := checkName(metric); err != nil {
			return nil, bad("metric name %v", err)
		}
		if len(vals) == maxExecValues {
			return nil, bad("more than %d values", maxExecValues)
		}
		for _, v := range vals {
			if v.Metric == metric {
				return nil, bad("metric %s printed twice", metric)
			}
		}
		v := Value{Metric: metric}
		fields := strings.Fields(rest)
		if len(fields) > 0 && isNumber(fields[0]) {
			if len(fields) > 2 {
				return nil, bad("%q: want a number and at most one unit", clip(rest, 60))
			}
			f, err := strconv.ParseFloat(fields[0], 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				return nil, bad("%q: %v", fields[0], err)
			}
			// Out of float64 range parses as ±Inf: implausible, not unparsable.
			v.Type, v.Float = protocol.Float, f
			if len(fields) == 2 {
				v.Unit = fields[1]
				if err := checkPrintable(v.Unit, true); err != nil {
					return nil, bad("unit %v", err)
				}
			}
			v.Resolution = c.resolution(metric, defaultResolution(metric, v.Unit))
		} else if rest == "true" || rest == "false" {
			v.Type, v.Bool = protocol.Bool, rest == "true"
		} else {
			if err := checkText(rest); err != nil {
				return nil, bad("%v", err)
			}
			// A control character (NUL, an ANSI escape...) in a text value
			// is a broken or hostile command, not a reading to store.
			if i := strings.IndexFunc(rest, unicode.IsControl); i >= 0 {
				return nil, bad("metric %s: the value holds a control character %U", metric, []rune(rest[i:])[0])
			}
			v.Type, v.Str = protocol.String, rest
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf("%w: no metric=value line in the output", ErrParse)
	}
	return vals, nil
}

// isNumber reports whether s is a decimal number: optional sign, digits with
// at most one point, optional exponent. NaN and Inf count as numbers (and are
// then implausible); hex and underscores do not.
func isNumber(s string) bool {
	if t := strings.TrimLeft(s, "+-"); len(s)-len(t) <= 1 {
		switch strings.ToLower(t) {
		case "nan", "inf", "infinity":
			return true
		}
	}
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	mant = strings.TrimPrefix(strings.TrimPrefix(mant, "-"), "+")
	digits, points := 0, 0
	for i := 0; i < len(mant); i++ {
		switch c := mant[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			points++
		default:
			return false
		}
	}
	if digits == 0 || points > 1 {
		return false
	}
	if hasExp {
		exp = strings.TrimPrefix(strings.TrimPrefix(exp, "-"), "+")
		if exp == "" {
			return false
		}
		for i := 0; i < len(exp); i++ {
			if exp[i] < '0' || exp[i] > '9' {
				return false
			}
		}
	}
	return true
}

// capBuffer keeps the first max bytes written and notes any overflow. It
// never fails a write, so the command is not killed by a broken pipe. (The
// buffer is a field, not embedded: an embedded bytes.Buffer's ReadFrom would
// let io.Copy bypass Write and the bound.)
type capBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (b *capBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - b.buf.Len(); len(p) > room {
		b.overflow = true
		p = p[:max(room, 0)]
	}
	b.buf.Write(p)
	return n, nil
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > b.max {
		p = p[len(p)-b.max:]
	}
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return n, nil
}

// suffix is the stderr tail for an error message, "" when there is none.
func (b *tailBuffer) suffix() string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(b.buf), "?"))
	if s == "" {
		return ""
	}
	return "; stderr: " + strings.Join(strings.Fields(s), " ")
}
