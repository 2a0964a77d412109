package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// Add queues readings for the next Commit. It never blocks on the disk;
// beyond MaxPending queued readings the excess is dropped, counted, and
// reported in the next gap notice.
func (ob *Outbox) Add(rs []protocol.Reading) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	room := ob.o.MaxPending - len(ob.pending)
	if room < 0 {
		room = 0
	}
	if len(rs) > room {
		ob.dropInMemory(rs[room:])
		rs = rs[:room]
	}
	ob.pending = append(ob.pending, rs...)
}

func (ob *Outbox) dropInMemory(rs []protocol.Reading) {
	if len(rs) == 0 {
		return
	}
	ob.memGap.Merge(readingsGap(rs))
	ob.stats.Dropped += uint64(len(rs))
	ob.log.Warn("outbox: pending readings over the memory bound, dropped", "readings", len(rs))
}

func readingsGap(rs []protocol.Reading) *protocol.Gap {
	g := &protocol.Gap{Readings: uint64(len(rs)), FirstTime: math.MaxInt64, LastTime: math.MinInt64}
	for i := range rs {
		g.FirstTime = min(g.FirstTime, rs[i].Time)
		g.LastTime = max(g.LastTime, rs[i].Time)
	}
	return g
}

// delta collects counter changes of one transaction, applied only if it commits.
type delta struct {
	settled, rejected, dropped, invalid, sealed uint64
	rejectedSeqs                                []uint64 // deleted batches the hub rejected
	droppedNewest                               int
	// mark is the settled mark once the settled batches are deleted: the
	// oldest batch left on disk minus one (0: applySettled did not run).
	mark uint64
}

// settle applies what a committed transaction did to the acks kept in
// memory: the settled batches are gone from disk.
//
// The settled mark then rises to below the oldest batch left: seqs acked
// above the mark are forgotten with their batches, and a mark left below
// them would stay there until a hub acked the seqs in between again
// (which, with several hubs, may never happen), making every hub think
// the device moved to another.
func (ob *Outbox) settle(d *delta) {
	clear(ob.settled)
	ob.settledThrough = max(ob.settledThrough, d.mark)
	ob.deletedThrough = ob.settledThrough
	for _, seq := range d.rejectedSeqs {
		ob.log.Error("hub rejected a batch: its readings are lost", "seq", seq, "reason", ob.rejected[seq])
		delete(ob.rejected, seq)
	}
	ob.stats.Settled += d.settled
	ob.stats.Rejected += d.rejected
}

