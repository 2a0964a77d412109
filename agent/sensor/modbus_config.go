package sensor

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/protocol"
)

// Modbus transports.
const (
	ModbusTCP        = "tcp"          // Modbus TCP (MBAP header), host:port
	ModbusRTU        = "rtu"          // Modbus RTU on a serial port (RS-485 adapter)
	ModbusRTUOverTCP = "rtu_over_tcp" // RTU frames through a TCP serial server
)

// Modbus register kinds, as the config names them.
const (
	KindHolding       = "holding"        // function 3, 16-bit read/write registers
	KindInput         = "input"          // function 4, 16-bit read-only registers
	KindCoil          = "coil"           // function 1, read/write bits
	KindDiscreteInput = "discrete_input" // function 2, read-only bits
)

// Limits of one Modbus request (Modbus Application Protocol V1.1b3, 6.1-6.4)
// and defaults of the modbus block.
const (
	MaxModbusRegisters          = 125  // registers per read request (function 3, 4)
	MaxModbusBits               = 2000 // coils or discrete inputs per read request (function 1, 2)
	maxModbusValues             = 256  // registers listed per sensor (a batch holds at most 256 series)
	DefaultModbusRequestTimeout = time.Second
	DefaultModbusBaud           = 9600
	DefaultModbusTCPPort        = "502"
)

// ModbusConfig is the modbus block of a sensor of type modbus: one slave
// (unit) on one transport, and the registers to read from it.
//
//   - name: meter
//     type: modbus
//     interval: 10s
//     modbus:
//     transport: rtu            # tcp (default), rtu, rtu_over_tcp
//     device: /dev/ttyUSB0      # rtu: the serial port
//     baud: 9600                # rtu: 1200..115200, default 9600
//     parity: none              # none (default), even, odd
//     unit: 1                   # slave id, default 1
//     registers:
//   - {metric: voltage, unit: V, kind: input, address: 0x0000, type: float32}
type ModbusConfig struct {
	// Transport: tcp (default), rtu or rtu_over_tcp.
	Transport string `yaml:"transport"`
	// Endpoint is host:port of a tcp or rtu_over_tcp slave or gateway (port
	// default 502).
	Endpoint string `yaml:"endpoint"`
	// Device is the serial port of an rtu slave, e.g. /dev/ttyUSB0.
	Device string `yaml:"device"`
	// Serial line settings of rtu: baud (default 9600), parity none
	// (default), even or odd, data_bits 7 or 8 (default), stop_bits 1
	// (default) or 2. Sensors on one port must agree on them.
	Baud     int    `yaml:"baud"`
	Parity   string `yaml:"parity"`
	DataBits int    `yaml:"data_bits"`
	StopBits int    `yaml:"stop_bits"`
	// Unit is the slave id: 1..247 on a serial line (default 1), 0..255
	// over TCP.
	Unit *int `yaml:"unit"`
	// RequestTimeout bounds one request and its response. Default 1s, at
	// most the sensor's timeout. Sensors sharing a port or endpoint share it.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxGap lets one request span up to this many unlisted registers (or
	// bits) between two listed ones, where the slave allows reading them.
	// Default 0: only adjacent registers share a request.
	MaxGap int `yaml:"max_gap"`
	// Registers to read, each one metric. At least one, at most 256.
	Registers []ModbusRegister `yaml:"registers"`
}

// ModbusRegister maps one value of the slave to a metric.
type ModbusRegister struct {
	Metric string `yaml:"metric"`
	Unit   string `yaml:"unit"`
	// Kind: holding (default), input, coil or discrete_input.
	Kind string `yaml:"kind"`
	// Address is the protocol address, from 0: register 30001 of a
	// datasheet's 3xxxx numbering is input register 0.
	Address *int `yaml:"address"`
	// Type: int16, uint16 (default for registers), int32, uint32, int64,
	// uint64, float32, float64; bool (the only type, and the default, of
	// coils and discrete inputs).
	Type string `yaml:"type"`
	// WordOrder of a value over several registers: high_first (default, the
	// Modbus convention) or low_first.
	WordOrder string `yaml:"word_order"`
	// ByteOrder within each register: big (default) or little.
	ByteOrder string `yaml:"byte_order"`
	// Scale and Offset turn the raw number x into x*scale + offset (default
	// 1 and 0). An integer type with neither is sent as an integer.
	Scale  *float64 `yaml:"scale"`
	Offset float64  `yaml:"offset"`
	// Resolution of the float sent: 0 or a power of ten. Default: the
	// scale, when that is a power of ten from 1e-9 to 1 (a register in
	// tenths is sent in tenths), else 0 (as is).
	Resolution *float64 `yaml:"resolution"`
}

