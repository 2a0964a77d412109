package testsvc

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/internal/localsvc"
)

// Influx is a running InfluxDB 1.8 (localsvc.Influx) with test helpers.
type Influx struct{ *localsvc.Influx }

// Series is one series of an InfluxQL result.
type Series = localsvc.Series

// StartInflux starts influxd (built by `make tools` into .tools/bin, or
// $FRESHET_INFLUXD) for the duration of tb, or skips (fails when services
// are required) if it is not built.
func StartInflux(tb testing.TB) *Influx {
	tb.Helper()
	skipShort(tb, "influxd")
	path, err := ToolPath("influxd", "FRESHET_INFLUXD")
	if err != nil {
		missing(tb, "influxd 1.8", err.Error())
	}
	li, err := localsvc.NewInflux(path, tb.TempDir())
	if err != nil {
		tb.Fatalf("start influxd: %v", err)
	}
	i := &Influx{li}
	tb.Cleanup(func() {
		i.Stop()
		if tb.Failed() {
			tb.Logf("influxd log:\n%s", i.LogTail(30))
		}
	})
	return i
}

// NewDatabase creates a database with a fresh name and returns the name.
// Its v2 bucket is name + "/autogen".
func (i *Influx) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name, err := i.NewDatabaseName()
	if err != nil {
		tb.Fatal(err)
	}
	return name
}

// QueryWhole runs q, for rows written with every field they select, until
// no row comes back with a null field, and returns its series. InfluxDB 1.x
// does not commit the fields of one point together (influxdata/influxdb#8546),
// so a query that runs while a point is being written can see part of it.
func (i *Influx) QueryWhole(tb testing.TB, db, q string) []Series {
	tb.Helper()
	var series []Series
	WaitFor(tb, 10*time.Second, "a query result without partly written rows", func() error {
		s, err := i.Query(db, q)
		if err != nil {
			return err
		}
		for _, se := range s {
			for _, row := range se.Values {
				if slices.Contains(row, nil) {
					return fmt.Errorf("%s %v: row %v has a null field", se.Name, se.Tags, row)
				}
			}
		}
		series = s
		return nil
	})
	return series
}