// Commit makes the queued readings durable in one transaction: it packs them
// into the open batch, writes the new ones as a chunk, seals the open batch
// when it is full or older than MaxBatchAge, deletes settled batches, and
// applies the disk bound. On error nothing of the transaction is kept and
// the readings stay queued for the next Commit.
func (ob *Outbox) Commit() error {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.closed {
		return ErrClosed
	}
	if ob.stale {
		if err := ob.reload(); err != nil {
			ob.stats.CommitErrors++
			return fmt.Errorf("outbox: rebuild state after a failed commit: %w", err)
		}
	}
	if ob.failing && (ob.settledThrough > ob.deletedThrough || len(ob.settled) > 0) {
		// The last commit failed, perhaps for a full disk: delete what the
		// hub acked in a transaction of its own first. It needs only a few
		// pages, and the pages it frees make room for the next one.
		if err := ob.commitSettled(); err != nil {
			ob.stats.CommitErrors++
			ob.log.Error("outbox: deleting acked batches failed; readings stay queued", "err", err, "readings", len(ob.pending))
			return err
		}
	}
	now := ob.now()
	if ob.idle(now) {
		return nil
	}
	taken := ob.pending
	ob.pending = nil
	memGap := ob.memGap
	ob.memGap = protocol.Gap{}
	openSince := ob.openSince
	var d delta
	var committed []protocol.Reading
	var txid int
	err := ob.db.Update(func(tx *bolt.Tx) error {
		txid = tx.ID()
		if err := ob.applySettled(tx, &d); err != nil {
			return err
		}
		if memGap.Readings > 0 {
			ob.gap().Merge(&memGap)
			d.dropped += memGap.Readings
		}
		// add, not taken, changes: should the transaction fail, all of
		// taken is queued again.
		add := taken
		if ob.o.Policy == DropNewest && len(add) > 0 && int64(ob.st.bytes+ob.st.openBytes) >= ob.o.MaxBytes {
			ob.gap().Merge(readingsGap(add))
			d.dropped += uint64(len(add))
			d.droppedNewest = len(add)
			add = nil
		}
		committed = make([]protocol.Reading, 0, len(add))
		for i := range add {
			ok, err := ob.addToOpen(tx, &add[i], &d, now)
			if err != nil {
				return err
			}
			if ok {
				committed = append(committed, add[i])
			}
		}
		if err := ob.writeHot(tx); err != nil {
			return err
		}
		if ob.o.Policy == DropOldest {
			if err := ob.dropOldest(tx, &d); err != nil {
				return err
			}
		}
		// Seal when the open batch is old enough, and whenever a gap notice
		// waits: a loss is reported in the batch sealed by the commit that
		// recorded it.
		if ob.sealDue(now) {
			if err := ob.seal(tx, &d, now); err != nil {
				return err
			}
		}
		ob.st.dropped += d.dropped // saved with the rest; a failed commit reloads it
		if err := ob.saveState(tx); err != nil {
			return err
		}
		return ob.failNow()
	})
	if err == nil {
		err = ob.failLanded()
	}
	landed := err != nil && ob.landed(txid)
	if err != nil && !landed {
		ob.stats.CommitErrors++
		ob.log.Error("outbox commit failed; readings stay queued", "err", err, "readings", len(taken))
		// The transaction rolled back. Requeue what was taken (bounded, the
		// rest counted as dropped) whatever else fails, then rebuild memory
		// from disk, reading only: a full disk fails every write.
		ob.memGap.Merge(&memGap)
		requeue := append(taken, ob.pending...)
		ob.pending = nil
		if len(requeue) > ob.o.MaxPending {
			ob.dropInMemory(requeue[ob.o.MaxPending:])
			requeue = requeue[:ob.o.MaxPending]
		}
		ob.pending = requeue
		ob.failing = true
		if rerr := ob.reload(); rerr != nil {
			return errors.Join(err, fmt.Errorf("reload after failed commit: %w", rerr))
		}
		if ob.packer.Len() > 0 && !openSince.IsZero() {
			ob.openSince = openSince // the open batch is as old as it was
		}
		return err
	}
	ob.settle(&d)
	ob.failing = false
	if d.droppedNewest > 0 {
		ob.log.Warn("outbox full: new readings dropped (drop_newest)", "readings", d.droppedNewest, "backlog_bytes", ob.st.bytes+ob.st.openBytes)
	}
	ob.stats.Commits++
	ob.stats.Committed += uint64(len(committed))
	ob.stats.Dropped += d.dropped - memGap.Readings // memory drops were counted when they happened
	ob.stats.Invalid += d.invalid
	ob.stats.SealedBatches += d.sealed
	if ob.o.OnCommit != nil && len(committed) > 0 {
		ob.o.OnCommit(committed)
	}
	if landed {
		// It failed after the new state was written (a failed fsync): the
		// file holds it, so it counts as committed, and the error is said.
		ob.stats.CommitErrors++
		ob.failing = true
		ob.log.Error("outbox commit reported a failure after writing; its readings are kept as committed", "err", err)
		return err
	}
	return nil
}

// sealDue reports whether the open batch is old enough to seal, or a gap
// notice waits.
func (ob *Outbox) sealDue(now time.Time) bool {
	return ob.packer.Len() > 0 && !now.Before(ob.openSince.Add(ob.o.MaxBatchAge)) || ob.st.gap != nil
}

// idle reports whether a commit now would change nothing on disk: no
// readings or drops to record, no acked batch to delete, nothing to seal,
// nothing over the bound. Such a commit is skipped: it would still write
// two pages and sync twice (a sensor read every 10 s with a 1 s commit
// interval made nine such commits in ten).
func (ob *Outbox) idle(now time.Time) bool {
	return !ob.failing && len(ob.pending) == 0 && ob.memGap.Readings == 0 &&
		ob.settledThrough == ob.deletedThrough && len(ob.settled) == 0 && !ob.sealDue(now) &&
		(ob.o.Policy != DropOldest || int64(ob.st.bytes+ob.st.openBytes) <= ob.o.MaxBytes)
}

