package ingest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/hub/window"
)

// The quality checks (hub/quality) keep their state in one bucket:
//
//	"d" 0 device          -> quality.DeviceState (JSON)
//	"s" 0 device 0 sid(4) -> quality.SeriesState (JSON); sid is the window store's series id
var qualityBucket = []byte("quality")

func deviceKey(device string) []byte { return append([]byte("d\x00"), device...) }

func seriesKey(device string, sid uint32) []byte {
	return binary.BigEndian.AppendUint32(append(append([]byte("s\x00"), device...), 0), sid)
}

// qualityState is the checks' in-memory side, owned by the quality loop.
type qualityState struct {
	devices map[string]*quality.DeviceState
	// open holds every open finding by state key, for the fleet view and
	// the gauges.
	open map[string][]quality.Finding
	// progress is the event time each device's series were checked up to.
	progress map[string]int64
	// next is where the next run starts its series work (runs are bounded
	// by maxSeriesPerRun; the rest of the devices wait for the next run).
	next int
}

// maxSeriesPerRun bounds the series one run checks, so a run's memory (the
// states and events it holds until they are kept) stays bounded however
// large the fleet; devices take turns.
const maxSeriesPerRun = 20000

// loadQuality reads the persisted state (at start).
func (h *Hub) loadQuality(tx *bolt.Tx) error {
	q := &qualityState{devices: map[string]*quality.DeviceState{}, open: map[string][]quality.Finding{}, progress: map[string]int64{}}
	err := tx.Bucket(qualityBucket).ForEach(func(k, v []byte) error {
		var open []quality.Finding
		switch {
		case len(k) > 2 && k[0] == 'd' && k[1] == 0:
			d := new(quality.DeviceState)
			if err := json.Unmarshal(v, d); err != nil {
				// Derived state: never worth stopping ingest for. The
				// device starts over (its open findings may be found again).
				h.log.Error("quality state unreadable; starting it over", "device", string(k[2:]), "err", err)
				return nil
			}
			q.devices[string(k[2:])] = d
			open = d.OpenFindings()
		case len(k) > 2 && k[0] == 's' && k[1] == 0:
			s := new(quality.SeriesState)
			if err := json.Unmarshal(v, s); err != nil {
				return nil // logged and started over when the series is next checked
			}
			open = s.OpenFindings()
		}
		if len(open) > 0 {
			q.open[string(k)] = open
		}
		return nil
	})
	h.quality = q
	return err
}

// qualityLoop runs the checks every Quality.Interval.
func (h *Hub) qualityLoop(ctx context.Context) {
	h.publishFindings()
	t := time.NewTicker(time.Duration(h.o.Quality.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := h.QualityOnce(ctx); err != nil && ctx.Err() == nil {
				h.log.Error("quality checks", "err", err)
			}
		}
	}
}

