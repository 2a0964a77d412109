package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/hub/schema"
	"github.com/freshet-iot/freshet/protocol"
)

// worker decodes messages and writes their raw points, a group at a time.
func (p *Pipeline) worker(ctx context.Context) {
	codec := protocol.NewCodec(p.o.Limits)
	lines := new(influx.Lines)
	var group []*record
	for {
		var m Message
		select {
		case <-ctx.Done():
			return
		case m = <-p.in:
		}
		lines.Reset()
		group = p.take(codec, m, lines, group[:0])
	more:
		for lines.Len() < CoalesceLines && len(group) < CoalesceBatches {
			select {
			case m = <-p.in:
				group = p.take(codec, m, lines, group)
			default:
				break more
			}
		}
		if !p.writeRaw(ctx, lines, group) {
			return // stopping: the messages stay unacked and come back
		}
		for _, r := range group {
			select {
			case p.done <- r:
			case <-ctx.Done():
				return
			}
		}
		clear(group) // let the batches go
	}
}

// status hands a device's status to the fleet. Statuses are cheap and
// never wait behind batches (an InfluxDB outage holds those up): the
// broker sessions call it as they receive them.
func (p *Pipeline) status(codec *protocol.Codec, device string, payload []byte) {
	if len(payload) == 0 { // an empty retained payload clears the topic
		return
	}
	if s, err := codec.DecodeStatus(payload); err == nil && s.Device == device {
		if now := p.o.Now(); !p.o.Fleet.Status(s, now) {
			p.limited(LimitDeviceStatuses, device, "a status of a device beyond limits.devices ignored", 1, now)
		}
	} else {
		p.metrics.Rejections.WithLabelValues("status_" + reasonOf(err, "device_mismatch")).Inc()
	}
}

// statusMessage hands a status received on topic to the fleet, with a
// codec of its own (the embedded broker calls it in many connections).
func (p *Pipeline) statusMessage(topic string, payload []byte) {
	device, kind, err := p.o.Topics.Parse(topic)
	if err != nil || kind != protocol.TopicStatus {
		p.metrics.Rejections.WithLabelValues("bad_topic").Inc()
		return
	}
	codec := p.codecs.Get().(*protocol.Codec)
	defer p.codecs.Put(codec)
	p.status(codec, device, payload)
}

// take decodes a message into a record for the committer and renders its
// raw points into lines; it appends nothing for messages fully handled here.
func (p *Pipeline) take(codec *protocol.Codec, m Message, lines *influx.Lines, group []*record) []*record {
	r := &record{msg: m}
	device, kind, err := p.o.Topics.Parse(m.Topic())
	if err != nil {
		r.kind, r.reason, r.detail = kindDrop, "bad_topic", err.Error()
		return append(group, r)
	}
	r.device = device
	if kind == protocol.TopicStatus {
		p.status(codec, device, m.Payload())
		m.Ack()
		return group
	}
	if kind != protocol.TopicBatch {
		m.Ack()
		return group
	}
	b := new(protocol.Batch)
	if err := codec.DecodeBatch(m.Payload(), b); err != nil {
		r.reason, r.detail = protocol.Reason(err), err.Error()
		h, perr := codec.PeekHeader(m.Payload())
		if perr != nil || h.Device != device {
			r.kind = kindDrop
			return append(group, r)
		}
		if !p.admit(m, device) { // a seq to settle: a device it stores
			return group
		}
		r.kind, r.version, r.epoch, r.seq = kindReject, h.Version, h.Epoch, h.Seq
		return append(group, r)
	}
	r.version, r.epoch, r.seq, r.batch = b.Version, b.Epoch, b.Seq, b
	if b.Device != device {
		r.kind, r.reason, r.detail = kindDrop, "device_mismatch", fmt.Sprintf("batch of %q on the topic of %q", b.Device, device)
		return append(group, r)
	}
	if !p.admit(m, device) {
		return group
	}
	r.kind = kindApply
	// Skip the raw write for a batch already applied (a redelivery), and
	// refuse one that would take its device past its series limit before
	// its points reach InfluxDB (the committer checks again, exactly).
	var known, added int
	p.o.DB.View(func(tx *bolt.Tx) error {
		st, err := ledger.Load(tx, device, b.Epoch)
		r.raw = !(err == nil && st.Settled(b.Seq))
		if r.raw && p.o.MaxSeriesPerDevice > 0 {
			known, added, _ = p.o.Windows.CountSeries(tx, b) // an error comes again in the commit
		}
		return nil
	})
	now := p.o.Now()
	if max := p.o.MaxSeriesPerDevice; added > 0 && known+added > max {
		detail := seriesDetail(known, added, max)
		p.o.Fleet.Limited(device, int64(max), detail, now)
		p.limited(LimitSeries, device, detail, 1, now)
		p.metrics.Batches.WithLabelValues(resultLimited).Inc()
		m.Ack()
		return group
	}
	p.o.Fleet.Batch(b, now)
	if r.raw {
		schema.RawLines(lines, b)
	}
	return append(group, r)
}

// writeRaw writes the raw points of a group's batches (lines), and returns
// once they are stored or refused for their data: then the batches that
// hold refused points become rejections. While InfluxDB refuses the hub
// itself (wrong token, missing bucket) it holds the group and retries. It
// returns false if ctx ended first.
func (p *Pipeline) writeRaw(ctx context.Context, lines *influx.Lines, group []*record) bool {
	if lines.Len() == 0 {
		return true
	}
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		err := p.o.Influx.WriteLines(ctx, lines)
		var rej *influx.RejectedError
		switch {
		case err == nil:
			p.influxRefused.Store(false)
			p.o.Failpoint("after-raw-write")
			return true
		case errors.As(err, &rej):
			return p.blame(ctx, group, err)
		case ctx.Err() != nil:
			return false
		}
		// InfluxDB refuses us (wrong token, missing bucket): not the
		// batches' fault. Hold them, say so, and try again.
		p.influxRefused.Store(true)
		p.log.Error("InfluxDB refuses the hub's writes; holding the batches", "err", err, "batches", len(group), "retry_in", wait)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// blame finds the batches whose points InfluxDB refused (err) by writing
// each raw batch of the group alone (writing a point again is harmless),
// and makes them rejections.
func (p *Pipeline) blame(ctx context.Context, group []*record, err error) bool {
	var raw []*record
	for _, r := range group {
		if r.raw {
			raw = append(raw, r)
		}
	}
	if len(raw) == 1 {
		raw[0].kind, raw[0].reason, raw[0].detail = kindReject, "influx_rejected", err.Error()
		return true
	}
	one := new(influx.Lines)
	for _, r := range raw {
		one.Reset()
		schema.RawLines(one, r.batch)
		if !p.writeRaw(ctx, one, []*record{r}) {
			return false
		}
	}
	return true
}

// admit asks the fleet whether the device may be stored. A device beyond
// limits.devices is not: its message is counted and acked to the broker,
// and the agent, unanswered, keeps the batch and sends it again later.
func (p *Pipeline) admit(m Message, device string) bool {
	now := p.o.Now()
	if p.o.Fleet.Admit(device, now) {
		return true
	}
	p.limited(LimitDevices, device, "a batch of a device beyond limits.devices; not acked", 1, now)
	p.metrics.Batches.WithLabelValues(resultLimited).Inc()
	m.Ack()
	return false
}

func reasonOf(err error, otherwise string) string {
	if err != nil {
		return protocol.Reason(err)
	}
	return otherwise
}