// landed reports whether write transaction txid reached the file although
// its commit failed: bbolt returns a failed fsync after writing the meta
// page, and then the transaction is what the file holds (etcd-io/bbolt#233).
func (ob *Outbox) landed(txid int) bool {
	cur := 0
	if err := ob.db.View(func(tx *bolt.Tx) error { cur = tx.ID(); return nil }); err != nil {
		return false
	}
	return txid > 0 && cur >= txid
}

// commitSettled deletes the batches acks settled, alone in a transaction.
func (ob *Outbox) commitSettled() error {
	var d delta
	var txid int
	err := ob.db.Update(func(tx *bolt.Tx) error {
		txid = tx.ID()
		if err := ob.applySettled(tx, &d); err != nil {
			return err
		}
		if err := ob.saveState(tx); err != nil {
			return err
		}
		return ob.failNow()
	})
	if err == nil {
		err = ob.failLanded()
	}
	if err != nil && !ob.landed(txid) {
		return errors.Join(err, ob.reload())
	}
	ob.settle(&d)
	return err
}

// reload rebuilds the in-memory state from the file after a failed
// transaction, without writing: the failure may be a full disk. Until it
// succeeds the state is stale and Commit retries it first.
func (ob *Outbox) reload() error {
	ob.stale = true
	if err := ob.db.View(func(tx *bolt.Tx) error {
		st, err := loadState(tx)
		ob.st = st
		return err
	}); err != nil {
		return err
	}
	readings, err := ob.readChunks()
	if err != nil {
		return err
	}
	// These readings filled the open batch before: they fit it again.
	for i := range readings {
		if err := ob.packer.Add(&readings[i]); err != nil {
			return fmt.Errorf("rebuild the open batch: %w", err)
		}
	}
	if len(readings) > 0 {
		ob.openSince = ob.now()
	}
	ob.stale = false
	return nil
}

func (ob *Outbox) gap() *protocol.Gap {
	if ob.st.gap == nil {
		ob.st.gap = &protocol.Gap{}
	}
	return ob.st.gap
}

// addToOpen adds r to the open batch, sealing first when it is full. It
// reports whether r was taken; an invalid reading is counted and skipped.
func (ob *Outbox) addToOpen(tx *bolt.Tx, r *protocol.Reading, d *delta, now time.Time) (bool, error) {
	err := ob.packer.Add(r)
	if errors.Is(err, protocol.ErrFull) {
		if err := ob.seal(tx, d, now); err != nil {
			return false, err
		}
		err = ob.packer.Add(r)
	}
	if err != nil {
		d.invalid++
		ob.log.Error("outbox: invalid reading skipped", "sensor", r.Sensor, "metric", r.Metric, "err", err)
		return false, nil
	}
	if r.Type == protocol.Float && r.Resolution != 0 {
		// What is committed is the value at its resolution (the packer has
		// rounded it): the chunk and OnCommit's ground truth say the same.
		r.Float, _ = protocol.Quantize(r.Float, r.Resolution)
	}
	if ob.openSince.IsZero() {
		ob.openSince = now
	}
	ob.hot = append(ob.hot, *r)
	ob.st.openReadings++
	return true, nil
}

// writeHot stores the open batch's readings that are in no chunk yet. While
// their encoding stays within hotMax it is the hot record, rewritten whole
// at each commit: bbolt keeps so small a bucket inside the root page, which
// every commit writes anyway, so the readings cost no page of their own.
// When they outgrow it they are frozen into the next chunk, written once;
// chunks have sequential keys and fill their pages.
func (ob *Outbox) writeHot(tx *bolt.Tx) error {
	if len(ob.hot) == ob.hotSaved {
		return nil
	}
	ob.chunker.Reset()
	for i := range ob.hot {
		if err := ob.chunker.Add(&ob.hot[i]); err != nil {
			return fmt.Errorf("encode chunk: %w", err)
		}
	}
	_, data, err := ob.chunker.Seal(protocol.Header{Epoch: 1, Seq: 1})
	if err != nil {
		return fmt.Errorf("encode chunk: %w", err)
	}
	hb := tx.Bucket(bucketHot)
	ob.st.openBytes -= ob.hotBytes
	if len(data) <= ob.hotMax {
		if err := hb.Put(keyHot, data); err != nil {
			return err
		}
		ob.st.openBytes += uint64(len(data))
		ob.hotBytes, ob.hotSaved = uint64(len(data)), len(ob.hot)
		return nil
	}
	ob.st.chunkSeq++
	bk := tx.Bucket(bucketChunks)
	bk.FillPercent = 1 // keys only ever grow: fill each page
	if err := bk.Put(u64(ob.st.chunkSeq), data); err != nil {
		return err
	}
	if err := hb.Delete(keyHot); err != nil {
		return err
	}
	ob.st.openBytes += uint64(len(data))
	ob.hot, ob.hotBytes, ob.hotSaved = ob.hot[:0], 0, 0
	return nil
}

