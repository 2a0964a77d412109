package window

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// Store keeps per-device event-time window state in bbolt buckets. It holds
// only its options: every method works inside a transaction owned by the
// caller, so a Store is safe for concurrent use as bbolt transactions are.
type Store struct {
	opt   Options
	sizes []int64   // window sizes in ns, ascending
	pts   sync.Pool // *[]point: Merge's scratch, a batch's readings
}

// New validates o and returns a Store. Errors wrap ErrOptions and name the field.
func New(o Options) (*Store, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{opt: o}
	for _, d := range o.Sizes {
		s.sizes = append(s.sizes, int64(d))
	}
	return s, nil
}

// Options returns the store's options with defaults filled in.
func (s *Store) Options() Options {
	o := s.opt
	o.Sizes = slices.Clone(o.Sizes)
	return o
}

// Bucket names: one top bucket holding one bucket per key layout (codec.go).
const (
	topBucket     = "window"
	formatKey     = "format"
	formatVersion = 1
)

var subBuckets = [...]string{"devices", "names", "serieskeys", "series", "data", "windows", "dirty", "ready", "quiet", "others"}

type buckets struct {
	devices, names, seriesKeys, series, data, windows, dirty, ready, quiet *bolt.Bucket
	others                                                                 *bolt.Bucket
	// Reused for the lookups of a Merge: Bucket.Get makes a cursor each time.
	dataC, windowsC *bolt.Cursor
}

// get looks key up with c, a cursor reused across lookups (each Seek starts
// from the root, so puts in between are fine). Like Bucket.Get, it returns
// nil for a missing key.
func get(c *bolt.Cursor, key []byte) []byte {
	k, v := c.Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// Init creates the store's buckets (all under the top bucket "window") if
// they do not exist. It refuses state written in another format.
func (s *Store) Init(tx *bolt.Tx) error {
	top, err := tx.CreateBucketIfNotExists([]byte(topBucket))
	if err != nil {
		return fmt.Errorf("window init: %w", err)
	}
	switch v := top.Get([]byte(formatKey)); {
	case v == nil:
		if err := top.Put([]byte(formatKey), []byte{formatVersion}); err != nil {
			return fmt.Errorf("window init: %w", err)
		}
	case len(v) != 1 || v[0] != formatVersion:
		return fmt.Errorf("%w: format %x, want %d", ErrCorrupt, v, formatVersion)
	}
	for _, name := range subBuckets {
		if _, err := top.CreateBucketIfNotExists([]byte(name)); err != nil {
			return fmt.Errorf("window init %s: %w", name, err)
		}
	}
	return nil
}

func openBuckets(tx *bolt.Tx) (*buckets, error) {
	top := tx.Bucket([]byte(topBucket))
	if top == nil {
		return nil, ErrNotInitialized
	}
	if v := top.Get([]byte(formatKey)); len(v) != 1 || v[0] != formatVersion {
		return nil, fmt.Errorf("%w: format %x, want %d", ErrCorrupt, v, formatVersion)
	}
	var bs [len(subBuckets)]*bolt.Bucket
	for i, name := range subBuckets {
		if bs[i] = top.Bucket([]byte(name)); bs[i] == nil {
			return nil, fmt.Errorf("%w: bucket %s missing", ErrNotInitialized, name)
		}
	}
	// Each series' minutes and windows are added at the end of its own key
	// range and then only rewritten, so a page split off the tail is never
	// filled again: split full, not in halves.
	bs[4].FillPercent, bs[5].FillPercent = 0.95, 0.95
	return &buckets{devices: bs[0], names: bs[1], seriesKeys: bs[2], series: bs[3], data: bs[4], windows: bs[5], dirty: bs[6], ready: bs[7], quiet: bs[8],
		others: bs[9]}, nil
}

// MergeStats counts what Merge did with a batch's numeric readings.
type MergeStats struct {
	// Merged readings entered window state (Future ones included).
	// Re-sent readings count again, though they change nothing.
	Merged int
	// TooLate readings were older than the device's watermark minus
	// CorrectionHorizon and were not merged.
	TooLate int
	// Corrections counts windows that had been emitted and are dirty again.
	Corrections int
	// Future readings were stamped beyond the hub's clock plus
	// MaxFutureSkew: merged, but they did not advance the watermark.
	Future int
}

// point is one numeric reading being merged.
type point struct {
	sid uint32
	t   int64
	v   uint64 // float64 bits
}

// clampTime keeps a wall-clock reading inside the range the store handles
// (time.Time.UnixNano is undefined outside years 1678..2262).
func clampTime(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(time.Unix(0, maxTime)):
		return maxTime
	}
	return t.UnixNano()
}

