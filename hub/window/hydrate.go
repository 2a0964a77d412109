package window

import (
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// This file lets the hub treat its window state as a cache of InfluxDB's
// raw rows, the shared truth: when another hub (or its own lost state) may
// hold readings of a window, the caller reads the window's raw rows back
// and hydrates the window with them before emitting it.

// Hydrate merges the given readings of a's window, read back from
// InfluxDB's raw rows (sorted by time, one per timestamp, all within the
// window), into the window's state, if the window has not changed since a
// was computed (a from Due or Recompute). At a timestamp held both here and
// in the rows, the rows' value wins (InfluxDB keeps the last write of a
// point, whoever made it); readings held only here are kept (every one was
// written raw before it was merged). Every window covering a minute whose
// readings change becomes dirty, as in Merge. It returns the window's
// aggregate from the merged readings, whether anything changed, and ok
// false (nothing done) if the window changed since a: try again later.
func (s *Store) Hydrate(tx *bolt.Tx, a Aggregate, ts []int64, vs []float64) (out Aggregate, changed, ok bool, err error) {
	id := a.ID
	if len(ts) != len(vs) {
		return out, false, false, fmt.Errorf("window hydrate: %d times, %d values", len(ts), len(vs))
	}
	for i, t := range ts {
		if t < id.Start || t >= id.Start+id.Size || i > 0 && t <= ts[i-1] || math.IsNaN(vs[i]) || math.IsInf(vs[i], 0) {
			return out, false, false, fmt.Errorf("window hydrate %s: reading %d at %d is outside [%d, %d), out of order or not finite",
				a.Device, i, t, id.Start, id.Start+id.Size)
		}
	}
	bk, err := openBuckets(tx)
	if err != nil {
		return out, false, false, err
	}
	w, found, err := bk.windowRec(id)
	if err != nil || !found || w.version != a.Version {
		return out, false, false, err
	}
	dev, err := bk.deviceByID(id.Device)
	if err != nil {
		return out, false, false, err
	}
	var ot, mt []int64
	var ov, mv []uint64
	nv := make([]uint64, len(vs))
	for i, v := range vs {
		nv[i] = math.Float64bits(v)
	}
	for minute := id.Start; minute < id.Start+id.Size; minute += minuteNs {
		lo, _ := slices.BinarySearch(ts, minute)
		hi, _ := slices.BinarySearch(ts, minute+minuteNs)
		if lo == hi {
			continue // nothing in the rows: what is here stays
		}
		key := blobKey(id.Device, id.Series, minute)
		ot, ov = ot[:0], ov[:0]
		if old := bk.data.Get(key); old != nil {
			if ot, ov, err = decodeBlob(old, minute, ot, ov); err != nil {
				return out, false, false, fmt.Errorf("hydrate %s: %w", dev.name, err)
			}
		}
		var diff bool
		mt, mv, diff = mergeSorted(ot, ov, ts[lo:hi], nv[lo:hi], mt[:0], mv[:0])
		if !diff {
			continue
		}
		changed = true
		if err := bk.data.Put(key, appendBlob(make([]byte, 0, 2+len(mt)*11), minute, mt, mv)); err != nil {
			return out, false, false, fmt.Errorf("hydrate %s: %w", dev.name, err)
		}
		for _, size := range s.sizes {
			if _, err := bk.touch(id.Device, id.Series, size, floorTo(minute, size)); err != nil {
				return out, false, false, fmt.Errorf("hydrate %s: %w", dev.name, err)
			}
		}
		if size := id.Size; !slices.Contains(s.sizes, size) { // a size no longer configured
			if _, err := bk.touch(id.Device, id.Series, size, id.Start); err != nil {
				return out, false, false, fmt.Errorf("hydrate %s: %w", dev.name, err)
			}
		}
	}
	if changed {
		if err := s.refresh(bk, dev); err != nil {
			return out, false, false, fmt.Errorf("hydrate %s: %w", dev.name, err)
		}
	}
	out, found, err = s.recompute(bk, id)
	return out, changed, found, err
}

// Recompute returns the window's aggregate from the readings held now,
// with its current version; ok is false if the window no longer exists
// (evicted).
func (s *Store) Recompute(tx *bolt.Tx, id WindowID) (Aggregate, bool, error) {
	bk, err := openBuckets(tx)
	if err != nil {
		return Aggregate{}, false, err
	}
	return s.recompute(bk, id)
}

func (s *Store) recompute(bk *buckets, id WindowID) (Aggregate, bool, error) {
	w, found, err := bk.windowRec(id)
	if err != nil || !found {
		return Aggregate{}, false, err
	}
	dev, err := bk.deviceByID(id.Device)
	if err != nil {
		return Aggregate{}, false, err
	}
	d := &dueScan{s: s, bk: bk, series: map[uint32]*seriesDesc{}}
	a, err := d.aggregate(dev, id.Series, id.Size, id.Start)
	if err != nil {
		return Aggregate{}, false, err
	}
	a.Version, a.Correction = w.version, w.emitted > 0
	return a, true, nil
}

// windowRec reads a window's record.
func (bk *buckets) windowRec(id WindowID) (windowRec, bool, error) {
	if id.Size <= 0 || id.Size%minuteNs != 0 || id.Size > int64(maxDuration) || id.Start < 0 || id.Start > maxTime || id.Start%id.Size != 0 {
		return windowRec{}, false, fmt.Errorf("window %d+%v is not a window", id.Start, time.Duration(id.Size))
	}
	v := bk.windows.Get(windowKey(id.Device, id.Series, id.Size, id.Start))
	if v == nil {
		return windowRec{}, false, nil
	}
	w, err := decodeWindowRec(v)
	return w, err == nil, err
}