// words is how many 16-bit registers (or, for bits, how many bits) the value takes.
func (r *ModbusRegister) words() int {
	switch r.Type {
	case "int32", "uint32", "float32":
		return 2
	case "int64", "uint64", "float64":
		return 4
	}
	return 1
}

func (r *ModbusRegister) bits() bool { return r.Kind == KindCoil || r.Kind == KindDiscreteInput }

// isInt reports whether the register is sent as an integer.
func (r *ModbusRegister) isInt() bool {
	return strings.Contains(r.Type, "int") && *r.Scale == 1 && r.Offset == 0 && *r.Resolution == 0
}

// validate checks the modbus block of sensor c and fills in its defaults.
func (m *ModbusConfig) validate(c *Config) error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{Sensor: c.Name, Key: "modbus." + key, Err: fmt.Errorf(format, args...)}
	}
	if m.Transport == "" {
		m.Transport = ModbusTCP
	}
	serial := m.Baud != 0 || m.Parity != "" || m.DataBits != 0 || m.StopBits != 0
	switch m.Transport {
	case ModbusTCP, ModbusRTUOverTCP:
		if m.Device != "" {
			return bad("device", "not used by transport %s (set endpoint)", m.Transport)
		}
		if serial {
			return bad(firstSet(map[string]bool{"baud": m.Baud != 0, "parity": m.Parity != "", "data_bits": m.DataBits != 0, "stop_bits": m.StopBits != 0}),
				"not used by transport %s (the serial server's port carries the line settings)", m.Transport)
		}
		if m.Endpoint == "" {
			return bad("endpoint", "required for transport %s (host:port, e.g. 192.168.1.50:502)", m.Transport)
		}
		host, port, err := net.SplitHostPort(m.Endpoint)
		if err != nil {
			host, port = m.Endpoint, DefaultModbusTCPPort
			if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
				return bad("endpoint", "%q: want host:port", m.Endpoint)
			}
			host = strings.Trim(host, "[]")
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
			return bad("endpoint", "%q: want host:port", m.Endpoint)
		}
		m.Endpoint = net.JoinHostPort(host, port)
	case ModbusRTU:
		if m.Endpoint != "" {
			return bad("endpoint", "not used by transport rtu (set device)")
		}
		if m.Device == "" {
			return bad("device", "required for transport rtu (the serial port, e.g. /dev/ttyUSB0)")
		}
		if m.Baud == 0 {
			m.Baud = DefaultModbusBaud
		}
		if m.Baud < 300 || m.Baud > 921600 {
			return bad("baud", "%d is outside 300..921600", m.Baud)
		}
		switch m.Parity {
		case "":
			m.Parity = "none"
		case "none", "even", "odd":
		default:
			return bad("parity", "%q: want none, even or odd", m.Parity)
		}
		if m.DataBits == 0 {
			m.DataBits = 8
		}
		if m.DataBits != 7 && m.DataBits != 8 {
			return bad("data_bits", "%d: want 7 or 8", m.DataBits)
		}
		if m.StopBits == 0 {
			m.StopBits = 1
		}
		if m.StopBits != 1 && m.StopBits != 2 {
			return bad("stop_bits", "%d: want 1 or 2", m.StopBits)
		}
	default:
		return bad("transport", "%q: want tcp, rtu or rtu_over_tcp", m.Transport)
	}
	if m.Unit == nil {
		one := 1
		m.Unit = &one
	}
	if lo, hi := m.unitRange(); *m.Unit < lo || *m.Unit > hi {
		return bad("unit", "%d is outside %d..%d for transport %s", *m.Unit, lo, hi, m.Transport)
	}
	if m.RequestTimeout == 0 {
		m.RequestTimeout = Duration(min(DefaultModbusRequestTimeout, time.Duration(c.Timeout)))
	}
	if m.RequestTimeout < Duration(10*time.Millisecond) {
		return bad("request_timeout", "%v is below 10ms", time.Duration(m.RequestTimeout))
	}
	if m.RequestTimeout > c.Timeout {
		return bad("request_timeout", "%v exceeds the sensor's timeout %v", time.Duration(m.RequestTimeout), time.Duration(c.Timeout))
	}
	if m.MaxGap < 0 || m.MaxGap > MaxModbusRegisters-1 {
		return bad("max_gap", "%d is outside 0..%d", m.MaxGap, MaxModbusRegisters-1)
	}
	if len(m.Registers) == 0 {
		return bad("registers", "none listed")
	}
	if len(m.Registers) > maxModbusValues {
		return bad("registers", "%d listed, limit %d", len(m.Registers), maxModbusValues)
	}
	seen := map[string]int{}
	for i := range m.Registers {
		if err := m.Registers[i].validate(); err != nil {
			return bad(fmt.Sprintf("registers[%d].%s", i, err.key), "%v", err.err)
		}
		r := &m.Registers[i]
		if j, dup := seen[r.Metric]; dup {
			return bad(fmt.Sprintf("registers[%d].metric", i), "%q is also registers[%d]", r.Metric, j)
		}
		seen[r.Metric] = i
	}
	return nil
}

