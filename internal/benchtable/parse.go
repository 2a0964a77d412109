package benchtable

import (
	"bufio"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Result is one result line of `go test -bench` output, e.g.
//
//	BenchmarkEncodeBME280/samples=500-2   12345   98765 ns/op   2.110 B/reading
type Result struct {
	Pkg   string // from the "pkg:" line above it
	Name  string // without the -GOMAXPROCS suffix: BenchmarkEncodeBME280/samples=500
	Procs int    // the GOMAXPROCS suffix; 1 when there is none
	N     int64  // iterations
	// Values maps each unit to its value: ns/op, B/op, allocs/op, MB/s and
	// the benchmark's own metrics (b.ReportMetric).
	Values map[string]float64
}

var procsSuffix = regexp.MustCompile(`-(\d+)$`)

// Parse returns the result lines of `go test -bench` output, in order. Every
// other line (headers, logs, PASS, ok) is skipped.
func Parse(r io.Reader) ([]Result, error) {
	var out []Result
	pkg := ""
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if res, ok := parseLine(line); ok {
			res.Pkg = pkg
			out = append(out, res)
		}
	}
	return out, s.Err()
}

// parseLine parses "Name-P N v unit [v unit]...".
func parseLine(line string) (Result, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 || !strings.HasPrefix(f[0], "Benchmark") {
		return Result{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Result{}, false
	}
	res := Result{Name: f[0], Procs: 1, N: n, Values: map[string]float64{}}
	if m := procsSuffix.FindStringSubmatch(f[0]); m != nil {
		res.Procs, _ = strconv.Atoi(m[1])
		res.Name = strings.TrimSuffix(f[0], m[0])
	}
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Result{}, false
		}
		res.Values[f[i+1]] = v
	}
	return res, true
}

// Find returns the mean of unit over the results named name (several with
// -count), and whether there was any.
func Find(rs []Result, name, unit string) (float64, bool) {
	sum, n := 0.0, 0
	for _, r := range rs {
		if v, ok := r.Values[unit]; ok && r.Name == name {
			sum += v
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}
