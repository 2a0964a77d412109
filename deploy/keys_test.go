package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/freshet-iot/freshet/internal/ackkey"
	"github.com/freshet-iot/freshet/internal/testsvc"
)

// makeAckKey runs keys/make-ack-key.sh into a new directory and returns
// it and the script's output.
func makeAckKey(t *testing.T) (dir, out string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if testsvc.Required() {
			t.Fatalf("openssl is not installed and %s=1", testsvc.RequireEnv)
		}
		t.Skip("openssl is not installed, so make-ack-key.sh did not run (apt-get install openssl)")
	}
	dir = filepath.Join(t.TempDir(), "ack-key")
	b, err := exec.Command("./keys/make-ack-key.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("make-ack-key.sh: %v\n%s", err, b)
	}
	return dir, string(b)
}

// TestAckKeyScript: make-ack-key.sh writes a key the hub loads and a public
// key the agents load, with the modes the README promises; it prints the
// key id acks carry and the key as hub_keys takes it inline; it never
// overwrites a key.
func TestAckKeyScript(t *testing.T) {
	dir, out := makeAckKey(t)
	s, err := ackkey.LoadSigner(filepath.Join(dir, ackkey.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ackkey.LoadKeys([]string{filepath.Join(dir, ackkey.PubFile)}, "mqtt.hub_keys")
	if err != nil || len(keys.IDs()) != 1 || keys.IDs()[0] != s.KeyID() {
		t.Fatalf("the public key: %v %v, want key id %s", keys, err, s.KeyID())
	}
	for _, want := range []string{"key id     " + s.KeyID() + "\n", "public key " + ackkey.PublicBase64(s.Public()) + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for f, mode := range map[string]os.FileMode{ackkey.KeyFile: 0o600, ackkey.PubFile: 0o644} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", f, st.Mode(), err, mode)
		}
	}
	b, err := exec.Command("./keys/make-ack-key.sh", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(b), "exists") {
		t.Errorf("a second run over the key: %v\n%s", err, b)
	}
	if again, _ := ackkey.LoadSigner(filepath.Join(dir, ackkey.KeyFile)); again == nil || again.KeyID() != s.KeyID() {
		t.Error("the key was overwritten")
	}
}
