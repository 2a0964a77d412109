package ledger_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/internal/bolttest"
	"github.com/freshet-iot/freshet/protocol"
)

type rs = []protocol.SeqRange

func TestSettleCompacts(t *testing.T) {
	var s ledger.State
	for _, q := range []uint64{3, 5, 2, 1, 9} {
		s.Settle(q)
	}
	if s.Through != 3 || !slices.Equal(s.Above, rs{{First: 5, Last: 5}, {First: 9, Last: 9}}) {
		t.Fatalf("%+v", s)
	}
	s.SettleRange(4, 8) // a gap notice
	if s.Through != 9 || len(s.Above) != 0 {
		t.Fatalf("after range: %+v", s)
	}
	s.SettleRange(20, 22)
	if !s.Settled(21) || s.Settled(19) || s.Settled(23) || s.Through != 9 {
		t.Fatalf("disjoint range: %+v", s)
	}
	a := s.Ack("gw-1", 7, 21, 2, 16)
	if a.Through != 9 || !slices.Equal(a.Ranges, rs{{First: 20, Last: 22}}) {
		t.Fatalf("ack %+v", a)
	}
	s.SettleThrough(30) // the agent's settled mark
	if s.Through != 30 || len(s.Above) != 0 {
		t.Fatalf("after the mark: %+v", s)
	}
}

func TestRandomOrderEqualsSet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	seqs := r.Perm(2000)
	var s ledger.State
	for i, q := range seqs {
		s.Settle(uint64(q + 1))
		for _, p := range seqs[:i+1] {
			if !s.Settled(uint64(p + 1)) {
				t.Fatalf("%d settled, then not", p+1)
			}
		}
		if i > 100 {
			break
		}
	}
	for _, q := range seqs {
		s.Settle(uint64(q + 1))
	}
	if s.Through != 2000 || len(s.Above) != 0 {
		t.Fatalf("%d above, through %d", len(s.Above), s.Through)
	}
}

// The stall this ledger was rebuilt for: a hub that lacks a device's
// history (another hub settled seqs 1..5000) applies batch after batch. Its
// ack always settles the batch it answers, however many seqs it holds,
// and the agent's settled mark folds the history in.
func TestAckNeverStalls(t *testing.T) {
	for _, version := range []uint8{1, 2} {
		var s ledger.State
		for q := uint64(5001); q <= 8000; q += 2 { // every other seq: the other half went elsewhere
			s.Settle(q)
			a := s.Ack("gw-1", 1, q, version, 1024)
			if !a.Settled(q) {
				t.Fatalf("v%d: the ack of %d does not settle it: %d ranges from %d", version, q, len(a.Ranges), a.Ranges[0].First)
			}
			if err := validAck(a); err != nil {
				t.Fatalf("v%d: ack of %d: %v", version, q, err)
			}
		}
		if len(s.Above) != 1500 && len(s.Above) != ledger.MaxRanges {
			t.Fatalf("v%d: %d ranges", version, len(s.Above))
		}
		s.SettleThrough(7999) // the agent saw the other hub's acks
		if s.Through != 7999 || len(s.Above) != 0 {
			t.Fatalf("v%d: after the mark through %d, %d ranges above", version, s.Through, len(s.Above))
		}
	}
}

func validAck(a *protocol.Ack) error {
	_, err := protocol.NewCodec(protocol.Limits{}).EncodeAck(a)
	return err
}

// A v1 ack lists seqs one by one: a long range is cut, but never the seq
// being answered.
func TestAckV1CutsRanges(t *testing.T) {
	var s ledger.State
	s.SettleRange(10, 5000)
	a := s.Ack("gw-1", 1, 4000, 1, 1024)
	if !a.Settled(4000) || !a.Settled(2977) || a.Settled(2976) || a.Settled(4001) || validAck(a) != nil {
		t.Fatalf("ack %+v", a)
	}
	a = s.Ack("gw-1", 1, 20, 1, 1024)
	if !a.Settled(20) || !a.Settled(1033) || a.Settled(1034) || validAck(a) != nil {
		t.Fatalf("ack of 20: %+v", a)
	}
	if a := s.Ack("gw-1", 1, 4000, 2, 1024); !slices.Equal(a.Ranges, rs{{First: 10, Last: 5000}}) {
		t.Fatalf("v2 ack: %+v", a)
	}
}

