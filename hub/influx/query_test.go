package influx_test

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// TestReaderReadsBackWhatWasWritten: raw rows of one series come back
// exactly (floats bit for bit, integers as float64), only the series with
// exactly the tags asked for, within the time range; several statements
// go in one request; labels with quotes and backslashes are escaped.
func TestReaderReadsBackWhatWasWritten(t *testing.T) {
	ix := testsvc.StartInflux(t)
	db := ix.NewDatabase(t)
	w, err := influx.New(influx.Options{URL: ix.URL, Bucket: db + "/autogen", Token: ix.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	tags := []influx.Tag{{Key: "device", Value: "gw-1"}, {Key: "sensor", Value: `it's "odd" \ here`}, {Key: "unit", Value: "°C"}}
	more := append(slices.Clone(tags), influx.Tag{Key: "zone", Value: "b"})
	var pts []influx.Point
	vals := []float64{21.37, 0.1 + 0.2, -1e-300, math.MaxFloat64, 5}
	for i, v := range vals {
		pts = append(pts, influx.Point{Measurement: "temperature", Tags: tags, Fields: []influx.Field{{Key: "value", Value: v}}, Time: int64(1e18) + int64(i)*1e9})
		pts = append(pts, influx.Point{Measurement: "temperature", Tags: more, Fields: []influx.Field{{Key: "value", Value: 99.0}}, Time: int64(1e18) + int64(i)*1e9})
	}
	pts = append(pts, influx.Point{Measurement: "count", Tags: tags[:2], Fields: []influx.Field{{Key: "value", Value: int64(1 << 40)}}, Time: int64(1e18)})
	if err := w.Write(context.Background(), pts); err != nil {
		t.Fatal(err)
	}
	dbName, rp := influx.DatabaseOf(db + "/autogen")
	r, err := influx.NewReader(influx.ReaderOptions{URL: ix.URL, Database: dbName, RetentionPolicy: rp, Token: ix.Token})
	if err != nil {
		t.Fatal(err)
	}
	var ranges []influx.SeriesRange
	for range 40 { // more than one request's statements
		ranges = append(ranges, influx.SeriesRange{Measurement: "temperature", Tags: tags, Start: int64(1e18) + 1e9, End: int64(1e18) + 4e9})
	}
	ranges = append(ranges, influx.SeriesRange{Measurement: "count", Tags: tags[:2], Start: 0, End: math.MaxInt64 / 2},
		influx.SeriesRange{Measurement: "absent", Tags: tags, Start: 0, End: math.MaxInt64 / 2})
	rows, err := r.Read(context.Background(), ranges, []string{"value"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		got := rows[i]
		if !slices.Equal(got.Times, []int64{1e18 + 1e9, 1e18 + 2e9, 1e18 + 3e9}) {
			t.Fatalf("range %d: times %v", i, got.Times)
		}
		for j, f := range got.Fields {
			if math.Float64bits(f[0]) != math.Float64bits(vals[j+1]) {
				t.Fatalf("range %d row %d: %v, wrote %v", i, j, f[0], vals[j+1])
			}
		}
	}
	if c := rows[40]; len(c.Times) != 1 || c.Fields[0][0] != 1<<40 {
		t.Fatalf("integer series: %+v", c)
	}
	if a := rows[41]; len(a.Times) != 0 {
		t.Fatalf("absent measurement: %+v", a)
	}
	bad, _ := influx.NewReader(influx.ReaderOptions{URL: ix.URL, Database: dbName, Token: "freshet:wrong"})
	if _, err := bad.Read(context.Background(), ranges[:1], []string{"value"}); err == nil {
		t.Fatal("a wrong token read")
	}
}
