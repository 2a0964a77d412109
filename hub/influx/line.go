package influx

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Point is one line of InfluxDB line protocol.
type Point struct {
	Measurement string
	// Tags are sorted by key, keys unique. A tag with an empty value is left
	// out: to InfluxDB an empty tag and a missing tag are the same thing.
	Tags []Tag
	// Fields hold at least one field; see Field for the value types.
	Fields []Field
	// Time is the timestamp in Unix nanoseconds.
	Time int64
}

// Tag is one tag key and value.
type Tag struct{ Key, Value string }

// Field is one field. Value is a float64 (finite, stored bit-exact), a
// Decimal (stored as a float), an int64 (stored as an InfluxDB integer), a
// bool or a string.
type Field struct {
	Key   string
	Value any
}

// Decimal is a float written as its decimal text, Units·10^Exp: for a value
// known at a decimal resolution this is exact (protocol.Decimal) and
// several times cheaper to render than the shortest float64 text.
type Decimal struct {
	Units int64
	Exp   int8 // -18..18
}

// appendDecimal appends d's decimal text.
func appendDecimal(b []byte, d Decimal) []byte {
	if d.Exp >= 0 {
		b = strconv.AppendInt(b, d.Units, 10)
		if d.Units != 0 {
			for range d.Exp {
				b = append(b, '0')
			}
		}
		return b
	}
	// Right to left into tmp: the fraction's digits, the point, the rest.
	// 20 digits, 18 leading zeros of the fraction, the point, the sign: 40.
	var tmp [40]byte
	i, u, k := len(tmp), absU(d.Units), int(-d.Exp)
	for ; k > 0; k-- {
		i--
		tmp[i] = byte('0' + u%10)
		u /= 10
	}
	i--
	tmp[i] = '.'
	for {
		i--
		tmp[i] = byte('0' + u%10)
		if u /= 10; u == 0 {
			break
		}
	}
	if d.Units < 0 {
		i--
		tmp[i] = '-'
	}
	return append(b, tmp[i:]...)
}

func absU(v int64) uint64 {
	if v < 0 {
		return uint64(-v) // -MinInt64 wraps to itself, which as uint64 is right
	}
	return uint64(v)
}

// Escapes of line protocol (the same in InfluxDB 1.8 and 2.x) put a
// backslash before the byte; these are bit sets of bytes below 64. Other
// backslashes are literal, which is why a name ending in a backslash cannot
// be written: it would escape the separator after it.
const (
	measurementSpecial uint64 = 1<<',' | 1<<' '
	keySpecial                = measurementSpecial | 1<<'=' // tag keys and values, field keys
	lineBreaks         uint64 = 1<<'\n' | 1<<'\r'
)

// lineBuf is a batch of rendered lines: line i ends at ends[i] in buf.
type lineBuf struct {
	buf  []byte
	ends []int
	// The series key (measurement and tags) of last is buf[key[0]:key[1]]:
	// the readings of one series usually follow each other, and copying
	// their key is much cheaper than escaping it again.
	last *Point
	key  [2]int
}

func (l *lineBuf) reset() { l.buf, l.ends, l.last = l.buf[:0], l.ends[:0], nil }

// Lines is line protocol rendered for one Writer.WriteLines: points added
// one at a time (Add), or the readings of one series added as bare values
// after Series, which renders the series key and field key once, so that a
// reading costs its value and time text and nothing else.
//
// A point that line protocol cannot carry is not rendered but counted; the
// write then reports it in a *RejectedError (ErrInvalidPoint). The zero
// value is ready to use; Reset empties it for reuse.
type Lines struct {
	lineBuf
	invalid int
	first   error // the first invalid point's error
	// The current series' "measurement,tags field=" text, or seriesErr.
	prefix    []byte
	seriesErr error
	// The whole seconds of the last time written, and their text: the
	// readings of a series mostly share or step them.
	sec     int64
	secText []byte
}

// Reset empties l, keeping its memory.
func (l *Lines) Reset() {
	l.reset()
	l.invalid, l.first, l.prefix, l.seriesErr = 0, nil, l.prefix[:0], nil
}

// Len is the number of points added, invalid ones included.
func (l *Lines) Len() int { return len(l.ends) + l.invalid }

func (l *Lines) fail(err error) {
	if l.first == nil {
		l.first = fmt.Errorf("point %d: %w", l.Len(), err)
	}
	l.invalid++
}