// QualityOnce runs the checks once: device checks for every device known,
// series checks for the devices that made progress. It writes the events
// to InfluxDB, then keeps the new state; on an error nothing is kept and
// the next run repeats the work (the rows are idempotent). It returns the
// number of events. Only the quality loop (or a test, instead of it) may
// call it.
func (h *Hub) QualityOnce(ctx context.Context) (int, error) {
	q, cfg := h.quality, h.o.Quality
	now := h.o.Now().UnixNano()
	obs := h.fleet.qualityObs()
	floor := cfg.Floor().UnixNano()
	lateness := int64(h.o.Windows.Options().AllowedLateness)

	var events []quality.Event
	emit := func(e quality.Event) { events = append(events, e) }
	changed := map[string][]byte{}
	devices := map[string]*quality.DeviceState{}
	progress := map[string]int64{}
	names := make([]string, 0, len(q.devices)+len(obs))
	for n := range q.devices {
		names = append(names, n)
	}
	for n := range obs {
		if q.devices[n] == nil {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if len(names) > 0 { // start where the last run stopped
		i := q.next % len(names)
		names = append(names[i:], names[:i]...)
	}
	seriesDone, stoppedAt := 0, -1
	err := h.o.DB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(qualityBucket)
		for i, name := range names {
			o, ok := obs[name]
			if !ok {
				o = &qualitySnap{}
			}
			o.DeviceObs.Device, o.DeviceObs.Now = name, now
			d := &quality.DeviceState{}
			if old := q.devices[name]; old != nil {
				d = old.Clone()
			}
			before, _ := json.Marshal(d)
			d.Check(cfg, &o.DeviceObs, emit)
			if after, _ := json.Marshal(d); string(after) != string(before) || q.devices[name] == nil {
				changed[string(deviceKey(name))] = after
				devices[name] = d
			}

			// Series: up to the device's progress in event time.
			wm, ok, err := h.o.Windows.Watermark(tx, name)
			if err != nil {
				return err
			}
			p := int64(math.MinInt64)
			if ok {
				p = wm - lateness
			}
			if o.idle && o.statusTime >= floor {
				p = max(p, o.statusTime-lateness)
			}
			if p <= q.progress[name] || p < floor || stoppedAt >= 0 {
				continue
			}
			if seriesDone >= maxSeriesPerRun {
				stoppedAt = i
				continue
			}
			progress[name] = p
			err = h.o.Windows.SeriesOf(tx, name, func(se window.Series) error {
				k := seriesKey(name, se.ID)
				s := quality.NewSeriesState()
				if v := b.Get(k); v != nil {
					if err := json.Unmarshal(v, s); err != nil {
						h.log.Error("quality state unreadable; checking the series from its start", "device", name,
							"sensor", se.Sensor, "metric", se.Metric, "err", err)
						s = quality.NewSeriesState()
					}
				}
				if s.Cursor >= p {
					return nil
				}
				seriesDone++
				m := &quality.SeriesMeta{Device: name, Sensor: se.Sensor, Metric: se.Metric, Unit: se.Unit,
					Limits: cfg.For(name, se.Sensor, se.Metric, se.Unit), Interval: o.intervals[se.Sensor], Floor: floor}
				err := h.o.Windows.Readings(tx, name, se.ID, s.Cursor, p, func(t int64, v float64) { s.Observe(m, t, v, emit) })
				if err != nil {
					return err
				}
				s.Advance(m, p, emit)
				v, err := json.Marshal(s)
				if err != nil {
					return err
				}
				changed[string(k)] = v
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(events) > 0 {
		if err := h.o.Influx.Write(ctx, qualityPoints(nil, events)); err != nil {
			return 0, err
		}
	}
	if len(changed) > 0 {
		err := h.o.DB.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(qualityBucket)
			for k, v := range changed {
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	// Kept: now the in-memory side follows.
	if stoppedAt >= 0 {
		q.next += stoppedAt
	}
	for n, d := range devices {
		q.devices[n] = d
	}
	for n, p := range progress {
		q.progress[n] = p
	}
	for k, v := range changed {
		var st struct {
			Open []quality.Finding `json:"open"`
		}
		json.Unmarshal(v, &st)
		if len(st.Open) > 0 {
			q.open[k] = st.Open
		} else {
			delete(q.open, k)
		}
	}
	for _, e := range events {
		h.stats.qualityEvent(e.Kind, e.State)
	}
	if len(changed) > 0 {
		h.publishFindings()
	}
	return len(events), nil
}

// publishFindings hands the open findings to the fleet view.
func (h *Hub) publishFindings() {
	per := map[string][]quality.Finding{}
	counts := map[quality.Kind]int{}
	for k, fs := range h.quality.open {
		device := strings.SplitN(k[2:], "\x00", 2)[0]
		per[device] = append(per[device], fs...)
		for _, f := range fs {
			counts[f.Kind]++
		}
	}
	for _, fs := range per {
		slices.SortFunc(fs, func(a, b quality.Finding) int {
			return strings.Compare(string(a.Kind)+a.Sensor+a.Metric, string(b.Kind)+b.Sensor+b.Metric)
		})
	}
	h.fleet.setFindings(per)
	h.stats.setOpen(counts)
}

// qualitySnap is one device's observations for the checks.
type qualitySnap struct {
	quality.DeviceObs
	idle       bool  // its last online status said nothing was waiting
	statusTime int64 // that status's time, on its clock
	intervals  map[string]time.Duration
}

func (f *fleet) qualityObs() map[string]*qualitySnap {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]*qualitySnap, len(f.obs))
	for name, o := range f.obs {
		s := &qualitySnap{idle: o.haveStatus && o.backlog == 0, statusTime: o.statusTime, intervals: o.intervals}
		s.LastAlive, s.LastWill, s.Backlog = o.lastAlive, o.lastWill, o.backlog
		s.ClockUnset, s.UnsetSince, s.UnsetReadings, s.ClockSetAt = o.unset, o.unsetSince, o.unsetReadings, o.clockSetAt
		// Old batches of a backlog say nothing about the clock: judge it
		// only while little is waiting.
		if d := f.devices[name]; d != nil && len(f.offsets[name]) > 0 && o.haveStatus && o.backlogBats <= 4 {
			s.ClockOffset, s.OffsetKnown = d.ClockOffsetSeconds, true
		}
		out[name] = s
	}
	return out
}

func (f *fleet) setFindings(per map[string][]quality.Finding) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, d := range f.devices {
		d.Findings = per[name]
	}
	for name, fs := range per {
		if f.devices[name] == nil {
			f.get(name).Findings = fs
		}
	}
}

// qualityPoints renders events as rows of the quality measurement.
func qualityPoints(dst []influx.Point, evs []quality.Event) []influx.Point {
	for _, e := range evs {
		tags := []influx.Tag{{Key: "device", Value: e.Device}, {Key: "kind", Value: string(e.Kind)}}
		if e.Sensor != "" {
			tags = append(tags, influx.Tag{Key: "metric", Value: e.Metric}, influx.Tag{Key: "sensor", Value: e.Sensor})
		}
		open := int64(0)
		if e.State == quality.StateOpened {
			open = 1
		}
		dst = append(dst, influx.Point{Measurement: QualityMeasurement, Tags: tags, Time: e.Time, Fields: []influx.Field{
			{Key: "count", Value: e.Count},
			{Key: "detail", Value: e.Detail},
			{Key: "open", Value: open},
			{Key: "opened", Value: e.Opened},
			{Key: "resolved", Value: e.Resolved},
			{Key: "state", Value: e.State},
			{Key: "value", Value: e.Value},
		}})
	}
	return dst
}