func (m *ModbusConfig) unitRange() (lo, hi int) {
	if m.Transport == ModbusTCP {
		return 0, 255
	}
	return 1, 247 // 0 is broadcast, which is never answered; 248..255 are reserved
}

func firstSet(set map[string]bool) string {
	for _, k := range []string{"baud", "parity", "data_bits", "stop_bits"} {
		if set[k] {
			return k
		}
	}
	return ""
}

type keyError struct {
	key string
	err error
}

func (r *ModbusRegister) validate() *keyError {
	bad := func(key, format string, args ...any) *keyError {
		return &keyError{key, fmt.Errorf(format, args...)}
	}
	if err := checkName(r.Metric); err != nil {
		return bad("metric", "%v", err)
	}
	if err := checkPrintable(r.Unit, true); err != nil {
		return bad("unit", "%v", err)
	}
	if r.Kind == "" {
		r.Kind = KindHolding
	}
	switch r.Kind {
	case KindHolding, KindInput, KindCoil, KindDiscreteInput:
	default:
		return bad("kind", "%q: want holding, input, coil or discrete_input", r.Kind)
	}
	if r.Address == nil {
		return bad("address", "required (the protocol address from 0; register 40001 is holding 0)")
	}
	if r.bits() {
		switch r.Type {
		case "":
			r.Type = "bool"
		case "bool":
		default:
			return bad("type", "%q: a %s is a bit; its type is bool", r.Type, r.Kind)
		}
		for key, set := range map[string]bool{"word_order": r.WordOrder != "", "byte_order": r.ByteOrder != "",
			"scale": r.Scale != nil, "offset": r.Offset != 0, "resolution": r.Resolution != nil} {
			if set {
				return bad(key, "not used by a %s", r.Kind)
			}
		}
		if *r.Address < 0 || *r.Address > 0xffff {
			return bad("address", "%d is outside 0..65535", *r.Address)
		}
		return nil
	}
	switch r.Type {
	case "":
		r.Type = "uint16"
	case "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64":
	case "bool":
		return bad("type", "bool is for coils and discrete inputs; a %s register is a number", r.Kind)
	default:
		return bad("type", "%q: want int16, uint16, int32, uint32, int64, uint64, float32 or float64", r.Type)
	}
	if *r.Address < 0 || *r.Address+r.words()-1 > 0xffff {
		return bad("address", "%d: a %s there ends past register 65535", *r.Address, r.Type)
	}
	switch r.WordOrder {
	case "":
		r.WordOrder = "high_first"
	case "high_first", "low_first":
	default:
		return bad("word_order", "%q: want high_first or low_first", r.WordOrder)
	}
	if r.WordOrder == "low_first" && r.words() == 1 {
		return bad("word_order", "a %s is one register", r.Type)
	}
	switch r.ByteOrder {
	case "":
		r.ByteOrder = "big"
	case "big", "little":
	default:
		return bad("byte_order", "%q: want big or little", r.ByteOrder)
	}
	if r.Scale == nil {
		one := 1.0
		r.Scale = &one
	}
	if s := *r.Scale; s == 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return bad("scale", "%g: want a finite number other than 0", s)
	}
	if math.IsNaN(r.Offset) || math.IsInf(r.Offset, 0) {
		return bad("offset", "%g: want a finite number", r.Offset)
	}
	if r.Resolution == nil {
		res := 0.0
		// A register in tenths is sent in tenths: the resolution is the
		// scale, when the offset is a whole number of it.
		if s := *r.Scale; s < 1 && strings.Contains(r.Type, "int") {
			if _, err := protocol.ResolutionExp(s); err == nil {
				if q := r.Offset / s; q == math.Round(q) {
					res = s
				}
			}
		}
		r.Resolution = &res
	}
	if res := *r.Resolution; res != 0 {
		if _, err := protocol.ResolutionExp(res); err != nil {
			return bad("resolution", "%g is not 0 or a power of ten from 1e-9 to 1e9", res)
		}
	}
	return nil
}

