package outbox_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t     *testing.T
	path  string
	clk   *clock
	opts  outbox.Options
	ob    *outbox.Outbox
	truth map[int64]bool // readings committed (OnCommit), keyed by their unique time
	mu    sync.Mutex
}

func newEnv(t *testing.T, mod func(*outbox.Options)) *env {
	e := &env{t: t, path: filepath.Join(t.TempDir(), "outbox.db"), clk: &clock{t: time.Unix(1_700_000_000, 0)}, truth: map[int64]bool{}}
	e.opts = outbox.Options{Path: e.path, Device: "gw-1", Now: e.clk.Now, MaxBatchAge: 10 * time.Second,
		OnCommit: func(rs []protocol.Reading) {
			e.mu.Lock()
			defer e.mu.Unlock()
			for _, r := range rs {
				if e.truth[r.Time] {
					t.Errorf("reading at %d committed twice", r.Time)
				}
				e.truth[r.Time] = true
			}
		}}
	if mod != nil {
		mod(&e.opts)
	}
	e.open()
	t.Cleanup(func() { e.ob.Close() })
	return e
}

func (e *env) open() {
	e.t.Helper()
	ob, err := outbox.Open(e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ob = ob
}

func (e *env) reopen(crash bool) {
	e.t.Helper()
	if crash {
		outbox.Crash(e.ob)
	} else if err := e.ob.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

// readings returns n readings with unique times starting at seq0 seconds
// past the clock's base (times identify readings in these tests).
func readings(seq0, n int) []protocol.Reading {
	out := make([]protocol.Reading, n)
	for i := range out {
		k := seq0 + i
		out[i] = protocol.Reading{Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01,
			Time: int64(1_700_000_000+k) * 1e9, Float: 20 + float64(k%100)/100}
	}
	return out
}

func (e *env) commit() {
	e.t.Helper()
	if err := e.ob.Commit(); err != nil {
		e.t.Fatal(err)
	}
}

// drain reads every sealed unsettled batch in order, decoding it.
func (e *env) drain() []*protocol.Batch {
	e.t.Helper()
	var out []*protocol.Batch
	after := uint64(0)
	for {
		seq, data, ok, err := e.ob.Next(after)
		if err != nil {
			e.t.Fatal(err)
		}
		if !ok {
			return out
		}
		b, err := protocol.DecodeBatch(data)
		if err != nil {
			e.t.Fatalf("batch %d does not decode: %v", seq, err)
		}
		if b.Seq != seq || b.Epoch != e.ob.Epoch() || b.Device != "gw-1" {
			e.t.Fatalf("batch header %d/%x/%s, want seq %d epoch %x", b.Seq, b.Epoch, b.Device, seq, e.ob.Epoch())
		}
		out = append(out, b)
		after = seq
	}
}

func times(bs []*protocol.Batch) []int64 {
	var ts []int64
	for _, b := range bs {
		for _, s := range b.Series {
			ts = append(ts, s.Times...)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}

func ack(e *env, through uint64, applied ...uint64) error {
	a := &protocol.Ack{Device: "gw-1", Epoch: e.ob.Epoch(), Through: through}
	for _, s := range applied {
		a.Ranges = append(a.Ranges, protocol.SeqRange{First: s, Last: s})
	}
	return e.ob.Ack(a)
}

func TestCommitSealAckDelete(t *testing.T) {
	e := newEnv(t, nil)
	e.ob.Add(readings(0, 5))
	e.commit()
	if bs := e.drain(); len(bs) != 0 {
		t.Fatalf("sealed before MaxBatchAge: %d batches", len(bs))
	}
	if st := e.ob.Stats(); st.Backlog.Readings != 5 || st.Committed != 5 || st.Pending != 0 {
		t.Fatalf("stats after commit: %+v", st)
	}
	e.clk.Add(10 * time.Second)
	e.ob.Add(readings(5, 5))
	e.commit() // age reached: the open batch (all 10) is sealed
	bs := e.drain()
	if len(bs) != 1 || bs[0].Seq != 1 || bs[0].Readings() != 10 {
		t.Fatalf("got %d batches, first with %d readings; want 1 batch of 10", len(bs), bs[0].Readings())
	}
	if bs[0].Series[0].Floats[1] != 20.01 {
		t.Fatalf("value %v, want 20.01", bs[0].Series[0].Floats[1])
	}
	if err := ack(e, 1); err != nil {
		t.Fatal(err)
	}
	if !e.ob.Settled(1) || len(e.drain()) != 0 {
		t.Fatal("an acked batch is still offered")
	}
	e.commit()
	st := e.ob.Stats()
	if st.Backlog.Readings != 0 || st.Backlog.Batches != 0 || st.Backlog.Bytes != 0 || st.Settled != 10 {
		t.Fatalf("after ack and commit: %+v", st)
	}
}

func TestSealBySizeNeverOverLimit(t *testing.T) {
	e := newEnv(t, func(o *outbox.Options) { o.Limits.MaxMessageBytes = 1024 })
	e.ob.Add(readings(0, 5000))
	e.commit()
	bs := e.drain()
	if len(bs) < 5 {
		t.Fatalf("%d batches for 5000 readings at 1 KiB", len(bs))
	}
	for i, b := range bs {
		if b.Seq != uint64(i+1) {
			t.Fatalf("batch %d has seq %d: seqs must be contiguous from 1", i, b.Seq)
		}
		data, _ := protocol.EncodeBatch(b)
		if len(data) > 1024 {
			t.Fatalf("batch %d is %d bytes", b.Seq, len(data))
		}
	}
	e.clk.Add(time.Minute)
	e.commit()
	if got := len(times(e.drain())); got != 5000 {
		t.Fatalf("%d readings sealed, want 5000", got)
	}
}

// TestRestartContinues: after a clean close or a crash the outbox has the
// same epoch, the open batch is rebuilt from its chunks, unacked batches are
// offered again, and seqs continue.
func TestRestartContinues(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprint("crash=", crash), func(t *testing.T) {
			e := newEnv(t, nil)
			epoch := e.ob.Epoch()
			e.ob.Add(readings(0, 100))
			e.clk.Add(time.Minute)
			e.commit() // batch 1 sealed? no: the open batch only started now
			e.clk.Add(time.Minute)
			e.commit() // batch 1 sealed
			e.ob.Add(readings(100, 50))
			e.commit()                 // open batch: 50 readings in a chunk
			e.ob.Add(readings(150, 7)) // never committed: lost in a crash, dropped and reported by Close
			if err := ack(e, 0); err != nil {
				t.Fatal(err)
			}
			e.reopen(crash)
			if e.ob.Epoch() != epoch {
				t.Fatal("epoch changed across a restart")
			}
			bs := e.drain()
			if len(bs) != 1 || bs[0].Seq != 1 || bs[0].Readings() != 100 {
				t.Fatalf("after restart: %d batches", len(bs))
			}
			e.clk.Add(time.Minute)
			e.commit()
			bs = e.drain()
			if len(bs) != 2 || bs[1].Seq != 2 || bs[1].Readings() != 50 {
				t.Fatalf("open batch after restart: %d batches, last %+v", len(bs), bs[len(bs)-1].Seq)
			}
			if g := bs[1].Gap; crash && g != nil || !crash && (g == nil || g.Readings != 7) {
				t.Fatalf("gap notice after restart (crash %v): %+v, want the 7 queued at a clean close", crash, g)
			}
			if got := len(times(bs)); got != 150 {
				t.Fatalf("%d readings, want the 150 committed", got)
			}
		})
	}
}

func TestRogueAcksChangeNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.ob.Add(readings(0, 10))
	e.clk.Add(time.Minute)
	e.commit()
	e.clk.Add(time.Minute)
	e.commit()
	epoch := e.ob.Epoch()
	for _, tc := range []struct {
		ack  protocol.Ack
		want error
	}{
		{protocol.Ack{Device: "gw-2", Epoch: epoch, Through: 1}, outbox.ErrForeignAck},
		{protocol.Ack{Device: "gw-1", Epoch: epoch + 1, Through: 1}, outbox.ErrUnknownEpoch},
		{protocol.Ack{Device: "gw-1", Epoch: epoch, Through: 2}, outbox.ErrUnsentSeq},
		{protocol.Ack{Device: "gw-1", Epoch: epoch, Through: 0, Ranges: []protocol.SeqRange{{First: 1, Last: 1}, {First: 9, Last: 9}}}, outbox.ErrUnsentSeq},
		{protocol.Ack{Device: "gw-1", Epoch: epoch, Rejected: []protocol.Rejection{{Seq: 5, Reason: "x"}}}, outbox.ErrUnsentSeq},
	} {
		if err := e.ob.Ack(&tc.ack); !errors.Is(err, tc.want) {
			t.Errorf("Ack(%+v) = %v, want %v", tc.ack, err, tc.want)
		}
	}
	e.commit()
	if len(e.drain()) != 1 || e.ob.Stats().Backlog.Readings != 10 {
		t.Fatal("a rogue ack deleted data")
	}
	ign := e.ob.Stats().AcksIgnored
	if ign["foreign_device"] != 1 || ign["unknown_epoch"] != 1 || ign["unsent_seq"] != 3 {
		t.Fatalf("ignored acks counted %v", ign)
	}
}

func TestRejectedBatchIsSettledAndCounted(t *testing.T) {
	e := newEnv(t, nil)
	e.ob.Add(readings(0, 10))
	e.clk.Add(time.Minute)
	e.commit()
	e.clk.Add(time.Minute)
	e.commit()
	if err := e.ob.Ack(&protocol.Ack{Device: "gw-1", Epoch: e.ob.Epoch(), Through: 1,
		Rejected: []protocol.Rejection{{Seq: 1, Reason: "not_finite", Detail: "x"}}}); err != nil {
		t.Fatal(err)
	}
	e.commit()
	if st := e.ob.Stats(); st.Rejected != 10 || st.Backlog.Readings != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAckOutOfOrder: applied seqs above a hole are settled; the hole is offered.
func TestAckOutOfOrder(t *testing.T) {
	e := newEnv(t, func(o *outbox.Options) { o.Limits.MaxMessageBytes = 512 })
	e.ob.Add(readings(0, 1500))
	e.commit()
	bs := e.drain()
	if len(bs) < 5 {
		t.Fatalf("%d batches", len(bs))
	}
	if err := ack(e, 1, 3, 4); err != nil {
		t.Fatal(err)
	}
	seq, _, ok, _ := e.ob.Next(0)
	if !ok || seq != 2 {
		t.Fatalf("Next = %d, want the hole 2", seq)
	}
	seq, _, _, _ = e.ob.Next(2)
	if seq != 5 {
		t.Fatalf("Next after 2 = %d, want 5", seq)
	}
	if err := ack(e, 1, 2); err != nil {
		t.Fatal(err)
	}
	for _, s := range []uint64{1, 2, 3, 4} {
		if !e.ob.Settled(s) {
			t.Errorf("seq %d not settled", s)
		}
	}
}

// accounting checks that every reading ever added is exactly one of:
// offered in a sealed batch, in the open batch, or reported dropped.
func accounting(t *testing.T, e *env, added int, dropped []*protocol.Gap) {
	t.Helper()
	e.clk.Add(time.Hour)
	e.commit() // seal whatever is open (and any gap notice)
	bs := e.drain()
	var gapReadings uint64
	for _, b := range bs {
		if b.Gap != nil {
			gapReadings += b.Gap.Readings
		}
	}
	for _, g := range dropped {
		gapReadings += g.Readings
	}
	sealed := len(times(bs))
	st := e.ob.Stats()
	if uint64(sealed)+gapReadings+st.Settled != uint64(added) {
		t.Fatalf("accounting: %d sealed + %d reported dropped + %d settled != %d added", sealed, gapReadings, st.Settled, added)
	}
	if st.DroppedEpoch != gapReadings {
		t.Fatalf("DroppedEpoch %d, gap notices report %d", st.DroppedEpoch, gapReadings)
	}
}

func TestDropOldestNeverDropsPublished(t *testing.T) {
	e := newEnv(t, func(o *outbox.Options) {
		o.Limits.MaxMessageBytes = 1024
		o.MaxBytes = 16 * 1024
		o.PublishLease = 2
	})
	// Fill a few batches and "publish" the first two.
	e.ob.Add(readings(0, 2000))
	e.commit()
	if err := e.ob.MarkPublishing(2); err != nil {
		t.Fatal(err)
	}
	if e.ob.Published() != 4 {
		t.Fatalf("publish watermark %d, want 2+lease 2", e.ob.Published())
	}
	added := 2000
	for i := range 40 {
		e.ob.Add(readings(added, 500))
		added += 500
		e.clk.Add(time.Second)
		e.commit()
		if st := e.ob.Stats(); int64(st.Backlog.Bytes) > 16*1024+1024 {
			t.Fatalf("round %d: backlog %d bytes over the bound", i, st.Backlog.Bytes)
		}
	}
	bs := e.drain()
	if bs[0].Seq != 1 || bs[1].Seq != 2 || bs[2].Seq != 3 || bs[3].Seq != 4 {
		t.Fatalf("published batches 1..4 were dropped: first seqs %d %d %d %d", bs[0].Seq, bs[1].Seq, bs[2].Seq, bs[3].Seq)
	}
	// Some batch carries a gap notice naming dropped seqs, all above 4.
	var gaps []*protocol.Gap
	for _, b := range bs {
		if b.Gap != nil {
			gaps = append(gaps, b.Gap)
			for _, r := range b.Gap.Seqs {
				if r.First <= 4 {
					t.Fatalf("gap names seq %d, which may have been published", r.First)
				}
			}
		}
	}
	if len(gaps) == 0 {
		t.Fatal("drops happened but no gap notice was sealed")
	}
	// Dropped seqs plus offered seqs cover every seq sealed, exactly once.
	seen := map[uint64]int{}
	for _, b := range bs {
		seen[b.Seq]++
	}
	for _, g := range gaps {
		for _, r := range g.Seqs {
			for s := r.First; s <= r.Last; s++ {
				seen[s]++
			}
		}
	}
	last := bs[len(bs)-1].Seq
	for s := uint64(1); s <= last; s++ {
		if seen[s] != 1 {
			t.Fatalf("seq %d accounted %d times (offered or reported dropped)", s, seen[s])
		}
	}
	accounting(t, e, added, nil)
}

func TestDropNewest(t *testing.T) {
	e := newEnv(t, func(o *outbox.Options) {
		o.Limits.MaxMessageBytes = 1024
		o.MaxBytes = 16 * 1024
		o.Policy = outbox.DropNewest
	})
	added := 0
	for range 60 {
		e.ob.Add(readings(added, 500))
		added += 500
		e.clk.Add(time.Second)
		e.commit()
	}
	st := e.ob.Stats()
	if st.DroppedEpoch == 0 {
		t.Fatal("nothing dropped")
	}
	bs := e.drain()
	// The oldest data is kept: batch 1 holds the very first reading.
	if bs[0].Seq != 1 || times(bs[:1])[0] != readings(0, 1)[0].Time {
		t.Fatal("drop_newest dropped old data")
	}
	accounting(t, e, added, nil)
}

// TestFailedCommitsKeepAccounts: a commit that fails rolls back whole: the
// readings it took are queued again (also those drop_newest was dropping),
// a rejected batch is still counted as rejected when it is deleted later,
// and the durable drop count is the one reported.
func TestFailedCommitsKeepAccounts(t *testing.T) {
	failed := errors.New("injected write failure")
	t.Run("drop_newest", func(t *testing.T) {
		e := newEnv(t, func(o *outbox.Options) {
			o.Limits.MaxMessageBytes = 1024
			o.MaxBytes = 16 * 1024
			o.Policy = outbox.DropNewest
		})
		added := 0
		for e.ob.Stats().DroppedEpoch == 0 { // up to the bound
			e.ob.Add(readings(added, 500))
			added += 500
			e.clk.Add(time.Second)
			e.commit()
		}
		e.ob.Add(readings(added, 100))
		added += 100
		before := e.ob.Stats()
		outbox.FailNextTx(e.ob, failed)
		if err := e.ob.Commit(); !errors.Is(err, failed) {
			t.Fatalf("commit: %v", err)
		}
		if st := e.ob.Stats(); st.Pending != 100 || st.Dropped != before.Dropped || st.DroppedEpoch != before.DroppedEpoch {
			t.Fatalf("after a failed commit: pending %d dropped %d (epoch %d), want 100 queued and %d (%d)",
				st.Pending, st.Dropped, st.DroppedEpoch, before.Dropped, before.DroppedEpoch)
		}
		e.commit()
		accounting(t, e, added, nil)
	})
	t.Run("rejected", func(t *testing.T) {
		e := newEnv(t, nil)
		e.ob.Add(readings(0, 10))
		e.clk.Add(time.Minute)
		e.commit()
		e.clk.Add(time.Minute)
		e.commit() // sealed
		if err := e.ob.Ack(&protocol.Ack{Device: "gw-1", Epoch: e.ob.Epoch(), Through: 1,
			Rejected: []protocol.Rejection{{Seq: 1, Reason: "not_finite"}}}); err != nil {
			t.Fatal(err)
		}
		outbox.FailNextTx(e.ob, failed)
		if err := e.ob.Commit(); !errors.Is(err, failed) {
			t.Fatalf("commit: %v", err)
		}
		outbox.FailNextTx(e.ob, failed) // and the acks-first transaction after it
		if err := e.ob.Commit(); !errors.Is(err, failed) {
			t.Fatalf("commit: %v", err)
		}
		e.commit()
		if st := e.ob.Stats(); st.Rejected != 10 || st.Settled != 10 || st.Backlog.Readings != 0 || st.CommitErrors != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("landed", func(t *testing.T) {
		// A commit that wrote its state but reported a failure (a failed
		// fsync after the meta page): kept as committed, not requeued.
		e := newEnv(t, nil)
		e.ob.Add(readings(0, 30))
		outbox.FailAfterNextTx(e.ob, failed)
		if err := e.ob.Commit(); !errors.Is(err, failed) {
			t.Fatalf("commit: %v", err)
		}
		if st := e.ob.Stats(); st.Pending != 0 || st.Committed != 30 || st.CommitErrors != 1 {
			t.Fatalf("after a landed commit that failed: %+v", st)
		}
		e.ob.Add(readings(30, 5))
		e.commit()
		accounting(t, e, 35, nil)
	})
	t.Run("durable drop count", func(t *testing.T) {
		e := newEnv(t, func(o *outbox.Options) { o.MaxPending = 100 })
		e.ob.Add(readings(0, 150))
		e.commit()
		outbox.FailNextTx(e.ob, failed)
		e.ob.Add(readings(150, 10))
		if err := e.ob.Commit(); !errors.Is(err, failed) {
			t.Fatalf("commit: %v", err)
		}
		if st := e.ob.Stats(); st.DroppedEpoch != 50 {
			t.Fatalf("DroppedEpoch %d after a failed commit, want 50", st.DroppedEpoch)
		}
		e.commit()
		e.reopen(false)
		if st := e.ob.Stats(); st.DroppedEpoch != 50 {
			t.Fatalf("DroppedEpoch %d after reopening, want 50", st.DroppedEpoch)
		}
	})
}

// TestIdleCommitSkipped: a commit with nothing to record runs no
// transaction (it would write two pages and sync twice); one that has an
// ack to apply or a batch old enough to seal still does.
func TestIdleCommitSkipped(t *testing.T) {
	e := newEnv(t, nil) // MaxBatchAge 10 s
	e.ob.Add(readings(0, 5))
	e.commit()
	tx := outbox.TxID(e.ob)
	e.clk.Add(time.Second)
	e.commit()
	if got := outbox.TxID(e.ob); got != tx {
		t.Fatalf("a commit with nothing new ran transaction %d (last was %d)", got, tx)
	}
	e.clk.Add(10 * time.Second)
	e.commit()
	st := e.ob.Stats()
	if st.LastSeq != 1 || outbox.TxID(e.ob) != tx+1 {
		t.Fatalf("the open batch past MaxBatchAge: last seq %d, tx %d; want it sealed in tx %d", st.LastSeq, outbox.TxID(e.ob), tx+1)
	}
	if err := e.ob.Ack(&protocol.Ack{Device: "gw-1", Epoch: st.Epoch, Through: 1}); err != nil {
		t.Fatal(err)
	}
	e.commit()
	if st := e.ob.Stats(); st.Backlog.Batches != 0 || st.Settled != 5 || outbox.TxID(e.ob) != tx+2 {
		t.Fatalf("after an ack: backlog %+v, settled %d, tx %d; want the batch deleted in tx %d", st.Backlog, st.Settled, outbox.TxID(e.ob), tx+2)
	}
	e.commit()
	if got := outbox.TxID(e.ob); got != tx+2 {
		t.Fatalf("an idle commit after the ack ran transaction %d", got)
	}
}

func TestPendingOverflowIsCounted(t *testing.T) {
	e := newEnv(t, func(o *outbox.Options) { o.MaxPending = 100 })
	e.ob.Add(readings(0, 150))
	if st := e.ob.Stats(); st.Pending != 100 || st.Dropped != 50 {
		t.Fatalf("pending %d dropped %d", st.Pending, st.Dropped)
	}
	e.commit()
	accounting(t, e, 150, nil)
}

func TestCorruptFileMovedAside(t *testing.T) {
	t.Run("meta pages", func(t *testing.T) {
		testCorrupt(t, func(path string) {
			// Scribble over the file: bbolt's meta pages fail their checksum.
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, 8192)
			for i := range junk {
				junk[i] = byte(i * 7)
			}
			f.WriteAt(junk, 0)
			f.Close()
		})
	})
	t.Run("chunk", func(t *testing.T) {
		// A chunk bbolt stores fine but that does not decode: before, Open
		// failed on it every time and the agent could never start.
		testCorrupt(t, func(path string) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("chunks")).Put([]byte("\xff\xff\xff\xff\xff\xff\xff\xff"), []byte("not msgpack"))
			}); err != nil {
				t.Fatal(err)
			}
		})
	})
}

