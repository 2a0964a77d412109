package window

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/freshet-iot/freshet/protocol"
)

func TestBlobRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	minute := 29557000 * minuteNs
	for range 2000 {
		unit := pow10[rng.IntN(10)]
		n := 1 + rng.IntN(70)
		set := map[int64]bool{}
		for range n {
			set[minute+rng.Int64N(minuteNs/unit)*unit] = true
		}
		ts := slices.Sorted(func(y func(int64) bool) {
			for t := range set {
				if !y(t) {
					return
				}
			}
		})
		vs := make([]uint64, len(ts))
		for i := range vs {
			vs[i] = math.Float64bits(rng.NormFloat64())
		}
		b := appendBlob(nil, minute, ts, vs)
		gt, gv, err := decodeBlob(b, minute, nil, nil)
		if err != nil || !slices.Equal(gt, ts) || !slices.Equal(gv, vs) {
			t.Fatalf("round trip of %d readings: %v", len(ts), err)
		}
		if unit == 1e9 && len(b) != 2+9*len(ts) && len(ts) < 128 {
			t.Errorf("%d readings on whole seconds take %d bytes, want %d", len(ts), len(b), 2+9*len(ts))
		}
	}
}

func TestMergeSorted(t *testing.T) {
	ot, ov := []int64{1, 3, 5}, []uint64{10, 30, 50}
	for _, tc := range []struct {
		nt      []int64
		nv      []uint64
		wantT   []int64
		wantV   []uint64
		changed bool
	}{
		{[]int64{3}, []uint64{30}, ot, ov, false},
		{[]int64{3}, []uint64{31}, ot, []uint64{10, 31, 50}, true},
		{[]int64{0, 6}, []uint64{1, 2}, []int64{0, 1, 3, 5, 6}, []uint64{1, 10, 30, 50, 2}, true},
		{[]int64{1, 2, 5}, []uint64{10, 20, 50}, []int64{1, 2, 3, 5}, []uint64{10, 20, 30, 50}, true},
	} {
		gt, gv, ch := mergeSorted(ot, ov, tc.nt, tc.nv, nil, nil)
		if !slices.Equal(gt, tc.wantT) || !slices.Equal(gv, tc.wantV) || ch != tc.changed {
			t.Errorf("merge %v: %v %v %v", tc.nt, gt, gv, ch)
		}
	}
}

func TestSeriesDescRoundTrip(t *testing.T) {
	d := seriesDesc{"bme280-0x76", "temperature", "°C", []protocol.Label{{Key: "room", Value: "k\x00itchen"}, {Key: "a"}}}
	b := d.encode(nil)
	got, err := decodeSeriesDesc(b)
	if err != nil || got.sensor != d.sensor || got.unit != d.unit || len(got.labels) != 2 || got.labels[0].Key != "a" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for i := range b {
		if _, err := decodeSeriesDesc(b[:i]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("prefix of %d bytes: %v", i, err)
		}
	}
}

// FuzzDecodeBlob: no input makes the blob decoder panic, and what it
// accepts re-encodes to the same bytes.
func FuzzDecodeBlob(f *testing.F) {
	minute := 1000 * minuteNs
	f.Add(appendBlob(nil, minute, []int64{minute, minute + 1e9}, []uint64{1, 2}))
	f.Add(appendBlob(nil, minute, []int64{minute + 7}, []uint64{math.MaxUint64}))
	f.Add([]byte{9, 200, 1, 2})
	f.Add([]byte{0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, vs, err := decodeBlob(b, minute, nil, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if len(ts) != len(vs) || !slices.IsSorted(ts) {
			t.Fatalf("decoded %d times, %d values", len(ts), len(vs))
		}
		again, _, err := decodeBlob(appendBlob(nil, minute, ts, vs), minute, nil, nil)
		if err != nil || !slices.Equal(again, ts) {
			t.Fatalf("re-encoding: %v", err)
		}
	})
}
