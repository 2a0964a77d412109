package ingest

import (
	"fmt"
	"sync"
	"time"
)

// What the limits of the hub's config turn away is not acked to the agent
// (a legitimate device beyond a limit must not lose data: its batches stay
// on its disk and come again until the limit is raised or room is made),
// acked to the broker (it would otherwise hold back every later message
// of the session), counted per reason, logged (throttled), and told to the
// fleet, which the quality checks turn into a limit finding.

// limitLogEvery bounds the log lines of one limit reason.
const limitLogEvery = time.Minute

// limitLog throttles the log lines of the limits: the first of a reason at
// once, then at most one per limitLogEvery, saying how many came between.
type limitLog struct {
	mu     sync.Mutex
	last   map[string]time.Time
	missed map[string]int
}

// limited counts and logs n things a limit turned away.
func (p *Pipeline) limited(reason, device, detail string, n int, now time.Time) {
	p.metrics.Limited.WithLabelValues(reason).Add(float64(n))
	l := &p.limitLog
	l.mu.Lock()
	if l.last == nil {
		l.last, l.missed = map[string]time.Time{}, map[string]int{}
	}
	if last, ok := l.last[reason]; ok && now.Sub(last) < limitLogEvery {
		l.missed[reason]++
		l.mu.Unlock()
		return
	}
	missed := l.missed[reason]
	l.last[reason], l.missed[reason] = now, 0
	l.mu.Unlock()
	p.log.Warn("a limit refused; batches refused are not acked and stay on the agent's disk", "limit", reason, "device", device,
		"detail", detail, "more_since_last_line", missed)
}

func seriesDetail(known, added, limit int) string {
	return fmt.Sprintf("a batch with %d new series refused: the device has %d and limits.series_per_device is %d; "+
		"it is not acked and waits on the agent's disk", added, known, limit)
}

func epochsDetail(n, keep int) string {
	return fmt.Sprintf("%d ledger epochs forgotten beyond limits.epochs_per_device (%d): the device keeps starting new epochs", n, keep)
}