// Merge adds the batch's numeric readings (Float, and Int as float64) to
// window state; bool and string series only advance the watermark. At a
// timestamp already stored for the series, the value in this batch
// replaces the stored one (within the batch, the later one wins), as a
// rewrite does in InfluxDB. Every window whose readings change is dirty
// afterwards. wallNow is the hub's clock. Merge must run in the same
// writable transaction that records the batch as applied, so that it runs
// exactly once per batch.
func (s *Store) Merge(tx *bolt.Tx, b *protocol.Batch, wallNow time.Time) (MergeStats, error) {
	var st MergeStats
	if err := checkBatch(b); err != nil {
		return st, err
	}
	bk, err := openBuckets(tx)
	if err != nil {
		return st, err
	}
	dev, err := bk.device(b.Device, true)
	if err != nil {
		return st, err
	}
	now := clampTime(wallNow)
	futureFrom := now + int64(s.opt.MaxFutureSkew) // later times are Future
	acceptFrom := dev.wm - int64(s.opt.CorrectionHorizon)
	for _, size := range s.sizes { // never reopen a window whose minutes were evicted
		acceptFrom = max(acceptFrom, ceilTo(dev.evictedTo, size))
	}

	wm := dev.wm
	scratch, _ := s.pts.Get().(*[]point)
	if scratch == nil {
		scratch = new([]point)
	}
	defer s.pts.Put(scratch)
	pts := slices.Grow((*scratch)[:0], b.Readings())
	defer func() { *scratch = pts[:0] }()
	for i := range b.Series {
		sr := &b.Series[i]
		for _, t := range sr.Times {
			if t <= futureFrom {
				wm = max(wm, t)
			}
		}
		if sr.Type != protocol.Float && sr.Type != protocol.Int {
			if err := bk.otherSeries(dev.id, &seriesDesc{sr.Sensor, sr.Metric, sr.Unit, sr.Labels}); err != nil {
				return st, err
			}
			continue
		}
		sid, err := bk.seriesID(dev.id, &seriesDesc{sr.Sensor, sr.Metric, sr.Unit, sr.Labels})
		if err != nil {
			return st, err
		}
		for j, t := range sr.Times {
			if t < acceptFrom {
				st.TooLate++
				continue
			}
			if t > futureFrom {
				st.Future++
			}
			v := 0.0
			if sr.Type == protocol.Float {
				v = sr.Floats[j]
			} else {
				v = float64(sr.Ints[j])
			}
			pts = append(pts, point{sid, t, math.Float64bits(v)})
		}
	}
	st.Merged = len(pts)

	// Sort by series and time; the stable sort keeps batch order among equal
	// times, and the last of them wins. Batches usually come sorted.
	byTime := func(a, b point) int { return cmp.Or(cmp.Compare(a.sid, b.sid), cmp.Compare(a.t, b.t)) }
	if !slices.IsSortedFunc(pts, byTime) {
		slices.SortStableFunc(pts, byTime)
	}
	var nt, ot, mt []int64
	var nv, ov, mv []uint64
	touched := make([]int64, len(s.sizes)) // last window start bumped, per size, for sid lastSid
	lastSid := uint32(0)
	for i := 0; i < len(pts); {
		sid, minute := pts[i].sid, floorTo(pts[i].t, minuteNs)
		nt, nv = nt[:0], nv[:0]
		for ; i < len(pts) && pts[i].sid == sid && pts[i].t < minute+minuteNs; i++ {
			if n := len(nt); n > 0 && nt[n-1] == pts[i].t {
				nv[n-1] = pts[i].v
				continue
			}
			nt, nv = append(nt, pts[i].t), append(nv, pts[i].v)
		}
		key := blobKey(dev.id, sid, minute)
		ot, ov = ot[:0], ov[:0]
		if bk.dataC == nil {
			bk.dataC = bk.data.Cursor()
		}
		if old := get(bk.dataC, key); old != nil {
			if ot, ov, err = decodeBlob(old, minute, ot, ov); err != nil {
				return st, fmt.Errorf("merge %s: %w", b.Device, err)
			}
		}
		var changed bool
		mt, mv, changed = mergeSorted(ot, ov, nt, nv, mt[:0], mv[:0])
		if !changed {
			continue
		}
		// A fresh slice each time: bbolt keeps it until the commit.
		blob := appendBlob(make([]byte, 0, 2+len(mt)*11), minute, mt, mv)
		if err := bk.data.Put(key, blob); err != nil {
			return st, fmt.Errorf("merge %s: %w", b.Device, err)
		}
		if sid != lastSid {
			lastSid = sid
			for k := range touched {
				touched[k] = -1
			}
		}
		for k, size := range s.sizes {
			start := floorTo(minute, size)
			if touched[k] == start {
				continue
			}
			touched[k] = start
			corrected, err := bk.touch(dev.id, sid, size, start)
			if err != nil {
				return st, fmt.Errorf("merge %s: %w", b.Device, err)
			}
			if corrected {
				st.Corrections++
			}
		}
	}

	if err := bk.quiet.Delete(quietKey(dev.lastWall, dev.id)); err != nil {
		return st, fmt.Errorf("merge %s: %w", b.Device, err)
	}
	dev.wm, dev.lastWall = wm, now
	if err := bk.devices.Put(u32(nil, dev.id), dev.encode()); err != nil {
		return st, fmt.Errorf("merge %s: %w", b.Device, err)
	}
	if err := s.refresh(bk, dev); err != nil {
		return st, fmt.Errorf("merge %s: %w", b.Device, err)
	}
	return st, nil
}

