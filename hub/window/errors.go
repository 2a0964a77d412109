package window

import "errors"

// Errors returned by the window store. Each is wrapped with detail (which
// option, which key, which device); match them with errors.Is.
var (
	// ErrOptions: an Options field is out of range (New). The message names the field.
	ErrOptions = errors.New("bad window options")
	// ErrNotInitialized: the transaction's file has no window buckets; call Init first.
	ErrNotInitialized = errors.New("window state not initialized")
	// ErrCorrupt: stored window state does not decode (a blob, a record or a
	// key of the wrong shape, or an unknown format version).
	ErrCorrupt = errors.New("corrupt window state")
	// ErrBadBatch: the batch cannot be merged (empty device, value and time
	// columns of different lengths, a time outside 0..MaxTime, NaN or ±Inf).
	// The hub's decoder refuses all of these first, so seeing it is a bug upstream.
	ErrBadBatch = errors.New("batch unfit for window merge")
)
