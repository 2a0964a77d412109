package chip

import (
	"fmt"
	"sync"
	"time"
)

// Fault is a failure mode an emulated chip can be switched into at run time.
type Fault int

// The fault modes. A value outside this list behaves as Healthy.
const (
	// Healthy: the chip works as specified.
	Healthy Fault = iota
	// NACK: every transaction fails with an error wrapping ErrNACK, as when a
	// sensor loses power or its wiring comes loose.
	NACK
	// Stuck: conversions stop updating the result registers, which keep the
	// last reading (the power-on values if there was none) whatever Set
	// programs, as with a hung ADC.
	Stuck
	// Spike: conversions produce a glitch far outside the chip's operating
	// range; each chip documents the value it returns.
	Spike
	// Slow: every transaction stalls before it is answered, as with a slave
	// stretching the clock. See Faults.SetSlow.
	Slow
)

func (f Fault) String() string {
	switch f {
	case Healthy:
		return "healthy"
	case NACK:
		return "nack"
	case Stuck:
		return "stuck"
	case Spike:
		return "spike"
	case Slow:
		return "slow"
	default:
		return fmt.Sprintf("Fault(%d)", int(f))
	}
}

// Faults is the fault switch every emulated chip embeds. The zero value is
// Healthy. It is safe for concurrent use: a test may switch the fault while
// a driver is reading.
//
// Chips call BeginTx at the start of each transaction and Conversion for
// each measurement; users call SetFault, SetSlow and SpikeNext.
type Faults struct {
	mu      sync.Mutex
	fault   Fault
	spikes  int           // with Spike: conversions left before reverting to Healthy; 0 means until changed
	delay   time.Duration // with Slow: stall per transaction; <= 0 stalls until the fault changes
	changed chan struct{} // closed on every change, waking stalled transactions
}

// SetFault switches the chip into f. SetFault(Slow) stalls every transaction
// until the fault is changed again; SetFault(Spike) spikes every conversion
// until changed.
func (f *Faults) SetFault(ft Fault) { f.set(ft, 0, 0) }

// SetSlow switches the chip into Slow: each transaction is answered only
// after d has passed, or as soon as the fault is changed, whichever comes
// first. A d of zero or less stalls each transaction until the fault is
// changed.
func (f *Faults) SetSlow(d time.Duration) { f.set(Slow, 0, d) }

// SpikeNext switches the chip into Spike for the next n conversions, after
// which it is Healthy again. An n below 1 changes nothing.
func (f *Faults) SpikeNext(n int) {
	if n < 1 {
		return
	}
	f.set(Spike, n, 0)
}

// Fault returns the current fault.
func (f *Faults) Fault() Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fault
}

func (f *Faults) set(ft Fault, spikes int, delay time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault, f.spikes, f.delay = ft, spikes, delay
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// BeginTx applies the transaction-level faults; a chip calls it first in
// every Tx, without holding its own lock. It returns an error wrapping
// ErrNACK under NACK, and under Slow it blocks until the delay has passed or
// the fault is changed (after which the new fault applies).
func (f *Faults) BeginTx() error {
	for {
		f.mu.Lock()
		switch f.fault {
		case NACK:
			f.mu.Unlock()
			return fmt.Errorf("injected fault: %w", ErrNACK)
		case Slow:
			if f.changed == nil {
				f.changed = make(chan struct{})
			}
			changed, delay := f.changed, f.delay
			f.mu.Unlock()
			if stall(changed, delay) {
				return nil
			}
			// The fault changed while stalled: apply the new one.
		default:
			f.mu.Unlock()
			return nil
		}
	}
}

// stall waits for d (forever if d <= 0) or until changed is closed. It
// reports whether the full delay passed.
func stall(changed <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		<-changed
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-changed:
		return false
	}
}

// Conversion reports how the chip's next measurement is corrupted: Stuck,
// Spike or Healthy. A chip calls it once per conversion; it counts down the
// conversions left by SpikeNext.
func (f *Faults) Conversion() Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch f.fault {
	case Stuck:
		return Stuck
	case Spike:
		if f.spikes > 0 {
			f.spikes--
			if f.spikes == 0 {
				f.fault = Healthy
			}
		}
		return Spike
	default:
		return Healthy
	}
}