func TestLocalRunsAndSharedBefore(t *testing.T) {
	var s ledger.State
	if s.SharedBefore() != math.MinInt64 || s.MaxLocal() != 0 {
		t.Fatal("empty state")
	}
	// From seq 1: nothing before the epoch's start time.
	for q := uint64(1); q <= 10; q++ {
		s.Apply(q, int64(q*100))
	}
	if !slices.Equal(s.Local, []ledger.Run{{First: 1, Last: 10, Before: 100}}) || s.SharedBefore() != 100 || s.MaxLocal() != 10 {
		t.Fatalf("%+v", s.Local)
	}
	// 11 went to another hub: the hole is shared up to 12's Before.
	s.Apply(12, 1200)
	s.Apply(13, 1300)
	if s.SharedBefore() != 1200 || s.MaxLocal() != 13 {
		t.Fatalf("with a hole: %+v", s.Local)
	}
	// 11 arrives after all (a redelivery, reordered): whole again.
	s.Apply(11, 1100)
	s.Apply(11, 1100)
	if !slices.Equal(s.Local, []ledger.Run{{First: 1, Last: 13, Before: 100}}) || s.SharedBefore() != 100 {
		t.Fatalf("hole filled: %+v", s.Local)
	}
	// A run grown downwards takes the Before of its new first seq.
	var u ledger.State
	u.Apply(5, 500)
	u.Apply(4, 400)
	if !slices.Equal(u.Local, []ledger.Run{{First: 4, Last: 5, Before: 400}}) {
		t.Fatalf("downwards: %+v", u.Local)
	}
	// Bounded: the oldest runs are forgotten.
	for q := uint64(100); q < 100+4*ledger.MaxRuns; q += 2 {
		u.Apply(q, int64(q))
	}
	if len(u.Local) != ledger.MaxRuns || u.Local[len(u.Local)-1].First != 100+4*ledger.MaxRuns-2 {
		t.Fatalf("%d runs, last %+v", len(u.Local), u.Local[len(u.Local)-1])
	}
}

func TestPersist(t *testing.T) {
	db := bolttest.Open(t, nil)
	want := ledger.State{Through: 41, Above: rs{{First: 43, Last: 43}, {First: 1000, Last: 1200}},
		Local: []ledger.Run{{First: 1, Last: 30, Before: -5}, {First: 43, Last: 43, Before: 1 << 62}}}
	err := db.Update(func(tx *bolt.Tx) error {
		if err := ledger.Init(tx); err != nil {
			return err
		}
		if err := ledger.Save(tx, "gw-1", 0xdeadbeef, want); err != nil {
			return err
		}
		other := ledger.State{Local: []ledger.Run{{First: 7, Last: 9, Before: 2000}}}
		return ledger.Save(tx, "gw-1", 2, other)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		s, err := ledger.Load(tx, "gw-1", 0xdeadbeef)
		if err != nil || s.Through != 41 || !slices.Equal(s.Above, want.Above) || !slices.Equal(s.Local, want.Local) {
			t.Fatalf("loaded %+v, %v", s, err)
		}
		if s, _ := ledger.Load(tx, "gw-1", 1); s.Through != 0 || len(s.Above) != 0 {
			t.Fatalf("unknown epoch: %+v", s)
		}
		n := 0
		ledger.Devices(tx, func(d string, e uint64, s ledger.State) error { n++; return nil })
		if n != 2 {
			t.Fatalf("%d devices", n)
		}
		c, err := ledger.CustodyOf(tx, "gw-1")
		if err != nil || c.SharedBefore != 1<<62 || c.MaxLocal[0xdeadbeef] != 43 || c.MaxLocal[2] != 9 {
			t.Fatalf("custody %+v, %v", c, err)
		}
		// The last seq sealed says whether this hub holds the latest
		// readings; nothing sealed, or another epoch, says it does not.
		for _, h := range []struct {
			epoch, last uint64
			want        bool
		}{{0xdeadbeef, 43, true}, {0xdeadbeef, 42, true}, {0xdeadbeef, 44, false}, {2, 9, true}, {2, 10, false}, {3, 1, false}, {0xdeadbeef, 0, false}} {
			if got := c.HoldsLast(h.epoch, h.last); got != h.want {
				t.Errorf("HoldsLast(%x, %d) = %v, want %v", h.epoch, h.last, got, h.want)
			}
		}
		if c, _ := ledger.CustodyOf(tx, "gw-"); c.MaxLocal != nil {
			t.Fatalf("a device id's prefix has custody %+v", c)
		}
		return nil
	})
}

// A hub.db written before protocol version 2 keeps its settled seqs.
func TestMigrateV1(t *testing.T) {
	db := bolttest.Open(t, nil)
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("ledger"))
		if err != nil {
			return err
		}
		k := binary.BigEndian.AppendUint64(append([]byte("gw-1"), 0), 5)
		v := binary.AppendUvarint(nil, 41)                        // through
		v = binary.AppendUvarint(v, 2)                            // two seqs above
		v = binary.AppendUvarint(binary.AppendUvarint(v, 2), 957) // 43, 1000
		if err := b.Put(k, v); err != nil {
			return err
		}
		return ledger.Init(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("ledger")) != nil {
			t.Error("the old bucket is still there")
		}
		s, err := ledger.Load(tx, "gw-1", 5)
		if err != nil || s.Through != 41 || !slices.Equal(s.Above, rs{{First: 43, Last: 43}, {First: 1000, Last: 1000}}) || len(s.Local) != 0 {
			t.Fatalf("migrated %+v, %v", s, err)
		}
		return nil
	})
}
