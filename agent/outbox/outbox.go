package outbox

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/freshet-iot/freshet/protocol"
)

// DropPolicy says what goes when the disk bound is reached.
type DropPolicy string

// Drop policies.
const (
	// DropOldest deletes the oldest sealed batches that were never published.
	DropOldest DropPolicy = "drop_oldest"
	// DropNewest refuses new readings while the backlog is at the bound.
	DropNewest DropPolicy = "drop_newest"
)

// Options configure an outbox. Zero values take the defaults.
type Options struct {
	// Path of the bbolt file. Required.
	Path string
	// Device is the agent's device id. Required.
	Device string
	// MaxBytes bounds the stored backlog (sealed batches and open-batch
	// chunks, as stored). The bbolt file is larger by its page overhead.
	// Default 256 MiB; at least 16 batches of Limits.MaxMessageBytes (1 MiB
	// with the default limits), so the batches in flight always fit.
	MaxBytes int64
	// Policy applies at the bound. Default DropOldest.
	Policy DropPolicy
	// MaxBatchAge seals the open batch once its first reading is this old
	// (on the commit clock). Default 30 s.
	MaxBatchAge time.Duration
	// MaxPending bounds the readings held in memory between commits; beyond
	// it new readings are dropped and counted. Default 100,000.
	MaxPending int
	// PublishLease is how far ahead of the seq being published the durable
	// publish watermark is raised, so that raising it rarely costs a sync.
	// Default 16.
	PublishLease uint64
	// Limits of the wire protocol; batches never exceed them.
	Limits protocol.Limits
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock for seal times and batch ages; nil means time.Now.
	Now func() time.Time
	// NoSync skips fsync. Only for tests and CPU benchmarks: a crash can
	// then lose committed readings.
	NoSync bool
	// OnCommit, if set, is called after each successful commit with the
	// readings it made durable (for ground-truth logs in simulations). It
	// must not call back into the outbox.
	OnCommit func([]protocol.Reading)

	// pageSize of a new bbolt file; tests only (default PageSize).
	pageSize int
}

// PageSize is the bbolt page size of a new outbox file. bbolt defaults to
// the kernel's page size, 16 KiB on a Raspberry Pi 5 (arm64 16K kernel):
// every commit writes at least two pages, so that would be four times the
// 4 KiB blocks of the file system. A file keeps the page size it was
// created with.
const PageSize = 4096

// Stats describe the outbox at one moment.
type Stats struct {
	Epoch   uint64
	LastSeq uint64 // highest seq sealed
	// SettledMark: every seq up to it was settled by a hub's ack (or
	// dropped and reported).
	SettledMark uint64
	// Backlog is what waits on disk: sealed unsettled batches (Batches,
	// Readings, Bytes) plus the open batch's readings and chunk bytes.
	Backlog protocol.Backlog
	// Pending counts readings added but not yet committed.
	Pending int
	// Committed, Sealed, Settled, Dropped, Rejected, Invalid count readings
	// since this process opened the outbox (Dropped: also DroppedEpoch).
	Committed, Settled, Dropped, Rejected, Invalid uint64
	SealedBatches                                  uint64
	// DroppedEpoch counts every reading dropped in this epoch (durable).
	DroppedEpoch uint64
	// Notice is set when the outbox had to start a new epoch (corrupt file).
	Notice string
	// FileBytes is the size of the bbolt file.
	FileBytes int64
	// Commits and CommitErrors count Commit calls that wrote, and that failed.
	Commits, CommitErrors uint64
	// AcksIgnored counts acks refused by reason (foreign_device, unknown_epoch, unsent_seq).
	AcksIgnored map[string]uint64
}

// Outbox is the durable buffer. Its methods are safe for concurrent use.
type Outbox struct {
	o   Options
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	db      *bolt.DB
	pending []protocol.Reading
	st      state
	packer  *protocol.Packer
	// Open batch bookkeeping.
	openSince time.Time // first commit into the open batch; zero when empty
	// hot are the open batch's readings not yet in a chunk: the hot
	// record holds them (hotBytes as stored), hotSaved of them so far.
	hot      []protocol.Reading
	hotBytes uint64
	hotSaved int
	hotMax   int              // the hot record's bound: it stays inline
	chunker  *protocol.Packer // encodes chunks and the hot record (relaxed limits)
	// Acks applied in memory, deleted from disk at the next Commit.
	settledThrough uint64
	deletedThrough uint64 // settledThrough as of the last commit
	settled        map[uint64]bool
	rejected       map[uint64]string
	// Gap of readings dropped in memory (pending overflow), merged at commit.
	memGap protocol.Gap
	stats  Stats
	closed bool
	stale  bool // memory is not yet rebuilt after a failed commit
	// failing: the last commit failed; acked batches go first, alone.
	failing bool
	// Tests: failTx fails the next write transaction of Commit at its end,
	// as a write error there would; failAfter makes the next one that
	// succeeds return an error, as a failed fsync after the meta page would.
	failTx, failAfter error
}

