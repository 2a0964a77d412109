package protocol

import "errors"

// Errors returned by the decoders, the encoders and the packer. Each one is
// wrapped with detail (which series, which value, which limit) so that a log
// line says exactly what was wrong; errors.Is matches the sentinel, and Reason
// maps it to a short stable label for counters and rejection acks.
var (
	// ErrUnknownVersion: the message declares a protocol version this code does not speak.
	ErrUnknownVersion = errors.New("unknown protocol version")
	// ErrUnknownKind: the message is not the kind that was expected (a status on the batch topic, say).
	ErrUnknownKind = errors.New("unknown message kind")
	// ErrMalformed: the bytes are not a well-formed message (bad msgpack, wrong shape, trailing bytes, bad column).
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge: the message, or the message being packed, exceeds Limits.MaxMessageBytes.
	ErrTooLarge = errors.New("message too large")
	// ErrTooManySeries: more series in one batch than Limits.MaxSeries.
	ErrTooManySeries = errors.New("too many series")
	// ErrTooManyReadings: more readings in one batch than Limits.MaxReadings.
	ErrTooManyReadings = errors.New("too many readings")
	// ErrTooManySeqs: an ack lists more seqs or rejections than Limits.MaxAckSeqs.
	ErrTooManySeqs = errors.New("too many seqs")
	// ErrFull: the packer's batch has no room for the reading; seal it and add again.
	// Never returned by a decoder.
	ErrFull = errors.New("batch full")
	// ErrTooManyLabels: more labels on one series than Limits.MaxLabels.
	ErrTooManyLabels = errors.New("too many labels")
	// ErrStringTooLong: a name, label or string value is longer than its limit.
	ErrStringTooLong = errors.New("string too long")
	// ErrBadName: a sensor, metric, unit or label name is empty or holds characters outside its set.
	ErrBadName = errors.New("bad name")
	// ErrBadDevice: the device id is not topic-safe (see ValidDevice).
	ErrBadDevice = errors.New("bad device id")
	// ErrTimeRange: a timestamp is outside [Limits.MinTime, Limits.MaxTime].
	ErrTimeRange = errors.New("timestamp out of range")
	// ErrNotFinite: a float value is NaN or ±Inf.
	ErrNotFinite = errors.New("value not finite")
	// ErrResolution: a resolution is not a power of ten in range, or a value does not fit at its resolution.
	ErrResolution = errors.New("bad resolution")
	// ErrBadSeq: a batch seq of 0, an epoch of 0, or an inconsistent gap or ack range.
	ErrBadSeq = errors.New("bad sequence")
	// ErrBadValue: a value of the wrong type for its series, or an unknown value type.
	ErrBadValue = errors.New("bad value")
	// ErrEmpty: a batch with no readings and no gap notice carries nothing and is refused.
	ErrEmpty = errors.New("empty batch")
	// ErrBadTopic: a topic that is not one of freshet's.
	ErrBadTopic = errors.New("bad topic")
	// ErrBadSignature: an ack whose signature is malformed or does not
	// verify (AckKeys.Verify), or a key that is not an Ed25519 key.
	ErrBadSignature = errors.New("bad signature")
	// ErrUnsigned: an ack without a signature (or of version 1, which has
	// none) where a signed one is required (AckKeys.Verify).
	ErrUnsigned = errors.New("unsigned ack")
	// ErrUnknownKey: an ack signed with a key the verifier was not given
	// (AckKeys.Verify).
	ErrUnknownKey = errors.New("unknown signing key")
)

// reasons is ordered: the first sentinel that matches names the reason.
var reasons = []struct {
	err  error
	name string
}{
	{ErrUnknownVersion, "unknown_version"},
	{ErrUnknownKind, "unknown_kind"},
	{ErrTooLarge, "too_large"},
	{ErrTooManySeries, "too_many_series"},
	{ErrTooManyReadings, "too_many_readings"},
	{ErrTooManySeqs, "too_many_seqs"},
	{ErrFull, "full"},
	{ErrTooManyLabels, "too_many_labels"},
	{ErrStringTooLong, "string_too_long"},
	{ErrBadName, "bad_name"},
	{ErrBadDevice, "bad_device"},
	{ErrTimeRange, "time_range"},
	{ErrNotFinite, "not_finite"},
	{ErrResolution, "resolution"},
	{ErrBadSeq, "bad_seq"},
	{ErrBadValue, "bad_value"},
	{ErrEmpty, "empty"},
	{ErrBadTopic, "bad_topic"},
	{ErrBadSignature, "bad_signature"},
	{ErrUnsigned, "unsigned"},
	{ErrUnknownKey, "unknown_key"},
	{ErrMalformed, "malformed"},
}

// Reasons lists every label Reason can return, for pre-creating counters.
func Reasons() []string {
	out := make([]string, 0, len(reasons)+1)
	for _, r := range reasons {
		out = append(out, r.name)
	}
	return append(out, "other")
}

// Reason maps an error from this package to a short, stable label such as
// "too_large" or "not_finite", for metrics and rejection acks. Errors from
// elsewhere map to "other"; nil maps to "".
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}