// checkBatch refuses what the protocol decoder never lets through but
// would make Merge index out of range or compute garbage.
func checkBatch(b *protocol.Batch) error {
	if b == nil || b.Device == "" {
		return fmt.Errorf("%w: no device", ErrBadBatch)
	}
	for i := range b.Series {
		sr := &b.Series[i]
		n := len(sr.Times)
		var vn int
		switch sr.Type {
		case protocol.Float:
			vn = len(sr.Floats)
			for _, v := range sr.Floats {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return fmt.Errorf("%w: device %s series %d holds %g", ErrBadBatch, b.Device, i, v)
				}
			}
		case protocol.Int:
			vn = len(sr.Ints)
		case protocol.Bool:
			vn = len(sr.Bools)
		case protocol.String:
			vn = len(sr.Strings)
		default:
			return fmt.Errorf("%w: device %s series %d of type %v", ErrBadBatch, b.Device, i, sr.Type)
		}
		if vn != n {
			return fmt.Errorf("%w: device %s series %d has %d times and %d values", ErrBadBatch, b.Device, i, n, vn)
		}
		for _, t := range sr.Times {
			if t < 0 || t > maxTime {
				return fmt.Errorf("%w: device %s series %d time %d outside 0..%d", ErrBadBatch, b.Device, i, t, maxTime)
			}
		}
	}
	return nil
}

// device returns the device's record, creating it (unsaved) when create is
// set; without create a missing device is nil.
func (bk *buckets) device(name string, create bool) (*device, error) {
	id := bk.names.Get([]byte(name))
	if id == nil {
		if !create {
			return nil, nil
		}
		seq, err := bk.devices.NextSequence()
		if err != nil {
			return nil, fmt.Errorf("new device %s: %w", name, err)
		}
		if seq > math.MaxUint32 {
			return nil, fmt.Errorf("new device %s: device ids exhausted", name)
		}
		if err := bk.names.Put([]byte(name), u32(nil, uint32(seq))); err != nil {
			return nil, fmt.Errorf("new device %s: %w", name, err)
		}
		return &device{id: uint32(seq), name: name, wm: -1}, nil
	}
	if len(id) != 4 {
		return nil, fmt.Errorf("%w: device %s id of %d bytes", ErrCorrupt, name, len(id))
	}
	return bk.deviceByID(binary.BigEndian.Uint32(id))
}

