// Package ledger records, per (device, epoch), which batches are settled
// and which of them this hub applied itself. It lives in the hub's bbolt
// file and changes in the same transaction as the window state, so a
// batch is applied exactly once by this hub.
//
// A seq is settled when a hub applied its batch, refused it for good, or
// the agent named it dropped in a gap notice, or when the agent's settled
// mark says a hub's ack settled it (another hub's, or this hub's before it
// lost its state). Settled seqs are kept as Through (every seq up to it)
// and ranges above it, so an ack describes any number of them in a few
// ranges and can never be truncated into a stall.
//
// The seqs this hub applied itself (Local) say how much of the device's
// history its window state holds: where it lacks seqs, another hub (or its
// own lost state) holds their readings, and the agent's Before time of the
// first seq after the hole bounds the windows they can touch (SharedBefore).
package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// Buckets: the ledger, when each of its records was last changed (the
// hub's clock: (device, epoch) -> Unix ns, 8 bytes), and the format before
// version 2 (migrated by Init).
var (
	bucket   = []byte("ledger2")
	touched  = []byte("ledger2_touched")
	bucketV1 = []byte("ledger")
)

// Bounds of one (device, epoch)'s state. An agent has at most its in-flight
// window unsettled above its settled mark, so a state that needs more is
// odd (a version 1 agent whose batches alternate between hubs): the lowest
// entries are then forgotten. Forgetting is safe: a settled seq forgotten
// is at worst applied again when redelivered, and applying a batch again
// changes nothing (raw points overwrite, the window state keeps readings by
// time). A settled seq is never invented.
const (
	MaxRanges = 1024
	MaxRuns   = 64
)

// State is one (device, epoch)'s ledger.
type State struct {
	// Through: every seq up to it is settled.
	Through uint64
	// Above are the settled seqs above Through: sorted, disjoint, not
	// adjacent, all above Through+1.
	Above []protocol.SeqRange
	// Local are the runs of seqs this hub applied itself, sorted, disjoint
	// and not adjacent (at most MaxRuns, the latest).
	Local []Run
}

// Run is a run of consecutive seqs applied by this hub.
type Run struct {
	First, Last uint64
	// Before is the agent's Before time of batch First: every reading of
	// an earlier seq is stamped at or before it.
	Before int64
}

// Before times for batches that do not carry one (protocol version 1):
// nothing came before seq 1, and anything may have come before another.
const (
	BeforeNothing = math.MinInt64
	BeforeUnknown = math.MaxInt64
)

// Settled reports whether seq is settled.
func (s *State) Settled(seq uint64) bool {
	if seq <= s.Through {
		return true
	}
	_, found := s.find(seq)
	return found
}

// find returns the index of the first range whose Last >= seq, and whether
// that range holds seq.
func (s *State) find(seq uint64) (int, bool) {
	i, _ := slices.BinarySearchFunc(s.Above, seq, func(r protocol.SeqRange, q uint64) int {
		switch {
		case r.Last < q:
			return -1
		case r.First > q:
			return 1
		}
		return 0
	})
	return i, i < len(s.Above) && s.Above[i].First <= seq && seq <= s.Above[i].Last
}

// Settle marks seq settled.
func (s *State) Settle(seq uint64) { s.SettleRange(seq, seq) }

// SettleRange marks first..last settled.
func (s *State) SettleRange(first, last uint64) {
	if first > last || last <= s.Through {
		return
	}
	first = max(first, s.Through+1)
	s.Above = addRange(s.Above, protocol.SeqRange{First: first, Last: last})
	s.compact()
}

// SettleThrough marks every seq up to mark settled: the agent's settled
// mark, which only a hub's ack can have raised.
func (s *State) SettleThrough(mark uint64) {
	if mark > s.Through {
		s.Through = mark
		s.compact()
	}
}

func addRange(rs []protocol.SeqRange, r protocol.SeqRange) []protocol.SeqRange {
	out := rs[:0:0]
	placed := false
	for _, x := range rs {
		switch {
		case x.Last+1 < r.First:
			out = append(out, x)
		case r.Last+1 < x.First:
			if !placed {
				out = append(out, r)
				placed = true
			}
			out = append(out, x)
		default:
			r.First, r.Last = min(r.First, x.First), max(r.Last, x.Last)
		}
	}
	if !placed {
		out = append(out, r)
	}
	return out
}

func (s *State) compact() {
	i := 0
	for i < len(s.Above) && s.Above[i].First <= s.Through+1 {
		s.Through = max(s.Through, s.Above[i].Last)
		i++
	}
	s.Above = s.Above[i:]
	if len(s.Above) > MaxRanges {
		s.Above = slices.Clone(s.Above[len(s.Above)-MaxRanges:]) // forget the lowest
	}
}

