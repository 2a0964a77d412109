package window

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/protocol"
)

// Times handled here are Unix nanoseconds in [0, maxTime]: the protocol
// forbids negative timestamps, and maxTime (year 2254) leaves room for
// adding a few options (each at most maxDuration) without overflow. Keys
// hold them as big-endian uint64, so byte order is time order.
const (
	maxTime  = math.MaxInt64 - 8*int64(maxDuration)
	minuteNs = int64(time.Minute)
)

// floorTo returns the largest multiple of size at or below t (t may be negative).
func floorTo(t, size int64) int64 {
	m := t % size
	if m < 0 {
		m += size
	}
	return t - m
}

// ceilTo returns the smallest multiple of size at or above t.
func ceilTo(t, size int64) int64 {
	f := floorTo(t, size)
	if f == t {
		return f
	}
	return f + size
}

var pow10 = [...]int64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

// Key layouts (be = big endian):
//
//	devices    dev(4)                          -> device record
//	names      device name                     -> dev(4)
//	serieskeys dev(4) desc                     -> sid(4)
//	series     dev(4) sid(4)                   -> desc
//	data       dev(4) sid(4) minute(8)         -> blob
//	windows    dev(4) sid(4) sizeMin(4) start(8) -> version(8) emitted(8)
//	dirty      dev(4) end(8) sid(4) sizeMin(4)  -> (empty)
//	ready      dev(4)                          -> (empty)
//	quiet      lastWall(8) dev(4)              -> (empty)
//	others     dev(4) desc                     -> 0 (bool and string series: registered, no state)
func u32(dst []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(dst, v) }
func u64(dst []byte, v int64) []byte  { return binary.BigEndian.AppendUint64(dst, uint64(v)) }

func seriesPrefix(dev, sid uint32) []byte { return u32(u32(make([]byte, 0, 20), dev), sid) }

func blobKey(dev, sid uint32, minute int64) []byte { return u64(seriesPrefix(dev, sid), minute) }

func windowKey(dev, sid uint32, size, start int64) []byte {
	return u64(u32(seriesPrefix(dev, sid), uint32(size/minuteNs)), start)
}

func dirtyKey(dev uint32, end int64, sid uint32, size int64) []byte {
	return u32(u32(u64(u32(make([]byte, 0, 20), dev), end), sid), uint32(size/minuteNs))
}

func quietKey(lastWall int64, dev uint32) []byte { return u32(u64(make([]byte, 0, 12), lastWall), dev) }

// parseDirtyKey returns the window a dirty-index key names.
func parseDirtyKey(k []byte) (end int64, sid uint32, size int64, err error) {
	if len(k) != 20 {
		return 0, 0, 0, fmt.Errorf("%w: dirty key of %d bytes", ErrCorrupt, len(k))
	}
	end = int64(binary.BigEndian.Uint64(k[4:]))
	sid = binary.BigEndian.Uint32(k[12:])
	size = int64(binary.BigEndian.Uint32(k[16:])) * minuteNs
	if size <= 0 || end < size || end > maxTime+int64(maxDuration) {
		return 0, 0, 0, fmt.Errorf("%w: dirty key for window ending %d of size %d", ErrCorrupt, end, size)
	}
	return end, sid, size, nil
}

// windowRec is a window's change counter: version bumps on every change,
// emitted is the version last marked emitted (0: never). The window is dirty
// while they differ.
type windowRec struct{ version, emitted uint64 }

func (w windowRec) dirty() bool { return w.version != w.emitted }

func (w windowRec) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), w.version), w.emitted)
}

func decodeWindowRec(v []byte) (windowRec, error) {
	if len(v) != 16 {
		return windowRec{}, fmt.Errorf("%w: window record of %d bytes", ErrCorrupt, len(v))
	}
	return windowRec{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])}, nil
}

// device is a device's metadata.
type device struct {
	id   uint32
	name string
	// wm is the watermark: the latest event time seen that was not beyond
	// the hub's clock plus MaxFutureSkew; -1 before the first reading.
	wm int64
	// lastWall is the hub's clock at the device's last batch.
	lastWall int64
	// evictedTo: state below this minute-aligned time has been deleted.
	evictedTo int64
}

func (d *device) encode() []byte {
	b := make([]byte, 0, 24+len(d.name))
	return append(u64(u64(u64(b, d.wm), d.lastWall), d.evictedTo), d.name...)
}

func decodeDevice(id uint32, v []byte) (*device, error) {
	if len(v) < 25 {
		return nil, fmt.Errorf("%w: device %d record of %d bytes", ErrCorrupt, id, len(v))
	}
	be := binary.BigEndian
	d := &device{id: id, wm: int64(be.Uint64(v)), lastWall: int64(be.Uint64(v[8:])), evictedTo: int64(be.Uint64(v[16:])), name: string(v[24:])}
	if d.wm < -1 || d.wm > maxTime || d.lastWall < 0 || d.lastWall > maxTime || d.evictedTo < 0 || d.evictedTo > maxTime {
		return nil, fmt.Errorf("%w: device %q record times %d %d %d", ErrCorrupt, d.name, d.wm, d.lastWall, d.evictedTo)
	}
	return d, nil
}

// seriesDesc is the identity of a series within its device.
type seriesDesc struct {
	sensor, metric, unit string
	labels               []protocol.Label
}

