// Package window keeps the hub's per-device event-time windows and computes
// their aggregates so that they are exactly right however late, out of
// order or duplicated the readings arrive.
//
// # The guarantee
//
// For every series and window, the aggregate last returned by Due equals,
// bit for bit, what this computation gives on the distinct readings the hub
// stored raw: one value per (series, timestamp), the one in the batch merged
// last (InfluxDB keeps the last write of a point), taken in time order. It
// holds whatever the delivery order, duplication and lateness, for readings
// within the correction horizon. Readings older than that are counted as
// too late and left out (the hub still stores them raw).
//
// # Readings, not accumulators
//
// Floating-point sums depend on the order of the additions, so running
// accumulators merged in arrival order would give a reversed delivery
// different last bits, and could not undo a value that a later write of
// the same point replaces. The store therefore keeps the readings
// themselves: per (device, series, minute) one blob of time-sorted
// (time, value) pairs, a precision byte then delta varints for the times
// and the raw float64 bits of the values, about 9 bytes per reading at
// whole seconds. Merge folds a batch's readings into the blobs (at an equal
// timestamp the newer value replaces the older); Due computes each window
// from the blobs it covers, in time order. Windows of an hour or more read
// their minute blobs, never minute aggregates. Storage costs about as much
// as the raw data over the correction horizon; memory stays bounded, since
// state lives in bbolt and each window is read on its own.
//
// # Aggregates
//
// Over the window's values v1..vn in time order (Int readings as float64):
// Count = n; Sum = ((v1+v2)+v3)+...; Mean = Sum/n; Min and Max by Go's
// min and max; First = v1 and Last = vn; Stddev is the population standard
// deviation sqrt(Σ(vi-Mean)²/n), summed in time order after computing Mean
// (two passes). Population rather than sample: it is defined for n = 1
// (0, where the sample deviation has no value and InfluxDB cannot store
// NaN); multiply by sqrt(n/(n-1)) for the sample deviation. A window is
// never dirty without readings; values near the float64 limit can make Sum
// and what derives from it ±Inf.
//
// # Series and windows
//
// A series is identified by device, sensor, metric, unit and labels, as in
// InfluxDB's series key; value type and resolution are not part of it.
// Only Float and Int series are aggregated. Windows have the configured
// sizes (default 1m and 1h) and are aligned to the Unix epoch.
//
// # Event time, closing, corrections
//
// Each device has its own watermark: the latest event time of any of its
// readings not stamped beyond the hub's clock plus MaxFutureSkew (later
// ones are merged, and counted as Future, but do not move it, so a reading
// stamped in the future cannot close everything). Watermarks only move
// forward. A window is closed when its device's watermark reaches its end
// plus AllowedLateness, or when the device has sent no batch for
// IdleTimeout on the hub's clock. One device's backlog or clock never
// holds back or closes another's windows.
//
// A window is dirty when its readings changed since it was last marked
// emitted; every change bumps its version. Due returns the closed dirty
// windows; MarkEmitted records the versions written. A reading that changes
// an emitted window makes it dirty again (a correction, counted by Merge,
// flagged on the aggregate). Readings older than the watermark minus
// CorrectionHorizon are too late: counted, not merged. A re-sent reading
// with the same value changes nothing and reopens nothing.
//
// Watermarks are evaluated before each batch, so one batch never makes its
// own readings too late. A device whose first readings are stamped 1970
// (no real-time clock) and then jumps to the present closes its 1970
// windows, and later 1970 readings are too late; nothing ever iterates over
// empty time, only over stored keys.
//
// # Eviction
//
// Evict deletes, per device, minute blobs before watermark -
// CorrectionHorizon - the largest size (minute-aligned), and the clean
// window records that end by then. Every window that can still change
// starts later than that, so no merge or Due ever needs what was deleted;
// the cut is recorded per device, and a reading that would reopen an
// evicted window is too late even if the options change. Device and series
// registrations are kept until the hub forgets the device (Forget: nothing
// heard from it for the correction horizon on the hub's clock), which
// deletes everything of it.
//
// # Storage and indexes
//
// All buckets are inside one top-level bucket, "window": device and series
// registries (names map to 4-byte ids; bool and string series are only
// registered, so that every series of a device counts against the hub's
// limits.series_per_device: CountSeries), the blobs, one record per window
// (version, emitted version), and three indexes that keep Due
// proportional to its output: dirty (per device, by window end), ready
// (devices whose earliest-ending dirty window is closed by the watermark;
// it changes only in Merge, MarkEmitted and Evict) and quiet (devices with
// dirty windows, by the hub time of their last batch, for the idle
// timeout). All methods run in the caller's transaction: Merge in the one
// that records the batch in the ledger, so each batch is merged exactly
// once; Due in any; MarkEmitted after the aggregates are written.
//
// Changing Sizes applies to new readings; records of sizes no longer
// configured are still emitted and evicted, but eviction only protects
// windows up to the largest configured size.
package window