// Apply records that this hub applied seq, whose batch carried the Before
// time before (BeforeNothing or BeforeUnknown for version 1 batches).
func (s *State) Apply(seq uint64, before int64) {
	i, _ := slices.BinarySearchFunc(s.Local, seq, func(r Run, q uint64) int {
		switch {
		case r.Last < q:
			return -1
		case r.First > q:
			return 1
		}
		return 0
	})
	switch {
	case i < len(s.Local) && s.Local[i].First <= seq: // already in a run
		return
	case i > 0 && s.Local[i-1].Last+1 == seq && i < len(s.Local) && s.Local[i].First == seq+1:
		s.Local[i-1].Last = s.Local[i].Last // fills the hole between two runs
		s.Local = slices.Delete(s.Local, i, i+1)
	case i > 0 && s.Local[i-1].Last+1 == seq:
		s.Local[i-1].Last = seq
	case i < len(s.Local) && s.Local[i].First == seq+1:
		s.Local[i].First, s.Local[i].Before = seq, before
	default:
		s.Local = slices.Insert(s.Local, i, Run{First: seq, Last: seq, Before: before})
	}
	if len(s.Local) > MaxRuns {
		s.Local = slices.Clone(s.Local[len(s.Local)-MaxRuns:]) // forget the oldest
	}
}

// SharedBefore returns how much of the epoch's history this hub may lack:
// every reading of a seq it did not apply below its latest run is stamped
// at or before the returned time (math.MinInt64: none, the hub applied the
// epoch from seq 1, and nothing came before it). Readings of seqs above its
// latest run are not covered: another hub may hold them (see MaxLocal).
func (s *State) SharedBefore() int64 {
	if len(s.Local) == 0 {
		return math.MinInt64
	}
	return s.Local[len(s.Local)-1].Before
}

// MaxLocal returns the highest seq this hub applied (0: none).
func (s *State) MaxLocal() uint64 {
	if len(s.Local) == 0 {
		return 0
	}
	return s.Local[len(s.Local)-1].Last
}

// Ack builds the ack for this state, answering the batch seq in the given
// protocol version: Through, and the settled seqs above it, at most
// maxSeqs ranges (version 2) or seqs (version 1), the lowest ones and
// always the one holding seq, so that the batch just answered is settled
// by its ack.
func (s *State) Ack(device string, epoch, seq uint64, version uint8, maxSeqs int) *protocol.Ack {
	a := &protocol.Ack{Version: version, Device: device, Epoch: epoch, Through: s.Through}
	budget := uint64(maxSeqs)
	var own *protocol.SeqRange
	if i, ok := s.find(seq); ok && seq > s.Through {
		own = &s.Above[i]
	}
	cost := func(r protocol.SeqRange) uint64 {
		if version == 1 {
			return r.Last - r.First + 1
		}
		return 1
	}
	if own != nil {
		budget -= min(budget, cost(*own))
	}
	for i := range s.Above {
		r := s.Above[i]
		if own != nil && r == *own {
			a.Ranges = append(a.Ranges, r)
			continue
		}
		if c := cost(r); c <= budget {
			a.Ranges = append(a.Ranges, r)
			budget -= c
		} else if version == 1 && budget > 0 {
			// Part of a range: its lowest seqs.
			a.Ranges = append(a.Ranges, protocol.SeqRange{First: r.First, Last: r.First + budget - 1})
			budget = 0
		}
	}
	if version == 1 && own != nil && own.Last-own.First+1 > uint64(maxSeqs) {
		// A v1 ack cannot hold the whole range: its lowest seqs, or the
		// ones up to seq.
		cut := protocol.SeqRange{First: own.First, Last: own.First + uint64(maxSeqs) - 1}
		if seq > cut.Last {
			cut = protocol.SeqRange{First: seq - uint64(maxSeqs) + 1, Last: seq}
		}
		a.Ranges = slices.DeleteFunc(a.Ranges, func(r protocol.SeqRange) bool { return r == *own })
		a.Ranges = addRange(a.Ranges, cut)
	}
	return a
}

// Init creates the ledger's bucket, and moves the records of the format
// before protocol version 2 into it.
func Init(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(touched); err != nil {
		return err
	}
	old := tx.Bucket(bucketV1)
	if old == nil {
		return nil
	}
	err = old.ForEach(func(k, v []byte) error {
		s, err := decodeV1(v)
		if err != nil {
			return fmt.Errorf("ledger: migrate %q: %w", k, err)
		}
		return b.Put(k, encode(s))
	})
	if err != nil {
		return err
	}
	return tx.DeleteBucket(bucketV1)
}

func key(device string, epoch uint64) []byte {
	k := make([]byte, 0, len(device)+9)
	k = append(k, device...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, epoch)
}

// Load returns the state of (device, epoch); an unknown pair is empty.
func Load(tx *bolt.Tx, device string, epoch uint64) (State, error) {
	s, _, err := Lookup(tx, device, epoch)
	return s, err
}

// Lookup returns the state of (device, epoch) and whether the ledger has
// one (an unknown pair is empty).
func Lookup(tx *bolt.Tx, device string, epoch uint64) (State, bool, error) {
	v := tx.Bucket(bucket).Get(key(device, epoch))
	if v == nil {
		return State{}, false, nil
	}
	s, err := decode(v)
	return s, true, err
}

// Save stores the state of (device, epoch).
func Save(tx *bolt.Tx, device string, epoch uint64, s State) error {
	return tx.Bucket(bucket).Put(key(device, epoch), encode(s))
}

