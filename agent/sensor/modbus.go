package sensor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"time"

	"github.com/simonvetter/modbus"

	"github.com/freshet-iot/freshet/protocol"
)

// Backoff of a Modbus connection that cannot be opened: the first retry
// waits DefaultModbusMinBackoff, each further one twice as long, up to
// DefaultModbusMaxBackoff. Reads in between fail at once.
const (
	DefaultModbusMinBackoff = 500 * time.Millisecond
	DefaultModbusMaxBackoff = 30 * time.Second
)

// ModbusPool shares Modbus connections among the sensors of one agent. The
// sensors on one serial port, or on one TCP endpoint (a gateway with several
// slaves behind it), use one connection and take turns: one request at a
// time, so requests on an RS-485 line never collide. A sensor waiting its
// turn waits at most until its read's timeout. The waiters are bounded by
// the number of sensors, since a sensor has at most one read in flight.
type ModbusPool struct {
	// MinBackoff and MaxBackoff bound the wait before reconnecting after a
	// failed connect. Zero: the defaults.
	MinBackoff, MaxBackoff time.Duration

	mu    sync.Mutex
	buses map[string]*modbusBus
}

// NewModbusPool returns an empty pool with the default backoff.
func NewModbusPool() *ModbusPool { return &ModbusPool{} }

// modbusBus owns one connection: a serial port or a TCP connection.
type modbusBus struct {
	pool    *ModbusPool
	key     string // transport and endpoint or device
	conf    modbus.ClientConfiguration
	owner   string // the sensor whose settings the bus took
	refs    int    // sources using it; under pool.mu
	turn    chan struct{}
	closing bool // refs dropped to 0 while a request held the turn; under pool.mu

	// Owned by whoever holds turn.
	client   *modbus.ModbusClient
	failures int       // consecutive failed connects
	retryAt  time.Time // no connect before this
	lastErr  error     // of the last failed connect
}

// modbusClientConf is the library configuration of m.
func modbusClientConf(m *ModbusConfig) (key string, conf modbus.ClientConfiguration) {
	conf = modbus.ClientConfiguration{Timeout: time.Duration(m.RequestTimeout), Logger: log.New(io.Discard, "", 0)}
	switch m.Transport {
	case ModbusTCP:
		conf.URL = "tcp://" + m.Endpoint
	case ModbusRTUOverTCP:
		conf.URL = "rtuovertcp://" + m.Endpoint
	case ModbusRTU:
		conf.URL = "rtu://" + m.Device
		conf.Speed, conf.DataBits, conf.StopBits = uint(m.Baud), uint(m.DataBits), uint(m.StopBits)
		conf.Parity = map[string]uint{"none": modbus.PARITY_NONE, "even": modbus.PARITY_EVEN, "odd": modbus.PARITY_ODD}[m.Parity]
	}
	return conf.URL, conf
}

// acquire returns the bus of m, shared with the sensors already on it. The
// sensors of one bus must agree on its settings: a conflict is an error
// naming the key.
func (p *ModbusPool) acquire(sensor string, m *ModbusConfig) (*modbusBus, error) {
	key, conf := modbusClientConf(m)
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.buses[key]; ok {
		var k string
		switch {
		case b.conf.Speed != conf.Speed:
			k = "baud"
		case b.conf.Parity != conf.Parity:
			k = "parity"
		case b.conf.DataBits != conf.DataBits:
			k = "data_bits"
		case b.conf.StopBits != conf.StopBits:
			k = "stop_bits"
		case b.conf.Timeout != conf.Timeout:
			k = "request_timeout"
		}
		if k != "" {
			return nil, &ConfigError{Sensor: sensor, Key: "modbus." + k,
				Err: fmt.Errorf("differs from sensor %q on the same %s; sensors sharing a port or endpoint share its settings", b.owner, key)}
		}
		b.refs++
		return b, nil
	}
	if p.buses == nil {
		p.buses = map[string]*modbusBus{}
	}
	b := &modbusBus{pool: p, key: key, conf: conf, owner: sensor, refs: 1, turn: make(chan struct{}, 1)}
	p.buses[key] = b
	return b, nil
}

