// Package agent assembles freshet-agent: sensors feed the durable outbox,
// the outbox is committed every commit interval, and the forwarder publishes
// sealed batches until the hub acks them. It also serves Prometheus metrics
// and a health check on localhost.
package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/freshet-iot/freshet/agent/forward"
	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/internal/exposure"
	"github.com/freshet-iot/freshet/protocol"
)

// Options are what the agent takes from its host besides the config.
type Options struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// Env opens sensors; the zero value means the real host (periph, sysfs
	// under Config.SysRoot, os/exec).
	Env *sensor.Env
	// Dial replaces the MQTT dialer (fault injection in simulations).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Version is reported in the status.
	Version string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ShutdownTimeout bounds the clean stop after the context ends. Default 5s.
	ShutdownTimeout time.Duration
}

// Agent is one running freshet-agent.
type Agent struct {
	cfg     *Config
	o       Options
	log     *slog.Logger
	ob      *outbox.Outbox
	sensors []sensor.Sensor
	runner  *sensor.Runner
	fw      *forward.Forwarder
	metrics *metrics.Set
	// httpToken guards /metrics and the detail of /healthz ("": no token).
	httpToken string
	wake      chan struct{}
	commitW   *commitLog
	// stopSensors, set while Run runs, stops reading sensors (StopSensors).
	stopMu      sync.Mutex
	stopSensors func()
}

// New opens the outbox and the sensors. Close it with Run's return, or
// Close if Run is never called.
func New(cfg *Config, o Options) (*Agent, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 5 * time.Second
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	// TYPE lines in /metrics; the switch is the library's, process-wide.
	metrics.ExposeMetadata(true)
	a := &Agent{cfg: cfg, o: o, log: o.Logger, metrics: metrics.NewSet(), wake: make(chan struct{}, 1)}
	var err error
	if a.httpToken, err = cfg.HTTP.Token(); err != nil {
		return nil, err
	}
	var onCommit func([]protocol.Reading)
	if cfg.CommitLog != "" {
		cl, err := openCommitLog(cfg.CommitLog, cfg.Device)
		if err != nil {
			return nil, err
		}
		a.commitW = cl
		onCommit = cl.write
	}
	ob, err := outbox.Open(outbox.Options{
		Path: filepath.Join(cfg.DataDir, "outbox.db"), Device: cfg.Device,
		MaxBytes: int64(cfg.Outbox.MaxBytes), Policy: outbox.DropPolicy(cfg.Outbox.DropPolicy),
		MaxBatchAge: time.Duration(cfg.Outbox.MaxBatchAge), Limits: protocol.Limits{MaxMessageBytes: cfg.Outbox.MaxMessageBytes},
		Logger: o.Logger.With("part", "outbox"), Now: o.Now, OnCommit: onCommit,
	})
	if err != nil {
		a.closeCommitLog()
		return nil, err
	}
	a.ob = ob
	if err := a.openSensors(); err != nil {
		ob.Close()
		a.closeCommitLog()
		return nil, err
	}
	topics, _ := protocol.NewTopics(cfg.MQTT.TopicPrefix)
	password, err := cfg.MQTT.Password()
	if err != nil {
		a.Close()
		return nil, err
	}
	tlsConf, err := cfg.MQTT.TLSClientConfig()
	if err != nil {
		a.Close()
		return nil, err
	}
	ackKeys, err := cfg.MQTT.AckKeys()
	if err != nil {
		a.Close()
		return nil, err
	}
	if ackKeys == nil {
		a.log.Warn("acks are NOT verified (mqtt.insecure_unsigned_acks): whoever can publish on the broker can make this agent delete readings")
	}
	a.fw, err = forward.New(ob, forward.Options{
		Broker: cfg.MQTT.Broker, ClientID: cfg.MQTT.ClientID, Username: cfg.MQTT.Username, Password: password,
		TLS: tlsConf, Device: cfg.Device, Topics: topics, Window: cfg.MQTT.Window,
		AckTimeout: time.Duration(cfg.MQTT.AckTimeout), KeepAlive: time.Duration(cfg.MQTT.KeepAlive),
		BackoffMin: time.Duration(cfg.MQTT.BackoffMin), BackoffMax: time.Duration(cfg.MQTT.BackoffMax),
		StatusInterval: time.Duration(cfg.MQTT.StatusInterval), Wake: a.wake, Status: a.Status,
		Limits: protocol.Limits{MaxMessageBytes: cfg.Outbox.MaxMessageBytes}, Logger: o.Logger.With("part", "mqtt"), Dial: o.Dial,
		AckKeys: ackKeys, InsecureUnsignedAcks: cfg.MQTT.InsecureUnsignedAcks,
	})
	if err != nil {
		a.Close()
		return nil, err
	}
	if st := ob.Stats(); st.Notice != "" {
		a.log.Error("outbox notice", "notice", st.Notice)
	}
	return a, nil
}