func (bk *buckets) deviceByID(id uint32) (*device, error) {
	v := bk.devices.Get(u32(nil, id))
	if v == nil {
		return nil, fmt.Errorf("%w: device %d has no record", ErrCorrupt, id)
	}
	return decodeDevice(id, v)
}

// seriesID returns the id of the device's series d, registering it if new.
func (bk *buckets) seriesID(dev uint32, d *seriesDesc) (uint32, error) {
	key := d.encode(u32(nil, dev))
	if v := bk.seriesKeys.Get(key); v != nil {
		if len(v) != 4 {
			return 0, fmt.Errorf("%w: series id of %d bytes", ErrCorrupt, len(v))
		}
		return binary.BigEndian.Uint32(v), nil
	}
	seq, err := bk.series.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("new series %s/%s: %w", d.sensor, d.metric, err)
	}
	if seq > math.MaxUint32 {
		return 0, fmt.Errorf("new series %s/%s: series ids exhausted", d.sensor, d.metric)
	}
	sid := uint32(seq)
	if err := bk.seriesKeys.Put(key, u32(nil, sid)); err != nil {
		return 0, fmt.Errorf("new series %s/%s: %w", d.sensor, d.metric, err)
	}
	if err := bk.series.Put(seriesPrefix(dev, sid), key[4:]); err != nil {
		return 0, fmt.Errorf("new series %s/%s: %w", d.sensor, d.metric, err)
	}
	// Registered once: a series that carried bools or strings before is
	// numeric now.
	if err := bk.others.Delete(key); err != nil {
		return 0, fmt.Errorf("new series %s/%s: %w", d.sensor, d.metric, err)
	}
	return sid, nil
}

// otherSeries registers a bool or string series of the device (no window
// state: only counted, for the series limit) unless it is registered.
func (bk *buckets) otherSeries(dev uint32, d *seriesDesc) error {
	key := d.encode(u32(nil, dev))
	if bk.seriesKeys.Get(key) != nil || bk.others.Get(key) != nil {
		return nil
	}
	if err := bk.others.Put(key, []byte{0}); err != nil {
		return fmt.Errorf("new series %s/%s: %w", d.sensor, d.metric, err)
	}
	return nil
}

// touch bumps a window's version and puts it in the dirty index. It
// reports whether the window had been emitted and was clean: a correction.
func (bk *buckets) touch(dev, sid uint32, size, start int64) (bool, error) {
	key := windowKey(dev, sid, size, start)
	var w windowRec
	if bk.windowsC == nil {
		bk.windowsC = bk.windows.Cursor()
	}
	if v := get(bk.windowsC, key); v != nil {
		var err error
		if w, err = decodeWindowRec(v); err != nil {
			return false, err
		}
	}
	wasClean := !w.dirty()
	w.version++
	if err := bk.windows.Put(key, w.encode()); err != nil {
		return false, err
	}
	if !wasClean {
		return false, nil
	}
	if err := bk.dirty.Put(dirtyKey(dev, start+size, sid, size), nil); err != nil {
		return false, err
	}
	return w.emitted > 0, nil
}

// refresh brings the device's entries in the ready set and the quiet index
// in line with its dirty windows: ready when its earliest-ending dirty
// window is closed by the watermark, quiet (keyed by last batch time) while
// it has any dirty window.
func (s *Store) refresh(bk *buckets, dev *device) error {
	id := u32(nil, dev.id)
	k, _ := bk.dirty.Cursor().Seek(id)
	if k == nil || !bytes.HasPrefix(k, id) {
		if err := bk.ready.Delete(id); err != nil {
			return err
		}
		return bk.quiet.Delete(quietKey(dev.lastWall, dev.id))
	}
	end, _, _, err := parseDirtyKey(k)
	if err != nil {
		return err
	}
	if s.closedByWatermark(dev, end) {
		err = bk.ready.Put(id, nil)
	} else {
		err = bk.ready.Delete(id)
	}
	if err != nil {
		return err
	}
	return bk.quiet.Put(quietKey(dev.lastWall, dev.id), nil)
}

func (s *Store) closedByWatermark(dev *device, end int64) bool {
	return dev.wm >= end+int64(s.opt.AllowedLateness)
}

func (s *Store) idle(dev *device, now int64) bool {
	return now-dev.lastWall >= int64(s.opt.IdleTimeout)
}