// modbusRequest is one read request of a plan: a run of registers (or bits)
// of one kind, and the listed values in it.
type modbusRequest struct {
	kind  string
	start uint16
	count uint16
	regs  []int // indexes into the registers, each starting within the run
}

// modbusPlan groups the registers into as few requests as the protocol
// allows: sorted by kind and address, adjacent (or, with maxGap, nearly
// adjacent) values share a request of at most 125 registers or 2000 bits.
// A value is never split over two requests.
func modbusPlan(regs []ModbusRegister, maxGap int) []modbusRequest {
	idx := make([]int, len(regs))
	for i := range idx {
		idx[i] = i
	}
	kindRank := map[string]int{KindCoil: 0, KindDiscreteInput: 1, KindHolding: 2, KindInput: 3}
	slices.SortStableFunc(idx, func(a, b int) int {
		ra, rb := &regs[a], &regs[b]
		if d := kindRank[ra.Kind] - kindRank[rb.Kind]; d != 0 {
			return d
		}
		return *ra.Address - *rb.Address
	})
	var out []modbusRequest
	for _, i := range idx {
		r := &regs[i]
		start, end := *r.Address, *r.Address+r.words() // end exclusive
		limit := MaxModbusRegisters
		if r.bits() {
			limit = MaxModbusBits
		}
		if n := len(out); n > 0 {
			cur := &out[n-1]
			curEnd := int(cur.start) + int(cur.count)
			if cur.kind == r.Kind && start <= curEnd+maxGap && max(end, curEnd)-int(cur.start) <= limit {
				cur.count = uint16(max(end, curEnd) - int(cur.start))
				cur.regs = append(cur.regs, i)
				continue
			}
		}
		out = append(out, modbusRequest{kind: r.Kind, start: uint16(start), count: uint16(end - start), regs: []int{i}})
	}
	return out
}

// decodeModbusValue decodes register r from the words of its request (raw
// big-endian register values as on the wire, the first at the request's
// start). It fails with ErrParse on a value that cannot be sent (a uint64
// beyond int64 sent as an integer).
func decodeModbusValue(r *ModbusRegister, words []uint16) (Value, error) {
	v := Value{Metric: r.Metric, Unit: r.Unit}
	n := r.words()
	w := slices.Clone(words[:n])
	if r.WordOrder == "low_first" {
		slices.Reverse(w)
	}
	var raw uint64
	for _, x := range w {
		if r.ByteOrder == "little" {
			x = x<<8 | x>>8
		}
		raw = raw<<16 | uint64(x)
	}
	var f float64
	var i int64
	isFloat := false
	switch r.Type {
	case "int16":
		i = int64(int16(raw))
	case "uint16":
		i = int64(uint16(raw))
	case "int32":
		i = int64(int32(raw))
	case "uint32":
		i = int64(uint32(raw))
	case "int64":
		i = int64(raw)
	case "uint64":
		if raw > math.MaxInt64 && r.isInt() {
			return v, fmt.Errorf("%w: %s: uint64 %d exceeds the int64 range (set a scale to send it as a float)", ErrParse, r.Metric, raw)
		}
		if raw > math.MaxInt64 {
			f, isFloat = float64(raw), true
		} else {
			i = int64(raw)
		}
	case "float32":
		// The float32's shortest decimal: 230.1, not 230.10000610351562.
		x := math.Float32frombits(uint32(raw))
		f, _ = strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			f = float64(x)
		}
		isFloat = true
	case "float64":
		f, isFloat = math.Float64frombits(raw), true
	default:
		return v, fmt.Errorf("%w: %s: type %q", ErrParse, r.Metric, r.Type)
	}
	if !isFloat && r.isInt() {
		v.Type, v.Int = protocol.Int, i
		return v, nil
	}
	if !isFloat {
		f = float64(i)
	}
	v.Type, v.Resolution = protocol.Float, *r.Resolution
	// Rounded to the resolution as the hub will receive it: 317 tenths
	// are 31.7, not 31.700000000000003.
	x, err := protocol.Quantize(f**r.Scale+r.Offset, v.Resolution)
	if err != nil {
		return v, fmt.Errorf("%w: %s: %w", ErrImplausible, r.Metric, err)
	}
	v.Float = x
	return v, nil
}
