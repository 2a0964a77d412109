package sysfs

import "errors"

// Errors returned by the helpers, wrapped with the probe or zone they
// concern; match them with errors.Is.
var (
	// ErrSerial: a DS18B20 serial is not 12 hexadecimal digits.
	ErrSerial = errors.New("bad 1-wire serial")
	// ErrValue: a temperature is NaN, ±Inf or outside what the file can hold.
	ErrValue = errors.New("bad temperature")
)
