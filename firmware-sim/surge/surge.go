// Package surge simulates a fleet of gateways coming back from an outage
// at once, each with a backlog, speaking the real protocol as the agent
// does: its window of unacked batches, the hub's acks settling them (with
// the settled mark and Before in every batch), and a batch sent again when
// its ack does not come within the ack timeout plus a random part of it.
//
// It is light enough for tens of thousands of gateways in one process: a
// gateway is one MQTT 5 connection (eclipse/paho.golang's packets, no
// client library), a reader goroutine and its own loop, and its batches
// are packed as they are sent. It drives the surge test and benchmark.
package surge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/freshet-iot/freshet/protocol"
)

// Options configure a surge.
type Options struct {
	// Broker is the MQTT URL (tcp://host:port).
	Broker string
	// Devices is how many gateways come back; Prefix names them
	// (prefix0001...). Default prefix "surge-".
	Devices int
	Prefix  string
	// Batches of Readings each are every gateway's backlog; its readings
	// are one temperature series at 1 s from Start.
	Batches, Readings int
	Start             time.Time
	// Window bounds a gateway's unacked batches (default 8); AckTimeout
	// (default 30 s) plus up to half of it more sends a batch again.
	Window     int
	AckTimeout time.Duration
	// ConnectWithin spreads the gateways' connections over this span
	// (default 10 s).
	ConnectWithin time.Duration
	// Username and Password, if the broker wants them (the same for all).
	Username, Password string
	Topics             protocol.Topics
	// AckKeys, if set, are the hub keys acks must be signed with, as the
	// agent checks them (an ack that does not verify is ignored); nil
	// takes every ack (the verification costs this process's CPU).
	AckKeys *protocol.AckKeys
}

// Result is what a surge did.
type Result struct {
	Devices, Batches, Readings int
	// Published counts batch publishes (Resends of them were sent again
	// after their ack timeout); Acks the hub's acks received; Reconnects
	// connections made after the first, per gateway summed.
	Published, Resends, Acks, Reconnects int64
	// Elapsed is from the first connection to the last batch settled.
	Elapsed time.Duration
	// AckLatency is the p50 and p99 of a batch's first publish to its
	// settlement.
	AckP50, AckP99 time.Duration
}

// SetDefaults fills in the zero options that have defaults (Run calls it).
func (o *Options) SetDefaults() error {
	if o.Devices <= 0 || o.Batches <= 0 || o.Readings <= 0 {
		return errors.New("surge: Devices, Batches and Readings must be positive")
	}
	if o.Prefix == "" {
		o.Prefix = "surge-"
	}
	if o.Window <= 0 {
		o.Window = 8
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.ConnectWithin <= 0 {
		o.ConnectWithin = 10 * time.Second
	}
	if o.Start.IsZero() {
		o.Start = time.Now().Add(-time.Duration(o.Batches*o.Readings) * time.Second).Truncate(time.Second)
	}
	return nil
}

// Run runs the surge until every gateway's backlog is settled or ctx ends.
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.SetDefaults(); err != nil {
		return Result{}, err
	}
	u, err := url.Parse(o.Broker)
	if err != nil || u.Host == "" {
		return Result{}, fmt.Errorf("surge: broker %q: %v", o.Broker, err)
	}
	r := &run{o: o, addr: u.Host}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, o.Devices)
	for i := range o.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the connections over ConnectWithin.
			delay := time.Duration(int64(o.ConnectWithin) * int64(i) / int64(o.Devices))
			select {
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			case <-time.After(delay):
			}
			g := &gateway{r: r, name: o.Name(i), epoch: uint64(i + 1)}
			if err := g.run(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", g.name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	res := Result{Devices: o.Devices, Batches: o.Devices * o.Batches, Readings: o.Devices * o.Batches * o.Readings,
		Published: r.published.Load(), Resends: r.resends.Load(), Acks: r.acks.Load(), Reconnects: r.reconnects.Load(),
		Elapsed: time.Duration(r.lastSettled.Load()) - time.Duration(start.UnixNano())}
	r.mu.Lock()
	lat := r.latencies
	r.mu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		res.AckP50, res.AckP99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if len(all) > 0 {
		return res, fmt.Errorf("surge: %d gateways failed, first: %w", len(all), all[0])
	}
	return res, nil
}

