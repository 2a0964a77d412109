package modbus

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// RTU framing (Modbus over Serial Line V1.02, 2.5.1).
const (
	maxRTUFrame = 256 // bytes: address, PDU of at most 253, CRC
	minRTUFrame = 4   // address, function, CRC
)

// Errors of DecodeRequest.
var (
	ErrShortFrame = errors.New("rtu: frame too short")
	ErrLongFrame  = errors.New("rtu: frame longer than 256 bytes")
	ErrBadCRC     = errors.New("rtu: bad CRC")
	ErrBadLength  = errors.New("rtu: frame length does not match its function")
)

// CRC16 is the CRC-16/Modbus of b (polynomial 0xA001 reflected, initial
// value 0xFFFF); a frame carries it low byte first.
func CRC16(b []byte) uint16 {
	crc := uint16(0xffff)
	for _, x := range b {
		crc ^= uint16(x)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xa001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// appendCRC appends the CRC of frame to it.
func appendCRC(frame []byte) []byte {
	return binary.LittleEndian.AppendUint16(frame, CRC16(frame))
}

// Request is a decoded RTU request frame.
type Request struct {
	Unit     byte
	Function byte
	// Addr and Count of a read (functions 1 to 4).
	Addr, Count uint16
	// Exception, if not 0, is the exception the slave answers with: an
	// unsupported function (IllegalFunction) or a read past the address
	// space (IllegalDataAddress).
	Exception byte
}

// requestLen returns the length of the request frame that starts buf, from
// its function code, when buf holds enough of it to tell.
func requestLen(buf []byte) (int, bool) {
	if len(buf) < 2 {
		return 0, false
	}
	switch buf[1] {
	case 0x01, 0x02, 0x03, 0x04, 0x05, 0x06:
		return 8, true
	case 0x0f, 0x10: // address, count, byte count, data
		if len(buf) < 7 {
			return 0, false
		}
		return 9 + int(buf[6]), true
	}
	return 0, false
}

// DecodeRequest decodes a whole RTU request frame: checks its CRC and
// length and decodes a read's address and count. A well-formed frame with a
// function the slave does not serve decodes with Exception set.
func DecodeRequest(frame []byte) (Request, error) {
	switch {
	case len(frame) < minRTUFrame:
		return Request{}, ErrShortFrame
	case len(frame) > maxRTUFrame:
		return Request{}, ErrLongFrame
	}
	body := frame[:len(frame)-2]
	if binary.LittleEndian.Uint16(frame[len(frame)-2:]) != CRC16(body) {
		return Request{}, ErrBadCRC
	}
	r := Request{Unit: body[0], Function: body[1]}
	if n, ok := requestLen(frame); ok && n != len(frame) {
		return Request{}, ErrBadLength
	}
	switch r.Function {
	case ReadCoils, ReadDiscreteInputs, ReadHoldingRegisters, ReadInputRegisters:
		r.Addr = binary.BigEndian.Uint16(body[2:4])
		r.Count = binary.BigEndian.Uint16(body[4:6])
		if int(r.Addr)+int(r.Count) > 0x10000 {
			r.Exception = IllegalDataAddress
		}
	default:
		r.Exception = IllegalFunction
	}
	return r, nil
}

// EncodeRequest builds the RTU frame of a read request.
func EncodeRequest(unit, fn byte, addr, count uint16) []byte {
	f := []byte{unit, fn}
	f = binary.BigEndian.AppendUint16(f, addr)
	f = binary.BigEndian.AppendUint16(f, count)
	return appendCRC(f)
}

// encodeResponse builds the RTU frame answering r.
func encodeResponse(unit, fn byte, regs []uint16, bits []bool, exc byte) []byte {
	f := []byte{unit, fn}
	switch {
	case exc != 0:
		f = append(f[:1], fn|0x80, exc)
	case fn == ReadCoils || fn == ReadDiscreteInputs:
		packed := make([]byte, (len(bits)+7)/8)
		for i, b := range bits {
			if b {
				packed[i/8] |= 1 << (i % 8)
			}
		}
		f = append(f, byte(len(packed)))
		f = append(f, packed...)
	default:
		f = append(f, byte(2*len(regs)))
		for _, r := range regs {
			f = binary.BigEndian.AppendUint16(f, r)
		}
	}
	return appendCRC(f)
}

// framer cuts a byte stream from an RTU line into frames: a frame ends when
// it reaches the length its function code gives, or at a silence; bytes that
// follow a frame without a silence start the next one.
type framer struct {
	buf []byte
}

// push adds bytes received and returns the frames they complete.
func (f *framer) push(b []byte) (frames [][]byte) {
	f.buf = append(f.buf, b...)
	for {
		n, ok := requestLen(f.buf)
		if !ok || len(f.buf) < n {
			break
		}
		frames = append(frames, append([]byte(nil), f.buf[:n]...))
		f.buf = f.buf[n:]
	}
	if len(f.buf) > maxRTUFrame {
		// No frame is this long: noise. Keep nothing; the next silence resyncs.
		frames = append(frames, append([]byte(nil), f.buf...))
		f.buf = f.buf[:0]
	}
	f.buf = append([]byte(nil), f.buf...) // do not pin a large array
	return frames
}

// silence ends the frame in progress, returning it (nil if none).
func (f *framer) silence() []byte {
	if len(f.buf) == 0 {
		return nil
	}
	fr := f.buf
	f.buf = nil
	return fr
}

// Line is what an RTU server talks through: a pty master or a TCP connection.
type Line interface {
	io.ReadWriter
	SetReadDeadline(t time.Time) error
}

// RTUServer answers Modbus RTU requests for several slaves sharing a line.
type RTUServer struct {
	// Silence is the inter-frame gap that ends a frame; default t3.5 at
	// 9600 baud (about 4 ms), at least 20 ms (a pty has no baud clock, and
	// a loaded machine delays bytes more than t3.5).
	Silence time.Duration
	units   map[byte]*Slave

	frames, badFrames atomic.Uint64
}

// NewRTUServer returns a server for the slaves by unit id.
func NewRTUServer(units map[byte]*Slave) *RTUServer {
	return &RTUServer{units: units, Silence: 20 * time.Millisecond}
}

// Frames counts the frames received; BadFrames those refused (CRC, length).
func (s *RTUServer) Frames() uint64    { return s.frames.Load() }
func (s *RTUServer) BadFrames() uint64 { return s.badFrames.Load() }

// Serve reads requests from line and answers them until a read fails
// (the line is closed); it returns that error.
func (s *RTUServer) Serve(line Line) error {
	var f framer
	buf := make([]byte, maxRTUFrame)
	for {
		if len(f.buf) > 0 {
			line.SetReadDeadline(time.Now().Add(s.Silence))
		} else {
			line.SetReadDeadline(time.Time{})
		}
		n, err := line.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if fr := f.silence(); fr != nil {
					s.handle(line, fr)
				}
				continue
			}
			return err
		}
		for _, fr := range f.push(buf[:n]) {
			s.handle(line, fr)
		}
	}
}

