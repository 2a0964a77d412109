package ackkey_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/freshet-iot/freshet/internal/ackkey"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// TestGenerate: the files Generate writes load back as the same key, the
// public one inline or from its file; it never overwrites a key.
func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	s, err := ackkey.Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, ackkey.KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", st, err)
	}
	back, err := ackkey.LoadSigner(filepath.Join(dir, ackkey.KeyFile))
	if err != nil || back.KeyID() != s.KeyID() {
		t.Fatalf("LoadSigner: %v, key id %v want %s", err, back, s.KeyID())
	}
	for _, entry := range []string{filepath.Join(dir, ackkey.PubFile), ackkey.PublicBase64(s.Public()), " " + ackkey.PublicBase64(s.Public()) + "\n"} {
		keys, err := ackkey.LoadKeys([]string{entry}, "mqtt.hub_keys")
		if err != nil {
			t.Fatalf("%q: %v", entry, err)
		}
		if ids := keys.IDs(); len(ids) != 1 || ids[0] != s.KeyID() {
			t.Errorf("%q: ids %v, want %s", entry, ids, s.KeyID())
		}
	}
	if _, err := ackkey.Generate(dir); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("Generate over an existing key: %v", err)
	}
	if back2, _ := ackkey.LoadSigner(filepath.Join(dir, ackkey.KeyFile)); back2 == nil || back2.KeyID() != s.KeyID() {
		t.Error("the key was overwritten")
	}
}

// TestRotation: a file may list several public keys; entries add up.
func TestRotation(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	sa, _ := ackkey.Generate(a)
	sb, _ := ackkey.Generate(b)
	pa, _ := os.ReadFile(filepath.Join(a, ackkey.PubFile))
	pb, _ := os.ReadFile(filepath.Join(b, ackkey.PubFile))
	both := filepath.Join(t.TempDir(), "hub-keys.pem")
	os.WriteFile(both, append(pa, pb...), 0o644)
	keys, err := ackkey.LoadKeys([]string{both}, "k")
	if err != nil || len(keys.IDs()) != 2 {
		t.Fatalf("two keys in one file: %v %v", keys, err)
	}
	keys, err = ackkey.LoadKeys([]string{filepath.Join(a, ackkey.PubFile), ackkey.PublicBase64(sb.Public())}, "k")
	if err != nil || len(keys.IDs()) != 2 {
		t.Fatalf("two entries: %v %v", keys, err)
	}
	for _, s := range []*protocol.AckSigner{sa, sb} {
		ack := &protocol.Ack{Device: "gw-1", Epoch: 1, Through: 3}
		s.Sign(ack)
		if err := keys.Verify(ack); err != nil {
			t.Errorf("%s: %v", s.KeyID(), err)
		}
	}
}

// TestBadKeys: each wrong file is refused with an error that says what is
// wrong, and the config key when there is one.
func TestBadKeys(t *testing.T) {
	dir := t.TempDir()
	if _, err := ackkey.Generate(dir); err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPubDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o600)
		return p
	}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	key, _ := os.ReadFile(filepath.Join(dir, ackkey.KeyFile))
	pub, _ := os.ReadFile(filepath.Join(dir, ackkey.PubFile))
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"empty", write("empty", nil), "no PEM block"},
		{"public", write("pub-as-key", pub), "holds a public key"},
		{"ecdsa", write("ec.key", pemOf("PRIVATE KEY", ecDER)), "a ecdsa key: want Ed25519"},
		{"sec1", write("ec-sec1.key", pemOf("EC PRIVATE KEY", []byte{1})), `PEM block "EC PRIVATE KEY"`},
		{"encrypted", write("enc.key", pemOf("ENCRYPTED PRIVATE KEY", []byte{1})), "encrypted"},
		{"garbage der", write("bad.key", pemOf("PRIVATE KEY", []byte{1, 2, 3})), "PKCS#8"},
	} {
		if _, err := ackkey.LoadSigner(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadSigner %s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name, entry, want string
	}{
		{"missing", filepath.Join(dir, "nope"), "mqtt.hub_keys[0]: not a base64 Ed25519 public key (32 bytes), and not a readable file"},
		{"short base64", "AAAA", "mqtt.hub_keys[0]: not a base64"},
		{"empty", "", "mqtt.hub_keys[0]: empty"},
		{"private", write("key-as-pub", key), "holds a private key: give agents only the public key"},
		{"ecdsa", write("ec.pub", pemOf("PUBLIC KEY", ecPubDER)), "a ecdsa key, want Ed25519"},
		{"no block", write("text.pub", []byte("hello\n")), "no PEM PUBLIC KEY block"},
		{"certificate", write("cert.pem", pemOf("CERTIFICATE", []byte{1})), `PEM block "CERTIFICATE"`},
	} {
		if _, err := ackkey.LoadKeys([]string{tc.entry}, "mqtt.hub_keys"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadKeys %s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestOpenSSL: keys openssl makes load, and openssl reads ours.
func TestOpenSSL(t *testing.T) {
	tool, err := exec.LookPath("openssl")
	if err != nil {
		if testsvc.Required() {
			t.Fatalf("openssl is not installed and %s=1", testsvc.RequireEnv)
		}
		t.Skip("openssl is not installed, so keys made by it were not tried")
	}
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "o.key"), filepath.Join(dir, "o.pub")
	if out, err := exec.Command(tool, "genpkey", "-algorithm", "ed25519", "-out", key).CombinedOutput(); err != nil {
		t.Fatalf("genpkey: %v\n%s", err, out)
	}
	if out, err := exec.Command(tool, "pkey", "-in", key, "-pubout", "-out", pub).CombinedOutput(); err != nil {
		t.Fatalf("pkey -pubout: %v\n%s", err, out)
	}
	s, err := ackkey.LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ackkey.LoadKeys([]string{pub}, "k")
	if err != nil || keys.IDs()[0] != s.KeyID() {
		t.Fatalf("openssl's public key: %v %v, want id %s", keys, err, s.KeyID())
	}
	ours := t.TempDir()
	if _, err := ackkey.Generate(ours); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "pkey", "-in", filepath.Join(ours, ackkey.KeyFile), "-pubout").Output()
	if err != nil {
		t.Fatalf("openssl reads our key: %v", err)
	}
	mine, _ := os.ReadFile(filepath.Join(ours, ackkey.PubFile))
	if string(out) != string(mine) {
		t.Errorf("openssl derives\n%s\nfrom our key; we wrote\n%s", out, mine)
	}
}
