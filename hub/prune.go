package hub

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/ledger"
)

// The hub forgets the devices it has not heard from (no batch, no online
// status) for windows.correction_horizon, in every registry: the fleet
// (hub/fleet, which limits.devices counts), the ledger's epochs, the
// window state, the emitter's audit records, and the quality checks'
// state (their open findings are resolved, saying why). A device that
// comes back afterwards starts afresh, as on a hub with an empty data dir,
// which the promise covers (README.md, "Limits").

const (
	// pruneEvery is how often the hub looks for devices to forget.
	pruneEvery = time.Minute
	// pruneChunk bounds the devices forgotten in one transaction.
	pruneChunk = 256
)

// pruneLoop runs Prune every pruneEvery until ctx ends.
func (h *Hub) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := h.Prune(); err != nil {
				h.log.Error("forget silent devices", "err", err, "forgotten", n)
			} else if n > 0 {
				h.log.Info("forgot devices silent for windows.correction_horizon", "devices", n)
			}
		}
	}
}

// Prune forgets the devices not heard from for windows.correction_horizon
// on the hub's clock, and returns how many it forgot. A device whose
// windows wait to be written is kept until they are.
func (h *Hub) Prune() (int, error) {
	cut := h.o.Now().Add(-time.Duration(h.cfg.Windows.CorrectionHorizon))
	silent := h.fleet.Silent(cut)
	n := 0
	for len(silent) > 0 {
		chunk := silent[:min(len(silent), pruneChunk)]
		silent = silent[len(chunk):]
		var gone []string
		err := h.db.Update(func(tx *bolt.Tx) error {
			gone = gone[:0]
			for _, d := range chunk {
				// Each store forgets only what it did not change since
				// the cut: a batch applied meanwhile keeps its state.
				kept, err := h.windows.Forget(tx, d, cut)
				if err != nil {
					return err
				}
				if kept {
					continue // heard meanwhile, or its windows are written first
				}
				if _, err := ledger.Forget(tx, d, cut.UnixNano()); err != nil {
					return fmt.Errorf("ledger %s: %w", d, err)
				}
				if err := h.emitter.Forget(tx, d); err != nil {
					return fmt.Errorf("emitter %s: %w", d, err)
				}
				gone = append(gone, d)
			}
			return nil
		})
		if err != nil {
			return n, err
		}
		n += len(h.fleet.Forget(gone, cut))
	}
	return n, nil
}

// seed tells the fleet of every device the state file knows, with when it
// was last heard, so that limits.devices counts them after a restart and
// Prune forgets them in time.
func (h *Hub) seed() error {
	heard := map[string]int64{}
	note := func(d string, at int64) error {
		heard[d] = max(heard[d], at)
		return nil
	}
	h.checks.Devices(func(d string, at int64) { note(d, at) })
	err := h.db.View(func(tx *bolt.Tx) error {
		if err := h.windows.Devices(tx, note); err != nil {
			return err
		}
		return ledger.Seen(tx, note)
	})
	if err != nil {
		return err
	}
	for d, at := range heard {
		h.fleet.Seed(d, time.Unix(0, at))
	}
	return nil
}