// failNow returns failTx once.
func (ob *Outbox) failNow() error {
	err := ob.failTx
	ob.failTx = nil
	return err
}

// failLanded returns failAfter once.
func (ob *Outbox) failLanded() error {
	err := ob.failAfter
	ob.failAfter = nil
	return err
}

// state is what lives in the meta bucket.
type state struct {
	epoch, nextSeq, published, chunkSeq uint64
	dropped                             uint64 // readings dropped in this epoch
	gap                                 *protocol.Gap
	batches, readings, bytes            uint64 // sealed batches on disk
	openReadings, openBytes             uint64 // chunks and hot record on disk
	// sealedMax bounds the event times of every reading sealed on this
	// disk, in any epoch, and is at least the clock when the epoch began:
	// the next batch's Before (protocol.Batch).
	sealedMax int64
}

var (
	bucketMeta    = []byte("meta")
	bucketBatches = []byte("batches")
	bucketChunks  = []byte("chunks")
	bucketHot     = []byte("hot")
	keyHot        = []byte("readings")
)

// Errors.
var (
	// ErrClosed: the outbox was closed.
	ErrClosed = errors.New("outbox closed")
	// ErrForeignAck, ErrUnknownEpoch and ErrUnsentSeq: an ack that does not
	// belong to this outbox; it is ignored and counted.
	ErrForeignAck   = errors.New("ack for another device")
	ErrUnknownEpoch = errors.New("ack for another epoch")
	ErrUnsentSeq    = errors.New("ack for a seq never sealed")
)

// batch values: readings (4 bytes), first and last event time (8 + 8), wire bytes.
const batchPrefix = 20

// Open opens or creates the outbox at o.Path. A file bbolt refuses, or that
// fails its consistency check after an unclean shutdown, is renamed to
// Path.corrupt-<unix time> and a new epoch starts (Stats().Notice).
func Open(o Options) (*Outbox, error) {
	if o.Path == "" {
		return nil, errors.New("outbox: path required")
	}
	if err := protocol.ValidDevice(o.Device); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 256 << 20
	}
	o.Limits = o.Limits.WithDefaults()
	if min := 16 * int64(o.Limits.MaxMessageBytes); o.MaxBytes < min {
		return nil, fmt.Errorf("outbox: max bytes %d: at least 16 batches (%d)", o.MaxBytes, min)
	}
	switch o.Policy {
	case "":
		o.Policy = DropOldest
	case DropOldest, DropNewest:
	default:
		return nil, fmt.Errorf("outbox: drop policy %q: want drop_oldest or drop_newest", o.Policy)
	}
	if o.MaxBatchAge <= 0 {
		o.MaxBatchAge = 30 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 100_000
	}
	if o.PublishLease == 0 {
		o.PublishLease = 16
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	packer, err := protocol.NewPacker(o.Device, o.Limits)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	chunker, err := protocol.NewPacker(o.Device, protocol.Limits{MaxMessageBytes: 1 << 24, MaxReadings: 1 << 22, MaxSeries: 1 << 12})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	ob := &Outbox{o: o, log: o.Logger, now: o.Now, packer: packer, chunker: chunker,
		settled: map[uint64]bool{}, rejected: map[uint64]string{}}
	ob.stats.AcksIgnored = map[string]uint64{}
	if err := ob.open(); err != nil {
		return nil, err
	}
	return ob, nil
}

func (ob *Outbox) open() error {
	// A leftover from an interrupted compaction is never the live file.
	os.Remove(ob.o.Path + ".compact")
	err := ob.openFile()
	var ce *corruptError
	if !errors.As(err, &ce) {
		return err
	}
	aside := fmt.Sprintf("%s.corrupt-%d", ob.o.Path, ob.now().Unix())
	if rerr := os.Rename(ob.o.Path, aside); rerr != nil {
		return fmt.Errorf("outbox: %v; moving it aside failed: %w", err, rerr)
	}
	ob.stats.Notice = fmt.Sprintf("outbox file was corrupt (%v); moved to %s; a new epoch started and its unsent readings are lost", ce.err, filepath.Base(aside))
	ob.log.Error("outbox corrupt: moved aside, new epoch", "file", aside, "err", ce.err)
	ob.st = state{}
	return ob.openFile()
}

