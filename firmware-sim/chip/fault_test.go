package chip_test

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
)

func TestFaultNACK(t *testing.T) {
	bus := chip.NewBus("test")
	l := &latch{}
	if err := bus.Attach(0x20, l); err != nil {
		t.Fatal(err)
	}
	l.SetFault(chip.NACK)
	if err := bus.Tx(0x20, []byte{1}, nil); !errors.Is(err, chip.ErrNACK) {
		t.Errorf("Tx under NACK: %v, want ErrNACK", err)
	}
	l.SetFault(chip.Healthy)
	if err := bus.Tx(0x20, []byte{1}, nil); err != nil {
		t.Errorf("Tx after clearing NACK: %v", err)
	}
}

func TestFaultConversion(t *testing.T) {
	var f chip.Faults
	if got := f.Conversion(); got != chip.Healthy {
		t.Errorf("zero Faults: Conversion() = %s", got)
	}
	f.SetFault(chip.Stuck)
	for range 3 {
		if got := f.Conversion(); got != chip.Stuck {
			t.Fatalf("Stuck: Conversion() = %s", got)
		}
	}
	f.SetFault(chip.Spike)
	for range 3 {
		if got := f.Conversion(); got != chip.Spike {
			t.Fatalf("SetFault(Spike): Conversion() = %s, want spike until changed", got)
		}
	}
	f.SetFault(chip.NACK)
	if got := f.Conversion(); got != chip.Healthy {
		t.Errorf("NACK: Conversion() = %s, want healthy (NACK acts on transactions)", got)
	}
}

func TestSpikeNextCountsDown(t *testing.T) {
	var f chip.Faults
	f.SpikeNext(0)
	if got := f.Fault(); got != chip.Healthy {
		t.Fatalf("SpikeNext(0) switched to %s", got)
	}
	f.SpikeNext(2)
	got := []chip.Fault{f.Conversion(), f.Conversion(), f.Conversion()}
	want := []chip.Fault{chip.Spike, chip.Spike, chip.Healthy}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("conversions after SpikeNext(2) = %v, want %v", got, want)
		}
	}
	if f.Fault() != chip.Healthy {
		t.Errorf("Fault() = %s after the spikes ran out", f.Fault())
	}
}

func TestFaultString(t *testing.T) {
	for f, want := range map[chip.Fault]string{
		chip.Healthy: "healthy", chip.NACK: "nack", chip.Stuck: "stuck",
		chip.Spike: "spike", chip.Slow: "slow", chip.Fault(42): "Fault(42)",
	} {
		if got := f.String(); got != want {
			t.Errorf("Fault(%d).String() = %q, want %q", int(f), got, want)
		}
	}
}

// The Slow tests run in a synctest bubble: time is virtual, so "it stalled
// for the delay" is exact, and synctest.Wait proves a transaction is
// blocked without sleeping.

func TestSlowStallsForDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := chip.NewBus("test")
		l := &latch{}
		if err := bus.Attach(0x20, l); err != nil {
			t.Fatal(err)
		}
		const delay = 3 * time.Second
		l.SetSlow(delay)
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- bus.Tx(0x20, []byte{7}, nil) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Tx returned (%v) without stalling", err)
		default:
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if elapsed := time.Since(start); elapsed != delay {
			t.Errorf("Tx took %s of virtual time, want %s", elapsed, delay)
		}
	})
}

func TestSlowReleasedByFaultChange(t *testing.T) {
	for _, tc := range []struct {
		then    chip.Fault
		wantErr error
	}{
		{chip.Healthy, nil},
		{chip.NACK, chip.ErrNACK},
	} {
		t.Run(tc.then.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bus := chip.NewBus("test")
				l := &latch{}
				if err := bus.Attach(0x20, l); err != nil {
					t.Fatal(err)
				}
				l.SetFault(chip.Slow) // stall until changed
				start := time.Now()
				done := make(chan error, 1)
				go func() { done <- bus.Tx(0x20, nil, make([]byte, 1)) }()
				synctest.Wait()
				select {
				case err := <-done:
					t.Fatalf("Tx returned (%v) while Slow", err)
				default:
				}
				l.SetFault(tc.then)
				if err := <-done; !errors.Is(err, tc.wantErr) {
					t.Errorf("released Tx: %v, want %v", err, tc.wantErr)
				}
				if elapsed := time.Since(start); elapsed != 0 {
					t.Errorf("release took %s of virtual time, want immediate", elapsed)
				}
			})
		})
	}
}
