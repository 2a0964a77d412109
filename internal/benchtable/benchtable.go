// Package benchtable runs freshet's benchmarks (`go test -bench` commands
// and one cross build), reads their results, and writes one Markdown table:
// each figure, its measured value, its goal, pass or miss, and the command
// that measured it. `make bench` runs it through cmd/benchtable.
package benchtable

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Cmd is a command that measures one or more figures.
type Cmd struct {
	Env  []string // added to the environment, e.g. GOOS=linux
	Args []string // Args[0] is the go command
	// Size, if set, is a file the command writes: its size in bytes becomes
	// the result named Size (unit "bytes"); the output is not parsed.
	Size string

	ran     bool
	results []Result
	err     error
}

// String is the command as one would type it in a shell.
func (c *Cmd) String() string {
	var parts []string
	for _, a := range append(append([]string(nil), c.Env...), c.Args...) {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./=:,+-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Goal is a figure's target.
type Goal struct {
	AtLeast bool // the figure must be at least Value; otherwise at most
	Value   float64
}

// Figure is one row of the table.
type Figure struct {
	What string
	Cmd  *Cmd
	// Bench and Unit name the result that is the figure: a benchmark name
	// without its -GOMAXPROCS suffix, and a unit it reports.
	Bench, Unit string
	// Format shows a value of the figure, and its goal.
	Format func(float64) string
	Goal   *Goal // nil: no goal
	// Note, if set, adds context from the results of every command.
	Note func(rs []Result) string
}

// Options configure Run. Zero values take the defaults.
type Options struct {
	Go      string    // the go command; default "go"
	LDFlags string    // linker flags of the binary-size build; default "-s -w"
	Raw     io.Writer // receives every command's output as it was (for benchstat)
	Log     io.Writer // progress; nil discards
	Now     func() time.Time
}

// Run runs the command of every figure once, in order, then writes the
// table to w. A command that fails or measures nothing leaves its figures
// "not measured" and makes Run return an error after the table is written.
func Run(ctx context.Context, w io.Writer, o Options) error {
	if o.Go == "" {
		o.Go = "go"
	}
	if o.LDFlags == "" {
		o.LDFlags = "-s -w"
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	figs := Figures(o)
	var cmds []*Cmd
	for _, f := range figs {
		if !f.Cmd.ran {
			f.Cmd.ran = true
			cmds = append(cmds, f.Cmd)
		}
	}
	began := o.Now()
	var all []Result
	var errs []error
	for i, c := range cmds {
		fmt.Fprintf(o.Log, "benchtable: [%d/%d] %s\n", i+1, len(cmds), c)
		t0 := o.Now()
		out, err := run(ctx, c)
		if o.Raw != nil && c.Size == "" {
			o.Raw.Write(out)
		}
		if err == nil && len(c.results) == 0 {
			err = errors.New("no benchmark result (skipped?)")
		}
		all = append(all, c.results...) // a failed go test may still have measured some
		if err != nil {
			c.err = err
			errs = append(errs, fmt.Errorf("%s: %w", c, err))
			fmt.Fprintf(o.Log, "benchtable: failed: %v\n%s\n", err, tail(out, 30))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		fmt.Fprintf(o.Log, "benchtable: done in %v\n", o.Now().Sub(t0).Round(time.Second))
	}
	machine, err := Machine(ctx, o.Go)
	if err != nil {
		errs = append(errs, err)
	}
	fmt.Fprintf(w, "Measured by `make bench` on %s: %s. `make bench` took %v. Timings on a shared machine are noisy: compare each figure with its goal within one run.\n\n",
		began.Format("2006-01-02"), machine, o.Now().Sub(began).Round(time.Second))
	fmt.Fprintln(w, "| figure | measured | goal | result | command |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, f := range figs {
		measured, goal, result := row(f, all)
		fmt.Fprintf(w, "| %s | %s | %s | %s | `%s` |\n", cell(f.What), cell(measured), cell(goal), cell(result), cell(f.Cmd.String()))
	}
	return errors.Join(errs...)
}

// row computes the measured, goal and result cells of f.
func row(f Figure, rs []Result) (measured, goal, result string) {
	goal, result = "—", "—"
	if f.Goal != nil {
		op := "<="
		if f.Goal.AtLeast {
			op = ">="
		}
		goal = op + " " + f.Format(f.Goal.Value)
	}
	v, ok := Find(rs, f.Bench, f.Unit)
	if !ok {
		reason := "no result"
		if f.Cmd.err != nil {
			reason = f.Cmd.err.Error()
		}
		return "not measured (" + reason + ")", goal, "not measured"
	}
	measured = f.Format(v)
	if f.Note != nil {
		if n := f.Note(rs); n != "" {
			measured += " (" + n + ")"
		}
	}
	if f.Goal == nil {
		return measured, goal, result
	}
	pass := v <= f.Goal.Value
	if f.Goal.AtLeast {
		pass = v >= f.Goal.Value
	}
	result = "miss"
	if pass {
		result = "pass"
	}
	return measured, goal, fmt.Sprintf("%s (%s× goal)", result, num(v/f.Goal.Value))
}

// run runs c and parses its results; it returns the output.
func run(ctx context.Context, c *Cmd) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	cmd.Env = append(os.Environ(), c.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), err
	}
	if c.Size != "" {
		st, err := os.Stat(c.Size)
		if err != nil {
			return out.Bytes(), err
		}
		c.results = []Result{{Name: c.Size, Procs: 1, N: 1, Values: map[string]float64{"bytes": float64(st.Size())}}}
		return out.Bytes(), nil
	}
	rs, err := Parse(bytes.NewReader(out.Bytes()))
	c.results = rs
	return out.Bytes(), err
}

// Machine describes this machine and the toolchain: cores, CPU model,
// GOOS/GOARCH and go version.
func Machine(ctx context.Context, goCmd string) (string, error) {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	out, err := exec.CommandContext(ctx, goCmd, "env", "GOOS", "GOARCH", "GOVERSION").Output()
	env := strings.Fields(string(out))
	if err != nil || len(env) != 3 {
		return "", fmt.Errorf("go env: %v", err)
	}
	return fmt.Sprintf("%d cores, %s, %s/%s, %s", runtime.NumCPU(), model, env[0], env[1], env[2]), nil
}

// num shows x with three significant digits at most and no trailing
// zeros: 879, 15.5, 2.11, 0.9, 4.
func num(x float64) string {
	d := 0
	switch a := max(x, -x); {
	case a < 10:
		d = 2
	case a < 100:
		d = 1
	}
	s := strconv.FormatFloat(x, 'f', d, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// count shows x with a k or M suffix: 879 k, 2.45 M.
func count(x float64) string {
	switch {
	case x >= 1e6:
		return num(x/1e6) + " M"
	case x >= 1e3:
		return num(x/1e3) + " k"
	}
	return num(x)
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