// Add adds p.
func (l *Lines) Add(p *Point) {
	if err := l.add(p); err != nil {
		l.fail(err)
	}
}

// Series starts a series of single-field points: measurement, tags (as in
// Point) and the field's key. The values that follow (Decimal, Float, Int,
// Bool, String) are its points; if the series is invalid they are counted
// as invalid points.
func (l *Lines) Series(measurement string, tags []Tag, field string) {
	p := Point{Measurement: measurement, Tags: tags}
	b, err := appendSeriesKey(l.prefix[:0], &p)
	if err == nil {
		b = append(b, ' ')
		b, err = appendName(b, field, "field key", keySpecial)
	}
	l.prefix, l.seriesErr = append(b, '='), nil
	if err != nil {
		l.seriesErr = fmt.Errorf("%w: %w", ErrInvalidPoint, err)
	}
	l.last = nil // Add must not copy a key from before
}

// Reserve makes room for n more points of the current series.
func (l *Lines) Reserve(n int) {
	if n > 0 {
		// Value and time text: at most 20+1+19+1 bytes, usually under 32.
		l.buf = slices.Grow(l.buf, n*(len(l.prefix)+32))
		l.ends = slices.Grow(l.ends, n)
	}
}

// value begins a point of the current series; false if the series is invalid.
func (l *Lines) value() bool {
	if l.seriesErr != nil {
		l.fail(l.seriesErr)
		return false
	}
	l.buf = append(l.buf, l.prefix...)
	return true
}

// end appends the time and ends the line.
func (l *Lines) end(t int64) {
	l.buf = append(l.buf, ' ')
	l.buf = l.appendTime(l.buf, t)
	l.buf = append(l.buf, '\n')
	l.ends = append(l.ends, len(l.buf))
}

