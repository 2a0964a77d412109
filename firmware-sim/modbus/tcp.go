package modbus

import (
	"errors"
	"io"
	"log"
	"net"
	"sync"

	lib "github.com/simonvetter/modbus"
)

// TCPServer serves slaves over Modbus TCP through github.com/simonvetter/modbus's
// server, by unit id, as a TCP-to-RTU gateway does.
type TCPServer struct {
	// Addr is host:port the server listens on.
	Addr  string
	units map[byte]*Slave

	mu   sync.Mutex
	srv  *lib.ModbusServer
	hang chan struct{} // while not nil, requests wait for it to close
}

// ListenTCP starts a Modbus TCP server for units on addr (127.0.0.1:0
// picks a free port, kept across restarts).
func ListenTCP(addr string, units map[byte]*Slave) (*TCPServer, error) {
	if _, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		addr = l.Addr().String()
		l.Close()
	}
	s := &TCPServer{Addr: addr, units: units}
	return s, s.Start()
}

// Start starts the server (again, after Stop) on its address.
func (s *TCPServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	srv, err := lib.NewServer(&lib.ServerConfiguration{URL: "tcp://" + s.Addr, MaxClients: 16,
		Logger: log.New(io.Discard, "", 0)}, handler{s})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	s.srv = srv
	return nil
}

// Stop closes the listener and every connection: with Start, a restart of
// the device or gateway.
func (s *TCPServer) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Stop()
	s.srv = nil
	if s.hang != nil {
		close(s.hang)
		s.hang = nil
	}
	return err
}

// SetHang makes the server (the gateway itself, every unit) stop answering
// while on: requests are read and left waiting, as a hung device leaves
// them. Turning it off, or Stop, lets the waiting requests finish.
func (s *TCPServer) SetHang(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case on && s.hang == nil:
		s.hang = make(chan struct{})
	case !on && s.hang != nil:
		close(s.hang)
		s.hang = nil
	}
}

func (s *TCPServer) hung() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hang
}

// handler adapts the slaves to the library's RequestHandler.
type handler struct{ s *TCPServer }

// libErrors maps exception codes to the library's errors, which its server
// sends as those codes.
var libErrors = map[byte]error{
	IllegalFunction:              lib.ErrIllegalFunction,
	IllegalDataAddress:           lib.ErrIllegalDataAddress,
	IllegalDataValue:             lib.ErrIllegalDataValue,
	SlaveDeviceFailure:           lib.ErrServerDeviceFailure,
	0x05:                         lib.ErrAcknowledge,
	SlaveDeviceBusy:              lib.ErrServerDeviceBusy,
	0x08:                         lib.ErrMemoryParityError,
	GatewayPathUnavailable:       lib.ErrGWPathUnavailable,
	GatewayTargetFailedToRespond: lib.ErrGWTargetFailedToRespond,
}

func (h handler) read(unit, fn byte, addr, count uint16) ([]uint16, []bool, error) {
	if ch := h.s.hung(); ch != nil {
		<-ch
		return nil, nil, lib.ErrServerDeviceBusy
	}
	sl, ok := h.s.units[unit]
	if !ok {
		return nil, nil, lib.ErrGWPathUnavailable
	}
	if sl.Fault().Silent {
		return nil, nil, lib.ErrGWTargetFailedToRespond
	}
	regs, bits, err := sl.Read(fn, addr, count)
	var e Exception
	if errors.As(err, &e) {
		if le, ok := libErrors[byte(e)]; ok {
			return nil, nil, le
		}
		return nil, nil, lib.ErrServerDeviceFailure
	}
	return regs, bits, err
}

func (h handler) HandleCoils(req *lib.CoilsRequest) ([]bool, error) {
	if req.IsWrite {
		return nil, lib.ErrIllegalFunction
	}
	_, bits, err := h.read(req.UnitId, ReadCoils, req.Addr, req.Quantity)
	return bits, err
}

func (h handler) HandleDiscreteInputs(req *lib.DiscreteInputsRequest) ([]bool, error) {
	_, bits, err := h.read(req.UnitId, ReadDiscreteInputs, req.Addr, req.Quantity)
	return bits, err
}

func (h handler) HandleHoldingRegisters(req *lib.HoldingRegistersRequest) ([]uint16, error) {
	if req.IsWrite {
		return nil, lib.ErrIllegalFunction
	}
	regs, _, err := h.read(req.UnitId, ReadHoldingRegisters, req.Addr, req.Quantity)
	return regs, err
}

func (h handler) HandleInputRegisters(req *lib.InputRegistersRequest) ([]uint16, error) {
	regs, _, err := h.read(req.UnitId, ReadInputRegisters, req.Addr, req.Quantity)
	return regs, err
}
