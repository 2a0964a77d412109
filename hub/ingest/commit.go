package ingest

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/hub/ledger"
	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/hub/window"
	"github.com/freshet-iot/freshet/protocol"
)

// committer applies records in group commits, then acks them.
func (p *Pipeline) committer(ctx context.Context) {
	codec := protocol.NewCodec(p.o.Limits)
	for {
		var group []*record
		select {
		case <-ctx.Done():
			return
		case r := <-p.done:
			group = append(group, r)
		}
	more:
		for len(group) < MaxCommitGroup {
			select {
			case r := <-p.done:
				group = append(group, r)
			default:
				break more
			}
		}
		if err := p.commit(group); err != nil {
			p.log.Error("commit failed; the batches stay unacked and will be redelivered", "err", err, "batches", len(group))
			continue
		}
		p.o.Failpoint("after-commit")
		for _, r := range group {
			p.finish(codec, r)
		}
	}
}

type ledgerKey struct {
	device string
	epoch  uint64
}

// commit applies a group in one transaction: each batch's seq goes into
// the ledger, its readings into the windows unless the ledger already had
// it; each record gets the ack its device is owed.
func (p *Pipeline) commit(group []*record) error {
	now := p.o.Now()
	var merged window.MergeStats
	results := make([]string, len(group))
	perBatch := make([]window.MergeStats, len(group))
	var limitDetail []string   // per record: why a limit refused it
	var trimmed map[string]int // per device: epochs forgotten
	err := p.o.DB.Update(func(tx *bolt.Tx) error {
		states := map[ledgerKey]*ledger.State{}
		newEpochs := map[string]bool{} // devices with an epoch new to the ledger
		load := func(d string, e uint64) (*ledger.State, error) {
			k := ledgerKey{d, e}
			if s, ok := states[k]; ok {
				return s, nil
			}
			s, found, err := ledger.Lookup(tx, d, e)
			if err != nil {
				return nil, err
			}
			if !found {
				newEpochs[d] = true
			}
			states[k] = &s
			return &s, nil
		}
		merged = window.MergeStats{}
		limitDetail, trimmed = make([]string, len(group)), nil
		for i, r := range group {
			switch r.kind {
			case kindDrop:
				results[i] = resultDropped
				if err := deadLetter(tx, r, now, p.o.DeadLetters); err != nil {
					return err
				}
				continue
			case kindReject:
				results[i] = resultRejected
				if err := deadLetter(tx, r, now, p.o.DeadLetters); err != nil {
					return err
				}
			}
			st, err := load(r.device, r.epoch)
			if err != nil {
				return fmt.Errorf("ledger %s/%x: %w", r.device, r.epoch, err)
			}
			if r.kind == kindApply {
				// What the agent knows settled (by any hub's ack) is: a hub
				// without that history starts the epoch's ledger there.
				st.SettleThrough(r.batch.Settled)
				if st.Settled(r.seq) {
					results[i] = resultDuplicate
				} else {
					// Exactly, whatever batches of the device came at
					// the same time (the worker's check is a first cut).
					if max := p.o.MaxSeriesPerDevice; max > 0 {
						known, added, err := p.o.Windows.CountSeries(tx, r.batch)
						if err != nil {
							return fmt.Errorf("count series %s: %w", r.device, err)
						}
						if added > 0 && known+added > max {
							r.kind, results[i], limitDetail[i] = kindLimited, resultLimited, seriesDetail(known, added, max)
							continue // not settled, not answered
						}
					}
					ms, err := p.o.Windows.Merge(tx, r.batch, now)
					if err != nil {
						return fmt.Errorf("window merge %s/%d: %w", r.device, r.seq, err)
					}
					perBatch[i] = ms
					merged.Merged += ms.Merged
					merged.TooLate += ms.TooLate
					merged.Corrections += ms.Corrections
					if g := r.batch.Gap; g != nil {
						for _, sr := range g.Seqs {
							st.SettleRange(sr.First, sr.Last)
						}
					}
					st.Apply(r.seq, before(r.batch))
					results[i] = resultApplied
				}
			}
			st.Settle(r.seq)
		}
		for k, s := range states {
			if err := ledger.Save(tx, k.device, k.epoch, *s); err != nil {
				return err
			}
			if err := ledger.Touch(tx, k.device, k.epoch, now.UnixNano()); err != nil {
				return err
			}
		}
		if keep := p.o.MaxEpochsPerDevice; keep > 0 {
			for d := range newEpochs {
				n, err := ledger.Trim(tx, d, keep)
				if err != nil {
					return fmt.Errorf("ledger %s: %w", d, err)
				}
				if n > 0 {
					if trimmed == nil {
						trimmed = map[string]int{}
					}
					trimmed[d] = n
				}
			}
		}
		for _, r := range group {
			if r.kind != kindDrop && r.kind != kindLimited {
				st := states[ledgerKey{r.device, r.epoch}]
				r.ack = st.Ack(r.device, r.epoch, r.seq, r.version, p.o.Limits.MaxAckSeqs)
				if r.kind == kindReject {
					r.ack.Rejected = []protocol.Rejection{{Seq: r.seq, Reason: r.reason, Detail: clip(r.detail, rejectionDetail)}}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	m := p.metrics
	m.Commits.Inc()
	m.TooLate.Add(float64(merged.TooLate))
	m.Corrections.Add(float64(merged.Corrections))
	for d, n := range trimmed {
		detail := epochsDetail(n, p.o.MaxEpochsPerDevice)
		p.limited(LimitEpochs, d, detail, n, now)
		p.o.Fleet.Limited(d, int64(p.o.MaxEpochsPerDevice), detail, now)
	}
	for i, r := range group {
		m.Batches.WithLabelValues(results[i]).Inc()
		switch results[i] {
		case resultApplied:
			m.Readings.Add(float64(r.batch.Readings()))
			ms := perBatch[i]
			p.o.Fleet.Applied(r.device, ms.Corrections, ms.TooLate, trimmed[r.device] == 0, now)
			if g := r.batch.Gap; g != nil {
				m.GapReadings.Add(float64(g.Readings))
				p.o.Fleet.Gap(r.device, g.Readings)
				if g.Readings > 0 { // its findings were written with the raw points
					p.o.Findings.Count(quality.Dropped, quality.StateOpened)
					p.o.Findings.Count(quality.Dropped, quality.StateResolved)
				}
			}
		case resultLimited:
			p.o.Fleet.Limited(r.device, int64(p.o.MaxSeriesPerDevice), limitDetail[i], now)
			p.limited(LimitSeries, r.device, limitDetail[i], 1, now)
		case resultRejected, resultDropped:
			m.Rejections.WithLabelValues(r.reason).Inc()
			p.o.Fleet.Rejected(r.device)
			p.log.Warn("batch refused", "device", r.device, "seq", r.seq, "reason", r.reason, "detail", clip(r.detail, 200))
		}
	}
	return nil
}

// finish acks the agent (if the record names a seq), on the current
// session, then the broker (on the message's own session: after a
// reconnect the broker redelivers, and the ledger answers again).
func (p *Pipeline) finish(codec *protocol.Codec, r *record) {
	if send := p.send.Load(); r.ack != nil && send != nil {
		p.sign(r.ack)
		if data, err := codec.EncodeAck(r.ack); err == nil {
			p.o.Failpoint("before-ack")
			// Not waited on: a lost ack means a resend, which is re-acked.
			if err := (*send)(p.o.Topics.Ack(r.device), data); err != nil {
				p.metrics.AcksUnsent.Inc()
			}
		} else {
			p.log.Error("encode ack", "err", err)
		}
	}
	r.msg.Ack()
}

// sign signs a version 2 ack with the hub's key; it counts what goes
// unsigned.
func (p *Pipeline) sign(a *protocol.Ack) {
	switch {
	case a.Version == 1:
		p.metrics.AcksUnsigned.WithLabelValues(unsignedVersion1).Inc()
	case p.o.AckSigner == nil:
		p.metrics.AcksUnsigned.WithLabelValues(unsignedNoKey).Inc()
	default:
		p.o.AckSigner.Sign(a) // a version 2 ack: it cannot fail
	}
}

// before is the batch's bound on the event times of earlier seqs: its
// Before (version 2), or for version 1 nothing before seq 1 and anything
// before another.
func before(b *protocol.Batch) int64 {
	switch {
	case b.Version >= 2:
		return b.Before
	case b.Seq == 1:
		return ledger.BeforeNothing
	}
	return ledger.BeforeUnknown
}