// openFile opens the file and loads the outbox from it. A file found
// corrupt (by bbolt, its check, or in the outbox's own records) is closed
// and reported as a *corruptError.
func (ob *Outbox) openFile() error {
	db, err := openChecked(ob.o.Path, ob.boltOptions())
	if err != nil {
		return err
	}
	ob.db = db
	ob.settledThrough, ob.deletedThrough = 0, 0
	// bbolt keeps a bucket of at most a quarter page inside its parent's
	// page: the hot record, with its key and headers, stays within that.
	ob.hotMax = db.Info().PageSize/4 - 64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketBatches, bucketChunks, bucketHot} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		st, err := loadState(tx)
		if err != nil {
			return err
		}
		now := ob.now().UnixNano()
		if st.epoch == 0 {
			// Whatever this gateway sealed before (a file moved aside,
			// another disk) is stamped before now, if its clock holds.
			st = state{epoch: randomEpoch(), nextSeq: 1, sealedMax: now}
			ob.log.Info("outbox: new epoch", "epoch", fmt.Sprintf("%016x", st.epoch))
		}
		if st.sealedMax == 0 && tx.Bucket(bucketMeta).Get([]byte("sealed_max")) == nil {
			st.sealedMax = now // written before the mark was kept: everything sealed is older
		}
		ob.st = st
		// Every seq below the oldest batch on disk was settled (acked, or
		// dropped and reported in a gap notice): the settled mark.
		ob.settledThrough = st.nextSeq - 1
		if k, _ := tx.Bucket(bucketBatches).Cursor().First(); len(k) == 8 {
			ob.settledThrough = min(ob.settledThrough, binary.BigEndian.Uint64(k)-1)
		}
		ob.deletedThrough = ob.settledThrough
		return ob.saveState(tx)
	})
	if err == nil {
		err = ob.replayChunks()
	}
	var ce *corruptError
	if err != nil && !errors.As(err, &ce) && ob.reload() == nil && ob.st.epoch != 0 {
		// A write failed (a full disk, a file system remounted read-only)
		// on a file that holds an outbox: run on it as it is. Commits fail
		// until writes work again, the backlog still goes out, and then
		// the acked batches are deleted first.
		ob.failing = true
		ob.log.Error("outbox: cannot write its file; running on it as it is until writes work again", "file", ob.o.Path, "err", err)
		return nil
	}
	if err != nil {
		db.Close()
		if errors.As(err, &ce) {
			return ce
		}
		return fmt.Errorf("outbox: open %s: %w", ob.o.Path, err)
	}
	return nil
}

// boltOptions are the outbox file's. NoFreelistSync: a commit does not
// write the free page list (a page or more each time); Open rebuilds it by
// walking the file's pages instead.
func (ob *Outbox) boltOptions() *bolt.Options {
	ps := ob.o.pageSize
	if ps == 0 {
		ps = PageSize
	}
	return &bolt.Options{Timeout: 5 * time.Second, NoSync: ob.o.NoSync, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, PageSize: ps}
}

type corruptError struct{ err error }

func (e *corruptError) Error() string { return "corrupt outbox: " + e.err.Error() }