// appendTime appends t's decimal text as its whole seconds, kept from the
// last time (stepped by one in place, or formatted anew), then nine digits
// of nanoseconds. It is several times cheaper than formatting 19 digits.
func (l *Lines) appendTime(b []byte, t int64) []byte {
	if t < 1e9 {
		return strconv.AppendInt(b, t, 10)
	}
	sec, ns := t/1e9, t%1e9
	switch {
	case len(l.secText) > 0 && sec == l.sec:
	case len(l.secText) > 0 && sec == l.sec+1 && incDecimal(l.secText):
		l.sec = sec
	default:
		l.sec, l.secText = sec, strconv.AppendInt(l.secText[:0], sec, 10)
	}
	b = append(b, l.secText...)
	if ns == 0 {
		return append(b, "000000000"...)
	}
	var tmp [9]byte
	for i := 8; i >= 0; i-- {
		tmp[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(b, tmp[:]...)
}

// incDecimal adds one to the decimal text d in place; false (d unchanged)
// if that needs another digit.
func incDecimal(d []byte) bool {
	for i := len(d) - 1; i >= 0; i-- {
		if d[i] != '9' {
			d[i]++
			for j := i + 1; j < len(d); j++ {
				d[j] = '0'
			}
			return true
		}
	}
	return false
}

// Decimal adds a point of the current series with a Decimal value at time t
// (Unix ns).
func (l *Lines) Decimal(d Decimal, t int64) {
	if d.Exp < -18 || d.Exp > 18 {
		l.fail(fmt.Errorf("%w: decimal exponent %d", ErrInvalidPoint, d.Exp))
		return
	}
	if l.value() {
		l.buf = appendDecimal(l.buf, d)
		l.end(t)
	}
}

// Float adds a point of the current series with a float value; NaN and
// infinities are invalid.
func (l *Lines) Float(v float64, t int64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		l.fail(fmt.Errorf("%w: value is %g", ErrInvalidPoint, v))
		return
	}
	if l.value() {
		l.buf = strconv.AppendFloat(l.buf, v, 'g', -1, 64)
		l.end(t)
	}
}

// Int adds a point of the current series with an integer value.
func (l *Lines) Int(v int64, t int64) {
	if l.value() {
		l.buf = strconv.AppendInt(l.buf, v, 10)
		l.buf = append(l.buf, 'i')
		l.end(t)
	}
}

// Bool adds a point of the current series with a boolean value.
func (l *Lines) Bool(v bool, t int64) {
	if l.value() {
		l.buf = strconv.AppendBool(l.buf, v)
		l.end(t)
	}
}

// String adds a point of the current series with a string value.
func (l *Lines) String(v string, t int64) {
	if l.value() {
		l.buf = appendString(l.buf, v)
		l.end(t)
	}
}

// add appends p as a line, or returns an error wrapping ErrInvalidPoint.
func (l *lineBuf) add(p *Point) error {
	start := len(l.buf)
	var err error
	if l.last != nil && sameSeries(l.last, p) {
		l.buf = append(l.buf, l.buf[l.key[0]:l.key[1]]...)
	} else {
		l.buf, err = appendSeriesKey(l.buf, p)
	}
	end := len(l.buf)
	if err == nil {
		l.buf, err = appendFields(l.buf, p)
	}
	if err != nil {
		l.buf = l.buf[:start]
		return fmt.Errorf("%w: %w", ErrInvalidPoint, err)
	}
	l.last, l.key = p, [2]int{start, end}
	l.ends = append(l.ends, len(l.buf))
	return nil
}

func sameSeries(a, b *Point) bool {
	if a.Measurement != b.Measurement || len(a.Tags) != len(b.Tags) {
		return false
	}
	for i := range a.Tags {
		if a.Tags[i] != b.Tags[i] {
			return false
		}
	}
	return true
}

// appendSeriesKey appends the measurement and the tags.
func appendSeriesKey(b []byte, p *Point) ([]byte, error) {
	// The parser skips leading blanks and takes a leading '#' for a comment.
	if m := p.Measurement; m != "" && (m[0] == '#' || m[0] == '\t' || m[0] == 0) {
		return b, fmt.Errorf("measurement %q starts with %q", clip(m), m[0])
	}
	b, err := appendName(b, p.Measurement, "measurement", measurementSpecial)
	if err != nil {
		return b, err
	}
	for i, t := range p.Tags {
		if i > 0 && t.Key <= p.Tags[i-1].Key {
			return b, fmt.Errorf("tags not sorted by unique key at %q", clip(t.Key))
		}
		if t.Value == "" {
			continue
		}
		b = append(b, ',')
		if b, err = appendName(b, t.Key, "tag key", keySpecial); err != nil {
			return b, err
		}
		b = append(b, '=')
		if b, err = appendName(b, t.Value, "tag value", keySpecial); err != nil {
			return b, err
		}
	}
	return b, nil
}

// appendFields appends the fields, the time and the newline.
func appendFields(b []byte, p *Point) ([]byte, error) {
	if len(p.Fields) == 0 {
		return b, errors.New("no fields")
	}
	var err error
	for i, f := range p.Fields {
		if i == 0 {
			b = append(b, ' ')
		} else {
			b = append(b, ',')
		}
		if b, err = appendName(b, f.Key, "field key", keySpecial); err != nil {
			return b, err
		}
		b = append(b, '=')
		switch v := f.Value.(type) {
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return b, fmt.Errorf("field %q is %g", clip(f.Key), v)
			}
			// Shortest representation that parses back to the same bits.
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		case Decimal:
			if v.Exp < -18 || v.Exp > 18 {
				return b, fmt.Errorf("field %q: decimal exponent %d", clip(f.Key), v.Exp)
			}
			b = appendDecimal(b, v)
		case int64:
			b = strconv.AppendInt(b, v, 10)
			b = append(b, 'i')
		case bool:
			b = strconv.AppendBool(b, v)
		case string:
			b = appendString(b, v)
		default:
			return b, fmt.Errorf("field %q has unsupported type %T (want float64, Decimal, int64, bool or string)", clip(f.Key), f.Value)
		}
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, p.Time, 10)
	return append(b, '\n'), nil
}

// appendName appends a measurement, tag key, tag value or field key with the
// bytes in special escaped. It refuses an empty name, a line break and a
// trailing backslash.
func appendName(b []byte, s, what string, special uint64) ([]byte, error) {
	if s == "" {
		return b, fmt.Errorf("empty %s", what)
	}
	if s[len(s)-1] == '\\' {
		return b, fmt.Errorf("%s %q ends in a backslash", what, clip(s))
	}
	last := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 64 && (special|lineBreaks)&(1<<c) != 0 {
			if lineBreaks&(1<<c) != 0 {
				return b, fmt.Errorf("%s %q holds a line break", what, clip(s))
			}
			b = append(b, s[last:i]...)
			b = append(b, '\\')
			last = i
		}
	}
	return append(b, s[last:]...), nil
}

// appendString appends a string field value: quoted, with '"' and '\\' escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	last := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, s[last:i]...)
			b = append(b, '\\')
			last = i
		}
	}
	b = append(b, s[last:]...)
	return append(b, '"')
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