// clearOpen deletes the open batch's chunks and hot record.
func (ob *Outbox) clearOpen(tx *bolt.Tx) error {
	if err := tx.DeleteBucket(bucketChunks); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bucketChunks); err != nil {
		return err
	}
	if err := tx.Bucket(bucketHot).Delete(keyHot); err != nil {
		return err
	}
	ob.st.openReadings, ob.st.openBytes = 0, 0
	ob.hot, ob.hotBytes, ob.hotSaved = ob.hot[:0], 0, 0
	return nil
}

// seal turns the open batch (and any pending gap notice) into the next seq.
func (ob *Outbox) seal(tx *bolt.Tx, d *delta, now time.Time) error {
	if ob.packer.Len() == 0 && ob.st.gap == nil {
		return nil
	}
	l := ob.o.Limits.WithDefaults()
	h := protocol.Header{Epoch: ob.st.epoch, Seq: ob.st.nextSeq, SealTime: now.UnixNano(), Gap: ob.st.gap,
		Settled: ob.settledThrough, Before: min(max(ob.st.sealedMax, l.MinTime), l.MaxTime)}
	b, data, err := ob.packer.Seal(h)
	if errors.Is(err, protocol.ErrFull) {
		// The gap notice does not fit beside the readings: seal them alone;
		// the notice follows in its own batch at the next commit.
		h.Gap = nil
		b, data, err = ob.packer.Seal(h)
	}
	if err != nil {
		return fmt.Errorf("seal batch %d: %w", h.Seq, err)
	}
	n := uint64(b.Readings())
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for _, s := range b.Series {
		for _, t := range s.Times {
			first, last = min(first, t), max(last, t)
		}
	}
	if n == 0 {
		first, last = 0, 0
	}
	v := make([]byte, batchPrefix, batchPrefix+len(data))
	binary.BigEndian.PutUint32(v, uint32(n))
	binary.BigEndian.PutUint64(v[4:], uint64(first))
	binary.BigEndian.PutUint64(v[12:], uint64(last))
	v = append(v, data...)
	bk := tx.Bucket(bucketBatches)
	bk.FillPercent = 1 // seqs only ever grow: fill each page
	if err := bk.Put(u64(h.Seq), v); err != nil {
		return err
	}
	if err := ob.clearOpen(tx); err != nil {
		return err
	}
	ob.st.nextSeq++
	if n > 0 {
		ob.st.sealedMax = max(ob.st.sealedMax, last)
	}
	ob.st.batches++
	ob.st.readings += n
	ob.st.bytes += uint64(len(v))
	if h.Gap != nil {
		ob.st.gap = nil
	}
	ob.openSince = time.Time{}
	d.sealed++
	return nil
}

// applySettled deletes the batches acks settled since the last commit.
func (ob *Outbox) applySettled(tx *bolt.Tx, d *delta) error {
	bk := tx.Bucket(bucketBatches)
	del := func(seq uint64, v []byte) error {
		n := uint64(binary.BigEndian.Uint32(v))
		ob.st.batches--
		ob.st.readings -= n
		ob.st.bytes -= uint64(len(v))
		d.settled += n
		if _, ok := ob.rejected[seq]; ok {
			d.rejected += n
			d.rejectedSeqs = append(d.rejectedSeqs, seq)
		}
		return bk.Delete(u64(seq))
	}
	var doomed []uint64
	c := bk.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= ob.settledThrough; k, _ = c.Next() {
		doomed = append(doomed, binary.BigEndian.Uint64(k))
	}
	for seq := range ob.settled {
		if seq > ob.settledThrough {
			doomed = append(doomed, seq)
		}
	}
	for _, seq := range doomed {
		if v := bk.Get(u64(seq)); v != nil {
			if err := del(seq, v); err != nil {
				return err
			}
		}
	}
	// What is left: every seq below the oldest batch still on disk is
	// settled (as Open reckons the mark).
	d.mark = ob.st.nextSeq - 1
	if k, _ := bk.Cursor().First(); k != nil {
		d.mark = min(d.mark, binary.BigEndian.Uint64(k)-1)
	}
	return nil
}

