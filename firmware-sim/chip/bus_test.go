package chip_test

import (
	"errors"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/physic"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// latch is the smallest chip: a write stores its first byte, a read returns
// it in every byte.
type latch struct {
	chip.Faults
	mu sync.Mutex
	v  byte
}

func (l *latch) Tx(w, r []byte) error {
	if err := l.BeginTx(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(w) > 0 {
		l.v = w[0]
	}
	for i := range r {
		r[i] = l.v
	}
	return nil
}

func TestBusRoutesByAddress(t *testing.T) {
	bus := chip.NewBus("test")
	a, b := &latch{}, &latch{}
	if err := bus.Attach(0x20, a); err != nil {
		t.Fatal(err)
	}
	if err := bus.Attach(0x21, b); err != nil {
		t.Fatal(err)
	}
	if err := bus.Tx(0x20, []byte{0xAA}, nil); err != nil {
		t.Fatal(err)
	}
	if err := bus.Tx(0x21, []byte{0xBB}, nil); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[uint16]byte{0x20: 0xAA, 0x21: 0xBB} {
		r := make([]byte, 2)
		if err := bus.Tx(addr, nil, r); err != nil {
			t.Fatal(err)
		}
		if r[0] != want || r[1] != want {
			t.Errorf("0x%02x read % x, want %02x %02x", addr, r, want, want)
		}
	}
}

func TestBusNACKsEmptyAddress(t *testing.T) {
	bus := chip.NewBus("test")
	if err := bus.Attach(0x20, &latch{}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Tx(0x40, nil, make([]byte, 1)); !errors.Is(err, chip.ErrNACK) {
		t.Errorf("Tx to empty address: %v, want ErrNACK", err)
	}
	bus.Detach(0x20)
	if err := bus.Tx(0x20, []byte{1}, nil); !errors.Is(err, chip.ErrNACK) {
		t.Errorf("Tx after Detach: %v, want ErrNACK", err)
	}
}

func TestBusAttachRejects(t *testing.T) {
	bus := chip.NewBus("test")
	if err := bus.Attach(0x20, &latch{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		addr uint16
		dev  chip.Device
	}{
		{"10-bit address", 0x80, &latch{}},
		{"nil device", 0x21, nil},
		{"address in use", 0x20, &latch{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := bus.Attach(tc.addr, tc.dev); !errors.Is(err, chip.ErrAddress) {
				t.Errorf("Attach: %v, want ErrAddress", err)
			}
		})
	}
}

func TestBusClose(t *testing.T) {
	bus := chip.NewBus("test")
	if err := bus.Attach(0x20, &latch{}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bus.Tx(0x20, []byte{1}, nil); !errors.Is(err, chip.ErrClosed) {
		t.Errorf("Tx after Close: %v, want ErrClosed", err)
	}
}

func TestBusSetSpeed(t *testing.T) {
	bus := chip.NewBus("I2C1")
	if got := bus.String(); got != "I2C1" {
		t.Errorf("String() = %q", got)
	}
	if err := bus.SetSpeed(400 * physic.KiloHertz); err != nil {
		t.Fatal(err)
	}
	if got := bus.Speed(); got != 400*physic.KiloHertz {
		t.Errorf("Speed() = %s after SetSpeed(400kHz)", got)
	}
	if err := bus.SetSpeed(0); err == nil {
		t.Error("SetSpeed(0) succeeded")
	}
}

// TestBusConcurrentUse is for the race detector: transactions, attaches,
// detaches and fault switches from many goroutines.
func TestBusConcurrentUse(t *testing.T) {
	bus := chip.NewBus("test")
	steady := &latch{}
	if err := bus.Attach(0x20, steady); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			addr := uint16(0x30 + g)
			for i := range 100 {
				if err := bus.Attach(addr, &latch{}); err != nil {
					t.Error(err)
					return
				}
				if err := bus.Tx(addr, []byte{byte(i)}, nil); err != nil {
					t.Error(err)
					return
				}
				bus.Detach(addr)
				if err := bus.Tx(0x20, nil, make([]byte, 1)); err != nil {
					t.Error(err)
					return
				}
				steady.SpikeNext(1)
				_ = steady.Conversion()
			}
		})
	}
	wg.Wait()
}
