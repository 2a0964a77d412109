package window

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// Series describes one numeric series of a device, for readers of the
// stored readings (the hub's quality checks).
type Series struct {
	ID                   uint32 // stable within the store
	Sensor, Metric, Unit string
	Labels               []protocol.Label
}

// Watermark returns the device's watermark (the latest event time of its
// readings, see the package doc); ok is false for a device never merged or
// without readings yet.
func (s *Store) Watermark(tx *bolt.Tx, device string) (wm int64, ok bool, err error) {
	bk, err := openBuckets(tx)
	if err != nil {
		return 0, false, err
	}
	dev, err := bk.device(device, false)
	if err != nil || dev == nil || dev.wm < 0 {
		return 0, false, err
	}
	return dev.wm, true, nil
}

// SeriesOf calls fn for each numeric series of the device, in id order.
func (s *Store) SeriesOf(tx *bolt.Tx, device string, fn func(Series) error) error {
	bk, err := openBuckets(tx)
	if err != nil {
		return err
	}
	dev, err := bk.device(device, false)
	if err != nil || dev == nil {
		return err
	}
	prefix := u32(nil, dev.id)
	c := bk.series.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != 8 {
			return fmt.Errorf("%w: series key of %d bytes", ErrCorrupt, len(k))
		}
		d, err := decodeSeriesDesc(v)
		if err != nil {
			return err
		}
		if err := fn(Series{ID: binary.BigEndian.Uint32(k[4:]), Sensor: d.sensor, Metric: d.metric, Unit: d.unit, Labels: d.labels}); err != nil {
			return err
		}
	}
	return nil
}

// Readings calls fn for each stored reading of the series with after < t
// <= upTo, in time order. Readings before the device's eviction cut are
// gone (see Evict).
func (s *Store) Readings(tx *bolt.Tx, device string, sid uint32, after, upTo int64, fn func(t int64, v float64)) error {
	bk, err := openBuckets(tx)
	if err != nil {
		return err
	}
	dev, err := bk.device(device, false)
	if err != nil || dev == nil || upTo <= after {
		return err
	}
	start := max(0, after)
	if start < maxTime {
		start = floorTo(start, minuteNs)
	}
	end := min(maxTime, upTo) + 1
	var ts []int64
	var vs []uint64
	prefix := seriesPrefix(dev.id, sid)
	c := bk.data.Cursor()
	for k, v := c.Seek(blobKey(dev.id, sid, start)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != 16 {
			return fmt.Errorf("%w: data key of %d bytes", ErrCorrupt, len(k))
		}
		minute := int64(binary.BigEndian.Uint64(k[8:]))
		if minute >= end {
			break
		}
		if minute%minuteNs != 0 || minute > maxTime {
			return fmt.Errorf("%w: data key for minute %d", ErrCorrupt, minute)
		}
		if ts, vs, err = decodeBlob(v, minute, ts[:0], vs[:0]); err != nil {
			return err
		}
		for i, t := range ts {
			if t > after && t <= upTo {
				fn(t, math.Float64frombits(vs[i]))
			}
		}
	}
	return nil
}

// MinuteCounts returns how many readings of the series the store holds in
// [from, to), by minute start (minutes holding none are left out; from is
// taken to its minute). The hub compares them with InfluxDB's raw rows to
// find readings another hub applied (hub/emit).
func (s *Store) MinuteCounts(tx *bolt.Tx, device string, sid uint32, from, to int64) (map[int64]int, error) {
	bk, err := openBuckets(tx)
	if err != nil {
		return nil, err
	}
	dev, err := bk.device(device, false)
	if err != nil || dev == nil {
		return nil, err
	}
	out := map[int64]int{}
	prefix := seriesPrefix(dev.id, sid)
	c := bk.data.Cursor()
	for k, v := c.Seek(blobKey(dev.id, sid, floorTo(max(0, from), minuteNs))); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != 16 {
			return nil, fmt.Errorf("%w: data key of %d bytes", ErrCorrupt, len(k))
		}
		minute := int64(binary.BigEndian.Uint64(k[8:]))
		if minute >= to {
			break
		}
		if minute+minuteNs <= to {
			if len(v) < 2 {
				return nil, fmt.Errorf("%w: blob of %d bytes", ErrCorrupt, len(v))
			}
			n, k := binary.Uvarint(v[1:])
			if k <= 0 {
				return nil, fmt.Errorf("%w: blob count", ErrCorrupt)
			}
			out[minute] = int(n)
			continue
		}
		ts, _, err := decodeBlob(v, minute, nil, nil) // the last minute, cut at to
		if err != nil {
			return nil, err
		}
		n := 0
		for _, t := range ts {
			if t < to {
				n++
			}
		}
		if n > 0 {
			out[minute] = n
		}
	}
	return out, nil
}
