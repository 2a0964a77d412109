// Package ingest is the hub's pipeline: it takes agents' batches from the
// broker, refuses bad ones with a reason, writes raw points to InfluxDB,
// applies each batch exactly once to the ledger and the window state (one
// bbolt transaction, group-committed across batches), and only then acks
// the agent and the broker.
//
// Order of work for a batch, and why a crash anywhere is safe:
//
//	decode + validate  -> bad: settle seq, dead-letter, ack with the reason
//	raw -> InfluxDB    (idempotent: same series and time overwrite)
//	commit: ledger + window merge, one transaction (a seq already in the
//	        ledger is skipped: redeliveries never double count)
//	ack to the agent (signed: Options.AckSigner), then PUBACK to the broker
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
//
// Files: session.go (the broker session and the intake), work.go (decode
// and raw write), commit.go (ledger, windows, acks), deadletter.go (refused
// payloads, kept and read back), metrics.go.
package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/protocol"
)

// Defaults and bounds of the pipeline.
const (
	// DefaultMaxInflight bounds the messages taken from the broker and not
	// yet acked (BrokerOptions.MaxInflight).
	DefaultMaxInflight = 1000
	// DefaultSessionExpiry is BrokerOptions.SessionExpiry's default: a hub
	// restarted within it finds its queued batches; one gone longer (a
	// removed member of a shared group) stops collecting its share.
	DefaultSessionExpiry = 10 * time.Minute
	// DefaultWorkers decode and write raw points in parallel (Options.Workers).
	DefaultWorkers = 4
	// DefaultDeadLetters bounds the refused payloads kept (Options.DeadLetters).
	DefaultDeadLetters = 1000
	// CoalesceLines and CoalesceBatches bound one raw write: the batches
	// waiting in the intake go together up to these, so one InfluxDB
	// request (and, downstream, one group commit) carries many small
	// batches, such as a fleet's backlog after an outage. Nothing waits for
	// a group to fill.
	CoalesceLines   = 5000
	CoalesceBatches = 256
	// MaxCommitGroup bounds the batches applied in one bbolt transaction.
	MaxCommitGroup = 512
	// rejectionDetail bounds the error text an ack carries back.
	rejectionDetail = 512
)

// Writer stores points in InfluxDB (hub/influx.Writer).
type Writer interface {
	WriteLines(ctx context.Context, lines *influx.Lines) error
}

// Observer is told what the pipeline sees of each device (hub/fleet.Fleet).
// It is also the registry of devices: a device it does not admit (its
// limit of devices reached) gets nothing stored.
type Observer interface {
	// Admit reports whether the device is known, adding it if there is room.
	Admit(device string, now time.Time) bool
	Batch(b *protocol.Batch, now time.Time)
	// Status records a status; false: a new device without room (ignored).
	Status(s *protocol.Status, now time.Time) bool
	// Applied records a batch applied; clean: no limit bit while applying it.
	Applied(device string, corrections, tooLate int, clean bool, now time.Time)
	// Limited records a per-device limit biting (value, what it did).
	Limited(device string, value int64, detail string, now time.Time)
	Rejected(device string)
	Gap(device string, readings uint64)
}

// FindingCounter counts data quality findings (hub/checks.Metrics): the
// pipeline writes the dropped findings of gap notices with their raw points.
type FindingCounter interface {
	Count(k quality.Kind, state string)
}

// LocalBroker is an embedded broker in this process (hub/broker.Broker):
// the pipeline takes its share of the batches straight from it, in the
// publishing agent's connection, which waits while the intake is full.
type LocalBroker interface {
	Attach(group, id string, deliver func(topic string, payload []byte)) (detach func())
	Subscribe(filter string, id int, fn func(topic string, payload []byte)) error
	Publish(topic string, payload []byte) error
}

// BrokerOptions say how to reach the broker.
type BrokerOptions struct {
	// Local, if set, is the broker: URL, TLS and the credentials are
	// unused.
	Local    LocalBroker
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
	// acked: the hub's MQTT 5 Receive Maximum and the size of its intake.
	// Default DefaultMaxInflight, at most 65535.
	MaxInflight int
	// SessionExpiry is how long the broker keeps the hub's session (its
	// queued messages and subscriptions) while the hub is away. Default
	// DefaultSessionExpiry.
	SessionExpiry time.Duration
	KeepAlive     time.Duration
}

// Options configure a Pipeline.
type Options struct {
	DB      *bolt.DB // holds the ledger, the window state and the dead letters
	Influx  Writer
	Windows *window.Store
	Broker  BrokerOptions
	Topics  protocol.Topics
	Limits  protocol.Limits
	// Fleet is told about every batch and status, and admits devices; nil
	// tells no one and admits every device.
	Fleet Observer
	// MaxSeriesPerDevice bounds the series a device may have (the hub's
	// limits.series_per_device): a batch that would take its device past
	// it is counted and left unacked, so it stays on the agent's disk
	// until the limit is raised. 0 sets no bound.
	MaxSeriesPerDevice int
	// MaxEpochsPerDevice bounds the epochs the ledger keeps per device
	// (limits.epochs_per_device): beyond it the ones changed longest ago
	// are forgotten, and counted. 0 sets no bound.
	MaxEpochsPerDevice int
	// Findings counts the dropped findings of gap notices; nil counts none.
	Findings FindingCounter
	// AckSigner signs every version 2 ack (version 1 acks, answers to old
	// agents, have no room for a signature); nil sends them unsigned, and
	// counts them (Metrics.AcksUnsigned).
	AckSigner *protocol.AckSigner
	// Workers decode and write raw points in parallel. Default DefaultWorkers.
	Workers int
	// DeadLetters bounds the refused payloads kept for inspection. Default
	// DefaultDeadLetters.
	DeadLetters int
	// Registerer receives the pipeline's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
	// Failpoint, if set, is called at step boundaries ("after-raw-write",
	// "after-commit", "before-ack") so crash tests can kill the hub there.
	Failpoint func(step string)
}

