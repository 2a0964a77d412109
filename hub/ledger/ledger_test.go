package ledger_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/internal/bolttest"

	"github.com/freshet-iot/freshet/hub/ledger"
)

func TestSettleCompacts(t *testing.T) {
	var s ledger.State
	for _, q := range []uint64{3, 5, 2, 1, 9} {
		s.Settle(q)
	}
	if s.Through != 3 || !slices.Equal(s.Above, []uint64{5, 9}) {
		t.Fatalf("%+v", s)
	}
	s.SettleRange(4, 8) // a gap notice
	if s.Through != 9 || len(s.Above) != 0 {
		t.Fatalf("after range: %+v", s)
	}
	s.SettleRange(20, 22)
	if !s.Settled(21) || s.Settled(19) || s.Through != 9 {
		t.Fatalf("disjoint range: %+v", s)
	}
	a := s.Ack("gw-1", 7, 2)
	if a.Through != 9 || !slices.Equal(a.Applied, []uint64{20, 21}) {
		t.Fatalf("ack %+v", a)
	}
}

func TestRandomOrderEqualsSet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	seqs := r.Perm(2000)
	var s ledger.State
	for _, q := range seqs {
		s.Settle(uint64(q + 1))
	}
	if s.Through != 2000 || len(s.Above) != 0 {
		t.Fatalf("%d above, through %d", len(s.Above), s.Through)
	}
}

func TestPersist(t *testing.T) {
	db := bolttest.Open(t, nil)
	err := db.Update(func(tx *bolt.Tx) error {
		if err := ledger.Init(tx); err != nil {
			return err
		}
		s := ledger.State{Through: 41, Above: []uint64{43, 1000}}
		return ledger.Save(tx, "gw-1", 0xdeadbeef, s)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		s, err := ledger.Load(tx, "gw-1", 0xdeadbeef)
		if err != nil || s.Through != 41 || !slices.Equal(s.Above, []uint64{43, 1000}) {
			t.Fatalf("loaded %+v, %v", s, err)
		}
		if s, _ := ledger.Load(tx, "gw-1", 1); s.Through != 0 || len(s.Above) != 0 {
			t.Fatalf("unknown epoch: %+v", s)
		}
		n := 0
		ledger.Devices(tx, func(d string, e uint64, s ledger.State) error { n++; return nil })
		if n != 1 {
			t.Fatalf("%d devices", n)
		}
		return nil
	})
}
