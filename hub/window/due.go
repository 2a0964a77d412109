package window

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// Aggregate is one window of one series, computed from its readings in
// time order (see the package documentation for the exact definitions).
type Aggregate struct {
	Device, Sensor, Metric, Unit string
	Labels                       []protocol.Label // sorted by key
	// Size and Start (Unix ns, a multiple of Size) name the window
	// [Start, Start+Size).
	Size  time.Duration
	Start int64

	// Count is the number of distinct readings (timestamps) in the window.
	Count                                    int64
	Min, Max, Mean, Sum, First, Last, Stddev float64

	// Version bumps each time the window's readings change; MarkEmitted
	// ignores an aggregate whose window has changed since.
	Version uint64
	// Correction is true if an earlier version of this window was marked
	// emitted: this aggregate rewrites it.
	Correction bool
	// ID names the window in this store (Hydrate, Recompute).
	ID WindowID
}

// WindowID names one window of one series within a store: ids are this
// store's own, never another hub's.
type WindowID struct {
	Device, Series uint32
	Size, Start    int64 // ns
}

// Due returns up to limit windows that are closed and dirty, with their
// aggregates. It writes nothing (a read-only transaction will do), so the
// same windows come back until MarkEmitted records them. Windows of devices
// quiet for IdleTimeout come first, longest quiet first, then windows closed
// by their device's watermark, by device; within a device, by window end.
// The cost is the windows returned (each reads the minute blobs it covers)
// plus one index entry per device visited: devices with nothing due are
// never touched.
func (s *Store) Due(tx *bolt.Tx, wallNow time.Time, limit int) ([]Aggregate, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("window due: limit %d: must be positive", limit)
	}
	bk, err := openBuckets(tx)
	if err != nil {
		return nil, err
	}
	d := &dueScan{s: s, bk: bk, now: clampTime(wallNow), limit: limit, seen: map[uint32]bool{}, series: map[uint32]*seriesDesc{}}
	c := bk.quiet.Cursor()
	for k, _ := c.First(); k != nil && len(d.out) < limit; k, _ = c.Next() {
		if len(k) != 12 {
			return nil, fmt.Errorf("%w: quiet key of %d bytes", ErrCorrupt, len(k))
		}
		if d.now-int64(binary.BigEndian.Uint64(k)) < int64(s.opt.IdleTimeout) {
			break
		}
		if err := d.device(binary.BigEndian.Uint32(k[8:])); err != nil {
			return nil, err
		}
	}
	c = bk.ready.Cursor()
	for k, _ := c.First(); k != nil && len(d.out) < limit; k, _ = c.Next() {
		if len(k) != 4 {
			return nil, fmt.Errorf("%w: ready key of %d bytes", ErrCorrupt, len(k))
		}
		if err := d.device(binary.BigEndian.Uint32(k)); err != nil {
			return nil, err
		}
	}
	return d.out, nil
}

// dueScan is the state of one Due call.
type dueScan struct {
	s      *Store
	bk     *buckets
	now    int64
	limit  int
	out    []Aggregate
	seen   map[uint32]bool
	series map[uint32]*seriesDesc
	ts     []int64
	vs     []uint64
}

// device appends the device's closed dirty windows, in end order.
func (d *dueScan) device(id uint32) error {
	if d.seen[id] {
		return nil
	}
	d.seen[id] = true
	dev, err := d.bk.deviceByID(id)
	if err != nil {
		return err
	}
	idle := d.s.idle(dev, d.now)
	prefix := u32(nil, id)
	c := d.bk.dirty.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(d.out) < d.limit; k, _ = c.Next() {
		end, sid, size, err := parseDirtyKey(k)
		if err != nil {
			return err
		}
		if !idle && !d.s.closedByWatermark(dev, end) {
			break
		}
		a, err := d.aggregate(dev, sid, size, end-size)
		if err != nil {
			return fmt.Errorf("window %s: %w", dev.name, err)
		}
		d.out = append(d.out, a)
	}
	return nil
}

func (d *dueScan) aggregate(dev *device, sid uint32, size, start int64) (Aggregate, error) {
	desc := d.series[sid]
	if desc == nil {
		v := d.bk.series.Get(seriesPrefix(dev.id, sid))
		if v == nil {
			return Aggregate{}, fmt.Errorf("%w: series %d has no description", ErrCorrupt, sid)
		}
		sd, err := decodeSeriesDesc(v)
		if err != nil {
			return Aggregate{}, err
		}
		desc = &sd
		d.series[sid] = desc
	}
	v := d.bk.windows.Get(windowKey(dev.id, sid, size, start))
	if v == nil {
		return Aggregate{}, fmt.Errorf("%w: dirty window %d+%v of series %d has no record", ErrCorrupt, start, time.Duration(size), sid)
	}
	w, err := decodeWindowRec(v)
	if err != nil {
		return Aggregate{}, err
	}
	if d.ts, d.vs, err = d.bk.readings(dev.id, sid, start, start+size, d.ts[:0], d.vs[:0]); err != nil {
		return Aggregate{}, err
	}
	a := Aggregate{
		Device: dev.name, Sensor: desc.sensor, Metric: desc.metric, Unit: desc.unit, Labels: slices.Clone(desc.labels),
		Size: time.Duration(size), Start: start, Version: w.version, Correction: w.emitted > 0,
		ID: WindowID{Device: dev.id, Series: sid, Size: size, Start: start},
	}
	a.compute(d.vs)
	return a, nil
}

