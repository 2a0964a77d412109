//go:build opcua

package sensor

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/protocol"
)

// Backoff of an OPC UA server that cannot be reached.
const (
	opcuaMinBackoff = 500 * time.Millisecond
	opcuaMaxBackoff = 30 * time.Second
)

// OPCUASupported reports whether this build reads OPC UA (built with -tags opcua).
const OPCUASupported = true

// opcuaSource reads nodes of one OPC UA server. It connects on its first
// read, and again after any failure of the connection or the session (a
// server restart): a new secure channel, session and, in subscribe mode,
// subscription, so no state of the old server is relied on. A failed
// connect is retried after a backoff of 0.5s doubling to 30s.
type opcuaSource struct {
	cfg      *OPCUAConfig
	ids      []*ua.NodeID // of cfg.Nodes
	password string
	cert     *tls.Certificate // client certificate, if any
	now      func() time.Time

	mu       sync.Mutex // held by Read; Close takes it only if free
	client   *opcua.Client
	sub      *opcua.Subscription
	subStop  context.CancelFunc
	subDone  chan struct{}
	failures int
	retryAt  time.Time
	lastErr  error
	lastSrc  []time.Time // per node: the source timestamp last reported

	// subscribe mode: the latest notification per node not yet reported.
	pmu     sync.Mutex
	pending []*ua.DataValue
	subErr  error // the subscription failed: reconnect on the next read

	closeOnce sync.Once
}

func openOPCUA(c Config, env Env) (*opcuaSource, error) {
	o := c.OPCUA
	s := &opcuaSource{cfg: o, now: time.Now, lastSrc: make([]time.Time, len(o.Nodes)), pending: make([]*ua.DataValue, len(o.Nodes))}
	for i, n := range o.Nodes {
		id, err := ua.ParseNodeID(n.Node)
		if err != nil {
			return nil, &ConfigError{Sensor: c.Name, Key: fmt.Sprintf("opcua.nodes[%d].node", i), Err: err}
		}
		s.ids = append(s.ids, id)
	}
	if o.Auth == "username" {
		p, err := o.password()
		if err != nil {
			return nil, &ConfigError{Sensor: c.Name, Key: "opcua.password_file", Err: err}
		}
		s.password = p
	}
	if o.CertificateFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertificateFile, o.PrivateKeyFile)
		if err != nil {
			return nil, &ConfigError{Sensor: c.Name, Key: "opcua.certificate_file", Err: err}
		}
		if _, ok := cert.PrivateKey.(*rsa.PrivateKey); !ok {
			return nil, &ConfigError{Sensor: c.Name, Key: "opcua.private_key_file", Err: errors.New("not an RSA key (OPC UA security policies use RSA)")}
		}
		s.cert = &cert
	}
	return s, nil
}

