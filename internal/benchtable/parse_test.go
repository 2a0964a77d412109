package benchtable

import (
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/freshet-iot/freshet/protocol
cpu: Intel(R) Xeon(R) Processor
BenchmarkEncodeBME280/samples=500-2         	   69786	     34208 ns/op	  43848283 readings/s	         2.110 B/reading	        82.23 lineproto-B/reading	    3181 B/op	       2 allocs/op
BenchmarkEncodeBME280/samples=167-2         	  231207	     10826 ns/op	  46280201 readings/s	         2.321 B/reading	        82.23 lineproto-B/reading
PASS
ok  	github.com/freshet-iot/freshet/protocol	12.345s
pkg: github.com/freshet-iot/freshet/firmware-sim/bench
BenchmarkBacklogDrain-2   	       1	12078480407 ns/op	         1.660 agents-broker-cpu-s/1M	    149025 readings/s	       298.1 x-realtime
--- BENCH: BenchmarkBacklogDrain-2
    drain_bench_test.go:188: 50 devices, 1800000 readings drained in 12.078s (298x real time)
BenchmarkSingleCore 	     100	       120 ns/op
BenchmarkBroken-2 	 notanumber	 1 ns/op
ok  	github.com/freshet-iot/freshet/firmware-sim/bench	28.215s
`

func TestParse(t *testing.T) {
	rs, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 {
		t.Fatalf("%d results, want 4: %+v", len(rs), rs)
	}
	r := rs[0]
	if r.Pkg != "github.com/freshet-iot/freshet/protocol" || r.Name != "BenchmarkEncodeBME280/samples=500" || r.Procs != 2 || r.N != 69786 {
		t.Errorf("first result: %+v", r)
	}
	for unit, want := range map[string]float64{"ns/op": 34208, "readings/s": 43848283, "B/reading": 2.110, "lineproto-B/reading": 82.23, "B/op": 3181, "allocs/op": 2} {
		if got := r.Values[unit]; got != want {
			t.Errorf("%s = %v, want %v", unit, got, want)
		}
	}
	if r := rs[2]; r.Pkg != "github.com/freshet-iot/freshet/firmware-sim/bench" || r.Name != "BenchmarkBacklogDrain" || r.Values["x-realtime"] != 298.1 {
		t.Errorf("drain result: %+v", r)
	}
	if r := rs[3]; r.Name != "BenchmarkSingleCore" || r.Procs != 1 {
		t.Errorf("a name without a -procs suffix: %+v", r)
	}
	if v, ok := Find(rs, "BenchmarkEncodeBME280/samples=167", "B/reading"); !ok || v != 2.321 {
		t.Errorf("Find = %v, %v", v, ok)
	}
	if _, ok := Find(rs, "BenchmarkEncodeBME280", "B/reading"); ok {
		t.Error("Find matched a prefix of a name")
	}
}

func TestRow(t *testing.T) {
	rs, _ := Parse(strings.NewReader(sample))
	cmd := &Cmd{Args: []string{"go", "test", "./protocol", "-run", "^$", "-bench", "."}}
	for _, c := range []struct {
		f                      Figure
		measured, goal, result string
	}{
		{Figure{Cmd: cmd, Bench: "BenchmarkEncodeBME280/samples=500", Unit: "B/reading", Format: num, Goal: &Goal{Value: 4}}, "2.11", "<= 4", "pass (0.53× goal)"},
		{Figure{Cmd: cmd, Bench: "BenchmarkBacklogDrain", Unit: "x-realtime", Format: num, Goal: &Goal{AtLeast: true, Value: 400}}, "298", ">= 400", "miss (0.75× goal)"},
		{Figure{Cmd: cmd, Bench: "BenchmarkBacklogDrain", Unit: "readings/s", Format: count}, "149 k", "—", "—"},
		{Figure{Cmd: cmd, Bench: "BenchmarkMissing", Unit: "readings/s", Format: count, Goal: &Goal{Value: 1}}, "not measured (no result)", "<= 1", "not measured"},
	} {
		m, g, r := row(c.f, rs)
		if m != c.measured || g != c.goal || r != c.result {
			t.Errorf("%s %s: got %q %q %q, want %q %q %q", c.f.Bench, c.f.Unit, m, g, r, c.measured, c.goal, c.result)
		}
	}
	if got, want := cmd.String(), `go test ./protocol -run '^$' -bench .`; got != want {
		t.Errorf("command %s, want %s", got, want)
	}
}