// readings appends the times and value bits of the series' readings in
// [start, end), in time order, read from the minute blobs that cover it.
func (bk *buckets) readings(dev, sid uint32, start, end int64, ts []int64, vs []uint64) ([]int64, []uint64, error) {
	prefix := seriesPrefix(dev, sid)
	c := bk.data.Cursor()
	for k, v := c.Seek(blobKey(dev, sid, start)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != 16 {
			return ts, vs, fmt.Errorf("%w: data key of %d bytes", ErrCorrupt, len(k))
		}
		minute := int64(binary.BigEndian.Uint64(k[8:]))
		if minute >= end {
			break
		}
		if minute%minuteNs != 0 || minute > maxTime {
			return ts, vs, fmt.Errorf("%w: data key for minute %d", ErrCorrupt, minute)
		}
		var err error
		if ts, vs, err = decodeBlob(v, minute, ts, vs); err != nil {
			return ts, vs, err
		}
	}
	return ts, vs, nil
}

// compute sets the statistics from the window's values (float64 bits) in
// time order. Each is one deterministic pass (two for Stddev) in that
// order; the float64 conversions keep the compiler from fusing a multiply
// and an add, which would change the last bits on some platforms.
func (a *Aggregate) compute(bits []uint64) {
	n := len(bits)
	a.Count = int64(n)
	if n == 0 {
		return
	}
	a.First, a.Last = math.Float64frombits(bits[0]), math.Float64frombits(bits[n-1])
	a.Min, a.Max = a.First, a.First
	for _, b := range bits {
		v := math.Float64frombits(b)
		a.Sum += v
		a.Min, a.Max = min(a.Min, v), max(a.Max, v)
	}
	a.Mean = a.Sum / float64(n)
	ss := 0.0
	for _, b := range bits {
		dv := math.Float64frombits(b) - a.Mean
		ss += float64(dv * dv)
	}
	a.Stddev = math.Sqrt(ss / float64(n))
}

// MarkEmitted records that these aggregates (from Due) were written. A
// window whose version has moved on since Due stays dirty, so its newer
// readings are emitted too; aggregates of windows that no longer exist
// (evicted) are ignored.
func (s *Store) MarkEmitted(tx *bolt.Tx, aggs []Aggregate) error {
	bk, err := openBuckets(tx)
	if err != nil {
		return err
	}
	devs := map[string]*device{}
	touched := map[uint32]*device{}
	for i := range aggs {
		a := &aggs[i]
		size := int64(a.Size)
		if size <= 0 || size%minuteNs != 0 || size > int64(maxDuration) || a.Start < 0 || a.Start > maxTime || a.Start%size != 0 {
			return fmt.Errorf("window mark emitted: %s window %d+%v is not a window", a.Device, a.Start, a.Size)
		}
		dev, ok := devs[a.Device]
		if !ok {
			if dev, err = bk.device(a.Device, false); err != nil {
				return fmt.Errorf("window mark emitted: %w", err)
			}
			devs[a.Device] = dev
		}
		if dev == nil {
			continue
		}
		desc := seriesDesc{a.Sensor, a.Metric, a.Unit, a.Labels}
		sidb := bk.seriesKeys.Get(desc.encode(u32(nil, dev.id)))
		if len(sidb) != 4 {
			continue
		}
		sid := binary.BigEndian.Uint32(sidb)
		key := windowKey(dev.id, sid, size, a.Start)
		v := bk.windows.Get(key)
		if v == nil {
			continue
		}
		w, err := decodeWindowRec(v)
		if err != nil {
			return fmt.Errorf("window mark emitted %s: %w", a.Device, err)
		}
		if !w.dirty() || w.version != a.Version {
			continue
		}
		w.emitted = w.version
		if err := bk.windows.Put(key, w.encode()); err != nil {
			return fmt.Errorf("window mark emitted %s: %w", a.Device, err)
		}
		if err := bk.dirty.Delete(dirtyKey(dev.id, a.Start+size, sid, size)); err != nil {
			return fmt.Errorf("window mark emitted %s: %w", a.Device, err)
		}
		touched[dev.id] = dev
	}
	for _, id := range slices.Sorted(maps.Keys(touched)) {
		if err := s.refresh(bk, touched[id]); err != nil {
			return fmt.Errorf("window mark emitted %s: %w", touched[id].name, err)
		}
	}
	return nil
}