// handle answers one frame, or ignores it: a bad frame, another unit's, a
// broadcast, a silent slave's.
func (s *RTUServer) handle(line Line, frame []byte) {
	s.frames.Add(1)
	req, err := DecodeRequest(frame)
	if err != nil {
		s.badFrames.Add(1)
		return
	}
	sl, ok := s.units[req.Unit]
	if !ok || req.Unit == 0 {
		return
	}
	fault := sl.Fault()
	if fault.Silent {
		return
	}
	exc := req.Exception
	var regs []uint16
	var bits []bool
	if exc == 0 {
		regs, bits, err = sl.Read(req.Function, req.Addr, req.Count)
		if e, ok := err.(Exception); ok {
			exc = byte(e)
		}
	}
	resp := encodeResponse(req.Unit, req.Function, regs, bits, exc)
	if fault.Garble {
		resp[len(resp)-1] ^= 0x5a
	}
	line.Write(resp)
}

// RTUPort is an RTUServer on a pseudo-terminal pair: clients open Path as
// they would /dev/ttyUSB0.
type RTUPort struct {
	Path   string
	Server *RTUServer
	master *os.File
	hold   *os.File
	done   chan struct{}
}

// ListenRTUPTY starts an RTU server for units on a new pseudo-terminal.
func ListenRTUPTY(units map[byte]*Slave) (*RTUPort, error) {
	master, hold, path, err := OpenPTY()
	if err != nil {
		return nil, err
	}
	p := &RTUPort{Path: path, Server: NewRTUServer(units), master: master, hold: hold, done: make(chan struct{})}
	go func() { defer close(p.done); p.Server.Serve(master) }()
	return p, nil
}

// Close stops the server and closes the pseudo-terminal.
func (p *RTUPort) Close() error {
	err := errors.Join(p.master.Close(), p.hold.Close())
	<-p.done
	return err
}

// RTUOverTCP is an RTUServer behind a TCP listener: each connection is a line.
type RTUOverTCP struct {
	Addr   string
	Server *RTUServer
	l      net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// ListenRTUOverTCP starts an RTU-over-TCP server for units on addr
// (127.0.0.1:0 picks a free port).
func ListenRTUOverTCP(addr string, units map[byte]*Slave) (*RTUOverTCP, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &RTUOverTCP{Addr: l.Addr().String(), Server: NewRTUServer(units), l: l, conns: map[net.Conn]bool{}}
	s.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Go(func() {
				s.Server.Serve(c)
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			})
		}
	})
	return s, nil
}

// Close stops listening, closes every connection and waits for them.
func (s *RTUOverTCP) Close() error {
	err := s.l.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}
