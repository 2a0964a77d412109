package influx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/freshet-iot/freshet/protocol"
)

func TestRender(t *testing.T) {
	f := func(k string, v any) []Field { return []Field{{k, v}} }
	for _, c := range []struct {
		p    Point
		want string // the line, or with err the start of the error
		err  bool
	}{
		{p: Point{"m", nil, f("v", 1.5), 7}, want: "m v=1.5 7\n"},
		{p: Point{"m", []Tag{{"a", "1"}, {"b", ""}, {"c", "3"}}, []Field{{"i", int64(-3)}, {"b", true}, {"s", "x"}}, -1},
			want: `m,a=1,c=3 i=-3i,b=true,s="x" -1` + "\n"},
		{p: Point{"a b,c=d", []Tag{{"k ,=", "v ,=\\x"}}, f("f ,=", `q"\`), 0},
			want: `a\ b\,c=d,k\ \,\==v\ \,\=\x f\ \,\=="q\"\\" 0` + "\n"},
		{p: Point{"m", nil, f("v", 1e21), 0}, want: "m v=1e+21 0\n"},
		{p: Point{"m", nil, f("v", math.Copysign(0, -1)), 0}, want: "m v=-0 0\n"},
		{p: Point{"m", nil, f("v", "two\nlines"), 0}, want: "m v=\"two\nlines\" 0\n"},

		{p: Point{"", nil, f("v", 1.0), 0}, err: true, want: "invalid point: empty measurement"},
		{p: Point{"#m", nil, f("v", 1.0), 0}, err: true, want: "invalid point: measurement"},
		{p: Point{"\tm", nil, f("v", 1.0), 0}, err: true, want: "invalid point: measurement"},
		{p: Point{`m\`, nil, f("v", 1.0), 0}, err: true, want: "invalid point: measurement"},
		{p: Point{"m", []Tag{{"b", "1"}, {"a", "1"}}, f("v", 1.0), 0}, err: true, want: "invalid point: tags not sorted"},
		{p: Point{"m", []Tag{{"a", "1"}, {"a", "2"}}, f("v", 1.0), 0}, err: true, want: "invalid point: tags not sorted"},
		{p: Point{"m", []Tag{{"", "1"}}, f("v", 1.0), 0}, err: true, want: "invalid point: empty tag key"},
		{p: Point{"m", []Tag{{"k", "a\nb"}}, f("v", 1.0), 0}, err: true, want: "invalid point: tag value"},
		{p: Point{"m", []Tag{{"k", `a\`}}, f("v", 1.0), 0}, err: true, want: "invalid point: tag value"},
		{p: Point{"m", nil, nil, 0}, err: true, want: "invalid point: no fields"},
		{p: Point{"m", nil, f("", 1.0), 0}, err: true, want: "invalid point: empty field key"},
		{p: Point{"m", nil, f("v", math.NaN()), 0}, err: true, want: "invalid point: field"},
		{p: Point{"m", nil, f("v", math.Inf(-1)), 0}, err: true, want: "invalid point: field"},
		{p: Point{"m", nil, f("v", 3), 0}, err: true, want: "invalid point: field \"v\" has unsupported type int"},
		{p: Point{"m", nil, f("v", nil), 0}, err: true, want: "invalid point: field"},
	} {
		l := &lineBuf{buf: []byte("prev\n")}
		err := l.add(&c.p)
		b := l.buf
		switch {
		case c.err && (err == nil || !errors.Is(err, ErrInvalidPoint) || !strings.HasPrefix(err.Error(), c.want)):
			t.Errorf("%+v: error %v, want %q...", c.p, err, c.want)
		case c.err && string(b) != "prev\n":
			t.Errorf("%+v: buffer %q after an error, want it unchanged", c.p, b)
		case !c.err && (err != nil || string(b) != "prev\n"+c.want):
			t.Errorf("%+v: got %q, %v; want %q", c.p, b, err, c.want)
		}
	}
}

// TestSeriesKeyReuse checks lines that copy the previous line's series key.
func TestSeriesKeyReuse(t *testing.T) {
	p := func(m string, v float64, tags ...Tag) Point { return Point{m, tags, []Field{{"v", v}}, 1} }
	var l lineBuf
	for _, pt := range []Point{
		p("m", 1, Tag{"a", "x y"}), p("m", 2, Tag{"a", "x y"}), p("m", 3, Tag{"a", "z"}),
		p("m", math.NaN(), Tag{"a", "z"}), p("m", 4, Tag{"a", "z"}), p("n", 5, Tag{"a", "z"}), p("n", 6),
	} {
		if err := l.add(&pt); err != nil && !errors.Is(err, ErrInvalidPoint) {
			t.Fatal(err)
		}
	}
	want := "m,a=x\\ y v=1 1\nm,a=x\\ y v=2 1\nm,a=z v=3 1\nm,a=z v=4 1\nn,a=z v=5 1\nn v=6 1\n"
	if string(l.buf) != want || len(l.ends) != 6 || l.ends[5] != len(want) {
		t.Fatalf("got %q %v, want %q", l.buf, l.ends, want)
	}
}

// TestLinesSeries checks that a series of bare values renders exactly the
// lines of the same single-field Points, and counts invalid ones the same.
func TestLinesSeries(t *testing.T) {
	type series struct {
		m     string
		tags  []Tag
		field string
		vals  []any // Decimal, float64, int64, bool, string
	}
	all := []series{
		{"temperature", []Tag{{"device", "gw 1"}, {"sensor", "bme280"}, {"unit", "C"}}, "value",
			[]any{Decimal{2137, -2}, Decimal{-5, -3}, Decimal{0, 2}, Decimal{7, 2}, 21.375, math.Copysign(0, -1)}},
		{"m,x", []Tag{{"k=", ""}, {"z", "a b"}}, "f ,=", []any{int64(-3), true, `say "hi"\`, 1e21}},
		{"bad", []Tag{{"k", `trailing\`}}, "value", []any{Decimal{1, 0}, int64(2)}}, // invalid series
		{"m", nil, "value", []any{math.NaN(), Decimal{1, 19}, math.Inf(1), 3.5}},    // invalid values
		{"m", nil, "", []any{1.0}}, // empty field key
		{"after", []Tag{{"a", "1"}}, "value", []any{false}},
	}
	var viaSeries, viaPoints Lines
	for _, s := range all {
		viaSeries.Series(s.m, s.tags, s.field)
		for i, v := range s.vals {
			ts := int64(1000 + i)
			switch v := v.(type) {
			case Decimal:
				viaSeries.Decimal(v, ts)
			case float64:
				viaSeries.Float(v, ts)
			case int64:
				viaSeries.Int(v, ts)
			case bool:
				viaSeries.Bool(v, ts)
			case string:
				viaSeries.String(v, ts)
			}
			viaPoints.Add(&Point{Measurement: s.m, Tags: s.tags, Fields: []Field{{s.field, v}}, Time: ts})
		}
	}
	if string(viaSeries.buf) != string(viaPoints.buf) || fmt.Sprint(viaSeries.ends) != fmt.Sprint(viaPoints.ends) {
		t.Fatalf("series rendered\n%s%v\npoints rendered\n%s%v", viaSeries.buf, viaSeries.ends, viaPoints.buf, viaPoints.ends)
	}
	if viaSeries.invalid != 6 || viaPoints.invalid != 6 || viaSeries.Len() != 18 {
		t.Fatalf("invalid %d and %d, len %d; want 6, 6 and 18", viaSeries.invalid, viaPoints.invalid, viaSeries.Len())
	}
	if !errors.Is(viaSeries.first, ErrInvalidPoint) || !strings.HasPrefix(viaSeries.first.Error(), "point 10: invalid point: tag value") {
		t.Fatalf("first error %v", viaSeries.first)
	}
	want := "temperature,device=gw\\ 1,sensor=bme280,unit=C value=21.37 1000\n"
	if got := string(viaSeries.buf[:viaSeries.ends[0]]); got != want {
		t.Fatalf("first line %q, want %q", got, want)
	}
	viaSeries.Reset()
	if viaSeries.Len() != 0 || len(viaSeries.buf) != 0 || viaSeries.first != nil {
		t.Fatalf("after Reset: %+v", viaSeries)
	}
}

func TestBackoff(t *testing.T) {
	top := func(n int64) int64 { return n - 1 }
	lo, hi := 100*time.Millisecond, 30*time.Second
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000}
	for a, w := range want {
		if got := backoff(a, lo, hi, top); got != w*time.Millisecond-1 {
			t.Errorf("attempt %d: ceiling %v, want %v", a, got+1, w*time.Millisecond)
		}
		if got := backoff(a, lo, hi, func(int64) int64 { return 0 }); got != 0 {
			t.Errorf("attempt %d: floor %v, want 0 (full jitter)", a, got)
		}
	}
	if got := backoff(1000, lo, math.MaxInt64, top); got != math.MaxInt64-1 {
		t.Errorf("huge attempt: %v", got)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "0": 0, "7": 7 * time.Second, " 30 ": 30 * time.Second, "-1": 0, "soon": 0, "1.5": 0,
		"86400": maxRetryAfter, "99999999999999999999": 0,
		now.Add(10 * time.Second).Format(http.TimeFormat): 10 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
		now.Add(24 * time.Hour).Format(http.TimeFormat):   maxRetryAfter,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestClassify feeds classify the client's own error values (no server).
func TestClassify(t *testing.T) {
	status := func(code int, retryAfter string) error {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http2.Error{StatusCode: code, Header: h}
	}
	transport := func(err error) error {
		return http2.NewError(&url.Error{Op: "Post", URL: "http://x/api/v2/write", Err: err})
	}
	for _, c := range []struct {
		err  error
		want outcome
		wait time.Duration
	}{
		{transport(errors.New("connection refused")), transient, 0},
		{transport(context.DeadlineExceeded), transient, 0},
		{status(500, ""), transient, 0},
		{status(503, "3"), transient, 3 * time.Second},
		{status(429, "1"), transient, time.Second},
		{status(408, ""), transient, 0},
		{status(413, ""), tooLarge, 0},
		{status(400, ""), rejected, 0},
		{status(422, ""), rejected, 0},
		{status(401, ""), refused, 0},
		{status(403, ""), refused, 0},
		{status(404, ""), refused, 0},
		{status(405, ""), refused, 0},
		{status(301, ""), refused, 0},
		{transport(&tls.CertificateVerificationError{Err: errors.New("unknown authority")}), refused, 0},
		{transport(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), refused, 0},
	} {
		if o, _, wait := classify(c.err); o != c.want || wait != c.wait {
			t.Errorf("classify(%v) = %d, %v; want %d, %v", c.err, o, wait, c.want, c.wait)
		}
	}
}

// A Decimal is written as text that parses to exactly the float the
// protocol decodes for that decimal, at every resolution.
// TestTimeText: Lines renders times as strconv does, whatever the order.
func TestTimeText(t *testing.T) {
	var l Lines
	check := func(ts int64) {
		t.Helper()
		if got, want := string(l.appendTime(nil, ts)), strconv.FormatInt(ts, 10); got != want {
			t.Fatalf("time %d rendered %q", ts, got)
		}
	}
	for _, ts := range []int64{0, 1, -1, 999_999_999, 1e9, 1e9 + 1, math.MinInt64, math.MaxInt64, 999_999_999e9, 1_000_000_000e9} {
		check(ts)
	}
	for ts := int64(999_999_990e9); ts < 1_000_000_010e9; ts += 1e9 / 2 { // steps, across a new digit
		check(ts)
	}
	for ts := int64(1_763_781_299e9 + 7); ts > 1_763_781_200e9; ts -= 1e9 { // backwards
		check(ts)
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		check(rnd.Int64N(4e18))
	}
}

func TestDecimalText(t *testing.T) {
	for _, c := range []struct {
		d    Decimal
		want string
	}{
		{Decimal{2137, -2}, "21.37"}, {Decimal{-5, -2}, "-0.05"}, {Decimal{0, -2}, "0.00"}, {Decimal{7, -9}, "0.000000007"},
		{Decimal{-123456, -3}, "-123.456"}, {Decimal{42, 0}, "42"}, {Decimal{42, 3}, "42000"}, {Decimal{0, 3}, "0"},
		{Decimal{math.MinInt64, -18}, "-9.223372036854775808"}, {Decimal{math.MaxInt64, -1}, "922337203685477580.7"},
		{Decimal{1, -18}, "0.000000000000000001"}, {Decimal{-10, -1}, "-1.0"},
	} {
		if got := string(appendDecimal(nil, c.d)); got != c.want {
			t.Errorf("%+v: %q, want %q", c.d, got, c.want)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	skipped := 0
	for range 200000 {
		exp := int8(rnd.IntN(19) - 9)
		units := rnd.Int64N(1<<53) - 1<<52
		if rnd.IntN(2) == 0 {
			units %= 100000
		}
		text := strconv.FormatInt(units, 10) + "e" + strconv.Itoa(int(exp))
		v, _ := strconv.ParseFloat(text, 64)
		u, ok := protocol.Decimal(v, exp)
		if !ok {
			skipped++
			continue // not every 16-digit decimal survives float64; the encoder quantizes first
		}
		got, err := strconv.ParseFloat(string(appendDecimal(nil, Decimal{u, exp})), 64)
		if err != nil || got != v {
			t.Fatalf("%s: decimal text %q parses to %v, want %v", text, appendDecimal(nil, Decimal{u, exp}), got, v)
		}
	}
	if skipped > 200000/3 {
		t.Fatalf("%d of 200000 cases not at their resolution: the test checks too little", skipped)
	}
}