func (a *Agent) openSensors() error {
	env := sensor.HostEnv()
	if a.o.Env != nil {
		env = *a.o.Env
	}
	if env.SysRoot == "" {
		env.SysRoot = a.cfg.SysRoot
	}
	if env.Modbus == nil {
		env.Modbus = sensor.NewModbusPool() // the sensors on one port or gateway share it
	}
	var sensors []sensor.Sensor
	for _, c := range a.cfg.Sensors {
		src, err := sensor.Open(c, env)
		if err != nil {
			for _, s := range sensors {
				s.Source.Close()
			}
			return fmt.Errorf("sensor %q: %w", c.Name, err)
		}
		sensors = append(sensors, sensor.Sensor{Config: c, Source: src})
	}
	r, err := sensor.NewRunner(sensors, a.ob.Add, sensor.RunnerOptions{Logger: a.log.With("part", "sensor"), Now: a.o.Now, Metrics: a.metrics})
	if err != nil {
		for _, s := range sensors {
			s.Source.Close()
		}
		return err
	}
	a.runner, a.sensors = r, sensors
	return nil
}

// Status builds the agent's status message.
func (a *Agent) Status(state string) *protocol.Status {
	st := a.ob.Stats()
	now := a.o.Now()
	s := &protocol.Status{
		Device: a.cfg.Device, State: state, AgentVersion: a.o.Version,
		Epoch: st.Epoch, LastSeq: st.LastSeq, Settled: st.SettledMark, Backlog: st.Backlog, Dropped: st.DroppedEpoch,
		// A clock before 2020 was never set: a gateway without a real-time
		// clock counts from 1970 until NTP answers.
		ClockSynced: now.Year() >= 2020,
		Notice:      st.Notice,
	}
	if state == protocol.StateOnline {
		s.Time = now.UnixNano()
		if a.runner != nil {
			s.Sensors = a.runner.Status()
		}
	}
	return s
}

// StopSensors stops reading sensors while the agent keeps committing and
// forwarding what it has (simulations drain a fleet with it).
func (a *Agent) StopSensors() {
	a.stopMu.Lock()
	defer a.stopMu.Unlock()
	if a.stopSensors != nil {
		a.stopSensors()
	}
}

// Outbox exposes the outbox's statistics (for tests and the simulator).
func (a *Agent) Outbox() outbox.Stats { return a.ob.Stats() }

// Forwarder exposes the forwarder's statistics.
func (a *Agent) Forwarder() forward.Stats { return a.fw.Stats() }

// Run runs the agent until ctx ends, then stops cleanly: sensors stop, the
// last readings are committed, the offline status is published, and the
// outbox is closed, within Options.ShutdownTimeout.
func (a *Agent) Run(ctx context.Context) error {
	defer a.Close()
	var srv *http.Server
	if a.cfg.HTTP.Listen != "off" {
		l, err := net.Listen("tcp", a.cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
		srv = &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		a.log.Info("serving metrics and health", "addr", l.Addr().String())
	}
	sensorsCtx, stopSensors := context.WithCancel(context.Background())
	a.stopMu.Lock()
	a.stopSensors = stopSensors
	a.stopMu.Unlock()
	fwCtx, stopFw := context.WithCancel(context.Background())
	commitCtx, stopCommit := context.WithCancel(context.Background())
	var sensorsDone, fwDone, commitDone sync.WaitGroup
	sensorsDone.Add(1)
	go func() { defer sensorsDone.Done(); a.runner.Run(sensorsCtx) }()
	fwDone.Add(1)
	go func() { defer fwDone.Done(); a.fw.Run(fwCtx) }()
	commitDone.Add(1)
	go func() { defer commitDone.Done(); a.commitLoop(commitCtx) }()

	<-ctx.Done()
	a.log.Info("stopping")
	deadline := time.AfterFunc(a.o.ShutdownTimeout, func() {
		a.log.Error("clean stop took too long; exiting anyway (committed readings are safe)")
		stopSensors()
		stopCommit()
		stopFw()
	})
	defer deadline.Stop()
	stopSensors()
	sensorsDone.Wait()
	stopCommit()
	commitDone.Wait()
	var errs []error
	if err := a.ob.Commit(); err != nil && !errors.Is(err, outbox.ErrClosed) {
		errs = append(errs, fmt.Errorf("final commit: %w", err))
	}
	stopFw()
	fwDone.Wait()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.Shutdown(sctx)
		cancel()
	}
	return errors.Join(errs...)
}