// release drops one reference; the last one closes the connection, now if
// no request holds it, else when that request ends.
func (b *modbusBus) release() {
	p := b.pool
	p.mu.Lock()
	b.refs--
	last := b.refs == 0
	if last {
		delete(p.buses, b.key)
	}
	p.mu.Unlock()
	if !last {
		return
	}
	select {
	case b.turn <- struct{}{}:
		b.disconnect()
		<-b.turn
	default:
		p.mu.Lock()
		b.closing = true
		p.mu.Unlock()
	}
}

func (b *modbusBus) disconnect() {
	if b.client != nil {
		b.client.Close()
		b.client = nil
	}
}

// do runs one request on the bus for unit, waiting for its turn until ctx
// ends. A transport error (timeout, garbled frame, broken connection) closes
// the connection, so the next request starts clean on a fresh one; an
// exception response does not.
func (b *modbusBus) do(ctx context.Context, unit uint8, req func(c *modbus.ModbusClient) error) error {
	select {
	case b.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for %s, busy with another sensor's request", ErrTimeout, b.key)
	}
	defer func() {
		b.pool.mu.Lock()
		closing := b.closing
		b.pool.mu.Unlock()
		if closing {
			b.disconnect()
		}
		<-b.turn
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.connect(); err != nil {
		return err
	}
	b.client.SetUnitId(unit)
	err := classifyModbusErr(req(b.client))
	if err != nil {
		if _, exc := errors.AsType[*ModbusException](err); !exc {
			b.disconnect()
		}
	}
	return err
}

// connect opens the connection unless it is open or a retry is not due.
func (b *modbusBus) connect() error {
	if b.client != nil {
		return nil
	}
	now := time.Now()
	if now.Before(b.retryAt) {
		return fmt.Errorf("%s not connected, retrying in %v: %w", b.key, b.retryAt.Sub(now).Round(time.Millisecond), b.lastErr)
	}
	c, err := modbus.NewClient(&b.conf)
	if err == nil {
		err = c.Open()
	}
	if err != nil {
		b.failures++
		lo, hi := b.pool.MinBackoff, b.pool.MaxBackoff
		if lo <= 0 {
			lo = DefaultModbusMinBackoff
		}
		if hi <= 0 {
			hi = DefaultModbusMaxBackoff
		}
		wait := lo
		for i := 1; i < b.failures && wait < hi; i++ {
			wait *= 2
		}
		b.retryAt, b.lastErr = now.Add(min(wait, hi)), fmt.Errorf("connect: %w", err)
		return fmt.Errorf("%s: %w", b.key, b.lastErr)
	}
	b.client, b.failures = c, 0
	return nil
}

// modbusSource reads one slave's registers through a shared bus.
type modbusSource struct {
	name  string
	unit  uint8
	regs  []ModbusRegister
	plan  []modbusRequest
	bus   *modbusBus
	close sync.Once
}

func openModbus(c Config, env Env) (*modbusSource, error) {
	pool := env.Modbus
	if pool == nil {
		pool = NewModbusPool() // a bus of its own
	}
	m := c.Modbus
	bus, err := pool.acquire(c.Name, m)
	if err != nil {
		return nil, err
	}
	return &modbusSource{name: c.Name, unit: uint8(*m.Unit), regs: m.Registers, plan: modbusPlan(m.Registers, m.MaxGap), bus: bus}, nil
}

func (s *modbusSource) Read(ctx context.Context) ([]Value, error) {
	vals := make([]Value, len(s.regs))
	for _, rq := range s.plan {
		var words []uint16
		var bits []bool
		err := s.bus.do(ctx, s.unit, func(c *modbus.ModbusClient) error {
			var err error
			switch rq.kind {
			case KindCoil:
				bits, err = c.ReadCoils(rq.start, rq.count)
			case KindDiscreteInput:
				bits, err = c.ReadDiscreteInputs(rq.start, rq.count)
			case KindHolding:
				words, err = c.ReadRegisters(rq.start, rq.count, modbus.HOLDING_REGISTER)
			case KindInput:
				words, err = c.ReadRegisters(rq.start, rq.count, modbus.INPUT_REGISTER)
			}
			return err
		})
		if err == nil && len(words) != int(rq.count) && len(bits) != int(rq.count) {
			err = fmt.Errorf("%w: %d values for %d requested", ErrBadFrame, max(len(words), len(bits)), rq.count)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s %d..%d of unit %d on %s: %w", rq.kind, rq.start, int(rq.start)+int(rq.count)-1, s.unit, s.bus.key, err)
		}
		for _, i := range rq.regs {
			r := &s.regs[i]
			off := *r.Address - int(rq.start)
			if r.bits() {
				vals[i] = Value{Metric: r.Metric, Unit: r.Unit, Type: protocol.Bool, Bool: bits[off]}
				continue
			}
			v, err := decodeModbusValue(r, words[off:])
			if err != nil {
				return nil, err
			}
			vals[i] = v
		}
	}
	return vals, nil
}

// Close releases the source's share of its bus. It does not wait for a
// request in flight.
func (s *modbusSource) Close() error {
	s.close.Do(s.bus.release)
	return nil
}

// ModbusException is an exception response: the slave (or the gateway in
// front of it) understood the request and refused it.
type ModbusException struct {
	Code byte
}

// modbusExceptions names the exception codes of the Modbus Application
// Protocol V1.1b3, section 7, as counter reasons.
var modbusExceptions = map[byte]string{
	0x01: "illegal_function",
	0x02: "illegal_data_address",
	0x03: "illegal_data_value",
	0x04: "slave_device_failure",
	0x05: "acknowledge",
	0x06: "slave_device_busy",
	0x08: "memory_parity_error",
	0x0a: "gateway_path_unavailable",
	0x0b: "gateway_target_failed_to_respond",
}

func (e *ModbusException) Error() string {
	return fmt.Sprintf("modbus exception %d (%s)", e.Code, e.name())
}

func (e *ModbusException) name() string {
	if n, ok := modbusExceptions[e.Code]; ok {
		return n
	}
	return "unknown"
}

// reason is the counter reason: modbus_<name>.
func (e *ModbusException) reason() string { return "modbus_" + e.name() }

// modbusReasons lists the reasons a modbus sensor counts besides the common ones.
func modbusReasons() []string {
	out := []string{ReasonBadFrame}
	for _, code := range []byte{1, 2, 3, 4, 5, 6, 8, 0x0a, 0x0b} {
		out = append(out, (&ModbusException{Code: code}).reason())
	}
	return out
}

// libExceptions maps the library's errors for exception responses back to their codes.
var libExceptions = map[error]byte{
	modbus.ErrIllegalFunction:         0x01,
	modbus.ErrIllegalDataAddress:      0x02,
	modbus.ErrIllegalDataValue:        0x03,
	modbus.ErrServerDeviceFailure:     0x04,
	modbus.ErrAcknowledge:             0x05,
	modbus.ErrServerDeviceBusy:        0x06,
	modbus.ErrMemoryParityError:       0x08,
	modbus.ErrGWPathUnavailable:       0x0a,
	modbus.ErrGWTargetFailedToRespond: 0x0b,
}

// classifyModbusErr turns the library's errors into ours: exceptions into
// *ModbusException, timeouts into ErrTimeout, garbled or mismatched frames
// into ErrBadFrame. Anything else (a refused connection, a closed port) is
// returned as it is and counts as io.
func classifyModbusErr(err error) error {
	if err == nil {
		return nil
	}
	var lib modbus.Error
	if !errors.As(err, &lib) {
		return err
	}
	if code, ok := libExceptions[lib]; ok {
		return &ModbusException{Code: code}
	}
	switch lib {
	case modbus.ErrRequestTimedOut:
		return fmt.Errorf("%w: no response (%v)", ErrTimeout, err)
	case modbus.ErrBadCRC, modbus.ErrShortFrame, modbus.ErrProtocolError, modbus.ErrBadUnitId,
		modbus.ErrBadTransactionId, modbus.ErrUnknownProtocolId:
		return fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	return err
}
