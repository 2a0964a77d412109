package testsvc

import (
	"path/filepath"
	"testing"

	"github.com/freshet-iot/freshet/internal/ackkey"
	"github.com/freshet-iot/freshet/protocol"
)

// AckKey is a hub's ack signing key pair made for a test.
type AckKey struct {
	KeyFile string // the hub's ack_key_file
	PubFile string // the agents' mqtt.hub_keys entry
	Signer  *protocol.AckSigner
	Keys    *protocol.AckKeys // the agents' view: the public key alone
}

// NewAckKey makes a new ack key pair in a temporary directory of tb, as
// `freshet-hub -genkey` does.
func NewAckKey(tb testing.TB) *AckKey {
	tb.Helper()
	dir := tb.TempDir()
	s, err := ackkey.Generate(dir)
	if err != nil {
		tb.Fatal(err)
	}
	keys, err := protocol.NewAckKeys(s.Public())
	if err != nil {
		tb.Fatal(err)
	}
	return &AckKey{KeyFile: filepath.Join(dir, ackkey.KeyFile), PubFile: filepath.Join(dir, ackkey.PubFile), Signer: s, Keys: keys}
}
