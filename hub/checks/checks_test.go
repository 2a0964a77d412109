package checks

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

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

// TestWorkFollowsWhatIsHeard: devices offline are not checked until they
// are heard again; devices the fleet forgets have their findings resolved
// (saying why) and their state deleted; the hub's own limit finding opens
// when the device limit refuses and resolves when forgetting makes room.
func TestWorkFollowsWhatIsHeard(t *testing.T) {
	ix := testsvc.StartInflux(t)
	dbName := ix.NewDatabase(t)
	w, err := influx.New(influx.Options{URL: ix.URL, Bucket: dbName + "/autogen", Token: ix.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	db := bolttest.Open(t, nil)
	win, err := window.New(window.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := ledger.Init(tx); err != nil {
			return err
		}
		return win.Init(tx)
	}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	now := t0
	const n = 100
	fl := fleet.New(fleet.Options{MaxDevices: n})
	r, err := New(Options{DB: db, Windows: win, Influx: w, Fleet: fl, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	status := func(device string) bool {
		return fl.Status(&protocol.Status{Device: device, State: protocol.StateOnline, Time: now.UnixNano()}, now)
	}
	once := func() {
		t.Helper()
		if _, err := r.Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checked := func() int { return int(promtest.ToFloat64(r.metrics.Checked)) }
	open := func(k quality.Kind) int { return int(promtest.ToFloat64(r.metrics.Open.WithLabelValues(string(k)))) }
	keys := func() int {
		var k int
		db.View(func(tx *bolt.Tx) error { k = tx.Bucket(bucket).Stats().KeyN; return nil })
		return k
	}

	for i := range n {
		status(fmt.Sprintf("gw-%03d", i))
	}
	if status("gw-new") {
		t.Fatal("a device beyond the limit admitted")
	}
	once()
	if checked() != n || open(quality.Limit) != 1 {
		t.Fatalf("first run: %d checked, %d limit findings", checked(), open(quality.Limit))
	}
	now = t0.Add(time.Minute)
	once()
	if checked() != n {
		t.Fatalf("alive: %d checked, want %d", checked(), n)
	}
	now = t0.Add(4 * time.Minute)
	once()
	if open(quality.Offline) != n {
		t.Fatalf("%d offline", open(quality.Offline))
	}
	now = t0.Add(5 * time.Minute)
	once()
	if checked() != 0 {
		t.Fatalf("offline devices checked: %d", checked())
	}
	now = t0.Add(6 * time.Minute)
	status("gw-007")
	once()
	if checked() != 1 || open(quality.Offline) != n-1 {
		t.Fatalf("one back: %d checked, %d offline", checked(), open(quality.Offline))
	}

	// 72 hours on, the fleet forgets the others.
	now = t0.Add(72*time.Hour + 5*time.Minute)
	status("gw-007")
	cut := now.Add(-72 * time.Hour)
	if got := fl.Forget(fl.Silent(cut), cut); len(got) != n-1 {
		t.Fatalf("forgot %d", len(got))
	}
	once()
	if open(quality.Offline) != 0 || open(quality.Limit) != 0 || keys() != 2 || checked() != 1 ||
		promtest.ToFloat64(r.metrics.Forgotten) != n-1 {
		t.Fatalf("after forgetting: %d offline, %d limit, %d keys (want gw-007's and the hub's), %d checked",
			open(quality.Offline), open(quality.Limit), keys(), checked())
	}
	// In InfluxDB: every offline finding resolved, saying why; the hub's
	// finding without a device.
	rows := func(q string) []testsvc.Series {
		t.Helper()
		s, err := ix.Query(dbName, q)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := rows(fmt.Sprintf(`SELECT count("open") FROM %q WHERE kind = 'offline' AND state = 'resolved' AND detail =~ /forgot the device/`, schema.QualityMeasurement))
	if len(s) == 0 || s[0].Values[0][1] != json.Number(fmt.Sprint(n-1)) {
		t.Fatalf("resolved offline rows: %v", s)
	}
	s = rows(fmt.Sprintf(`SELECT "state", "count" FROM %q WHERE kind = 'limit' AND device = ''`, schema.QualityMeasurement))
	if len(s) != 1 || len(s[0].Values) != 2 || s[0].Values[0][1] != "opened" || s[0].Values[1][1] != "resolved" {
		t.Fatalf("the hub's limit finding: %v", s)
	}
}
