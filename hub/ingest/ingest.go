// Package ingest is the hub's pipeline: it takes agents' batches from the
// broker, refuses bad ones with a reason, writes raw points to InfluxDB,
// applies each batch exactly once to the ledger and the window state (one
// bbolt transaction, group-committed across batches), and only then acks
// the agent and the broker. An emitter writes closed and corrected windows.
//
// Order of work for a batch, and why a crash anywhere is safe:
//
//	decode + validate  -> bad: settle seq, dead-letter, ack with the reason
//	raw -> InfluxDB    (idempotent: same series and time overwrite)
//	commit: ledger + window merge, one transaction (a seq already in the
//	        ledger is skipped: redeliveries never double count)
//	ack to the agent, then PUBACK to the broker
//
// The batches waiting in the intake travel together: a worker writes their
// raw points in one InfluxDB request and hands them on as a group, which
// the committer applies in one transaction. A fleet's backlog of small
// batches then costs a few requests and commits, not one per batch.
//
// A crash before the commit leaves the message unacked at the broker (a
// persistent session): it is redelivered, the raw write repeats harmlessly,
// and the commit happens once. A crash after the commit and before the ack
// leads to a redelivery that the ledger recognises: it is acked again.
package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/protocol"
)

// Writer stores points in InfluxDB (hub/influx.Writer).
type Writer interface {
	Write(ctx context.Context, points []influx.Point) error
	WriteLines(ctx context.Context, lines *influx.Lines) error
	Ping(ctx context.Context) error
}

// BrokerOptions say how to reach the broker.
type BrokerOptions struct {
	URL      string // tcp://host:1883 or ssl://host:8883
	ClientID string // stable: the broker keeps the session (and unacked batches) under it
	Username string
	Password string
	TLS      *tls.Config
	// SharedGroup, if set, subscribes as $share/<group>/... so several hubs
	// split the load. Per-device affinity is the broker's job (EMQX
	// hash_clientid); without it two hubs may apply one device's batches,
	// which the shared ledger would need: see README.md.
	SharedGroup string
	// MaxInflight bounds the messages taken from the broker and not yet
	// acked. Default 1000. Set the broker's own limit at or below it
	// (Mosquitto: max_inflight_messages).
	MaxInflight int
	KeepAlive   time.Duration
}

// Options configure a Hub.
type Options struct {
	DB      *bolt.DB // holds the ledger, the window state and the dead letters
	Influx  Writer
	Windows *window.Store
	Broker  BrokerOptions
	Topics  protocol.Topics
	Limits  protocol.Limits
	// Workers decode and write raw points in parallel. Default 4.
	Workers int
	// EmitInterval: how often closed windows are written. Default 1s.
	EmitInterval time.Duration
	// DeadLetters bounds the refused payloads kept for inspection. Default 1000.
	DeadLetters int
	Logger      *slog.Logger
	Now         func() time.Time
	// Quality sets the data quality checks; nil means the defaults.
	Quality *quality.Config
	// Failpoint, if set, is called at step boundaries ("after-raw-write",
	// "after-commit", "before-ack") so tests can crash the hub there.
	Failpoint func(step string)
}

// Hub is the running pipeline.
type Hub struct {
	o      Options
	log    *slog.Logger
	in     chan paho.Message
	done   chan *record
	client atomic.Pointer[paho.Client]
	// reconnect asks the connection loop for a fresh session.
	reconnect chan struct{}
	connected atomic.Bool
	// influxRefused is set while InfluxDB refuses writes for a reason that
	// is not the data's (401, 404): the hub is then not ready.
	influxRefused atomic.Bool
	stats         stats
	fleet         *fleet
	quality       *qualityState // owned by the quality loop
}

type stats struct {
	batches     sync.Map // result -> *atomic.Uint64
	rejections  sync.Map // reason -> *atomic.Uint64
	readings    atomic.Uint64
	tooLate     atomic.Uint64
	corrections atomic.Uint64
	aggregates  atomic.Uint64
	overflows   atomic.Uint64
	gapReadings atomic.Uint64
	commits     atomic.Uint64
	// quality: events by kind and state ("offline/opened"); open findings by kind
	qualityEvents sync.Map
	qualityOpen   atomic.Pointer[map[quality.Kind]int]
}

func (s *stats) qualityEvent(k quality.Kind, state string) {
	s.inc(&s.qualityEvents, string(k)+"/"+state)
}

