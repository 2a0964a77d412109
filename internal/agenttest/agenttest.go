// Package agenttest runs the heart of an agent in tests: an outbox, its
// commit loop and a forwarder, as freshet-agent runs them, without sensors
// (the test adds readings to the outbox). It imports testing: only tests
// may use it.
package agenttest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent/forward"
	"github.com/freshet-iot/freshet/agent/outbox"
)

// DefaultCommitEvery is the commit loop's interval when Run is given 0.
const DefaultCommitEvery = 20 * time.Millisecond

// Agent is a running outbox, commit loop and forwarder.
type Agent struct {
	Outbox    *outbox.Outbox
	Forwarder *forward.Forwarder
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	once      sync.Once
}

// Run starts forwarding ob's batches with fo and committing ob every
// commitEvery (which also deletes what acks settled, as the agent's loop
// does) until Stop or the end of the test; a failed commit fails the test.
// Stop, or the test's end, closes ob.
func Run(tb testing.TB, ob *outbox.Outbox, fo forward.Options, commitEvery time.Duration) *Agent {
	tb.Helper()
	if commitEvery <= 0 {
		commitEvery = DefaultCommitEvery
	}
	fw, err := forward.New(ob, fo)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{Outbox: ob, Forwarder: fw, cancel: cancel}
	a.wg.Add(2)
	go func() { defer a.wg.Done(); fw.Run(ctx) }()
	go func() {
		defer a.wg.Done()
		tick := time.NewTicker(commitEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := ob.Commit(); err != nil {
					tb.Errorf("commit: %v", err)
				}
			}
		}
	}()
	tb.Cleanup(a.Stop)
	return a
}

// Stop stops the loops and closes the outbox; it may be called again.
func (a *Agent) Stop() {
	a.once.Do(func() {
		a.cancel()
		a.wg.Wait()
		a.Outbox.Close()
	})
}