// openChecked opens the bbolt file; after an unclean shutdown it also checks
// the whole file. bbolt can panic on some corrupt pages; that is corruption too.
func openChecked(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, &corruptError{fmt.Errorf("bbolt panicked: %v", r)}
		}
	}()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	db, err = bolt.Open(path, 0o600, o)
	if err != nil {
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
			return nil, &corruptError{err}
		}
		return nil, fmt.Errorf("outbox: open %s: %w", path, err)
	}
	clean := false
	db.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			v := m.Get([]byte("clean"))
			clean = len(v) == 1 && v[0] == 1
		}
		return nil
	})
	if !clean {
		err = db.View(func(tx *bolt.Tx) error {
			for e := range tx.Check() {
				return e
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, &corruptError{err}
		}
	}
	return db, nil
}

func randomEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func loadState(tx *bolt.Tx) (state, error) {
	m := tx.Bucket(bucketMeta)
	if m == nil {
		return state{}, errors.New("outbox: no meta bucket")
	}
	get := func(k string) uint64 {
		v := m.Get([]byte(k))
		if len(v) != 8 {
			return 0
		}
		return binary.BigEndian.Uint64(v)
	}
	st := state{
		epoch: get("epoch"), nextSeq: get("next_seq"), published: get("published"), chunkSeq: get("chunk_seq"),
		dropped: get("dropped"), batches: get("batches"), readings: get("readings"), bytes: get("bytes"),
		openReadings: get("open_readings"), openBytes: get("open_bytes"),
		sealedMax: int64(get("sealed_max")),
	}
	if v := m.Get([]byte("gap")); len(v) > 0 {
		g, err := decodeGap(v)
		if err != nil {
			return st, &corruptError{fmt.Errorf("pending gap notice: %w", err)}
		}
		st.gap = g
	}
	if st.epoch != 0 && st.nextSeq == 0 {
		return st, &corruptError{errors.New("meta: epoch without next seq")}
	}
	return st, nil
}

func (ob *Outbox) saveState(tx *bolt.Tx) error {
	m := tx.Bucket(bucketMeta)
	// Not clean until Close says so: a crash before then checks the file.
	if err := m.Put([]byte("clean"), []byte{0}); err != nil {
		return err
	}
	st := &ob.st
	for k, v := range map[string]uint64{
		"epoch": st.epoch, "next_seq": st.nextSeq, "published": st.published, "chunk_seq": st.chunkSeq,
		"dropped": st.dropped, "batches": st.batches, "readings": st.readings, "bytes": st.bytes,
		"open_readings": st.openReadings, "open_bytes": st.openBytes, "sealed_max": uint64(st.sealedMax),
	} {
		if err := m.Put([]byte(k), u64(v)); err != nil {
			return err
		}
	}
	if st.gap == nil {
		return m.Delete([]byte("gap"))
	}
	return m.Put([]byte("gap"), encodeGap(st.gap))
}

// readChunks empties the open batch in memory and returns the readings of
// its chunks and hot record on disk; the hot ones are ob.hot again.
func (ob *Outbox) readChunks() ([]protocol.Reading, error) {
	ob.packer.Reset()
	ob.hot, ob.hotBytes, ob.hotSaved = ob.hot[:0], 0, 0
	ob.openSince = time.Time{}
	var readings []protocol.Reading
	codec := protocol.NewCodec(protocol.Limits{MaxMessageBytes: 1 << 24, MaxReadings: 1 << 22, MaxSeries: 1 << 12})
	decode := func(k, v []byte) error {
		var b protocol.Batch
		if err := codec.DecodeBatch(v, &b); err != nil {
			return &corruptError{fmt.Errorf("chunk %x: %w", k, err)}
		}
		readings = b.AppendReadings(readings)
		return nil
	}
	err := ob.db.View(func(tx *bolt.Tx) error {
		bk, hb := tx.Bucket(bucketChunks), tx.Bucket(bucketHot)
		if bk == nil || hb == nil {
			return errors.New("outbox: no chunks or hot bucket")
		}
		if err := bk.ForEach(decode); err != nil {
			return err
		}
		v := hb.Get(keyHot)
		if v == nil {
			return nil
		}
		cold := len(readings)
		if err := decode(keyHot, v); err != nil {
			return err
		}
		ob.hot = append(ob.hot, readings[cold:]...)
		ob.hotBytes, ob.hotSaved = uint64(len(v)), len(ob.hot)
		return nil
	})
	return readings, err
}

// replayChunks rebuilds the open batch from its chunks after (re)opening.
func (ob *Outbox) replayChunks() error {
	readings, err := ob.readChunks()
	if err != nil {
		return err
	}
	if len(readings) == 0 {
		return nil
	}
	// Re-pack and rewrite them, in one transaction: should the batch fill
	// differently than before, it is sealed as usual and only the readings
	// after the seal stay in the open batch.
	now := ob.now()
	var d delta
	err = ob.db.Update(func(tx *bolt.Tx) error {
		if err := ob.clearOpen(tx); err != nil {
			return err
		}
		for i := range readings {
			if _, err := ob.addToOpen(tx, &readings[i], &d, now); err != nil {
				return err
			}
		}
		if err := ob.writeHot(tx); err != nil {
			return err
		}
		return ob.saveState(tx)
	})
	ob.stats.SealedBatches += d.sealed
	ob.stats.Invalid += d.invalid
	return err
}