func testCorrupt(t *testing.T, corrupt func(path string)) {
	e := newEnv(t, nil)
	e.ob.Add(readings(0, 10))
	e.commit()
	old := e.ob.Epoch()
	outbox.Crash(e.ob)
	corrupt(e.path)
	e.open()
	st := e.ob.Stats()
	if st.Epoch == old || st.Notice == "" || st.LastSeq != 0 {
		t.Fatalf("after corruption: epoch %x (old %x), notice %q, last seq %d", st.Epoch, old, st.Notice, st.LastSeq)
	}
	aside, _ := filepath.Glob(e.path + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("corrupt file not kept aside: %v", aside)
	}
	// The new outbox works.
	e.ob.Add(readings(100, 3))
	e.clk.Add(time.Minute)
	e.commit()
	e.clk.Add(time.Minute)
	e.commit()
	if bs := e.drain(); len(bs) != 1 || bs[0].Seq != 1 {
		t.Fatalf("new epoch batches: %d", len(bs))
	}
}

func TestGapSurvivesRestart(t *testing.T) {
	e := newEnv(t, func(o *outbox.Options) { o.MaxPending = 10 })
	e.ob.Add(readings(0, 15)) // 5 dropped in memory
	e.commit()
	e.reopen(true) // the gap is durable with the commit that recorded it
	e.clk.Add(time.Hour)
	e.commit()
	bs := e.drain()
	var gap *protocol.Gap
	for _, b := range bs {
		if b.Gap != nil {
			gap = b.Gap
		}
	}
	if gap == nil || gap.Readings != 5 || len(gap.Seqs) != 0 {
		t.Fatalf("gap after restart: %+v", gap)
	}
}

