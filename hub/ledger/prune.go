package ledger

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// The ledger is bounded over time as well as per record: it keeps, per
// device, the epochs changed most recently (Trim, the hub's
// limits.epochs_per_device), and forgets a device's epochs not changed
// within the correction horizon when the hub forgets the device (Forget).
//
// Forgetting an epoch never double counts. A forgotten epoch is what a hub
// restarted on an empty data dir sees, which the promise covers: a batch
// of it that comes again is applied again, its raw points overwrite the
// same points in InfluxDB, and the window state keeps readings by
// timestamp (a reading merged again changes nothing); the batch carries
// the agent's settled mark and its Before time, so the ledger starts the
// epoch from the mark and counts the windows up to Before as shared, and
// the hub rebuilds them from InfluxDB's raw rows before it writes them.

// Touch records that (device, epoch) changed at now (the hub's clock, Unix
// ns).
func Touch(tx *bolt.Tx, device string, epoch uint64, now int64) error {
	return tx.Bucket(touched).Put(key(device, epoch), binary.BigEndian.AppendUint64(nil, uint64(now)))
}

// epochAt is one epoch of a device and when it last changed (0: never
// recorded, as in a ledger written before Touch).
type epochAt struct {
	key []byte
	at  int64
}

func epochsOf(tx *bolt.Tx, device string) []epochAt {
	prefix := append([]byte(device), 0)
	t := tx.Bucket(touched)
	var out []epochAt
	c := tx.Bucket(bucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) != len(prefix)+8 {
			continue
		}
		e := epochAt{key: bytes.Clone(k)}
		if v := t.Get(k); len(v) == 8 {
			e.at = int64(binary.BigEndian.Uint64(v))
		}
		out = append(out, e)
	}
	return out
}

func (e epochAt) delete(tx *bolt.Tx) error {
	if err := tx.Bucket(bucket).Delete(e.key); err != nil {
		return err
	}
	return tx.Bucket(touched).Delete(e.key)
}

// Trim keeps the keep epochs of the device that changed most recently,
// deletes the others, and returns how many it deleted.
func Trim(tx *bolt.Tx, device string, keep int) (int, error) {
	es := epochsOf(tx, device)
	if len(es) <= keep {
		return 0, nil
	}
	slices.SortFunc(es, func(a, b epochAt) int { return cmp.Or(cmp.Compare(b.at, a.at), bytes.Compare(a.key, b.key)) })
	for _, e := range es[keep:] {
		if err := e.delete(tx); err != nil {
			return 0, err
		}
	}
	return len(es) - keep, nil
}

// Forget deletes the device's epochs last changed before before (Unix ns;
// one never recorded counts as older), and returns how many.
func Forget(tx *bolt.Tx, device string, before int64) (int, error) {
	n := 0
	for _, e := range epochsOf(tx, device) {
		if e.at < before {
			if err := e.delete(tx); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// Seen calls fn, in device order, for each device in the ledger with the
// latest time one of its epochs changed (0: none recorded).
func Seen(tx *bolt.Tx, fn func(device string, at int64) error) error {
	t := tx.Bucket(touched)
	var dev []byte
	var at int64
	c := tx.Bucket(bucket).Cursor()
	for k, _ := c.First(); ; k, _ = c.Next() {
		var d []byte
		if k != nil {
			if len(k) < 9 || k[len(k)-9] != 0 {
				return errCorrupt
			}
			d = k[:len(k)-9]
		}
		if dev != nil && (k == nil || !bytes.Equal(d, dev)) {
			if err := fn(string(dev), at); err != nil {
				return err
			}
			dev = nil
		}
		if k == nil {
			return nil
		}
		if dev == nil {
			dev, at = bytes.Clone(d), 0
		}
		if v := t.Get(k); len(v) == 8 {
			at = max(at, int64(binary.BigEndian.Uint64(v)))
		}
	}
}