// commitLoop commits every commit interval and wakes the forwarder.
func (a *Agent) commitLoop(ctx context.Context) {
	t := time.NewTicker(time.Duration(a.cfg.Outbox.CommitInterval))
	defer t.Stop()
	compact := time.NewTicker(time.Minute)
	defer compact.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-compact.C:
			if _, err := a.ob.MaybeCompact(); err != nil {
				a.log.Error("outbox compaction failed", "err", err)
			}
		case <-t.C:
			before := a.ob.Stats().LastSeq
			if err := a.ob.Commit(); err != nil {
				a.log.Error("commit failed", "err", err)
				continue
			}
			if a.ob.Stats().LastSeq != before {
				select {
				case a.wake <- struct{}{}:
				default:
				}
			}
		}
	}
}

// Close releases the sensors, the outbox and the commit log.
func (a *Agent) Close() error {
	var errs []error
	for _, s := range a.sensors {
		errs = append(errs, s.Source.Close())
	}
	a.sensors = nil
	if a.ob != nil {
		errs = append(errs, a.ob.Close())
	}
	errs = append(errs, a.closeCommitLog())
	return errors.Join(errs...)
}

func (a *Agent) closeCommitLog() error {
	if a.commitW == nil {
		return nil
	}
	err := a.commitW.close()
	a.commitW = nil
	return err
}

// Handler serves /metrics and /healthz. With http.token_file, /metrics
// needs the token, and /healthz says only that the agent runs to a request
// without it (the device, epoch and backlog are for whoever holds it).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		a.writeMetrics(w)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if a.httpToken != "" && !exposure.Authorized(r, a.httpToken) {
			json.NewEncoder(w).Encode(map[string]any{"status": "ok"})
			return
		}
		st, fs := a.ob.Stats(), a.fw.Stats()
		json.NewEncoder(w).Encode(map[string]any{
			"status": "ok", "device": a.cfg.Device, "epoch": fmt.Sprintf("%016x", st.Epoch),
			"connected": fs.Connected, "backlog": st.Backlog, "dropped": st.DroppedEpoch, "notice": st.Notice,
		})
	})
	if a.httpToken == "" {
		return mux
	}
	return exposure.RequireToken(mux, exposure.Guard{Token: a.httpToken, Realm: "freshet-agent", Key: "http.token_file",
		Open: []string{"/healthz"}, Refused: a.metrics.GetOrCreateCounter("freshet_agent_http_unauthorized_total").Inc})
}

// commitLog appends committed readings to a file, one line each:
// device, sensor, metric, Unix ns, value, tab-separated.
type commitLog struct {
	mu     sync.Mutex
	f      *os.File
	device string
}

func openCommitLog(path, device string) (*commitLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("commit_log: %w", err)
	}
	return &commitLog{f: f, device: device}, nil
}

func (c *commitLog) write(rs []protocol.Reading) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := bufio.NewWriterSize(c.f, 64<<10)
	for i := range rs {
		r := &rs[i]
		var v string
		switch r.Type {
		case protocol.Float:
			v = strconv.FormatFloat(r.Float, 'g', -1, 64)
		case protocol.Int:
			v = strconv.FormatInt(r.Int, 10)
		case protocol.Bool:
			v = strconv.FormatBool(r.Bool)
		default:
			v = strconv.Quote(r.Str)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", c.device, r.Sensor, r.Metric, r.Time, v)
	}
	w.Flush()
}

func (c *commitLog) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.Close()
}

// OutboxPath returns the outbox file's path.
func (a *Agent) OutboxPath() string { return filepath.Join(a.cfg.DataDir, "outbox.db") }
