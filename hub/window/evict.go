package window

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Evict deletes, per device, the minute blobs before the device's
// watermark minus CorrectionHorizon minus the largest window size, and the
// clean window records that end by then. It never deletes what a dirty
// window still needs, and it records the cut so that later readings that
// would reopen an evicted window count as too late. It returns the number
// of keys deleted.
//
// Eviction follows each device's own watermark, never the wall clock
// (wallNow is unused): a device that comes back after days with a backlog
// may still correct its windows, and deleting their readings would make
// that correction wrong.
func (s *Store) Evict(tx *bolt.Tx, wallNow time.Time) (int, error) {
	bk, err := openBuckets(tx)
	if err != nil {
		return 0, err
	}
	maxSize := s.sizes[len(s.sizes)-1]
	var devs []*device // collected first: no writes under a live cursor
	c := bk.devices.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 4 {
			return 0, fmt.Errorf("%w: device key of %d bytes", ErrCorrupt, len(k))
		}
		dev, err := decodeDevice(binary.BigEndian.Uint32(k), v)
		if err != nil {
			return 0, err
		}
		cutoff := floorTo(dev.wm-int64(s.opt.CorrectionHorizon)-maxSize, minuteNs)
		if dk, _ := bk.dirty.Cursor().Seek(k); dk != nil && bytes.HasPrefix(dk, k) {
			end, _, _, err := parseDirtyKey(dk)
			if err != nil {
				return 0, err
			}
			// Every dirty window ends at or after end, so starts after end-maxSize.
			cutoff = min(cutoff, floorTo(end-maxSize, minuteNs))
		}
		if cutoff > dev.evictedTo {
			dev.evictedTo = cutoff
			devs = append(devs, dev)
		}
	}
	n := 0
	for _, dev := range devs {
		m, err := bk.evictDevice(dev)
		n += m
		if err != nil {
			return n, fmt.Errorf("evict %s: %w", dev.name, err)
		}
		if err := bk.devices.Put(u32(nil, dev.id), dev.encode()); err != nil {
			return n, fmt.Errorf("evict %s: %w", dev.name, err)
		}
	}
	return n, nil
}

// evictDevice deletes the device's blobs before dev.evictedTo and its
// clean window records that end by then.
func (bk *buckets) evictDevice(dev *device) (int, error) {
	cutoff := dev.evictedTo
	id := u32(nil, dev.id)
	var sids []uint32
	c := bk.series.Cursor()
	for k, _ := c.Seek(id); k != nil && bytes.HasPrefix(k, id); k, _ = c.Next() {
		if len(k) != 8 {
			return 0, fmt.Errorf("%w: series key of %d bytes", ErrCorrupt, len(k))
		}
		sids = append(sids, binary.BigEndian.Uint32(k[4:]))
	}
	var blobs, windows [][]byte
	for _, sid := range sids {
		blobs = appendKeys(blobs, bk.data, seriesPrefix(dev.id, sid), blobKey(dev.id, sid, cutoff), nil)
		// Window records, one key range per size.
		prefix := seriesPrefix(dev.id, sid)
		wc := bk.windows.Cursor()
		for k, _ := wc.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); {
			if len(k) != 20 {
				return 0, fmt.Errorf("%w: window key of %d bytes", ErrCorrupt, len(k))
			}
			sizeMin := binary.BigEndian.Uint32(k[8:])
			group := u32(seriesPrefix(dev.id, sid), sizeMin)
			if last := cutoff - int64(sizeMin)*minuteNs; last >= 0 { // ends by cutoff: start <= last
				windows = appendKeys(windows, bk.windows, group, u64(group, last+1), isClean)
			}
			if sizeMin == math.MaxUint32 {
				break
			}
			k, _ = wc.Seek(u32(seriesPrefix(dev.id, sid), sizeMin+1))
		}
	}
	for _, k := range blobs {
		if err := bk.data.Delete(k); err != nil {
			return 0, err
		}
	}
	for _, k := range windows {
		if err := bk.windows.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(blobs) + len(windows), nil
}

func isClean(v []byte) bool {
	w, err := decodeWindowRec(v)
	return err == nil && !w.dirty()
}

// appendKeys appends copies of the keys of b in [from, to) whose values
// pass keep (nil: all).
func appendKeys(dst [][]byte, b *bolt.Bucket, from, to []byte, keep func([]byte) bool) [][]byte {
	c := b.Cursor()
	for k, v := c.Seek(from); k != nil && bytes.Compare(k, to) < 0; k, v = c.Next() {
		if keep == nil || keep(v) {
			dst = append(dst, bytes.Clone(k))
		}
	}
	return dst
}
