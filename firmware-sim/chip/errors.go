package chip

import "errors"

// Errors returned by the bus and the emulated chips, always wrapped with the
// bus, the address or the chip that produced them; match them with errors.Is.
var (
	// ErrNACK: no device acknowledged the transaction, because nothing is
	// attached at the address or because the chip is switched to the NACK
	// fault. A real bus reports this as an I/O error.
	ErrNACK = errors.New("no acknowledge")
	// ErrClosed: the bus has been closed.
	ErrClosed = errors.New("bus closed")
	// ErrAddress: Attach was given an address outside 7-bit I²C space, an
	// address already in use, or a nil device.
	ErrAddress = errors.New("bad address")
	// ErrValue: Set was given a value no chip could be programmed with:
	// NaN or ±Inf. (Finite values beyond a chip's range saturate instead.)
	ErrValue = errors.New("bad physical value")
)
