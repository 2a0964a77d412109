package sensor

import "github.com/freshet-iot/freshet/protocol"

// The name rules are protocol's, so that a config or a reading refused here
// is exactly one the packer would refuse later, and the error names the key
// instead of a batch.

const (
	maxNameLen   = protocol.DefaultMaxNameLen
	maxStringLen = protocol.DefaultMaxStringLen
	maxLabels    = protocol.DefaultMaxLabels
)

func checkName(s string) error     { return protocol.ValidName(s, "name") }
func checkLabelKey(k string) error { return protocol.ValidLabelKey(k) }
func checkText(s string) error     { return protocol.ValidString(s) }

func checkPrintable(s string, allowEmpty bool) error {
	if allowEmpty {
		return protocol.ValidUnit(s)
	}
	return protocol.ValidLabelValue(s)
}
