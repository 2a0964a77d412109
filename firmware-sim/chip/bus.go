package chip

import (
	"fmt"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Device is an emulated chip as the bus sees it: one I²C transaction writes w
// and then, after a repeated start, reads len(r) bytes into r.
type Device interface {
	Tx(w, r []byte) error
}

// Bus is a virtual I²C bus. Transactions are serialized as on a real bus: a
// chip that stalls (the Slow fault) holds the bus until it answers, like a
// slave stretching the clock. Attach and Detach do not wait for a stalled
// transaction. Bus is safe for concurrent use.
type Bus struct {
	name string

	txMu sync.Mutex // serializes transactions

	mu      sync.Mutex // guards the fields below
	devices map[uint16]Device
	speed   physic.Frequency
	closed  bool
}

var _ i2c.BusCloser = (*Bus)(nil)

// NewBus returns an empty bus; name is what String reports (for example
// "I2C1").
func NewBus(name string) *Bus {
	return &Bus{name: name, devices: make(map[uint16]Device), speed: 100 * physic.KiloHertz}
}

// Attach connects d at the 7-bit address addr.
func (b *Bus) Attach(addr uint16, d Device) error {
	if addr > 0x7F {
		return fmt.Errorf("%s: attach 0x%x: not a 7-bit address: %w", b.name, addr, ErrAddress)
	}
	if d == nil {
		return fmt.Errorf("%s: attach 0x%02x: nil device: %w", b.name, addr, ErrAddress)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, taken := b.devices[addr]; taken {
		return fmt.Errorf("%s: attach 0x%02x: address in use: %w", b.name, addr, ErrAddress)
	}
	b.devices[addr] = d
	return nil
}

// Detach disconnects whatever is attached at addr, as if the sensor were
// unplugged; later transactions to addr are not acknowledged.
func (b *Bus) Detach(addr uint16) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.devices, addr)
}

// Tx implements i2c.Bus. A transaction to an address with nothing attached
// fails with an error wrapping ErrNACK.
func (b *Bus) Tx(addr uint16, w, r []byte) error {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	b.mu.Lock()
	d, ok := b.devices[addr]
	closed := b.closed
	b.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("%s: tx 0x%02x: %w", b.name, addr, ErrClosed)
	case !ok:
		return fmt.Errorf("%s: tx 0x%02x: %w", b.name, addr, ErrNACK)
	}
	if err := d.Tx(w, r); err != nil {
		return fmt.Errorf("%s: tx 0x%02x: %w", b.name, addr, err)
	}
	return nil
}

// SetSpeed implements i2c.Bus. The speed is recorded and has no effect on
// timing.
func (b *Bus) SetSpeed(f physic.Frequency) error {
	if f <= 0 {
		return fmt.Errorf("%s: set speed %s: must be positive", b.name, f)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.speed = f
	return nil
}

// Speed returns the speed last set with SetSpeed (100 kHz initially).
func (b *Bus) Speed() physic.Frequency {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.speed
}

// String implements i2c.Bus.
func (b *Bus) String() string { return b.name }

// Close implements io.Closer: later transactions fail with ErrClosed. A
// transaction already in progress completes.
func (b *Bus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}
