package hub_test

import (
	"context"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/checks"
	"github.com/freshet-iot/freshet/hub/emit"
	"github.com/freshet-iot/freshet/hub/fleet"
	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/internal/bolttest"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// These tests drive one hub's parts (ledger, window state, fleet, checks,
// emitter) by hand, on an injected clock, against a real influxd: a device
// whose batches alternate between hubs, and whose agent's settled mark lags
// behind the seqs the hubs settled (hubs settled seq 2 before seq 1, and
// the agent forgot seq 2 once it was off its disk), so its statuses say
// "settled through 1" while every seq is settled.

// custodyRig is one hub's state: the part of the device's history it
// applied itself, and what it heard of the device's statuses.
type custodyRig struct {
	t        *testing.T
	db       *bolt.DB
	win      *window.Store
	fleet    *fleet.Fleet
	ix       *testsvc.Influx
	database string
	w        *influx.Writer
	now      time.Time
	checks   *checks.Runner // one, as a hub runs it: it keeps what the fleet told it
}

const (
	custodyDevice = "gw-1"
	custodyEpoch  = 0x5eed
)

// custodyBase is the start of a minute: the readings of the tests all fall
// in one 1 m window.
var custodyBase = time.Date(2026, 11, 30, 12, 40, 0, 0, time.UTC)

func newCustodyRig(t *testing.T) *custodyRig {
	ix := testsvc.StartInflux(t)
	r := &custodyRig{t: t, db: bolttest.Open(t, nil), fleet: fleet.New(fleet.Options{}), ix: ix, now: custodyBase.Add(30 * time.Second)}
	r.database = ix.NewDatabase(t)
	var err error
	r.win, err = window.New(window.Options{Sizes: []time.Duration{time.Minute}, AllowedLateness: time.Second, IdleTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = r.db.Update(func(tx *bolt.Tx) error {
		if err := r.win.Init(tx); err != nil {
			return err
		}
		return ledger.Init(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	r.w, err = influx.New(influx.Options{URL: ix.URL, Bucket: r.database + "/autogen", Token: ix.Token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.w.Close)
	return r
}

// custodyBatch is seq of the device: one temperature reading a second, for the
// seconds [from, to) after custodyBase; its Before bounds the readings of
// the seqs before it.
func custodyBatch(seq uint64, from, to int) *protocol.Batch {
	s := protocol.Series{Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Float}
	for i := from; i < to; i++ {
		s.Times = append(s.Times, custodyBase.Add(time.Duration(i)*time.Second).UnixNano())
		s.Floats = append(s.Floats, 20+float64(i)/8)
	}
	return &protocol.Batch{Version: protocol.Version, Device: custodyDevice, Epoch: custodyEpoch, Seq: seq,
		SealTime: s.Times[len(s.Times)-1], Before: custodyBase.Add(time.Duration(from-1) * time.Second).UnixNano(), Series: []protocol.Series{s}}
}

// store writes the batch's raw rows to InfluxDB, as the hub that applied
// it did.
func (r *custodyRig) store(b *protocol.Batch) {
	r.t.Helper()
	l := &influx.Lines{}
	schema.RawLines(l, b)
	if err := r.w.WriteLines(context.Background(), l); err != nil {
		r.t.Fatal(err)
	}
}

// apply is this hub applying the batch: the fleet hears of it, raw rows,
// then ledger and window state in one transaction (as hub/ingest does).
func (r *custodyRig) apply(b *protocol.Batch) {
	r.t.Helper()
	r.fleet.Batch(b, r.now)
	r.store(b)
	err := r.db.Update(func(tx *bolt.Tx) error {
		st, err := ledger.Load(tx, b.Device, b.Epoch)
		if err != nil {
			return err
		}
		st.SettleThrough(b.Settled)
		if _, err := r.win.Merge(tx, b, r.now); err != nil {
			return err
		}
		st.Apply(b.Seq, b.Before)
		st.Settle(b.Seq)
		return ledger.Save(tx, b.Device, b.Epoch, st)
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// status is the device's status at second at: nothing waiting on its disk,
// lastSeq sealed, its settled mark lagging at 1.
func (r *custodyRig) status(at int, lastSeq uint64) {
	r.fleet.Status(&protocol.Status{Device: custodyDevice, State: protocol.StateOnline, Time: custodyBase.Add(time.Duration(at) * time.Second).UnixNano(),
		Epoch: custodyEpoch, LastSeq: lastSeq, Settled: 1, ClockSynced: true,
		Sensors: []protocol.SensorStatus{{Name: "bme280", Interval: int64(time.Second)}}}, r.now)
}

// silent runs the quality checks once and returns the device's open silent findings.
func (r *custodyRig) silent() []fleet.Finding {
	r.t.Helper()
	if r.checks == nil {
		c, err := checks.New(checks.Options{DB: r.db, Windows: r.win, Influx: r.w, Fleet: r.fleet, Now: func() time.Time { return r.now }})
		if err != nil {
			r.t.Fatal(err)
		}
		r.checks = c
	}
	if _, err := r.checks.Once(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	var out []fleet.Finding
	for _, d := range r.fleet.Devices() {
		for _, f := range d.Findings {
			if d.Device == custodyDevice && f.Kind == quality.Silent {
				out = append(out, f)
			}
		}
	}
	return out
}

// A status that says nothing is waiting moves the device's progress to its
// time only at a hub that applied the last seq the agent had sealed: at
// another, the series would look silent over the seqs it never saw.
func TestStatusProgressNeedsTheLastSeq(t *testing.T) {
	r := newCustodyRig(t)
	r.apply(custodyBatch(1, 0, 10)) // seconds 0-9 here; 10-19 (seq 2) went to another hub
	r.store(custodyBatch(2, 10, 20))
	r.status(25, 2)
	if fs := r.silent(); len(fs) != 0 {
		t.Fatalf("silent findings at a hub that never saw seq 2: %+v", fs)
	}

	// Once this hub holds the last seq, the same status shows a real
	// silence: nothing after second 19.
	r.apply(custodyBatch(2, 10, 20))
	fs := r.silent()
	if len(fs) != 1 || !fs[0].Opened.Equal(custodyBase.Add(20*time.Second)) {
		t.Fatalf("silent findings %+v, want one opened at second 20", fs)
	}
}

// The windows of a device whose status says nothing is waiting, and whose
// last seq another hub applied, may hold readings only the other hub had:
// they are rebuilt from InfluxDB's raw rows before they are written.
func TestWindowOfLastSeqElsewhereIsRebuilt(t *testing.T) {
	r := newCustodyRig(t)
	r.apply(custodyBatch(1, 0, 10))
	r.store(custodyBatch(2, 10, 20)) // another hub's
	r.status(25, 2)
	r.now = r.now.Add(10 * time.Second) // past the idle timeout: the window closes
	reader, err := influx.NewReader(influx.ReaderOptions{URL: r.ix.URL, Database: r.database, Token: r.ix.Token})
	if err != nil {
		t.Fatal(err)
	}
	e, err := emit.New(emit.Options{DB: r.db, Windows: r.win, Influx: r.w, Reader: reader, Statuses: r.fleet, Now: func() time.Time { return r.now }})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := e.Once(context.Background()); err != nil || n != 1 {
		t.Fatalf("emitted %d windows (%v), want 1", n, err)
	}
	if got := promtest.ToFloat64(e.Metrics().Rebuilt); got != 1 {
		t.Errorf("rebuilt %v windows, want 1", got)
	}
	agg := custodyBase.UnixNano()
	rows, err := reader.Read(context.Background(), []influx.SeriesRange{{Measurement: "temperature_1m",
		Tags: []influx.Tag{{Key: "device", Value: custodyDevice}, {Key: "sensor", Value: "bme280"}, {Key: "unit", Value: "C"}}, Start: agg, End: agg + 1}}, []string{"count"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || len(rows[0].Fields) != 1 || rows[0].Fields[0][0] != 20 {
		t.Fatalf("stored aggregate %+v, want a count of 20 (both hubs' readings)", rows)
	}
}