type run struct {
	o                        Options
	addr                     string
	published, resends, acks atomic.Int64
	reconnects, lastSettled  atomic.Int64
	mu                       sync.Mutex
	latencies                []time.Duration
}

// gateway is one simulated agent.
type gateway struct {
	r     *run
	name  string
	epoch uint64
	// settled seqs: all up to through, and those in above
	through uint64
	above   map[uint64]bool
	first   map[uint64]time.Time // first publish of each unsettled seq
}

// conn is one connection of a gateway.
type conn struct {
	c    net.Conn
	mu   sync.Mutex // writes
	w    *bufio.Writer
	acks chan []byte
	err  chan error
	done chan struct{} // closed when the session ends
}

func (c *conn) write(cp *packets.ControlPacket) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := cp.WriteTo(c.w); err != nil {
		return err
	}
	return c.w.Flush()
}

// run sends the gateway's backlog until every batch is settled,
// reconnecting when its connection fails.
func (g *gateway) run(ctx context.Context) error {
	g.above, g.first = map[uint64]bool{}, map[uint64]time.Time{}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			g.r.reconnects.Add(1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(rand.N(int64(time.Second)))):
			}
		}
		done, err := g.session(ctx)
		if done {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt > 20 {
			return fmt.Errorf("gave up after %d connections: %w", attempt+1, err)
		}
	}
}

