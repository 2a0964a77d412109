// Package outbox is the agent's durable buffer: every reading is committed
// to a bbolt file on the gateway's own disk and stays there until the hub's
// ack says it is stored.
//
// # Life of a reading
//
// Add puts readings in a bounded in-memory pending list. Commit, called every
// commit interval (default 1 s) by the agent, moves them into the open batch
// in one bbolt transaction: readings go through a protocol.Packer, and the
// open batch's readings that are in no chunk yet are stored as the hot
// record, rewritten whole at each commit. When the open batch is full (the
// protocol's byte, series or reading limit) or older than MaxBatchAge, it is
// sealed in the same transaction: it gets the next seq, any pending gap
// notice, its final wire bytes are stored under the seq, and its chunks and
// hot record are deleted. After a crash the open batch is rebuilt from its
// chunks and hot record.
//
// # Pages per commit
//
// bbolt copies on write: a commit writes every page it changed to a new
// place, then the meta page, each followed by an fdatasync. Whatever a
// commit changes, it rewrites the root page (the page of bucket headers),
// so a commit costs at least two 4 KiB pages. The outbox keeps what changes
// at every commit inside that root page: bbolt stores a bucket of at most a
// quarter page inline in its parent, and the hot record's bucket stays
// under that bound (hotMax). While the open batch's new readings fit in it,
// a commit writes two pages and nothing else; when they outgrow it they are
// frozen into a chunk, written once, with sequential keys that fill their
// pages. The sealed batch is written once more, at sealing. Settled
// batches are deleted from the batches bucket (FillPercent 1: seqs only
// grow), which is back inline in the root page once it is empty.
//
// Sealed batches are read in seq order by the forwarder (Next), published,
// and settled by acks (Ack). Settled seqs are forgotten at once in memory and
// deleted from disk at the next Commit, so acks cost no extra fsync.
//
// # Disk bound and exact loss
//
// MaxBytes bounds the stored backlog. Under drop_oldest, Commit deletes the
// oldest sealed batches that were never published; under drop_newest it
// refuses new readings. Either way the readings dropped are counted exactly
// and reported to the hub in the gap notice of the next sealed batch.
//
// A batch that may have been published is never dropped: the hub may
// already have stored it, and then a reported drop would be false. The
// outbox keeps a durable publish watermark (raised ahead of publishing, in
// leases, so it rarely costs a sync); only batches above it are dropped.
// Batches below it are bounded by the forwarder's in-flight window.
//
// # A full disk
//
// A commit that fails (ENOSPC, or any write error) rolls back whole: its
// readings are queued again (up to MaxPending, the rest dropped and
// counted) and memory is rebuilt from the file by reading only. While
// commits fail, the batches the hub acked are deleted first in a
// transaction of their own, which needs few pages and frees the ones the
// next commit needs. A commit that fails after its state reached the file
// (a failed fsync) counts as committed. Close drops the readings still
// queued, noted for the next gap notice, or reports them in a *LostError
// if it cannot write at all. Open on a file it cannot write runs on the
// file as it is.
//
// # Epochs and corruption
//
// A new outbox draws a random epoch; seqs start at 1 in it. A file that bbolt
// refuses or that fails its consistency check is moved aside (never deleted)
// and a new epoch starts; Stats().Notice says so.
package outbox
