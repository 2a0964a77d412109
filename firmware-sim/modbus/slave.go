package modbus

import (
	"fmt"
	"math"
	"sync"
)

// Function codes of the reads a Slave answers (Modbus Application Protocol
// V1.1b3, section 6).
const (
	ReadCoils            byte = 0x01
	ReadDiscreteInputs   byte = 0x02
	ReadHoldingRegisters byte = 0x03
	ReadInputRegisters   byte = 0x04
)

// Exception codes (section 7).
const (
	IllegalFunction              byte = 0x01
	IllegalDataAddress           byte = 0x02
	IllegalDataValue             byte = 0x03
	SlaveDeviceFailure           byte = 0x04
	SlaveDeviceBusy              byte = 0x06
	GatewayPathUnavailable       byte = 0x0a
	GatewayTargetFailedToRespond byte = 0x0b
)

// Exception is an exception response's code, as an error.
type Exception byte

func (e Exception) Error() string { return fmt.Sprintf("modbus exception %d", byte(e)) }

// Fault is how a slave misbehaves. The zero value is a healthy slave.
type Fault struct {
	// Exception, if not 0, answers every request with this exception code.
	Exception byte
	// Silent: the slave does not answer at all.
	Silent bool
	// Garble corrupts the CRC of every RTU response (a noisy line).
	Garble bool
}

// table is one of a slave's four tables: the values set, and the span of
// addresses it answers (unset addresses in it read as 0).
type table struct {
	lo, hi int // readable addresses: lo <= a < hi
	regs   map[uint16]uint16
	bits   map[uint16]bool
}

// Slave is a device's data model. It is safe for concurrent use.
type Slave struct {
	mu     sync.Mutex
	tables [5]table // by function code 1..4
	fault  Fault
	reads  uint64
}

// NewSlave returns a slave with empty tables.
func NewSlave() *Slave {
	s := &Slave{}
	for i := range s.tables {
		s.tables[i] = table{regs: map[uint16]uint16{}, bits: map[uint16]bool{}}
	}
	return s
}

// Span makes addresses lo <= a < hi of table fn readable; unset ones read as
// 0. Outside every span and set address, a read is IllegalDataAddress.
func (s *Slave) Span(fn byte, lo, hi int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables[fn].lo, s.tables[fn].hi = lo, hi
}

// SetRegister sets a holding (fn 3) or input (fn 4) register.
func (s *Slave) SetRegister(fn byte, addr, v uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables[fn].regs[addr] = v
}

// SetFloat32 sets a float32 over two registers, high word first.
func (s *Slave) SetFloat32(fn byte, addr uint16, v float32) {
	b := math.Float32bits(v)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables[fn].regs[addr] = uint16(b >> 16)
	s.tables[fn].regs[addr+1] = uint16(b)
}

// SetBit sets a coil (fn 1) or discrete input (fn 2).
func (s *Slave) SetBit(fn byte, addr uint16, v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables[fn].bits[addr] = v
}

// SetFault switches the slave's behaviour.
func (s *Slave) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Fault returns the slave's current fault.
func (s *Slave) Fault() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault
}

// Reads counts the requests the slave answered with data.
func (s *Slave) Reads() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// Read answers a read request: count registers (fn 3, 4) or bits (fn 1, 2)
// from addr. A fault's exception, an unknown function, a count outside the
// protocol's limits and an address outside the tables are Exceptions. Read
// does not look at Silent and Garble; the servers do.
func (s *Slave) Read(fn byte, addr, count uint16) (regs []uint16, bits []bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault.Exception != 0 {
		return nil, nil, Exception(s.fault.Exception)
	}
	limit := uint16(125)
	switch fn {
	case ReadCoils, ReadDiscreteInputs:
		limit = 2000
	case ReadHoldingRegisters, ReadInputRegisters:
	default:
		return nil, nil, Exception(IllegalFunction)
	}
	if count == 0 || count > limit {
		return nil, nil, Exception(IllegalDataValue)
	}
	t := &s.tables[fn]
	for a := int(addr); a < int(addr)+int(count); a++ {
		_, reg := t.regs[uint16(a)]
		_, bit := t.bits[uint16(a)]
		if a > 0xffff || !(reg || bit || a >= t.lo && a < t.hi) {
			return nil, nil, Exception(IllegalDataAddress)
		}
	}
	s.reads++
	for a := int(addr); a < int(addr)+int(count); a++ {
		if fn == ReadCoils || fn == ReadDiscreteInputs {
			bits = append(bits, t.bits[uint16(a)])
		} else {
			regs = append(regs, t.regs[uint16(a)])
		}
	}
	return regs, bits, nil
}