// Custody is what the ledger says of how much of a device's history this
// hub holds, over all its epochs.
type Custody struct {
	// SharedBefore: readings this hub lacks below its latest runs are
	// stamped at or before it (the maximum over the epochs).
	SharedBefore int64
	// MaxLocal is the highest seq this hub applied, per epoch.
	MaxLocal map[uint64]uint64
}

// HoldsLast reports whether this hub applied lastSeq, the highest seq the
// agent had sealed in epoch (from its status), or a later one. Then every
// reading the agent had sealed is held here or stamped at or before
// SharedBefore: the seqs up to the latest run are covered by its Before,
// and there is nothing above it. When it did not, another hub (or this
// hub's lost state) may hold the device's latest readings, whatever the
// agent's settled mark says (it lags behind seqs settled out of order).
func (c Custody) HoldsLast(epoch, lastSeq uint64) bool {
	return lastSeq > 0 && c.MaxLocal[epoch] >= lastSeq
}

// CustodyOf reads the device's custody from every epoch it has in the ledger.
func CustodyOf(tx *bolt.Tx, device string) (Custody, error) {
	c := Custody{SharedBefore: math.MinInt64}
	prefix := append([]byte(device), 0)
	cur := tx.Bucket(bucket).Cursor()
	for k, v := cur.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = cur.Next() {
		s, err := decode(v)
		if err != nil {
			return c, fmt.Errorf("ledger %s: %w", device, err)
		}
		if len(s.Local) == 0 {
			continue
		}
		if c.MaxLocal == nil {
			c.MaxLocal = map[uint64]uint64{}
		}
		c.MaxLocal[binary.BigEndian.Uint64(k[len(prefix):])] = s.MaxLocal()
		c.SharedBefore = max(c.SharedBefore, s.SharedBefore())
	}
	return c, nil
}

// Record format (version 2): uvarint Through, uvarint n, n ranges as
// uvarint (First - previous end) and uvarint (Last - First), uvarint m, m
// runs as uvarint (First - previous end), uvarint (Last - First) and
// varint Before.
func encode(s State) []byte {
	b := binary.AppendUvarint(nil, s.Through)
	b = binary.AppendUvarint(b, uint64(len(s.Above)))
	prev := s.Through
	for _, r := range s.Above {
		b = binary.AppendUvarint(b, r.First-prev)
		b = binary.AppendUvarint(b, r.Last-r.First)
		prev = r.Last
	}
	b = binary.AppendUvarint(b, uint64(len(s.Local)))
	prev = 0
	for _, r := range s.Local {
		b = binary.AppendUvarint(b, r.First-prev)
		b = binary.AppendUvarint(b, r.Last-r.First)
		b = binary.AppendVarint(b, r.Before)
		prev = r.Last
	}
	return b
}

var errCorrupt = errors.New("ledger: corrupt record")

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func decode(b []byte) (State, error) {
	r := &reader{b: b}
	var s State
	s.Through = r.uvarint()
	n := r.uvarint()
	if r.err != nil || n > MaxRanges {
		return s, errCorrupt
	}
	prev := s.Through
	for range n {
		d, l := r.uvarint(), r.uvarint()
		if r.err != nil || d < 2 || prev+d < prev || prev+d+l < prev+d {
			return s, errCorrupt
		}
		s.Above = append(s.Above, protocol.SeqRange{First: prev + d, Last: prev + d + l})
		prev += d + l
	}
	m := r.uvarint()
	if r.err != nil || m > MaxRuns {
		return s, errCorrupt
	}
	prev = 0
	for i := range m {
		d, l, before := r.uvarint(), r.uvarint(), r.varint()
		if r.err != nil || d == 0 || i > 0 && d < 2 || prev+d < prev || prev+d+l < prev+d {
			return s, errCorrupt
		}
		s.Local = append(s.Local, Run{First: prev + d, Last: prev + d + l, Before: before})
		prev += d + l
	}
	if len(r.b) != 0 {
		return s, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(r.b))
	}
	return s, nil
}

// decodeV1 reads the format before protocol version 2: Through and the
// settled seqs above it one by one. It knew nothing of Local: a state
// migrated from it says this hub applied nothing, so its windows of those
// seqs count as shared until rebuilt.
func decodeV1(b []byte) (State, error) {
	r := &reader{b: b}
	var s State
	s.Through = r.uvarint()
	count := r.uvarint()
	if r.err != nil || count > 4096 {
		return s, errCorrupt
	}
	prev := s.Through
	for range count {
		d := r.uvarint()
		if r.err != nil || d == 0 {
			return s, errCorrupt
		}
		prev += d
		s.Settle(prev)
	}
	if len(r.b) != 0 {
		return s, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(r.b))
	}
	return s, nil
}

// Devices calls fn for every (device, epoch) in the ledger.
func Devices(tx *bolt.Tx, fn func(device string, epoch uint64, s State) error) error {
	return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
		if len(k) < 9 || k[len(k)-9] != 0 {
			return errCorrupt
		}
		s, err := decode(v)
		if err != nil {
			return err
		}
		return fn(string(k[:len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), s)
	})
}
