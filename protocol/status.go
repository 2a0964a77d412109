package protocol

import (
	"bytes"
	"fmt"
)

// Agent states in a Status.
const (
	StateOnline  = "online"
	StateOffline = "offline"
)

// Status is what an agent publishes, retained, on freshet/v1/{device}/status:
// on connect (online), periodically, and as its last will (offline).
type Status struct {
	// Version is the version it was decoded from or is to be encoded in; 0
	// means Version.
	Version uint8
	Device  string
	State   string // StateOnline or StateOffline
	// Time is when the agent built the status, Unix ns on its clock.
	Time         int64
	AgentVersion string
	Epoch        uint64
	LastSeq      uint64 // the highest seq sealed so far in Epoch
	// Settled (version 2) is the agent's settled mark in Epoch: every seq
	// up to it was settled by a hub's ack. A hub that holds less of the
	// epoch knows another hub (or its own lost state) holds the rest.
	Settled uint64
	Backlog Backlog
	// Dropped counts the readings dropped under the disk bound in Epoch.
	Dropped uint64
	// ClockSynced is false while the agent believes its clock was never set
	// (a gateway without a real-time clock before NTP).
	ClockSynced bool
	// Notice is a short operator-facing message, e.g. that a corrupt outbox
	// was moved aside and a new epoch started. Empty when all is well.
	Notice  string
	Sensors []SensorStatus
}

// Backlog is what waits on the agent's disk.
type Backlog struct {
	Batches, Readings, Bytes uint64
}

// SensorStatus describes one configured sensor.
type SensorStatus struct {
	Name      string
	Interval  int64 // nanoseconds between reads
	Reads     uint64
	Errors    uint64
	LastError string
}

func (s *Status) validate(l *Limits) error {
	v, err := version(s.Version)
	if err != nil {
		return err
	}
	if err := ValidDevice(s.Device); err != nil {
		return err
	}
	if v == 1 && s.Settled != 0 {
		return fmt.Errorf("%w: version 1 has no settled mark", ErrBadValue)
	}
	if s.State != StateOnline && s.State != StateOffline {
		return fmt.Errorf("%w: state %q, want online or offline", ErrBadValue, clip(s.State))
	}
	if err := validText(s.AgentVersion, "agent version", l.MaxNameLen); err != nil {
		return err
	}
	if err := validText(s.Notice, "notice", l.MaxStringLen); err != nil {
		return err
	}
	if len(s.Sensors) > l.MaxSeries {
		return fmt.Errorf("%w: status lists %d sensors, limit %d", ErrTooManySeries, len(s.Sensors), l.MaxSeries)
	}
	for _, ss := range s.Sensors {
		if err := validName(ss.Name, "sensor", l.MaxNameLen); err != nil {
			return err
		}
		if ss.Interval < 0 {
			return fmt.Errorf("%w: sensor %s interval %d", ErrBadValue, ss.Name, ss.Interval)
		}
		if err := validText(ss.LastError, "sensor error", l.MaxStringLen); err != nil {
			return err
		}
	}
	return nil
}

// EncodeStatus validates s and returns its wire form.
func (c *Codec) EncodeStatus(s *Status) ([]byte, error) {
	if err := s.validate(&c.l); err != nil {
		return nil, err
	}
	v, _ := version(s.Version)
	c.buf.Reset()
	e := c.enc
	e.EncodeArrayLen(statusFields[v-1])
	e.EncodeUint(uint64(v))
	e.EncodeUint(kindStatus)
	e.EncodeString(s.Device)
	e.EncodeString(s.State)
	e.EncodeInt(s.Time)
	e.EncodeString(s.AgentVersion)
	e.EncodeUint(s.Epoch)
	e.EncodeUint(s.LastSeq)
	if v >= 2 {
		e.EncodeUint(s.Settled)
	}
	e.EncodeArrayLen(3)
	e.EncodeUint(s.Backlog.Batches)
	e.EncodeUint(s.Backlog.Readings)
	e.EncodeUint(s.Backlog.Bytes)
	e.EncodeUint(s.Dropped)
	e.EncodeBool(s.ClockSynced)
	e.EncodeString(s.Notice)
	e.EncodeArrayLen(len(s.Sensors))
	for _, ss := range s.Sensors {
		e.EncodeArrayLen(5)
		e.EncodeString(ss.Name)
		e.EncodeInt(ss.Interval)
		e.EncodeUint(ss.Reads)
		e.EncodeUint(ss.Errors)
		e.EncodeString(ss.LastError)
	}
	if c.buf.Len() > c.l.MaxMessageBytes {
		return nil, fmt.Errorf("%w: status of %d bytes", ErrTooLarge, c.buf.Len())
	}
	return bytes.Clone(c.buf.Bytes()), nil
}

// DecodeStatus decodes and validates a status.
func (c *Codec) DecodeStatus(data []byte) (*Status, error) {
	v, err := c.open(data, kindStatus, statusFields)
	if err != nil {
		return nil, err
	}
	s := &Status{Version: v}
	step := func(f func() error) {
		if err == nil {
			err = f()
		}
	}
	str := func(dst *string, what string, max int) func() error {
		return func() (e error) { *dst, e = c.str(what, max); return }
	}
	u := func(dst *uint64, what string) func() error {
		return func() (e error) { *dst, e = c.uint(what); return }
	}
	step(str(&s.Device, "device", c.l.MaxNameLen))
	step(str(&s.State, "state", c.l.MaxNameLen))
	step(func() (e error) { s.Time, e = c.int("time"); return })
	step(str(&s.AgentVersion, "agent version", c.l.MaxNameLen))
	step(u(&s.Epoch, "epoch"))
	step(u(&s.LastSeq, "last seq"))
	if v >= 2 {
		step(u(&s.Settled, "settled"))
	}
	step(func() error {
		n, e := c.array("backlog", 3, ErrMalformed)
		if e == nil && n != 3 {
			e = fmt.Errorf("%w: backlog of %d fields, want 3", ErrMalformed, n)
		}
		return e
	})
	step(u(&s.Backlog.Batches, "backlog batches"))
	step(u(&s.Backlog.Readings, "backlog readings"))
	step(u(&s.Backlog.Bytes, "backlog bytes"))
	step(u(&s.Dropped, "dropped"))
	step(func() (e error) { s.ClockSynced, e = c.bool("clock synced"); return })
	step(str(&s.Notice, "notice", c.l.MaxStringLen))
	if err != nil {
		return nil, err
	}
	n, err := c.array("sensors", c.l.MaxSeries, ErrTooManySeries)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		s.Sensors = make([]SensorStatus, n)
	}
	for i := range s.Sensors {
		ss := &s.Sensors[i]
		step(func() error {
			m, e := c.array("sensor", 5, ErrMalformed)
			if e == nil && m != 5 {
				e = fmt.Errorf("%w: sensor of %d fields, want 5", ErrMalformed, m)
			}
			return e
		})
		step(str(&ss.Name, "sensor name", c.l.MaxNameLen))
		step(func() (e error) { ss.Interval, e = c.int("sensor interval"); return })
		step(u(&ss.Reads, "sensor reads"))
		step(u(&ss.Errors, "sensor errors"))
		step(str(&ss.LastError, "sensor error", c.l.MaxStringLen))
		if err != nil {
			return nil, err
		}
	}
	if err := c.close(); err != nil {
		return nil, err
	}
	if err := s.validate(&c.l); err != nil {
		return nil, err
	}
	return s, nil
}
