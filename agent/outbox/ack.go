package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// Next returns the lowest sealed, unsettled batch with a seq above after,
// and its wire bytes; ok is false when there is none.
func (ob *Outbox) Next(after uint64) (seq uint64, data []byte, ok bool, err error) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.closed {
		return 0, nil, false, ErrClosed
	}
	err = ob.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketBatches).Cursor()
		for k, v := c.Seek(u64(max(after, ob.settledThrough) + 1)); k != nil; k, v = c.Next() {
			s := binary.BigEndian.Uint64(k)
			if ob.settled[s] {
				continue
			}
			seq, data, ok = s, append([]byte(nil), v[batchPrefix:]...), true
			return nil
		}
		return nil
	})
	return seq, data, ok, err
}

// MarkPublishing must be called before a batch is published: it makes sure
// the durable publish watermark covers seq, so the batch is never dropped as
// "never sent" after it may have reached the hub. It syncs only when the
// watermark moves, by PublishLease seqs at a time.
func (ob *Outbox) MarkPublishing(seq uint64) error {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.closed {
		return ErrClosed
	}
	if seq <= ob.st.published {
		return nil
	}
	mark := seq + ob.o.PublishLease
	err := ob.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if err := m.Put([]byte("clean"), []byte{0}); err != nil { // a write: not clean until Close
			return err
		}
		return m.Put([]byte("published"), u64(mark))
	})
	if err == nil {
		ob.st.published = mark
	}
	return err
}

// Ack applies a hub ack: the seqs it settles are forgotten at once and
// deleted at the next Commit. An ack for another device or epoch, or naming
// a seq this outbox never sealed, changes nothing and returns an error
// wrapping ErrForeignAck, ErrUnknownEpoch or ErrUnsentSeq (counted in Stats).
func (ob *Outbox) Ack(a *protocol.Ack) error {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.closed {
		return ErrClosed
	}
	ignore := func(reason string, err error) error {
		ob.stats.AcksIgnored[reason]++
		return err
	}
	if a.Device != ob.o.Device {
		return ignore("foreign_device", fmt.Errorf("%w: %q", ErrForeignAck, a.Device))
	}
	if a.Epoch != ob.st.epoch {
		return ignore("unknown_epoch", fmt.Errorf("%w: %016x, ours is %016x", ErrUnknownEpoch, a.Epoch, ob.st.epoch))
	}
	last := ob.st.nextSeq - 1
	bad := a.Through > last
	for _, r := range a.Ranges {
		bad = bad || r.Last > last
	}
	for _, r := range a.Rejected {
		bad = bad || r.Seq > last || r.Seq == 0
	}
	if bad {
		return ignore("unsent_seq", fmt.Errorf("%w: ack through %d (ranges %v) but the last seq sealed is %d", ErrUnsentSeq, a.Through, clipRanges(a.Ranges), last))
	}
	for _, r := range a.Rejected {
		if r.Seq > ob.settledThrough && !ob.settled[r.Seq] {
			ob.rejected[r.Seq] = r.Reason + ": " + r.Detail
		}
	}
	if a.Through > ob.settledThrough {
		ob.settledThrough = a.Through
	}
	for _, r := range a.Ranges { // each seq at most once: r.Last <= last
		for s := max(r.First, ob.settledThrough+1); s <= r.Last; s++ {
			ob.settled[s] = true
		}
	}
	for ob.settled[ob.settledThrough+1] {
		delete(ob.settled, ob.settledThrough+1)
		ob.settledThrough++
	}
	return nil
}

// Settled reports whether an ack has settled seq.
func (ob *Outbox) Settled(seq uint64) bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return seq <= ob.settledThrough || ob.settled[seq]
}

// Epoch returns the current epoch.
func (ob *Outbox) Epoch() uint64 {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.st.epoch
}

// Stats returns a snapshot of the outbox's counters.
func (ob *Outbox) Stats() Stats {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	s := ob.stats
	s.AcksIgnored = make(map[string]uint64, len(ob.stats.AcksIgnored))
	for k, v := range ob.stats.AcksIgnored {
		s.AcksIgnored[k] = v
	}
	s.Epoch, s.LastSeq, s.SettledMark = ob.st.epoch, ob.st.nextSeq-1, ob.settledThrough
	s.Backlog = protocol.Backlog{
		Batches:  ob.st.batches,
		Readings: ob.st.readings + uint64(ob.packer.Len()),
		Bytes:    ob.st.bytes + ob.st.openBytes,
	}
	if ob.packer.Len() > 0 {
		s.Backlog.Batches++
	}
	s.Pending = len(ob.pending)
	s.DroppedEpoch = ob.st.dropped
	if fi, err := os.Stat(ob.o.Path); err == nil {
		s.FileBytes = fi.Size()
	}
	return s
}

