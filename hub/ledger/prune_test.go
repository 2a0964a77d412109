package ledger_test

import (
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/internal/bolttest"
)

// epochs lists the epochs the ledger holds per device.
func epochs(t *testing.T, db *bolt.DB) map[string][]uint64 {
	t.Helper()
	out := map[string][]uint64{}
	err := db.View(func(tx *bolt.Tx) error {
		return ledger.Devices(tx, func(d string, e uint64, _ ledger.State) error {
			out[d] = append(out[d], e)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTrimKeepsTheNewest: beyond the epochs kept per device, the ones that
// changed longest ago go (one never touched, as written before Touch
// existed, first); other devices are untouched.
func TestTrimKeepsTheNewest(t *testing.T) {
	db := bolttest.Open(t, nil)
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano()
	var trimmed int
	err := db.Update(func(tx *bolt.Tx) error {
		if err := ledger.Init(tx); err != nil {
			return err
		}
		if err := ledger.Save(tx, "gw-1", 100, ledger.State{Through: 1}); err != nil { // never touched
			return err
		}
		for e := uint64(1); e <= 5; e++ {
			if err := ledger.Save(tx, "gw-1", e, ledger.State{Through: e}); err != nil {
				return err
			}
			if err := ledger.Touch(tx, "gw-1", e, t0+int64(10-e)); err != nil { // epoch 1 newest
				return err
			}
		}
		if err := ledger.Save(tx, "gw-10", 9, ledger.State{Through: 1}); err != nil {
			return err
		}
		var err error
		trimmed, err = ledger.Trim(tx, "gw-1", 3)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := epochs(t, db); trimmed != 3 || !slices.Equal(got["gw-1"], []uint64{1, 2, 3}) || !slices.Equal(got["gw-10"], []uint64{9}) {
		t.Fatalf("trimmed %d, left %v", trimmed, got)
	}
}

// TestForgetAndSeen: Forget deletes a device's epochs last changed before
// the cut and keeps the others; Seen gives each device its latest change.
func TestForgetAndSeen(t *testing.T) {
	db := bolttest.Open(t, nil)
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano()
	h := int64(time.Hour)
	err := db.Update(func(tx *bolt.Tx) error {
		if err := ledger.Init(tx); err != nil {
			return err
		}
		for _, x := range []struct {
			d  string
			e  uint64
			at int64
		}{{"gw-1", 1, t0}, {"gw-1", 2, t0 + 80*h}, {"gw-2", 1, t0 + h}, {"gw-3", 7, 0}} {
			if err := ledger.Save(tx, x.d, x.e, ledger.State{Through: 3}); err != nil {
				return err
			}
			if x.at != 0 {
				if err := ledger.Touch(tx, x.d, x.e, x.at); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int64{}
	db.View(func(tx *bolt.Tx) error {
		return ledger.Seen(tx, func(d string, at int64) error { seen[d] = at; return nil })
	})
	if len(seen) != 3 || seen["gw-1"] != t0+80*h || seen["gw-2"] != t0+h || seen["gw-3"] != 0 {
		t.Fatalf("seen %v", seen)
	}
	cut := t0 + 80*h - 72*h
	err = db.Update(func(tx *bolt.Tx) error {
		for d, want := range map[string]int{"gw-1": 1, "gw-2": 1, "gw-3": 1} {
			if n, err := ledger.Forget(tx, d, cut); err != nil || n != want {
				t.Errorf("%s: forgot %d, %v; want %d", d, n, err, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := epochs(t, db); len(got) != 1 || !slices.Equal(got["gw-1"], []uint64{2}) {
		t.Fatalf("left %v", got)
	}
	db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket([]byte("ledger2_touched")).Stats().KeyN; n != 1 {
			t.Errorf("%d touch records left, want 1", n)
		}
		return nil
	})
}