// TestCompaction: after a large backlog drains, the file shrinks, and the
// outbox carries on with the same epoch and seqs.
func TestCompaction(t *testing.T) {
	e := newEnv(t, func(o *outbox.Options) { o.MaxBytes = 64 << 20 })
	epoch := e.ob.Epoch()
	added := 0
	for range 20 {
		rs := make([]protocol.Reading, 20000)
		for i := range rs {
			rs[i] = protocol.Reading{Sensor: "s", Metric: "noise", Type: protocol.Float,
				Time: int64(1_700_000_000_000+added+i) * 1e6, Float: float64((added+i)*7919%1000003) / 7.0}
		}
		added += len(rs)
		e.ob.Add(rs)
		e.commit()
	}
	e.clk.Add(time.Minute)
	e.commit()
	big := e.ob.Stats()
	if big.FileBytes < outbox.CompactMinBytes {
		t.Fatalf("file only %d bytes; the test needs a big one", big.FileBytes)
	}
	if ok, err := e.ob.MaybeCompact(); ok || err != nil {
		t.Fatalf("compacted a full file: %v %v", ok, err)
	}
	if err := ack(e, big.LastSeq); err != nil {
		t.Fatal(err)
	}
	e.commit()
	ok, err := e.ob.MaybeCompact()
	if !ok || err != nil {
		t.Fatalf("MaybeCompact = %v, %v", ok, err)
	}
	small := e.ob.Stats()
	if small.FileBytes*10 > big.FileBytes || small.Epoch != epoch || small.LastSeq != big.LastSeq {
		t.Fatalf("after compaction: %d bytes (was %d), epoch %x, last seq %d (was %d)", small.FileBytes, big.FileBytes, small.Epoch, small.LastSeq, big.LastSeq)
	}
	t.Logf("compacted %d -> %d bytes", big.FileBytes, small.FileBytes)
	e.ob.Add(readings(10_000_000, 10))
	e.clk.Add(time.Minute)
	e.commit()
	e.clk.Add(time.Minute)
	e.commit()
	bs := e.drain()
	if len(bs) != 1 || bs[0].Seq != big.LastSeq+1 {
		t.Fatalf("after compaction: %d batches, first seq %d, want %d", len(bs), bs[0].Seq, big.LastSeq+1)
	}
	e.reopen(true)
	if e.ob.Epoch() != epoch {
		t.Fatal("epoch lost after compaction and a crash")
	}
}

