package window

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/protocol"
)

// This file bounds the registries: how many series a device has (the
// hub's limits.series_per_device), and the devices the hub forgets.

// CountSeries returns how many of the batch's series its device has not
// registered yet (added; the same series twice in the batch counts once),
// and, when there are any, how many it has (known: numeric and others;
// 0 when added is 0). The hub refuses a batch whose new series would take
// its device past its limit, before anything of it is stored.
func (s *Store) CountSeries(tx *bolt.Tx, b *protocol.Batch) (known, added int, err error) {
	bk, err := openBuckets(tx)
	if err != nil {
		return 0, 0, err
	}
	dev, err := bk.device(b.Device, false)
	if err != nil {
		return 0, 0, err
	}
	var seen map[string]bool
	for i := range b.Series {
		sr := &b.Series[i]
		d := seriesDesc{sr.Sensor, sr.Metric, sr.Unit, sr.Labels}
		var key []byte
		if dev != nil {
			key = d.encode(u32(nil, dev.id))
			if bk.seriesKeys.Get(key) != nil || bk.others.Get(key) != nil {
				continue
			}
		} else {
			key = d.encode(nil)
		}
		if len(b.Series) > 1 {
			if seen == nil {
				seen = map[string]bool{}
			}
			if seen[string(key)] {
				continue
			}
			seen[string(key)] = true
		}
		added++
	}
	if added == 0 || dev == nil {
		return 0, added, nil
	}
	prefix := u32(nil, dev.id)
	for _, b := range []*bolt.Bucket{bk.seriesKeys, bk.others} {
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			known++
		}
	}
	return known, added, nil
}

// Forget deletes everything the store holds of the device (registrations,
// readings, windows, index entries) if its last batch came before before
// on the hub's clock and none of its windows waits to be written; it
// reports whether it kept the device (false too for a device it never
// held). A device that sends again afterwards starts
// afresh, as on a hub with an empty data dir: its readings' windows that
// may hold earlier readings are shared (the ledger's custody) and rebuilt
// from InfluxDB's raw rows before they are written.
func (s *Store) Forget(tx *bolt.Tx, device string, before time.Time) (kept bool, err error) {
	bk, err := openBuckets(tx)
	if err != nil {
		return false, err
	}
	dev, err := bk.device(device, false)
	if err != nil || dev == nil {
		return false, err
	}
	if dev.lastWall >= clampTime(before) {
		return true, nil
	}
	id := u32(nil, dev.id)
	if k, _ := bk.dirty.Cursor().Seek(id); k != nil && bytes.HasPrefix(k, id) {
		return true, nil // written first, then forgotten
	}
	for _, b := range []*bolt.Bucket{bk.seriesKeys, bk.series, bk.data, bk.windows, bk.others} {
		if err := deletePrefix(b, id); err != nil {
			return true, fmt.Errorf("forget %s: %w", device, err)
		}
	}
	for _, del := range []struct {
		b *bolt.Bucket
		k []byte
	}{{bk.names, []byte(device)}, {bk.devices, id}, {bk.ready, id}, {bk.quiet, quietKey(dev.lastWall, dev.id)}} {
		if err := del.b.Delete(del.k); err != nil {
			return true, fmt.Errorf("forget %s: %w", device, err)
		}
	}
	return false, nil
}

// deletePrefix deletes every key of b that starts with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var keys [][]byte // collected first: no writes under a live cursor
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Devices calls fn for each device the store holds, with the hub's clock
// at its last batch (Unix ns).
func (s *Store) Devices(tx *bolt.Tx, fn func(device string, lastWall int64) error) error {
	bk, err := openBuckets(tx)
	if err != nil {
		return err
	}
	c := bk.devices.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 4 {
			return fmt.Errorf("%w: device key of %d bytes", ErrCorrupt, len(k))
		}
		dev, err := decodeDevice(binary.BigEndian.Uint32(k), v)
		if err != nil {
			return err
		}
		if err := fn(dev.name, dev.lastWall); err != nil {
			return err
		}
	}
	return nil
}