func (g *gateway) session(ctx context.Context) (bool, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", g.r.addr)
	if err != nil {
		return false, err
	}
	defer nc.Close()
	c := &conn{c: nc, w: bufio.NewWriter(nc), acks: make(chan []byte, 64), err: make(chan error, 1), done: make(chan struct{})}
	defer close(c.done)
	cp := packets.NewControlPacket(packets.CONNECT)
	cn := cp.Content.(*packets.Connect)
	cn.ClientID, cn.CleanStart, cn.KeepAlive = g.name, true, 0
	if g.r.o.Username != "" {
		cn.Username, cn.UsernameFlag = g.r.o.Username, true
		cn.Password, cn.PasswordFlag = []byte(g.r.o.Password), true
	}
	if err := c.write(cp); err != nil {
		return false, err
	}
	br := bufio.NewReader(nc)
	ack, err := packets.ReadPacket(br)
	if err != nil {
		return false, fmt.Errorf("connack: %w", err)
	}
	if ca, ok := ack.Content.(*packets.Connack); !ok || ca.ReasonCode != 0 {
		return false, fmt.Errorf("connect refused: %v", ack)
	}
	sub := packets.NewControlPacket(packets.SUBSCRIBE)
	s := sub.Content.(*packets.Subscribe)
	s.PacketID = 1
	s.Subscriptions = []packets.SubOptions{{Topic: g.r.o.Topics.Ack(g.name), QoS: 1}}
	if err := c.write(sub); err != nil {
		return false, err
	}
	go g.read(br, c)
	var codec = protocol.NewCodec(protocol.Limits{})
	inflight := map[uint64]time.Time{} // seq -> due again
	next := uint64(0)                  // highest seq published in this session
	nextID := uint16(1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := uint64(g.r.o.Batches)
	for {
		if g.through >= last {
			nc.Close()
			return true, nil
		}
		// Fill the window, in seq order, skipping what is settled.
		for len(inflight) < g.r.o.Window {
			seq := max(next, g.through) + 1
			for seq <= last && g.above[seq] {
				seq++
			}
			if seq > last {
				break
			}
			data, err := g.batch(codec, seq)
			if err != nil {
				return false, err
			}
			nextID++
			if nextID == 0 {
				nextID = 2
			}
			p := packets.NewControlPacket(packets.PUBLISH)
			pb := p.Content.(*packets.Publish)
			pb.Topic, pb.QoS, pb.PacketID, pb.Payload = g.r.o.Topics.Batch(g.name), 1, nextID, data
			if err := c.write(p); err != nil {
				return false, err
			}
			g.r.published.Add(1)
			if _, ok := g.first[seq]; !ok {
				g.first[seq] = time.Now()
			}
			inflight[seq] = time.Now().Add(g.r.o.AckTimeout + rand.N(g.r.o.AckTimeout/2+1))
			next = seq
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case err := <-c.err:
			return false, err
		case payload := <-c.acks:
			a, err := codec.DecodeAck(payload)
			if err != nil || a.Device != g.name || a.Epoch != g.epoch {
				continue
			}
			if keys := g.r.o.AckKeys; keys != nil && keys.Verify(a) != nil {
				continue
			}
			g.r.acks.Add(1)
			g.settle(a)
			for seq := range inflight {
				if seq <= g.through || g.above[seq] {
					delete(inflight, seq)
				}
			}
		case <-tick.C:
			now := time.Now()
			for _, due := range inflight {
				if now.After(due) {
					// Send again from the oldest unsettled batch.
					g.r.resends.Add(int64(len(inflight)))
					clear(inflight)
					next = 0
					break
				}
			}
		}
	}
}

// read passes the hub's acks to the session and answers QoS 1 with PUBACK.
func (g *gateway) read(br *bufio.Reader, c *conn) {
	for {
		cp, err := packets.ReadPacket(br)
		if err != nil {
			select {
			case c.err <- err:
			default:
			}
			return
		}
		p, ok := cp.Content.(*packets.Publish)
		if !ok {
			continue
		}
		if p.QoS > 0 {
			ack := packets.NewControlPacket(packets.PUBACK)
			ack.Content.(*packets.Puback).PacketID = p.PacketID
			if err := c.write(ack); err != nil {
				return
			}
		}
		select {
		case c.acks <- p.Payload:
		case <-c.done:
			return
		}
	}
}

// settle applies an ack.
func (g *gateway) settle(a *protocol.Ack) {
	now := time.Now()
	mark := func(seq uint64) {
		if t, ok := g.first[seq]; ok {
			delete(g.first, seq)
			g.r.mu.Lock()
			g.r.latencies = append(g.r.latencies, now.Sub(t))
			g.r.mu.Unlock()
		}
	}
	for seq := g.through + 1; seq <= a.Through && seq <= uint64(g.r.o.Batches); seq++ {
		mark(seq)
	}
	g.through = max(g.through, min(a.Through, uint64(g.r.o.Batches)))
	for _, rg := range a.Ranges {
		for seq := max(rg.First, g.through+1); seq <= rg.Last && seq <= uint64(g.r.o.Batches); seq++ {
			if !g.above[seq] {
				g.above[seq] = true
				mark(seq)
			}
		}
	}
	for g.above[g.through+1] {
		delete(g.above, g.through+1)
		g.through++
	}
	if g.through >= uint64(g.r.o.Batches) {
		for {
			t := g.r.lastSettled.Load()
			if now.UnixNano() <= t || g.r.lastSettled.CompareAndSwap(t, now.UnixNano()) {
				break
			}
		}
	}
}

// batch packs the gateway's batch seq, with its settled mark.
func (g *gateway) batch(codec *protocol.Codec, seq uint64) ([]byte, error) {
	b := g.r.o.Batch(int(g.epoch-1), seq)
	b.SealTime, b.Settled = time.Now().UnixNano(), g.through
	return codec.EncodeBatch(b)
}

// Name is gateway i's device id (i from 0).
func (o *Options) Name(i int) string { return fmt.Sprintf("%s%05d", o.Prefix, i+1) }

// Batch is gateway i's batch seq (from 1): Readings temperatures at 1 s
// from Start, after those of the earlier seqs (after SetDefaults).
func (o *Options) Batch(i int, seq uint64) *protocol.Batch {
	epoch := uint64(i + 1)
	b := &protocol.Batch{Device: o.Name(i), Epoch: epoch, Seq: seq, Before: o.Start.UnixNano()}
	first := int(seq-1) * o.Readings
	if first > 0 {
		b.Before = o.Start.Add(time.Duration(first-1) * time.Second).UnixNano()
	}
	s := protocol.Series{Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01,
		Times: make([]int64, o.Readings), Floats: make([]float64, o.Readings)}
	for i := range o.Readings {
		k := first + i
		s.Times[i] = o.Start.Add(time.Duration(k) * time.Second).UnixNano()
		s.Floats[i] = Value(epoch, k)
	}
	b.Series = []protocol.Series{s}
	return b
}

// Value is the reading k of the gateway whose epoch is epoch (1 + its
// index): a deterministic temperature at 0.01 C.
func Value(epoch uint64, k int) float64 {
	return float64(2000+int(epoch*7+uint64(k)*13)%1000) / 100
}