// TestSettledMarkAndBefore: each sealed batch carries the agent's settled
// mark (a hub that lacks the history starts there) and Before, which
// bounds every reading sealed earlier (the clock at the epoch's start
// before any); both survive a restart.
func TestSettledMarkAndBefore(t *testing.T) {
	e := newEnv(t, nil)
	start := e.clk.Now().UnixNano()
	seal := func(from, n int) {
		e.ob.Add(readings(from, n))
		e.commit()
		e.clk.Add(10 * time.Second)
		e.commit() // old enough: sealed
	}
	seal(0, 5)  // seq 1: times 0..4 s
	seal(20, 5) // seq 2: 20..24 s
	bs := e.drain()
	if len(bs) != 2 || bs[0].Settled != 0 || bs[0].Before != start || bs[1].Settled != 0 || bs[1].Before != readings(4, 1)[0].Time {
		t.Fatalf("batches %+v %+v", bs[0], bs[1])
	}
	if err := ack(e, 0, 2); err != nil { // 2 settled, 1 not: the mark stays
		t.Fatal(err)
	}
	seal(10, 5) // seq 3: 10..14 s, older than seq 2's
	if b := e.drain()[1]; b.Seq != 3 || b.Settled != 0 || b.Before != readings(24, 1)[0].Time {
		t.Fatalf("seq 3: settled %d before %d", b.Settled, b.Before)
	}
	if err := ack(e, 2); err != nil { // the hub's next ack: 1 and 2
		t.Fatal(err)
	}
	e.commit()
	if st := e.ob.Stats(); st.SettledMark != 2 {
		t.Fatalf("mark %d, want 2", st.SettledMark)
	}
	e.reopen(true)
	if st := e.ob.Stats(); st.SettledMark != 2 {
		t.Fatalf("after a crash the mark is %d, want 2 (seq 3 is the oldest batch left)", st.SettledMark)
	}
	seal(40, 1) // seq 4
	bs = e.drain()
	if b := bs[len(bs)-1]; b.Seq != 4 || b.Settled != 2 || b.Before != readings(24, 1)[0].Time {
		t.Fatalf("seq 4 after the crash: settled %d before %d", b.Settled, b.Before)
	}
}

