package influx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/internal/cfgfile"
)

// Reader reads back what the hub wrote, through InfluxQL on /query: the
// one query language InfluxDB 1.8, 2.x (through a DBRP mapping; 2.x maps
// every bucket to a database of its name) and 3.x all serve. The hub reads
// raw rows back to rebuild windows that another hub may also have
// readings of, and aggregates back to verify what was emitted.
type Reader struct {
	o      ReaderOptions
	hc     *http.Client
	url    string
	header string
}

// ReaderOptions configure a Reader.
type ReaderOptions struct {
	// URL is InfluxDB's base URL. Required.
	URL string
	// Database and RetentionPolicy: for 1.8 the bucket's "db" and "rp"; for
	// 2.x and 3.x the database the bucket maps to (its name) and "".
	Database, RetentionPolicy string
	// Token: as for the Writer ("user:password" for 1.8).
	Token string
	// Timeout bounds each request. Default DefaultTimeout.
	Timeout time.Duration
	// MaxResponse bounds the bytes of one response. Default 64 MiB.
	MaxResponse int64
	// Client, if set, is the HTTP client (TLS settings); nil: a new one.
	Client *http.Client
}

// NewReader returns a Reader; it does not contact InfluxDB.
func NewReader(o ReaderOptions) (*Reader, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("influx: url %q: want http(s)://host[:port]", cfgfile.Redact(o.URL))
	}
	if o.Database == "" {
		return nil, errors.New("influx: reader needs a database")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxResponse <= 0 {
		o.MaxResponse = 64 << 20
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	u = u.JoinPath("query")
	r := &Reader{o: o, hc: o.Client, url: u.String()}
	if o.Token != "" {
		// 1.8 takes "Token user:password" like 2.x takes its API token.
		r.header = "Token " + o.Token
	}
	return r, nil
}

// DatabaseOf splits a writer's bucket into the database and retention
// policy InfluxQL reads: "db/rp" (1.8) or a 2.x/3.x bucket name, which
// maps to the database of that name.
func DatabaseOf(bucket string) (db, rp string) {
	db, rp, _ = strings.Cut(bucket, "/")
	return db, rp
}

// SeriesRange names one series and a time range to read back.
type SeriesRange struct {
	Measurement string
	// Tags are the series' whole tag set: rows of series with other tags
	// (more labels, say) are not returned.
	Tags       []Tag
	Start, End int64 // [Start, End), Unix ns
}

// Rows are one range's rows: times ascending, and per row the fields asked
// for as float64 (integers converted; a missing or non-numeric field is NaN).
type Rows struct {
	Times  []int64
	Fields [][]float64
}

// maxStatements bounds the statements sent in one request.
const maxStatements = 32

// Read reads fields of each range, in as few requests as maxStatements
// allows, and returns one Rows per range.
func (r *Reader) Read(ctx context.Context, ranges []SeriesRange, fields []string) ([]Rows, error) {
	out := make([]Rows, len(ranges))
	for lo := 0; lo < len(ranges); lo += maxStatements {
		hi := min(lo+maxStatements, len(ranges))
		if err := r.read(ctx, ranges[lo:hi], fields, out[lo:hi]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SeriesCount is one series' count of values per minute.
type SeriesCount struct {
	Measurement string
	Tags        []Tag // sorted by key, the empty ones left out
	Minutes     []int64
	Counts      []int64
}

// CountDevice counts, per minute of [start, end), the "value" fields of
// every series of every measurement tagged with the device (raw readings,
// and quality rows the caller leaves out): it finds series this hub never
// saw. Minutes with none are left out.
func (r *Reader) CountDevice(ctx context.Context, device string, start, end int64) ([]SeriesCount, error) {
	q := fmt.Sprintf(`SELECT count("value") FROM /.*/ WHERE "device" = %s AND time >= %d AND time < %d GROUP BY time(1m), *`, literal(device), start, end)
	res, err := r.do(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []SeriesCount
	for _, st := range res.Results {
		if st.Error != "" {
			return nil, fmt.Errorf("influx: query: %s", clip(st.Error))
		}
		for _, se := range st.Series {
			sc := SeriesCount{Measurement: se.Name}
			for k, v := range se.Tags {
				if v != "" {
					sc.Tags = append(sc.Tags, Tag{Key: k, Value: v})
				}
			}
			slices.SortFunc(sc.Tags, func(a, b Tag) int { return strings.Compare(a.Key, b.Key) })
			for _, v := range se.Values {
				if len(v) != 2 {
					continue
				}
				n, ok := v[0].(json.Number)
				t, err := n.Int64()
				c := number(v[1])
				if !ok || err != nil || !(c > 0) {
					continue
				}
				sc.Minutes, sc.Counts = append(sc.Minutes, t), append(sc.Counts, int64(c))
			}
			if len(sc.Minutes) > 0 {
				out = append(out, sc)
			}
		}
	}
	return out, nil
}

// Table is rows of one measurement: the column names ("time" first, in
// Unix ns) and per row the values (json.Number, string, bool or nil).
type Table struct {
	Columns []string
	Rows    [][]any
}

// Latest returns the newest limit rows of measurement tagged with the
// device, newest first (gap notices, quality findings).
func (r *Reader) Latest(ctx context.Context, measurement, device string, limit int) (Table, error) {
	q := fmt.Sprintf(`SELECT * FROM %s WHERE "device" = %s ORDER BY time DESC LIMIT %d`, ident(measurement), literal(device), limit)
	res, err := r.do(ctx, q)
	if err != nil {
		return Table{}, err
	}
	var t Table
	for _, st := range res.Results {
		if st.Error != "" {
			return Table{}, fmt.Errorf("influx: query: %s", clip(st.Error))
		}
		for _, se := range st.Series {
			t.Columns = se.Columns
			t.Rows = append(t.Rows, se.Values...)
		}
	}
	return t, nil
}

// result is /query's JSON.
type result struct {
	Results []struct {
		StatementID int `json:"statement_id"`
		Series      []struct {
			Name    string            `json:"name"`
			Tags    map[string]string `json:"tags"`
			Columns []string          `json:"columns"`
			Values  [][]any           `json:"values"`
		} `json:"series"`
		Error string `json:"error"`
	} `json:"results"`
	Error string `json:"error"`
}

// do runs the statements q and returns the decoded response.
func (r *Reader) do(ctx context.Context, q string) (*result, error) {
	form := url.Values{"q": {q}, "db": {r.o.Database}, "epoch": {"ns"}}
	if r.o.RetentionPolicy != "" {
		form.Set("rp", r.o.RetentionPolicy)
	}
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if r.header != "" {
		req.Header.Set("Authorization", r.header)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("influx: query: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.o.MaxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("influx: query: %w", err)
	}
	if int64(len(body)) > r.o.MaxResponse {
		return nil, fmt.Errorf("influx: query: response over %d bytes", r.o.MaxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("influx: query: %s: %s", resp.Status, clip(string(body)))
	}
	res := new(result)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(res); err != nil {
		return nil, fmt.Errorf("influx: query: %w", err)
	}
	if res.Error != "" {
		return nil, fmt.Errorf("influx: query: %s", clip(res.Error))
	}
	return res, nil
}

func (r *Reader) read(ctx context.Context, ranges []SeriesRange, fields []string, out []Rows) error {
	quoted := make([]string, len(fields))
	for i, f := range fields {
		quoted[i] = ident(f)
	}
	return r.query(ctx, ranges, quoted, "", out)
}

// query runs one SELECT of the expressions per range (grouped by groupTime
// then by every tag) and fills out.
func (r *Reader) query(ctx context.Context, ranges []SeriesRange, exprs []string, groupTime string, out []Rows) error {
	fields := exprs
	var q strings.Builder
	for i, sr := range ranges {
		if i > 0 {
			q.WriteString("; ")
		}
		q.WriteString("SELECT ")
		q.WriteString(strings.Join(exprs, ","))
		q.WriteString(" FROM ")
		q.WriteString(ident(sr.Measurement))
		q.WriteString(" WHERE ")
		for _, t := range sr.Tags {
			fmt.Fprintf(&q, "%s = %s AND ", ident(t.Key), literal(t.Value))
		}
		fmt.Fprintf(&q, "time >= %d AND time < %d GROUP BY %s*", sr.Start, sr.End, groupTime)
	}
	res, err := r.do(ctx, q.String())
	if err != nil {
		return err
	}
	for _, st := range res.Results {
		if st.Error != "" {
			return fmt.Errorf("influx: query: %s", clip(st.Error))
		}
		if st.StatementID < 0 || st.StatementID >= len(ranges) {
			return fmt.Errorf("influx: query: result for statement %d of %d", st.StatementID, len(ranges))
		}
		want := ranges[st.StatementID].Tags
		for _, se := range st.Series {
			if !sameTags(se.Tags, want) || len(se.Columns) != len(fields)+1 {
				continue
			}
			rows := &out[st.StatementID]
			for _, v := range se.Values {
				if len(v) != len(fields)+1 {
					return fmt.Errorf("influx: query: row of %d columns, want %d", len(v), len(fields)+1)
				}
				n, ok := v[0].(json.Number)
				if !ok {
					return fmt.Errorf("influx: query: time %v is not a number", v[0])
				}
				t, err := n.Int64()
				if err != nil {
					return fmt.Errorf("influx: query: time %v: %w", v[0], err)
				}
				f := make([]float64, len(fields))
				for i, x := range v[1:] {
					f[i] = number(x)
				}
				rows.Times = append(rows.Times, t)
				rows.Fields = append(rows.Fields, f)
			}
		}
	}
	return nil
}

// number converts a JSON value to float64: NaN unless a number.
func number(x any) float64 {
	n, ok := x.(json.Number)
	if !ok {
		return math.NaN()
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// sameTags: got (a result's tags: every tag key of the measurement, "" where
// the series has none) holds exactly want.
func sameTags(got map[string]string, want []Tag) bool {
	n := 0
	for k, v := range got {
		if v == "" {
			continue
		}
		n++
		found := false
		for _, t := range want {
			if t.Key == k {
				found = t.Value == v
				break
			}
		}
		if !found {
			return false
		}
	}
	return n == len(want)
}

// ident quotes an InfluxQL identifier.
func ident(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// literal quotes an InfluxQL string literal.
func literal(s string) string {
	return `'` + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + `'`
}