// options builds the client options for endpoint ep.
func (s *opcuaSource) options(ep *ua.EndpointDescription) []opcua.Option {
	o := s.cfg
	opts := []opcua.Option{
		opcua.AutoReconnect(false), // recovery is ours: a new session on the next read
		opcua.RequestTimeout(time.Duration(o.RequestTimeout)),
		opcua.DialTimeout(time.Duration(o.RequestTimeout)),
		opcua.ApplicationName("freshet-agent"),
		opcua.SecurityPolicy(o.SecurityPolicy),
		opcua.SecurityModeString(o.SecurityMode),
	}
	if s.cert != nil {
		opts = append(opts, opcua.Certificate(s.cert.Certificate[0]), opcua.PrivateKey(s.cert.PrivateKey.(*rsa.PrivateKey)))
	}
	tokenType := ua.UserTokenTypeAnonymous
	switch o.Auth {
	case "username":
		tokenType = ua.UserTokenTypeUserName
		opts = append(opts, opcua.AuthUsername(o.Username, s.password))
	case "certificate":
		tokenType = ua.UserTokenTypeCertificate
		opts = append(opts, opcua.AuthCertificate(s.cert.Certificate[0]), opcua.AuthPrivateKey(s.cert.PrivateKey.(*rsa.PrivateKey)))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	return append(opts, opcua.SecurityFromEndpoint(ep, tokenType))
}

// connect opens a session (and subscription), unless one is open or a
// retry is not due.
func (s *opcuaSource) connect(ctx context.Context) error {
	if s.client != nil {
		if s.client.State() == opcua.Connected && s.subError() == nil {
			return nil
		}
		s.disconnect()
	}
	now := time.Now()
	if now.Before(s.retryAt) {
		return fmt.Errorf("%s not connected, retrying in %v: %w", s.cfg.Endpoint, s.retryAt.Sub(now).Round(time.Millisecond), s.lastErr)
	}
	err := s.dial(ctx)
	if err != nil {
		s.disconnect()
		s.failures++
		wait := opcuaMinBackoff
		for i := 1; i < s.failures && wait < opcuaMaxBackoff; i++ {
			wait *= 2
		}
		s.retryAt, s.lastErr = now.Add(min(wait, opcuaMaxBackoff)), err
		return err
	}
	s.failures = 0
	return nil
}

func (s *opcuaSource) dial(ctx context.Context) error {
	o := s.cfg
	eps, err := opcua.GetEndpoints(ctx, o.Endpoint, opcua.DialTimeout(time.Duration(o.RequestTimeout)))
	if err != nil {
		return fmt.Errorf("get endpoints of %s: %w", o.Endpoint, err)
	}
	ep, err := opcua.SelectEndpoint(eps, o.SecurityPolicy, ua.MessageSecurityModeFromString(o.SecurityMode))
	if err != nil {
		return fmt.Errorf("%s offers no endpoint with security %s/%s: %w", o.Endpoint, o.SecurityPolicy, o.SecurityMode, err)
	}
	// Connect to the URL configured, not the one the server advertises
	// (servers often advertise a hostname the gateway cannot resolve).
	c, err := opcua.NewClient(o.Endpoint, s.options(ep)...)
	if err != nil {
		return fmt.Errorf("opcua client: %w", err)
	}
	s.client = c
	if err := c.Connect(ctx); err != nil {
		return fmt.Errorf("connect %s: %w", o.Endpoint, err)
	}
	if o.Mode != "subscribe" {
		return nil
	}
	s.pmu.Lock()
	clear(s.pending)
	s.subErr = nil
	s.pmu.Unlock()
	notify := make(chan *opcua.PublishNotificationData, 8)
	sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: time.Duration(o.SamplingInterval)}, notify)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	s.sub = sub
	items := make([]*ua.MonitoredItemCreateRequest, len(o.Nodes))
	for i, id := range s.ids {
		items[i] = opcua.NewMonitoredItemCreateRequestWithDefaults(id, ua.AttributeIDValue, uint32(i))
		items[i].RequestedParameters.SamplingInterval = float64(time.Duration(o.SamplingInterval) / time.Millisecond)
		items[i].RequestedParameters.QueueSize = 1
	}
	res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, items...)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	for i, r := range res.Results {
		if i < len(o.Nodes) && r.StatusCode != ua.StatusOK {
			return fmt.Errorf("%w: monitor %s: %v", ErrBadStatus, o.Nodes[i].Node, r.StatusCode)
		}
	}
	subCtx, stop := context.WithCancel(context.Background())
	s.subStop, s.subDone = stop, make(chan struct{})
	go s.collect(subCtx, notify, s.subDone)
	return nil
}

// collect keeps the latest notification per node until ctx ends.
func (s *opcuaSource) collect(ctx context.Context, notify <-chan *opcua.PublishNotificationData, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notify:
			s.pmu.Lock()
			if n.Error != nil {
				s.subErr = n.Error
			} else if dc, ok := n.Value.(*ua.DataChangeNotification); ok {
				for _, item := range dc.MonitoredItems {
					if h := int(item.ClientHandle); h < len(s.pending) && item.Value != nil {
						s.pending[h] = item.Value
					}
				}
			}
			s.pmu.Unlock()
		}
	}
}

func (s *opcuaSource) subError() error {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.subErr
}

func (s *opcuaSource) disconnect() {
	if s.subStop != nil {
		s.subStop()
		<-s.subDone
		s.subStop = nil
	}
	s.sub = nil
	if s.client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.client.Close(ctx)
		cancel()
		s.client = nil
	}
}