// TestSettledMarkRisesPastDeletedAcks: seqs acked above the mark are
// deleted and forgotten at the next commit; when the seq below them is
// acked later (by another hub, whose ack names only it), the mark rises
// past them all, to below the oldest batch left, as Open would reckon it.
// (It stayed at that seq, so every hub took the device for moved.)
func TestSettledMarkRisesPastDeletedAcks(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 4 {
		e.ob.Add(readings(10*i, 2))
		e.commit()
		e.clk.Add(10 * time.Second)
		e.commit() // sealed: seqs 1..4
	}
	if err := ack(e, 0, 2, 3); err != nil { // hub B: seqs 2 and 3
		t.Fatal(err)
	}
	e.commit() // 2 and 3 deleted
	if st := e.ob.Stats(); st.SettledMark != 0 {
		t.Fatalf("mark %d, want 0 (seq 1 is still on disk)", st.SettledMark)
	}
	if err := ack(e, 0, 1); err != nil { // hub A: seq 1 only
		t.Fatal(err)
	}
	e.commit()
	if st := e.ob.Stats(); st.SettledMark != 3 || st.Backlog.Batches != 1 {
		t.Fatalf("mark %d with %d batches left, want 3 and 1 (seq 4)", st.SettledMark, st.Backlog.Batches)
	}
	e.reopen(true)
	if st := e.ob.Stats(); st.SettledMark != 3 {
		t.Fatalf("after a restart the mark is %d, want 3", st.SettledMark)
	}
}

