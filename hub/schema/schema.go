// Package schema is the InfluxDB schema the hub writes: how a batch's
// readings, a window's aggregate, a gap notice and a data quality finding
// become measurements, tags, fields and times. It is the only place that
// knows; README.md ("InfluxDB schema") documents it for users.
package schema

import (
	"math"
	"strconv"
	"time"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/protocol"
)

// The InfluxDB schema (README.md, "Hub: InfluxDB schema"):
//
//	raw:        measurement = metric; tags device, sensor, unit (if any), the series' labels; field value
//	aggregates: measurement = metric + "_" + window size (temperature_1m); same tags; fields count, min,
//	            max, mean, sum, first, last, stddev; time = window start
//	gaps:       measurement freshet_gaps; tag device; fields readings, seqs, first_time, last_time,
//	            epoch (hex), seq; time = the carrying batch's seal time
//	quality:    measurement freshet_quality, one row per finding state change; tags device (none for
//	            the hub's own findings), kind, sensor and metric (series findings); fields state (opened|resolved), open (1|0),
//	            opened, resolved (Unix ns), value, count, detail; time = the change (hub/quality)
const (
	GapMeasurement     = "freshet_gaps"
	QualityMeasurement = "freshet_quality"
)

// SeriesTags are the tags of a series' points, sorted by key: device,
// sensor, unit (if any) and the series' labels.
func SeriesTags(device string, s *protocol.Series) []influx.Tag {
	tags := make([]influx.Tag, 0, 3+len(s.Labels))
	tags = append(tags, influx.Tag{Key: "device", Value: device}, influx.Tag{Key: "sensor", Value: s.Sensor})
	if s.Unit != "" {
		tags = append(tags, influx.Tag{Key: "unit", Value: s.Unit})
	}
	for _, l := range s.Labels {
		tags = append(tags, influx.Tag{Key: l.Key, Value: l.Value})
	}
	sortTags(tags)
	return tags
}

func sortTags(tags []influx.Tag) {
	for i := 1; i < len(tags); i++ {
		for j := i; j > 0 && tags[j].Key < tags[j-1].Key; j-- {
			tags[j], tags[j-1] = tags[j-1], tags[j]
		}
	}
}

// RawLines renders a batch's readings (and its gap notice) into l, series
// by series. Floats at a resolution go as their decimal text (exact, and
// much cheaper to render than the shortest float text).
func RawLines(l *influx.Lines, b *protocol.Batch) {
	for i := range b.Series {
		s := &b.Series[i]
		l.Series(s.Metric, SeriesTags(b.Device, s), "value")
		l.Reserve(len(s.Times))
		switch s.Type {
		case protocol.Float:
			exp, decimal := int8(0), false
			if s.Resolution != 0 {
				e, err := protocol.ResolutionExp(s.Resolution)
				exp, decimal = e, err == nil
			}
			for j, t := range s.Times {
				if decimal {
					if u, ok := protocol.Decimal(s.Floats[j], exp); ok {
						l.Decimal(influx.Decimal{Units: u, Exp: exp}, t)
						continue
					}
				}
				l.Float(s.Floats[j], t)
			}
		case protocol.Int:
			for j, t := range s.Times {
				l.Int(s.Ints[j], t)
			}
		case protocol.Bool:
			for j, t := range s.Times {
				l.Bool(s.Bools[j], t)
			}
		case protocol.String:
			for j, t := range s.Times {
				l.String(s.Strings[j], t)
			}
		}
	}
	if g := b.Gap; g != nil {
		l.Add(&influx.Point{Measurement: GapMeasurement, Tags: []influx.Tag{{Key: "device", Value: b.Device}},
			Fields: []influx.Field{
				{Key: "epoch", Value: strconv.FormatUint(b.Epoch, 16)},
				{Key: "first_time", Value: g.FirstTime},
				{Key: "last_time", Value: g.LastTime},
				{Key: "readings", Value: int64(g.Readings)},
				{Key: "seq", Value: int64(b.Seq)},
				{Key: "seqs", Value: int64(g.SeqCount())},
			}, Time: b.SealTime})
		if g.Readings > 0 {
			for _, p := range QualityPoints(nil, quality.DroppedEvents(b.Device, g.Readings, g.FirstTime, g.LastTime)) {
				l.Add(&p)
			}
		}
	}
}

// WindowName is how a window size appears in measurement names: 1m, 1h, 1d.
func WindowName(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.Itoa(int(d/time.Second)) + "s"
}

// AggFields are the fields of an aggregate row, in the order AggPoints
// writes them.
var AggFields = []string{"count", "first", "last", "max", "mean", "min", "stddev", "sum"}

// AggMeasurement is the measurement of a window's aggregate: metric_size.
func AggMeasurement(a *window.Aggregate) string { return a.Metric + "_" + WindowName(a.Size) }

// AggregateTags are the tags of a window's series (raw rows and aggregate alike).
func AggregateTags(a *window.Aggregate) []influx.Tag {
	s := protocol.Series{Sensor: a.Sensor, Unit: a.Unit, Labels: a.Labels}
	return SeriesTags(a.Device, &s)
}

func aggValues(a *window.Aggregate) [8]float64 {
	return [8]float64{float64(a.Count), a.First, a.Last, a.Max, a.Mean, a.Min, a.Stddev, a.Sum}
}

// AggPoints appends the points of window aggregates to dst.
func AggPoints(dst []influx.Point, aggs []window.Aggregate) []influx.Point {
	for i := range aggs {
		a := &aggs[i]
		dst = append(dst, influx.Point{Measurement: AggMeasurement(a), Tags: AggregateTags(a),
			Fields: []influx.Field{
				{Key: "count", Value: a.Count}, {Key: "first", Value: a.First}, {Key: "last", Value: a.Last},
				{Key: "max", Value: a.Max}, {Key: "mean", Value: a.Mean}, {Key: "min", Value: a.Min},
				{Key: "stddev", Value: a.Stddev}, {Key: "sum", Value: a.Sum},
			}, Time: a.Start})
	}
	return dst
}

// SameAggregate reports whether rows, the aggregate row read back (fields
// AggFields), hold exactly a's values, bit for bit.
func SameAggregate(rows [][]float64, a *window.Aggregate) bool {
	if len(rows) != 1 || len(rows[0]) != len(AggFields) {
		return false
	}
	for i, v := range aggValues(a) {
		if math.Float64bits(rows[0][i]) != math.Float64bits(v) {
			return false
		}
	}
	return true
}

// QualityPoints appends quality finding events as rows of the quality
// measurement to dst.
func QualityPoints(dst []influx.Point, evs []quality.Event) []influx.Point {
	for _, e := range evs {
		tags := []influx.Tag{{Key: "device", Value: e.Device}, {Key: "kind", Value: string(e.Kind)}}
		if e.Device == "" { // the hub's own finding
			tags = tags[1:]
		}
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