func (s *opcuaSource) Read(ctx context.Context) ([]Value, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == nil {
		return nil, errors.New("source closed")
	}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	readAt := s.now()
	dvs, err := s.values(ctx)
	if err != nil {
		if _, bad := errors.AsType[*badNodeError](err); !bad {
			s.disconnect() // the session may be gone: a fresh one next time
		}
		return nil, err
	}
	vals := make([]Value, 0, len(dvs))
	for i, dv := range dvs {
		if dv == nil {
			continue
		}
		n := &s.cfg.Nodes[i]
		if s.cfg.Timestamp == "source" && !dv.SourceTimestamp.IsZero() && dv.SourceTimestamp.Equal(s.lastSrc[i]) {
			continue // reported already
		}
		v, err := opcuaValue(n, dv)
		if err != nil {
			return nil, err
		}
		if s.cfg.Timestamp == "source" {
			s.lastSrc[i] = dv.SourceTimestamp
			if t := dv.SourceTimestamp; !t.IsZero() && !t.After(readAt.Add(time.Duration(s.cfg.ClockTolerance))) && t.After(readAt.Add(-opcuaMaxAge)) {
				v.Time = t.UnixNano()
			}
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return nil, ErrNoChange
	}
	return vals, nil
}

// badNodeError is a node the server reported with a Bad status: a read
// error, not a connection problem.
type badNodeError struct {
	node   string
	status ua.StatusCode
}

func (e *badNodeError) Error() string {
	return fmt.Sprintf("node %s: %v", e.node, e.status)
}

func (e *badNodeError) Unwrap() error { return ErrBadStatus }

// values returns one DataValue per node (nil: nothing new in subscribe mode).
func (s *opcuaSource) values(ctx context.Context) ([]*ua.DataValue, error) {
	o := s.cfg
	if o.Mode == "subscribe" {
		if err := s.subError(); err != nil {
			return nil, fmt.Errorf("subscription: %w", err)
		}
		s.pmu.Lock()
		out := make([]*ua.DataValue, len(s.pending))
		copy(out, s.pending)
		clear(s.pending)
		s.pmu.Unlock()
		return out, nil
	}
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
	for _, id := range s.ids {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: id, AttributeID: ua.AttributeIDValue})
	}
	resp, err := s.client.Read(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", o.Endpoint, err)
	}
	if len(resp.Results) != len(o.Nodes) {
		return nil, fmt.Errorf("%w: %d results for %d nodes", ErrBadFrame, len(resp.Results), len(o.Nodes))
	}
	return resp.Results, nil
}

// opcuaValue converts a node's DataValue. A Bad status is ErrBadStatus; a
// value of a type the wire format has no column for is ErrParse.
func opcuaValue(n *OPCUANode, dv *ua.DataValue) (Value, error) {
	if dv.Status != ua.StatusOK && uint32(dv.Status)&0xc0000000 == 0x80000000 {
		return Value{}, &badNodeError{node: n.Node, status: dv.Status}
	}
	v := Value{Metric: n.Metric, Unit: n.Unit}
	if dv.Value == nil {
		return v, fmt.Errorf("%w: node %s: no value", ErrParse, n.Node)
	}
	switch x := dv.Value.Value().(type) {
	case bool:
		v.Type, v.Bool = protocol.Bool, x
	case int8:
		v.Type, v.Int = protocol.Int, int64(x)
	case uint8:
		v.Type, v.Int = protocol.Int, int64(x)
	case int16:
		v.Type, v.Int = protocol.Int, int64(x)
	case uint16:
		v.Type, v.Int = protocol.Int, int64(x)
	case int32:
		v.Type, v.Int = protocol.Int, int64(x)
	case uint32:
		v.Type, v.Int = protocol.Int, int64(x)
	case int64:
		v.Type, v.Int = protocol.Int, x
	case uint64:
		if x > math.MaxInt64 {
			return v, fmt.Errorf("%w: node %s: uint64 %d exceeds the int64 range", ErrParse, n.Node, x)
		}
		v.Type, v.Int = protocol.Int, int64(x)
	case float32:
		f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			f = float64(x)
		}
		v.Type, v.Float = protocol.Float, f
	case float64:
		v.Type, v.Float = protocol.Float, x
	case string:
		if err := checkText(x); err != nil {
			return v, fmt.Errorf("%w: node %s: %v", ErrParse, n.Node, err)
		}
		v.Type, v.Str = protocol.String, x
	default:
		return v, fmt.Errorf("%w: node %s: a %T value has no metric type (want a number, bool or string)", ErrParse, n.Node, x)
	}
	if v.Type == protocol.Float && n.Resolution != 0 {
		v.Resolution = n.Resolution
		f, err := protocol.Quantize(v.Float, n.Resolution)
		if err != nil {
			return v, fmt.Errorf("%w: node %s: %w", ErrImplausible, n.Node, err)
		}
		v.Float = f
	}
	return v, nil
}

// Close ends the session. It does not wait for a read in flight.
func (s *opcuaSource) Close() error {
	s.closeOnce.Do(func() {
		if s.mu.TryLock() {
			s.disconnect()
			s.cfg = nil
			s.mu.Unlock()
			return
		}
		// A read holds the session: it ends when that read returns.
		go func() {
			s.mu.Lock()
			s.disconnect()
			s.cfg = nil
			s.mu.Unlock()
		}()
	})
	return nil
}

// password reads the password of auth username.
func (o *OPCUAConfig) password() (string, error) {
	return cfgfile.Secret("opcua.password", o.PasswordFile, "")
}