// encode returns the canonical bytes of the identity: length-prefixed
// strings, labels sorted by key then value, so any input maps to exactly
// one key and the key decodes back. Type and resolution are not part of
// it: a series keeps its identity (and its windows) when they change, as
// in InfluxDB, whose series key has neither.
func (s *seriesDesc) encode(dst []byte) []byte {
	str := func(v string) {
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	str(s.sensor)
	str(s.metric)
	str(s.unit)
	labels := s.labels
	cmp := func(a, b protocol.Label) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	}
	if !slices.IsSortedFunc(labels, cmp) {
		labels = slices.SortedFunc(slices.Values(labels), cmp)
	}
	dst = binary.AppendUvarint(dst, uint64(len(labels)))
	for _, l := range labels {
		str(l.Key)
		str(l.Value)
	}
	return dst
}

func decodeSeriesDesc(b []byte) (seriesDesc, error) {
	var s seriesDesc
	bad := fmt.Errorf("%w: series description of %d bytes", ErrCorrupt, len(b))
	str := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", false
		}
		v := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return v, true
	}
	var ok bool
	if s.sensor, ok = str(); !ok {
		return s, bad
	}
	if s.metric, ok = str(); !ok {
		return s, bad
	}
	if s.unit, ok = str(); !ok {
		return s, bad
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return s, bad
	}
	b = b[k:]
	for range n {
		var l protocol.Label
		if l.Key, ok = str(); !ok {
			return s, bad
		}
		if l.Value, ok = str(); !ok {
			return s, bad
		}
		s.labels = append(s.labels, l)
	}
	if len(b) != 0 {
		return s, bad
	}
	return s, nil
}

// A blob holds the readings of one series in one minute, sorted by time,
// one per timestamp:
//
//	precision p (1 byte, 0..9: times in units of 10^p ns)
//	count n (uvarint, >= 1)
//	n time deltas (uvarint units): the first from the minute's start, the
//	  others from the previous time (> 0)
//	n values: float64 bits, 8 bytes little endian each
//
// A series sampled on whole seconds costs 9 bytes per reading.
func appendBlob(dst []byte, minute int64, ts []int64, vs []uint64) []byte {
	p := 9
	for _, t := range ts {
		for p > 0 && (t-minute)%pow10[p] != 0 {
			p--
		}
	}
	unit := pow10[p]
	dst = append(dst, byte(p))
	dst = binary.AppendUvarint(dst, uint64(len(ts)))
	prev := minute
	for _, t := range ts {
		dst = binary.AppendUvarint(dst, uint64((t-prev)/unit))
		prev = t
	}
	for _, v := range vs {
		dst = binary.LittleEndian.AppendUint64(dst, v)
	}
	return dst
}

// decodeBlob appends the blob's times and value bits to ts and vs. Any
// malformation (bad precision or count, a time outside the minute or out of
// order, a length that does not add up) is ErrCorrupt.
func decodeBlob(b []byte, minute int64, ts []int64, vs []uint64) ([]int64, []uint64, error) {
	bad := func(what string) error {
		return fmt.Errorf("%w: blob at minute %d (%d bytes): %s", ErrCorrupt, minute, len(b), what)
	}
	if len(b) < 1 || b[0] > 9 {
		return ts, vs, bad("precision")
	}
	unit := pow10[b[0]]
	n, k := binary.Uvarint(b[1:])
	// Every reading takes at least 9 bytes; checking that first keeps a
	// corrupt count from allocating.
	if k <= 0 || n == 0 || n > uint64(len(b))/9 {
		return ts, vs, bad("count")
	}
	pos := 1 + k
	off := int64(0)
	for i := range n {
		d, k := binary.Uvarint(b[pos:])
		if k <= 0 {
			return ts, vs, bad("truncated times")
		}
		pos += k
		if d >= uint64(minuteNs/unit) || i > 0 && d == 0 {
			return ts, vs, bad("time delta")
		}
		off += int64(d) * unit
		if off >= minuteNs {
			return ts, vs, bad("time beyond the minute")
		}
		ts = append(ts, minute+off)
	}
	if uint64(len(b)-pos) != 8*n {
		return ts, vs, bad("value bytes")
	}
	for ; pos < len(b); pos += 8 {
		vs = append(vs, binary.LittleEndian.Uint64(b[pos:]))
	}
	return ts, vs, nil
}

// mergeSorted merges the new readings (nt, nv) into the old (ot, ov), both
// sorted with unique times; at an equal time the new value wins. It appends
// to (t, v) and reports whether the result differs from the old readings.
func mergeSorted(ot []int64, ov []uint64, nt []int64, nv []uint64, t []int64, v []uint64) ([]int64, []uint64, bool) {
	changed := false
	i, j := 0, 0
	for i < len(ot) || j < len(nt) {
		switch {
		case j == len(nt) || i < len(ot) && ot[i] < nt[j]:
			t, v = append(t, ot[i]), append(v, ov[i])
			i++
		case i == len(ot) || nt[j] < ot[i]:
			t, v = append(t, nt[j]), append(v, nv[j])
			changed = true
			j++
		default: // same time: the newer write wins
			t, v = append(t, nt[j]), append(v, nv[j])
			changed = changed || nv[j] != ov[i]
			i++
			j++
		}
	}
	return t, v, changed
}