func (s *stats) setOpen(m map[quality.Kind]int) { s.qualityOpen.Store(&m) }

func (s *stats) inc(m *sync.Map, k string) {
	v, _ := m.LoadOrStore(k, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

// record is one message on its way through the pipeline.
type record struct {
	msg    paho.Message
	client paho.Client
	kind   recordKind
	batch  *protocol.Batch
	device string
	epoch  uint64
	seq    uint64
	reason string
	detail string
	raw    bool // its raw points are written by the worker (not a redelivery)
	// set by the committer
	ack *protocol.Ack
}

type recordKind int

const (
	kindApply recordKind = iota
	kindReject
	kindDrop // undecodable, no seq to settle: dead-letter only
)

// New builds a hub; Run starts it.
func New(o Options) (*Hub, error) {
	if o.DB == nil || o.Influx == nil || o.Windows == nil {
		return nil, errors.New("ingest: DB, Influx and Windows are required")
	}
	if o.Broker.URL == "" {
		return nil, errors.New("ingest: broker URL required")
	}
	if o.Broker.ClientID == "" {
		o.Broker.ClientID = "freshet-hub"
	}
	if o.Broker.MaxInflight <= 0 {
		o.Broker.MaxInflight = 1000
	}
	if o.Broker.KeepAlive <= 0 {
		o.Broker.KeepAlive = 30 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.EmitInterval <= 0 {
		o.EmitInterval = time.Second
	}
	if o.DeadLetters <= 0 {
		o.DeadLetters = 1000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Failpoint == nil {
		o.Failpoint = func(string) {}
	}
	o.Limits = o.Limits.WithDefaults()
	if o.Quality == nil {
		o.Quality = &quality.Config{}
	}
	if err := o.Quality.Validate(); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	h := &Hub{o: o, log: o.Logger, in: make(chan paho.Message, o.Broker.MaxInflight),
		done: make(chan *record, o.Broker.MaxInflight), reconnect: make(chan struct{}, 1), fleet: newFleet(o.Quality.Floor())}
	err := o.DB.Update(func(tx *bolt.Tx) error {
		if err := ledger.Init(tx); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(deadBucket); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(qualityBucket); err != nil {
			return err
		}
		if err := o.Windows.Init(tx); err != nil {
			return err
		}
		return h.loadQuality(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: init state: %w", err)
	}
	return h, nil
}

// Run runs the pipeline until ctx ends. Messages in flight at that moment
// stay unacked at the broker and are redelivered to the next run.
func (h *Hub) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	for range h.o.Workers {
		wg.Add(1)
		go func() { defer wg.Done(); h.worker(workCtx) }()
	}
	commitDone := make(chan struct{})
	go func() { defer close(commitDone); h.committer(workCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); h.emitter(workCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); h.qualityLoop(workCtx) }()
	h.connectLoop(ctx)
	stopWork()
	wg.Wait()
	<-commitDone
	return nil
}

// connectLoop keeps one broker session up until ctx ends.
func (h *Hub) connectLoop(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		err := h.session(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := min(100*time.Millisecond<<min(attempt, 8), 10*time.Second)
		attempt++
		h.log.Warn("broker session ended, reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (h *Hub) session(ctx context.Context) error {
	lost := make(chan error, 1)
	po := paho.NewClientOptions().AddBroker(h.o.Broker.URL).SetClientID(h.o.Broker.ClientID).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
		SetAutoAckDisabled(true).SetOrderMatters(false).
		SetKeepAlive(h.o.Broker.KeepAlive).SetConnectTimeout(10 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if h.o.Broker.Username != "" {
		po.SetUsername(h.o.Broker.Username).SetPassword(h.o.Broker.Password)
	}
	if h.o.Broker.TLS != nil {
		po.SetTLSConfig(h.o.Broker.TLS)
	}
	// The handler must never block paho's router (a blocked handler stalls
	// pings and acks, paho#208/#453): hand over, and if the queue is full
	// start a fresh session so the broker redelivers what was not taken.
	handler := func(c paho.Client, m paho.Message) {
		select {
		case h.in <- m:
		default:
			h.stats.overflows.Add(1)
			select {
			case h.reconnect <- struct{}{}:
			default:
			}
		}
	}
	po.SetDefaultPublishHandler(handler)
	c := paho.NewClient(po)
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return fmt.Errorf("connect %s: %v", h.o.Broker.URL, tok.Error())
	}
	defer c.Disconnect(250)
	prefix := ""
	if h.o.Broker.SharedGroup != "" {
		prefix = "$share/" + h.o.Broker.SharedGroup + "/"
	}
	sub := c.SubscribeMultiple(map[string]byte{
		prefix + h.o.Topics.Filter(protocol.TopicBatch): 1,
		h.o.Topics.Filter(protocol.TopicStatus):         1,
	}, handler)
	if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
		return fmt.Errorf("subscribe: %v", sub.Error())
	}
	h.client.Store(&c)
	h.connected.Store(true)
	defer h.connected.Store(false)
	h.log.Info("consuming", "broker", h.o.Broker.URL, "client_id", h.o.Broker.ClientID)
	select {
	case <-ctx.Done():
		return nil
	case err := <-lost:
		return err
	case <-h.reconnect:
		return errors.New("intake queue full: reconnecting so the broker redelivers")
	}
}

// Connected reports whether the broker session is up.
func (h *Hub) Connected() bool { return h.connected.Load() }

// InfluxRefused reports whether InfluxDB is refusing the hub's writes
// (credentials or bucket), as opposed to being down.
func (h *Hub) InfluxRefused() bool { return h.influxRefused.Load() }

// Raw writes coalesce the batches waiting in the intake, up to these
// bounds: one InfluxDB request (and, downstream, one group commit) then
// carries many small batches, such as a fleet's backlog after an outage.
// Nothing waits for a group to fill.
const (
	coalesceLines   = 5000
	coalesceBatches = 256
)

// worker decodes messages and writes their raw points, a group at a time.
func (h *Hub) worker(ctx context.Context) {
	codec := protocol.NewCodec(h.o.Limits)
	lines := new(influx.Lines)
	var group []*record
	for {
		var m paho.Message
		select {
		case <-ctx.Done():
			return
		case m = <-h.in:
		}
		lines.Reset()
		group = h.take(codec, m, lines, group[:0])
	more:
		for lines.Len() < coalesceLines && len(group) < coalesceBatches {
			select {
			case m = <-h.in:
				group = h.take(codec, m, lines, group)
			default:
				break more
			}
		}
		if !h.writeRaw(ctx, lines, group) {
			return // stopping: the messages stay unacked and come back
		}
		for _, r := range group {
			select {
			case h.done <- r:
			case <-ctx.Done():
				return
			}
		}
		clear(group) // let the batches go
	}
}

// take decodes a message into a record for the committer and renders its
// raw points into lines; it appends nothing for messages fully handled here.
func (h *Hub) take(codec *protocol.Codec, m paho.Message, lines *influx.Lines, group []*record) []*record {
	r := &record{msg: m}
	if c := h.client.Load(); c != nil {
		r.client = *c
	}
	device, kind, err := h.o.Topics.Parse(m.Topic())
	if err != nil {
		r.kind, r.reason, r.detail = kindDrop, "bad_topic", err.Error()
		return append(group, r)
	}
	r.device = device
	if kind == protocol.TopicStatus {
		if len(m.Payload()) > 0 { // an empty retained payload clears the topic
			if s, err := codec.DecodeStatus(m.Payload()); err == nil && s.Device == device {
				h.fleet.status(s, h.o.Now())
			} else {
				h.stats.inc(&h.stats.rejections, "status_"+reasonOf(err, "device_mismatch"))
			}
		}
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
		d, e, s, perr := codec.PeekHeader(m.Payload())
		if perr != nil || d != device {
			r.kind = kindDrop
			return append(group, r)
		}
		r.kind, r.epoch, r.seq = kindReject, e, s
		return append(group, r)
	}
	r.epoch, r.seq, r.batch = b.Epoch, b.Seq, b
	if b.Device != device {
		r.kind, r.reason, r.detail = kindDrop, "device_mismatch", fmt.Sprintf("batch of %q on the topic of %q", b.Device, device)
		return append(group, r)
	}
	h.fleet.batch(b, h.o.Now())
	r.kind = kindApply
	// Skip the raw write for a batch already applied (a redelivery).
	h.o.DB.View(func(tx *bolt.Tx) error {
		st, err := ledger.Load(tx, device, b.Epoch)
		r.raw = !(err == nil && st.Settled(b.Seq))
		return nil
	})
	if r.raw {
		rawLines(lines, b)
	}
	return append(group, r)
}

// writeRaw writes the raw points of a group's batches (lines), and returns
// once they are stored or refused for their data: then the batches that
// hold refused points become rejections. While InfluxDB refuses the hub
// itself (wrong token, missing bucket) it holds the group and retries. It
// returns false if ctx ended first.
func (h *Hub) writeRaw(ctx context.Context, lines *influx.Lines, group []*record) bool {
	if lines.Len() == 0 {
		return true
	}
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		err := h.o.Influx.WriteLines(ctx, lines)
		var rej *influx.RejectedError
		switch {
		case err == nil:
			h.influxRefused.Store(false)
			h.o.Failpoint("after-raw-write")
			return true
		case errors.As(err, &rej):
			return h.blame(ctx, group, err)
		case ctx.Err() != nil:
			return false
		}
		// InfluxDB refuses us (wrong token, missing bucket): not the
		// batches' fault. Hold them, say so, and try again.
		h.influxRefused.Store(true)
		h.log.Error("InfluxDB refuses the hub's writes; holding the batches", "err", err, "batches", len(group), "retry_in", wait)
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
func (h *Hub) blame(ctx context.Context, group []*record, err error) bool {
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
		rawLines(one, r.batch)
		if !h.writeRaw(ctx, one, []*record{r}) {
			return false
		}
	}
	return true
}

func reasonOf(err error, otherwise string) string {
	if err != nil {
		return protocol.Reason(err)
	}
	return otherwise
}

// committer applies records in group commits, then acks them.
func (h *Hub) committer(ctx context.Context) {
	for {
		var group []*record
		select {
		case <-ctx.Done():
			return
		case r := <-h.done:
			group = append(group, r)
		}
	more:
		for len(group) < 512 {
			select {
			case r := <-h.done:
				group = append(group, r)
			default:
				break more
			}
		}
		if err := h.commit(group); err != nil {
			h.log.Error("commit failed; the batches stay unacked and will be redelivered", "err", err, "batches", len(group))
			continue
		}
		h.o.Failpoint("after-commit")
		for _, r := range group {
			h.finish(r)
		}
	}
}

func (h *Hub) commit(group []*record) error {
	now := h.o.Now()
	type key struct {
		device string
		epoch  uint64
	}
	var merged window.MergeStats
	results := make([]string, len(group))
	perDevice := make([]window.MergeStats, len(group))
	err := h.o.DB.Update(func(tx *bolt.Tx) error {
		states := map[key]*ledger.State{}
		load := func(d string, e uint64) (*ledger.State, error) {
			k := key{d, e}
			if s, ok := states[k]; ok {
				return s, nil
			}
			s, err := ledger.Load(tx, d, e)
			if err != nil {
				return nil, err
			}
			states[k] = &s
			return &s, nil
		}
		merged = window.MergeStats{}
		for i, r := range group {
			switch r.kind {
			case kindDrop:
				results[i] = "dropped"
				if err := h.deadLetter(tx, r, now); err != nil {
					return err
				}
				continue
			case kindReject:
				results[i] = "rejected"
				if err := h.deadLetter(tx, r, now); err != nil {
					return err
				}
			}
			st, err := load(r.device, r.epoch)
			if err != nil {
				return fmt.Errorf("ledger %s/%x: %w", r.device, r.epoch, err)
			}
			if r.kind == kindApply {
				if st.Settled(r.seq) {
					results[i] = "duplicate"
				} else {
					ms, err := h.o.Windows.Merge(tx, r.batch, now)
					if err != nil {
						return fmt.Errorf("window merge %s/%d: %w", r.device, r.seq, err)
					}
					perDevice[i] = ms
					merged.Merged += ms.Merged
					merged.TooLate += ms.TooLate
					merged.Corrections += ms.Corrections
					if g := r.batch.Gap; g != nil {
						for _, sr := range g.Seqs {
							st.SettleRange(sr.First, sr.Last)
						}
					}
					results[i] = "applied"
				}
			}
			st.Settle(r.seq)
		}
		for k, s := range states {
			if err := ledger.Save(tx, k.device, k.epoch, *s); err != nil {
				return err
			}
		}
		for _, r := range group {
			if r.kind != kindDrop {
				st := states[key{r.device, r.epoch}]
				r.ack = st.Ack(r.device, r.epoch, h.o.Limits.MaxAckSeqs)
				if r.kind == kindReject {
					r.ack.Rejected = []protocol.Rejection{{Seq: r.seq, Reason: r.reason, Detail: clip(r.detail, 512)}}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	h.stats.commits.Add(1)
	h.stats.tooLate.Add(uint64(merged.TooLate))
	h.stats.corrections.Add(uint64(merged.Corrections))
	for i, r := range group {
		h.stats.inc(&h.stats.batches, results[i])
		switch results[i] {
		case "applied":
			h.stats.readings.Add(uint64(r.batch.Readings()))
			if ms := perDevice[i]; ms.Corrections > 0 || ms.TooLate > 0 {
				h.fleet.merged(r.device, ms)
			}
			if g := r.batch.Gap; g != nil {
				h.stats.gapReadings.Add(g.Readings)
				h.fleet.gap(r.device, g.Readings)
				if g.Readings > 0 { // its findings were written with the raw points
					h.stats.qualityEvent(quality.Dropped, quality.StateOpened)
					h.stats.qualityEvent(quality.Dropped, quality.StateResolved)
				}
			}
		case "rejected", "dropped":
			h.stats.inc(&h.stats.rejections, r.reason)
			h.fleet.rejection(r.device)
			h.log.Warn("batch refused", "device", r.device, "seq", r.seq, "reason", r.reason, "detail", clip(r.detail, 200))
		}
	}
	return nil
}

// finish acks the agent (if the record names a seq), then the broker.
func (h *Hub) finish(r *record) {
	if r.ack != nil && r.client != nil {
		codec := protocol.NewCodec(h.o.Limits)
		if data, err := codec.EncodeAck(r.ack); err == nil {
			h.o.Failpoint("before-ack")
			r.client.Publish(h.o.Topics.Ack(r.device), 1, false, data) // not waited on: a lost ack means a resend, which is re-acked
		} else {
			h.log.Error("encode ack", "err", err)
		}
	}
	r.msg.Ack()
}

// emitter writes closed and corrected windows, and evicts old state.
func (h *Hub) emitter(ctx context.Context) {
	t := time.NewTicker(h.o.EmitInterval)
	defer t.Stop()
	evict := time.NewTicker(time.Minute)
	defer evict.Stop()
	var points []influx.Point
	for {
		select {
		case <-ctx.Done():
			return
		case <-evict.C:
			h.o.DB.Update(func(tx *bolt.Tx) error {
				_, err := h.o.Windows.Evict(tx, h.o.Now())
				return err
			})
		case <-t.C:
			for ctx.Err() == nil {
				n, err := h.EmitOnce(ctx, &points)
				if err != nil {
					h.log.Error("emit windows", "err", err)
					break
				}
				if n == 0 {
					break
				}
			}
		}
	}
}

// EmitOnce writes up to 5000 due windows and reports how many.
func (h *Hub) EmitOnce(ctx context.Context, points *[]influx.Point) (int, error) {
	var aggs []window.Aggregate
	err := h.o.DB.View(func(tx *bolt.Tx) error {
		var err error
		aggs, err = h.o.Windows.Due(tx, h.o.Now(), 5000)
		return err
	})
	if err != nil || len(aggs) == 0 {
		return 0, err
	}
	*points = aggPoints((*points)[:0], aggs)
	if err := h.o.Influx.Write(ctx, *points); err != nil {
		return 0, err
	}
	if err := h.o.DB.Update(func(tx *bolt.Tx) error { return h.o.Windows.MarkEmitted(tx, aggs) }); err != nil {
		return 0, err
	}
	h.stats.aggregates.Add(uint64(len(aggs)))
	return len(aggs), nil
}

var deadBucket = []byte("dead_letters")

// deadLetter keeps a refused payload (bounded: the oldest go first).
func (h *Hub) deadLetter(tx *bolt.Tx, r *record, now time.Time) error {
	b := tx.Bucket(deadBucket)
	seq, _ := b.NextSequence()
	k := make([]byte, 16)
	putU64(k, uint64(now.UnixNano()))
	putU64(k[8:], seq)
	payload := r.msg.Payload()
	if len(payload) > 64<<10 {
		payload = payload[:64<<10]
	}
	v := slices.Concat([]byte(r.msg.Topic()), []byte{0}, []byte(r.reason), []byte{0}, []byte(clip(r.detail, 1024)), []byte{0}, payload)
	if err := b.Put(k, v); err != nil {
		return err
	}
	if seq > uint64(h.o.DeadLetters) { // full: each new letter evicts the oldest
		if k, _ := b.Cursor().First(); k != nil {
			return b.Delete(k)
		}
	}
	return nil
}

func putU64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func initLedger(tx *bolt.Tx) error { return ledger.Init(tx) }
