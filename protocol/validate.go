package protocol

import (
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValidDevice reports whether id can be a device id: 1 to 64 bytes of
// [A-Za-z0-9._-], starting with a letter or digit. Such an id is safe in an
// MQTT topic level (no '/', '+', '#', '$' or NUL) and as an InfluxDB tag.
func ValidDevice(id string) error {
	if len(id) == 0 || len(id) > DefaultMaxNameLen {
		return fmt.Errorf("%w: %q: length %d, want 1..%d", ErrBadDevice, clip(id), len(id), DefaultMaxNameLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return fmt.Errorf("%w: %q: byte %d (%q) not allowed, want [A-Za-z0-9._-] starting alphanumeric", ErrBadDevice, clip(id), i, c)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validName checks sensor and metric names: 1..max bytes of [A-Za-z0-9_.:-].
func validName(s, what string, max int) error {
	if len(s) == 0 {
		return fmt.Errorf("%w: empty %s", ErrBadName, what)
	}
	if len(s) > max {
		return fmt.Errorf("%w: %s of %d bytes, limit %d", ErrStringTooLong, what, len(s), max)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '_' && c != '.' && c != ':' && c != '-' {
			return fmt.Errorf("%w: %s %q: byte %d (%q) not allowed, want [A-Za-z0-9_.:-]", ErrBadName, what, clip(s), i, c)
		}
	}
	return nil
}

// reservedLabels are tag keys the hub's InfluxDB schema uses itself.
var reservedLabels = map[string]bool{"device": true, "sensor": true, "unit": true, "time": true}

// validLabelKey: 1..max bytes of [A-Za-z0-9_], not starting with a digit or
// '_' (InfluxDB reserves leading underscores), not one of the reserved keys.
func validLabelKey(k string, max int) error {
	if err := validName(k, "label key", max); err != nil {
		return err
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !isAlnum(c) && c != '_' || i == 0 && (c == '_' || c >= '0' && c <= '9') {
			return fmt.Errorf("%w: label key %q: want [A-Za-z][A-Za-z0-9_]*", ErrBadName, clip(k))
		}
	}
	if reservedLabels[k] {
		return fmt.Errorf("%w: label key %q is reserved", ErrBadName, k)
	}
	return nil
}

// validText checks free text (string values, versions, messages): valid
// UTF-8 of at most max bytes; control characters are allowed.
func validText(s, what string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s of %d bytes, limit %d", ErrStringTooLong, what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadValue, what)
	}
	return nil
}

// validPrintable checks units and label values: printable UTF-8 of at most max bytes.
func validPrintable(s, what string, max int, allowEmpty bool) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s of %d bytes, limit %d", ErrStringTooLong, what, len(s), max)
	}
	if s == "" && !allowEmpty {
		return fmt.Errorf("%w: empty %s", ErrBadName, what)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadName, what)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: %s %q holds a non-printable character %U", ErrBadName, what, clip(s), r)
		}
	}
	// Units and label values become InfluxDB tag values, and line protocol
	// cannot carry a tag value that ends in a backslash.
	if strings.HasSuffix(s, `\`) {
		return fmt.Errorf("%w: %s %q ends in a backslash", ErrBadName, what, clip(s))
	}
	return nil
}

func checkFinite(v float64, i int) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%w: reading %d is %g", ErrNotFinite, i, v)
	}
	return nil
}

func (s *Series) validateMeta(l *Limits) error {
	if err := validName(s.Sensor, "sensor", l.MaxNameLen); err != nil {
		return err
	}
	if err := validName(s.Metric, "metric", l.MaxNameLen); err != nil {
		return err
	}
	if err := validPrintable(s.Unit, "unit", l.MaxNameLen, true); err != nil {
		return err
	}
	if len(s.Labels) > l.MaxLabels {
		return fmt.Errorf("%w: %d, limit %d", ErrTooManyLabels, len(s.Labels), l.MaxLabels)
	}
	for i, lb := range s.Labels {
		if err := validLabelKey(lb.Key, l.MaxNameLen); err != nil {
			return err
		}
		if err := validPrintable(lb.Value, "label value", l.MaxNameLen, false); err != nil {
			return err
		}
		if i > 0 && s.Labels[i-1].Key >= lb.Key {
			return fmt.Errorf("%w: labels not sorted by unique key at %q", ErrBadName, lb.Key)
		}
	}
	if s.Type > String {
		return fmt.Errorf("%w: value type %d", ErrBadValue, s.Type)
	}
	if s.Resolution != 0 {
		if s.Type != Float {
			return fmt.Errorf("%w: resolution on a %s series", ErrResolution, s.Type)
		}
		if _, err := ResolutionExp(s.Resolution); err != nil {
			return err
		}
	}
	return nil
}

func (b *Batch) validateHeader(l *Limits) error {
	if err := ValidDevice(b.Device); err != nil {
		return err
	}
	if b.Epoch == 0 {
		return fmt.Errorf("%w: epoch 0", ErrBadSeq)
	}
	if b.Seq == 0 {
		return fmt.Errorf("%w: seq 0 (seqs start at 1)", ErrBadSeq)
	}
	if b.SealTime < l.MinTime || b.SealTime > l.MaxTime {
		return fmt.Errorf("%w: seal time %d", ErrTimeRange, b.SealTime)
	}
	if b.Version == 1 {
		if b.Settled != 0 || b.Before != 0 {
			return fmt.Errorf("%w: version 1 has no settled mark or before time", ErrBadValue)
		}
	} else {
		if b.Settled >= b.Seq {
			return fmt.Errorf("%w: settled mark %d not below the batch's seq %d", ErrBadSeq, b.Settled, b.Seq)
		}
		if b.Before < l.MinTime || b.Before > l.MaxTime {
			return fmt.Errorf("%w: before time %d", ErrTimeRange, b.Before)
		}
	}
	if g := b.Gap; g != nil {
		if len(g.Seqs) > l.MaxAckSeqs {
			return fmt.Errorf("%w: gap of %d seq ranges, limit %d", ErrTooManySeqs, len(g.Seqs), l.MaxAckSeqs)
		}
		for i, r := range g.Seqs {
			if r.First == 0 || r.First > r.Last || r.Last >= b.Seq || i > 0 && r.First <= g.Seqs[i-1].Last+1 {
				return fmt.Errorf("%w: gap seq range %d..%d in batch %d (ranges must be sorted, disjoint, non-adjacent, below the batch)", ErrBadSeq, r.First, r.Last, b.Seq)
			}
		}
		if g.Readings == 0 {
			return fmt.Errorf("%w: gap notice with no readings dropped", ErrBadSeq)
		}
		if g.FirstTime > g.LastTime || g.FirstTime < l.MinTime || g.LastTime > l.MaxTime {
			return fmt.Errorf("%w: gap times %d..%d", ErrTimeRange, g.FirstTime, g.LastTime)
		}
	}
	if len(b.Series) == 0 && b.Gap == nil {
		return fmt.Errorf("%w: no series and no gap notice", ErrEmpty)
	}
	if len(b.Series) > l.MaxSeries {
		return fmt.Errorf("%w: %d, limit %d", ErrTooManySeries, len(b.Series), l.MaxSeries)
	}
	return nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// ValidName checks a sensor or metric name under the default limits (what
// names it in the error): 1..64 bytes of [A-Za-z0-9_.:-].
func ValidName(s, what string) error { return validName(s, what, DefaultMaxNameLen) }

// ValidLabelKey checks a label key under the default limits.
func ValidLabelKey(k string) error { return validLabelKey(k, DefaultMaxNameLen) }

// ValidLabelValue checks a label value: printable UTF-8, 1..64 bytes.
func ValidLabelValue(v string) error {
	return validPrintable(v, "label value", DefaultMaxNameLen, false)
}

// ValidUnit checks a unit: printable UTF-8, at most 64 bytes, may be empty.
func ValidUnit(u string) error { return validPrintable(u, "unit", DefaultMaxNameLen, true) }

// ValidString checks a string value: valid UTF-8 of at most 1024 bytes.
func ValidString(s string) error { return validText(s, "string value", DefaultMaxStringLen) }