// Pipeline is the running pipeline.
type Pipeline struct {
	o       Options
	log     *slog.Logger
	metrics *Metrics
	in      chan Message
	done    chan *record
	// send publishes an agent's ack on the current session.
	send      atomic.Pointer[func(topic string, payload []byte) error]
	connected atomic.Bool
	// influxRefused is set while InfluxDB refuses writes for a reason that
	// is not the data's (401, 404): the hub is then not ready.
	influxRefused atomic.Bool
	// codecs decode statuses in the brokers' goroutines.
	codecs   sync.Pool
	limitLog limitLog
}

// record is one message on its way through the pipeline.
type record struct {
	msg     Message
	kind    recordKind
	batch   *protocol.Batch
	version uint8 // the batch's protocol version: its ack's
	device  string
	epoch   uint64
	seq     uint64
	reason  string
	detail  string
	raw     bool // its raw points are written by the worker (not a redelivery)
	// set by the committer
	ack *protocol.Ack
}

type recordKind int

const (
	kindApply recordKind = iota
	kindReject
	kindDrop    // undecodable, no seq to settle: dead-letter only
	kindLimited // refused by a limit: not applied, not answered
)

// nobody is the Observer and FindingCounter of a pipeline without them.
type nobody struct{}

func (nobody) Admit(string, time.Time) bool              { return true }
func (nobody) Batch(*protocol.Batch, time.Time)          {}
func (nobody) Status(*protocol.Status, time.Time) bool   { return true }
func (nobody) Applied(string, int, int, bool, time.Time) {}
func (nobody) Limited(string, int64, string, time.Time)  {}
func (nobody) Rejected(string)                           {}
func (nobody) Gap(string, uint64)                        {}
func (nobody) Count(quality.Kind, string)                {}

// New builds a pipeline and creates its buckets; Run starts it.
func New(o Options) (*Pipeline, error) {
	if o.DB == nil || o.Influx == nil || o.Windows == nil {
		return nil, errors.New("ingest: DB, Influx and Windows are required")
	}
	if o.Broker.URL == "" && o.Broker.Local == nil {
		return nil, errors.New("ingest: broker URL or local broker required")
	}
	if o.Broker.ClientID == "" {
		o.Broker.ClientID = "freshet-hub"
	}
	if o.Broker.MaxInflight <= 0 {
		o.Broker.MaxInflight = DefaultMaxInflight
	}
	if o.Broker.MaxInflight > 65535 {
		return nil, fmt.Errorf("ingest: max inflight %d above MQTT's 65535", o.Broker.MaxInflight)
	}
	if o.Broker.SessionExpiry <= 0 {
		o.Broker.SessionExpiry = DefaultSessionExpiry
	}
	if o.Broker.KeepAlive <= 0 {
		o.Broker.KeepAlive = 30 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.DeadLetters <= 0 {
		o.DeadLetters = DefaultDeadLetters
	}
	if o.Fleet == nil {
		o.Fleet = nobody{}
	}
	if o.Findings == nil {
		o.Findings = nobody{}
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
	p := &Pipeline{o: o, log: o.Logger, in: make(chan Message, o.Broker.MaxInflight),
		done: make(chan *record, o.Broker.MaxInflight)}
	p.codecs.New = func() any { return protocol.NewCodec(o.Limits) }
	p.metrics = newMetrics(o.Registerer, o.AckSigner, func() float64 { return float64(len(p.in)) }, func() float64 {
		if p.connected.Load() {
			return 1
		}
		return 0
	})
	err := o.DB.Update(func(tx *bolt.Tx) error {
		if err := ledger.Init(tx); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(deadBucket); err != nil {
			return err
		}
		return o.Windows.Init(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: init state: %w", err)
	}
	return p, nil
}

// Metrics returns the pipeline's counters.
func (p *Pipeline) Metrics() *Metrics { return p.metrics }

// Run runs the pipeline until ctx ends. Messages in flight at that moment
// stay unacked at the broker and are redelivered to the next run.
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	for range p.o.Workers {
		wg.Add(1)
		go func() { defer wg.Done(); p.worker(workCtx) }()
	}
	commitDone := make(chan struct{})
	go func() { defer close(commitDone); p.committer(workCtx) }()
	if p.o.Broker.Local != nil {
		p.local(ctx)
	} else {
		p.connectLoop(ctx)
	}
	stopWork()
	wg.Wait()
	<-commitDone
	return nil
}

// Connected reports whether the broker session is up.
func (p *Pipeline) Connected() bool { return p.connected.Load() }

// InfluxRefused reports whether InfluxDB is refusing the hub's writes
// (credentials or bucket), as opposed to being down.
func (p *Pipeline) InfluxRefused() bool { return p.influxRefused.Load() }