// TestCompactionToPageSize: a file with bbolt pages of another size (one an
// earlier version created on a 16K-page kernel) is rewritten with
// outbox.PageSize, whatever its fill, and nothing in it is lost.
func TestCompactionToPageSize(t *testing.T) {
	e := newEnv(t, func(o *outbox.Options) { outbox.SetPageSize(o, 16384) })
	e.ob.Add(readings(0, 20))
	e.commit()
	e.clk.Add(time.Minute)
	e.commit() // sealed: batch 1
	e.ob.Add(readings(20, 5))
	e.commit() // open batch
	if got := outbox.FilePageSize(e.ob); got != 16384 {
		t.Fatalf("page size %d, want the 16384 the test asked for", got)
	}
	outbox.SetPageSize(&e.opts, 0)
	e.reopen(false)
	ok, err := e.ob.MaybeCompact()
	if !ok || err != nil {
		t.Fatalf("MaybeCompact = %v, %v; want a compaction to the page size", ok, err)
	}
	if got := outbox.FilePageSize(e.ob); got != outbox.PageSize {
		t.Fatalf("page size %d after compaction, want %d", got, outbox.PageSize)
	}
	if ok, err := e.ob.MaybeCompact(); ok || err != nil {
		t.Fatalf("compacted again: %v, %v", ok, err)
	}
	accounting(t, e, 25, nil)
}