// dropOldest deletes the oldest never-published batches until the backlog
// is within MaxBytes, recording them in the pending gap notice.
func (ob *Outbox) dropOldest(tx *bolt.Tx, d *delta) error {
	bk := tx.Bucket(bucketBatches)
	codec := protocol.NewCodec(ob.o.Limits)
	warned := false
	for int64(ob.st.bytes+ob.st.openBytes) > ob.o.MaxBytes {
		k, v := bk.Cursor().Seek(u64(ob.st.published + 1))
		if k == nil || len(ob.gap().Seqs) >= ob.o.Limits.MaxAckSeqs/2+1 {
			if !warned {
				ob.log.Warn("outbox over its bound with nothing droppable: only batches that may have reached the hub remain", "backlog_bytes", ob.st.bytes+ob.st.openBytes)
				warned = true
			}
			return nil
		}
		seq := binary.BigEndian.Uint64(k)
		n := uint64(binary.BigEndian.Uint32(v))
		first, last := int64(binary.BigEndian.Uint64(v[4:])), int64(binary.BigEndian.Uint64(v[12:]))
		var carried protocol.Batch
		if err := codec.DecodeBatch(v[batchPrefix:], &carried); err != nil {
			return fmt.Errorf("decode stored batch %d: %w", seq, err)
		}
		g := ob.gap()
		g.AddSeq(seq)
		if n > 0 {
			g.Merge(&protocol.Gap{Readings: n, FirstTime: first, LastTime: last})
		}
		if carried.Gap != nil {
			g.Merge(carried.Gap) // its readings were counted when they were dropped
		}
		ob.st.batches--
		ob.st.readings -= n
		ob.st.bytes -= uint64(len(v))
		d.dropped += n
		if err := bk.Delete(k); err != nil {
			return err
		}
		ob.log.Warn("outbox full: dropped the oldest unsent batch (drop_oldest)", "seq", seq, "readings", n)
	}
	return nil
}

// encodeGap and decodeGap store the pending gap notice in the meta bucket.
func encodeGap(g *protocol.Gap) []byte {
	b := binary.AppendUvarint(nil, g.Readings)
	b = binary.AppendVarint(b, g.FirstTime)
	b = binary.AppendVarint(b, g.LastTime)
	b = binary.AppendUvarint(b, uint64(len(g.Seqs)))
	for _, r := range g.Seqs {
		b = binary.AppendUvarint(b, r.First)
		b = binary.AppendUvarint(b, r.Last)
	}
	return b
}

func decodeGap(b []byte) (*protocol.Gap, error) {
	g := &protocol.Gap{}
	var vals []uint64
	read := func() {
		if b == nil {
			return
		}
		v, n := binary.Uvarint(b)
		if n <= 0 {
			b = nil
			return
		}
		vals = append(vals, v)
		b = b[n:]
	}
	readS := func() int64 {
		if b == nil {
			return 0
		}
		v, n := binary.Varint(b)
		if n <= 0 {
			b = nil
			return 0
		}
		b = b[n:]
		return v
	}
	read()
	g.FirstTime, g.LastTime = readS(), readS()
	read()
	if b == nil || len(vals) != 2 || vals[1] > 1<<20 {
		return nil, errors.New("bad gap record")
	}
	g.Readings = vals[0]
	for range vals[1] {
		read()
		read()
	}
	if b == nil || len(vals) != 2+2*int(vals[1]) {
		return nil, errors.New("bad gap record")
	}
	for i := 2; i < len(vals); i += 2 {
		g.Seqs = append(g.Seqs, protocol.SeqRange{First: vals[i], Last: vals[i+1]})
	}
	return g, nil
}
