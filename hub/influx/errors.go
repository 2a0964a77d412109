package influx

import (
	"errors"
	"fmt"
)

// Errors of Write, besides the caller's context error (wrapped).
var (
	// ErrClosed: the Writer was closed before or during the call.
	ErrClosed = errors.New("influx writer closed")
	// ErrRefused: InfluxDB refuses every write with this configuration
	// (401, 403, 404, or TLS verification failed): a wrong token, org, bucket
	// or URL. The data is not at fault and was not stored from the failing
	// batch on; do not ack it. Write fails fast on these rather than retrying
	// forever so that readiness can report them.
	ErrRefused = errors.New("influx refused the write: check url, token, org and bucket")
	// ErrInvalidPoint: a point line protocol cannot carry (see Point and
	// Field). Write skips it and reports it in a RejectedError whose Err
	// wraps this.
	ErrInvalidPoint = errors.New("invalid point")
)

// RejectedError reports points that InfluxDB will never store as sent: it
// refused their batch for good (a 4xx other than 401, 403, 404, 408 and
// 429, e.g. a field type conflict or a single line over the body size
// limit), or they cannot be written as line protocol at all (StatusCode 0).
// Write still wrote every other batch before returning it, so a caller may
// ack the data and count the rejection.
type RejectedError struct {
	// Points is how many points were in the rejected batches or invalid. It
	// is an upper bound: InfluxDB may store the other points of a batch it
	// rejects for some of them (1.8's "partial write").
	Points int
	// StatusCode and Message describe the first rejection; StatusCode is 0
	// for a point that could not be rendered.
	StatusCode int
	Message    string
	// Err is the first rejection's underlying error.
	Err error
}

func (e *RejectedError) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("influx: %d points rejected: %s", e.Points, e.Message)
	}
	return fmt.Sprintf("influx: %d points rejected with status %d: %s", e.Points, e.StatusCode, e.Message)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// add records a rejection of n points, keeping the first one's details.
func (e *RejectedError) add(n, status int, msg string, err error) *RejectedError {
	if e == nil {
		return &RejectedError{Points: n, StatusCode: status, Message: msg, Err: err}
	}
	e.Points += n
	return e
}