// LostError is Close's report of readings it could not keep: queued ones
// that no Commit stored (the last one failed, e.g. on a full disk), and
// dropped ones whose gap notice no Commit stored. Close records them for
// the next gap notice if it can still write; when it cannot, they are lost
// and no gap notice will tell the hub, and it returns this.
type LostError struct {
	Queued, Unreported uint64
}

func (e *LostError) Error() string {
	return fmt.Sprintf("outbox: closed with %d readings never committed and %d dropped ones never reported: both are lost", e.Queued, e.Unreported)
}

// Close marks a clean shutdown and closes the file. Call Commit first to
// keep queued readings: Close does not commit them but drops them, counted
// for the next gap notice, or reports them in a *LostError.
func (ob *Outbox) Close() error {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.closed {
		return nil
	}
	ob.closed = true
	queued, unreported := uint64(len(ob.pending)), ob.memGap.Readings
	err := ob.db.Update(func(tx *bolt.Tx) error {
		if queued+unreported > 0 {
			// Readings Commit could not keep (the disk is full, say) are
			// dropped now, counted and noted for the gap notice of the next
			// batch, if this small write still fits.
			g := ob.gap()
			g.Merge(&ob.memGap)
			if queued > 0 {
				g.Merge(readingsGap(ob.pending))
			}
			ob.st.dropped += queued + unreported
			if err := ob.saveState(tx); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put([]byte("clean"), []byte{1})
	})
	if cerr := ob.db.Close(); err == nil {
		err = cerr
	}
	switch {
	case queued+unreported == 0:
	case err == nil:
		ob.stats.Dropped += queued
		ob.log.Warn("outbox: closing with readings never committed: dropped, and reported in the next batch's gap notice", "readings", queued+unreported)
	default:
		lost := &LostError{Queued: queued, Unreported: unreported}
		ob.log.Error("outbox: closing with readings it could not keep", "err", lost)
		return errors.Join(lost, err)
	}
	return err
}

// Backlog is a shorthand for Stats().Backlog.
func (ob *Outbox) Backlog() protocol.Backlog { return ob.Stats().Backlog }

// CompactMinBytes is the file size below which MaybeCompact never compacts.
const CompactMinBytes = 8 << 20

// MaybeCompact rewrites the bbolt file when what it stores is under a tenth
// of its size (bbolt files never shrink on their own: after a long outage
// drains, the file keeps its peak size), or when its page size is not
// PageSize (a file an earlier version created on a 16K-page kernel). The
// copy is synced and renamed over the original, so a crash at any point
// leaves either the old file or the complete new one; a leftover copy is
// removed at the next Open. It reports whether it compacted.
func (ob *Outbox) MaybeCompact() (bool, error) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.closed {
		return false, ErrClosed
	}
	fi, err := os.Stat(ob.o.Path)
	if err != nil {
		return false, err
	}
	live := int64(ob.st.bytes+ob.st.openBytes) + 64<<10 // plus meta and a few pages
	repage := ob.db.Info().PageSize != ob.boltOptions().PageSize
	if !repage && (fi.Size() < CompactMinBytes || live*10 > fi.Size()) {
		return false, nil
	}
	tmp := ob.o.Path + ".compact"
	os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, ob.boltOptions())
	if err != nil {
		return false, fmt.Errorf("compact: %w", err)
	}
	if err := bolt.Compact(dst, ob.db, 16<<20); err != nil {
		dst.Close()
		os.Remove(tmp)
		return false, fmt.Errorf("compact: %w", err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		os.Remove(tmp)
		return false, fmt.Errorf("compact: %w", err)
	}
	dst.Close()
	if err := ob.db.Close(); err != nil {
		return false, fmt.Errorf("compact: close: %w", err)
	}
	if err := os.Rename(tmp, ob.o.Path); err != nil {
		// The old file is intact: reopen it.
		db, oerr := openChecked(ob.o.Path, ob.boltOptions())
		if oerr != nil {
			ob.closed = true
			return false, errors.Join(err, oerr)
		}
		ob.db = db
		return false, fmt.Errorf("compact: %w", err)
	}
	syncDir(filepath.Dir(ob.o.Path))
	db, err := openChecked(ob.o.Path, ob.boltOptions())
	if err != nil {
		ob.closed = true
		return false, fmt.Errorf("compact: reopen: %w", err)
	}
	ob.db = db
	nfi, _ := os.Stat(ob.o.Path)
	ob.log.Info("outbox compacted", "from_bytes", fi.Size(), "to_bytes", nfi.Size(), "page_size", db.Info().PageSize)
	return true, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// clipRanges keeps a log line of a hostile ack short.
func clipRanges(rs []protocol.SeqRange) string {
	if len(rs) > 4 {
		return fmt.Sprintf("%v ... (%d ranges)", rs[:4], len(rs))
	}
	return fmt.Sprint(rs)
}
