package influx

import (
	"crypto/tls"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
)

// outcome is what Write does after a failed request.
type outcome int

const (
	transient outcome = iota // wait and retry the same batch
	tooLarge                 // 413: split the batch, or reject a single line
	rejected                 // the data is refused for good: count, go on
	refused                  // the configuration is wrong: stop with ErrRefused
)

// maxRetryAfter caps a server's Retry-After, so that a bogus header cannot
// stall the hub for hours.
const maxRetryAfter = 5 * time.Minute

// classify maps a failed write to an outcome, from the client's typed
// *http.Error (StatusCode, Header) and, for transport failures, typed TLS
// errors; never from message text. It also returns the status and the
// server's Retry-After (0 if none).
//
// Only 400 (unparsable line, 1.8's partial write, field type conflict) and
// 422 (2.x's type conflict) blame the data. Other 4xx and unfollowed 3xx
// come from a wrong token, org, bucket or URL, or a proxy in the way: with
// those nothing can be stored, so Write must not report the data as
// rejected (the hub would ack and lose it) but fail with ErrRefused.
func classify(err error) (o outcome, status int, wait time.Duration) {
	var he *http2.Error
	if !errors.As(err, &he) {
		return transient, 0, 0
	}
	status = he.StatusCode
	switch {
	case status == 0: // no response: connection refused or reset, timeout, TLS
		var cv *tls.CertificateVerificationError
		var rh tls.RecordHeaderError // e.g. https to an http port
		if errors.As(he, &cv) || errors.As(he, &rh) {
			return refused, 0, 0
		}
		return transient, 0, 0
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return transient, status, retryAfter(he.Header.Get("Retry-After"), time.Now())
	case status == http.StatusRequestEntityTooLarge:
		return tooLarge, status, 0
	case status == http.StatusBadRequest, status == http.StatusUnprocessableEntity:
		return rejected, status, 0
	}
	return refused, status, 0
}

// maxMessage bounds a server message kept in an error (a parse error quotes lines).
const maxMessage = 1024

// message returns the server's explanation of a failed write.
func message(err error) string {
	var he *http2.Error
	if errors.As(err, &he) && he.StatusCode != 0 {
		msg := strings.TrimSpace(he.Message)
		if msg == "" {
			msg = he.Header.Get("X-Influxdb-Error") // 1.8 puts it here
		}
		if msg == "" {
			msg = http.StatusText(he.StatusCode)
		}
		if len(msg) > maxMessage {
			msg = msg[:maxMessage] + "..."
		}
		return msg
	}
	return err.Error()
}

// retryAfter parses a Retry-After value, delay-seconds or an HTTP-date
// (RFC 9110, 10.2.3). The client parses only the first form, into
// Error.RetryAfter. It returns 0 for an empty or unparsable value and caps
// the wait at maxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// backoff returns the wait before retry number attempt (from 0) with full
// jitter: uniform in [0, min(hi, lo·2^attempt)). rnd(n) returns a number in
// [0, n), like math/rand/v2's Int64N.
func backoff(attempt int, lo, hi time.Duration, rnd func(int64) int64) time.Duration {
	ceil := max(lo, 1)
	for i := 0; i < attempt && ceil < hi; i++ {
		if ceil > hi/2 {
			ceil = hi
		} else {
			ceil *= 2
		}
	}
	ceil = min(ceil, hi)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(rnd(int64(ceil)))
}
