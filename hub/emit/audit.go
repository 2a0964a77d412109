package emit

import (
	"context"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/protocol"
)

// audit takes in what another hub applied of a device that came to this
// hub: the readings InfluxDB holds of the device in the span before it
// came, and this hub does not, of every series (this hub may never have
// seen some). The other hub may have stopped, or lost its state, before it
// wrote the windows of those readings; once they are in this hub's state,
// their windows are written from here (as shared windows: rebuilt and
// verified). A device is audited when its custody's SharedBefore has grown
// past what was audited, at most once per AuditEvery.
func (e *Emitter) audit(ctx context.Context, device string, v custodyOf) error {
	if v.sharedBefore == math.MinInt64 || v.sharedBefore <= e.auditedTo(device) {
		return nil // nothing shared, or audited that far already
	}
	now := e.o.Now()
	var done, at int64
	hi := v.sharedBefore
	known := map[string]window.Series{}
	err := e.o.DB.View(func(tx *bolt.Tx) error {
		if r := tx.Bucket(auditBucket).Get([]byte(device)); len(r) == 16 {
			done, at = int64(binary.BigEndian.Uint64(r)), int64(binary.BigEndian.Uint64(r[8:]))
		}
		wm, ok, err := e.o.Windows.Watermark(tx, device)
		if err != nil || !ok {
			hi = done // nothing merged yet: nothing to audit
			return err
		}
		hi = min(hi, wm) // a version 1 agent's hole has no bound
		return e.o.Windows.SeriesOf(tx, device, func(s window.Series) error {
			known[seriesKey(s.Metric, schema.SeriesTags(device, &protocol.Series{Sensor: s.Sensor, Unit: s.Unit, Labels: s.Labels}))] = s
			return nil
		})
	})
	if err != nil || hi <= done || now.UnixNano()-at < int64(e.o.AuditEvery) {
		if err == nil && hi <= done {
			e.setAudited(device, done)
		}
		return err
	}
	lo := max(done, hi-int64(e.o.AuditSpan))
	lo, end := lo-lo%int64(time.Minute), hi+1 // whole minutes
	counts, err := e.o.Reader.CountDevice(ctx, device, lo, end)
	if err != nil {
		return err
	}
	// The minutes where InfluxDB holds more of a series than this hub.
	type need struct {
		r      influx.SeriesRange
		series protocol.Series
	}
	var needs []need
	err = e.o.DB.View(func(tx *bolt.Tx) error {
		for _, sc := range counts {
			if sc.Measurement == schema.GapMeasurement || sc.Measurement == schema.QualityMeasurement {
				continue
			}
			ps, ok := seriesOfTags(sc.Measurement, sc.Tags)
			if !ok {
				continue
			}
			var local map[int64]int
			if s, ok := known[seriesKey(sc.Measurement, sc.Tags)]; ok {
				if local, err = e.o.Windows.MinuteCounts(tx, device, s.ID, lo, end); err != nil {
					return err
				}
			}
			for j, minute := range sc.Minutes {
				if sc.Counts[j] <= int64(local[minute]) {
					continue
				}
				if k := len(needs); k > 0 && needs[k-1].r.Measurement == sc.Measurement && slices.Equal(needs[k-1].r.Tags, sc.Tags) && needs[k-1].r.End == minute {
					needs[k-1].r.End += int64(time.Minute)
					continue
				}
				needs = append(needs, need{r: influx.SeriesRange{Measurement: sc.Measurement, Tags: sc.Tags, Start: minute, End: minute + int64(time.Minute)}, series: ps})
			}
			if k := len(needs); k > 0 {
				// Up to hi only: what lies beyond is not this hub's to hold
				// yet (the quality checks treat only what is up to hi as
				// shared).
				needs[k-1].r.End = min(needs[k-1].r.End, end)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	adopted := 0
	if len(needs) > 0 {
		ranges := make([]influx.SeriesRange, len(needs))
		for i, n := range needs {
			ranges[i] = n.r
		}
		rows, err := e.o.Reader.Read(ctx, ranges, []string{"value"})
		if err != nil {
			return err
		}
		b := &protocol.Batch{Device: device}
		for k, r := range rows {
			ts, vs := column(r)
			if len(ts) == 0 {
				continue
			}
			s := needs[k].series
			s.Times, s.Floats = ts, vs
			b.Series = append(b.Series, s)
			adopted += len(ts)
		}
		if len(b.Series) > 0 {
			err := e.o.DB.Update(func(tx *bolt.Tx) error {
				_, err := e.o.Windows.Merge(tx, b, now)
				return err
			})
			if err != nil {
				return err
			}
		}
	}
	err = e.o.DB.Update(func(tx *bolt.Tx) error {
		v := binary.BigEndian.AppendUint64(nil, uint64(hi))
		return tx.Bucket(auditBucket).Put([]byte(device), binary.BigEndian.AppendUint64(v, uint64(now.UnixNano())))
	})
	if err != nil {
		return err
	}
	if v.sharedBefore <= hi {
		e.setAudited(device, hi)
	}
	e.metrics.Audits.Inc()
	e.metrics.Adopted.Add(float64(adopted))
	if adopted > 0 {
		e.log.Info("took in readings another hub applied", "device", device, "readings", adopted,
			"from", time.Unix(0, lo).UTC(), "to", time.Unix(0, hi).UTC())
	}
	return nil
}

// seriesKey identifies a series by measurement and tags (sorted).
func seriesKey(measurement string, tags []influx.Tag) string {
	var b strings.Builder
	b.WriteString(measurement)
	for _, t := range tags {
		b.WriteByte(0)
		b.WriteString(t.Key)
		b.WriteByte(0)
		b.WriteString(t.Value)
	}
	return b.String()
}

// seriesOfTags is the inverse of schema.SeriesTags: the series a raw row
// belongs to (as a float series, which is how the windows keep it).
func seriesOfTags(measurement string, tags []influx.Tag) (protocol.Series, bool) {
	s := protocol.Series{Metric: measurement, Type: protocol.Float}
	for _, t := range tags {
		switch t.Key {
		case "device":
		case "sensor":
			s.Sensor = t.Value
		case "unit":
			s.Unit = t.Value
		default:
			s.Labels = append(s.Labels, protocol.Label{Key: t.Key, Value: t.Value})
		}
	}
	return s, s.Sensor != ""
}

func (e *Emitter) auditedTo(device string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.audited[device]
}

func (e *Emitter) setAudited(device string, to int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.audited[device] = to
}
