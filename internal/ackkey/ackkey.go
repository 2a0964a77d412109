// Package ackkey reads and writes the files of the keys that sign the
// hub's acks (protocol.AckSigner): the hub's Ed25519 private key, PEM
// PKCS#8 as `openssl genpkey -algorithm ed25519` writes it, and the public
// keys agents are given, PEM PKIX as `openssl pkey -pubout` writes it, or
// the raw 32 bytes in base64 (what `freshet-hub -check` prints).
// deploy/keys/make-ack-key.sh and `freshet-hub -genkey` make the files.
package ackkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/freshet-iot/freshet/protocol"
)

// The file names Generate writes (and deploy/keys/make-ack-key.sh).
const (
	KeyFile = "hub-ack.key" // the private key: the hub's alone, mode 0600
	PubFile = "hub-ack.pub" // the public key: for every agent
)

// LoadSigner reads the hub's private key file.
func LoadSigner(path string) (*protocol.AckSigner, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivate(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return protocol.NewAckSigner(key)
}

// ParsePrivate parses an Ed25519 private key from PEM PKCS#8 ("PRIVATE KEY").
func ParsePrivate(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block: want an Ed25519 private key (openssl genpkey -algorithm ed25519)")
	}
	switch block.Type {
	case "PRIVATE KEY":
	case "PUBLIC KEY":
		return nil, errors.New("holds a public key: the hub signs with the private key (" + KeyFile + ")")
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("the private key is encrypted: the hub needs it unencrypted (keep the file 0600)")
	default:
		return nil, fmt.Errorf("PEM block %q: want PRIVATE KEY (PKCS#8, openssl genpkey -algorithm ed25519)", block.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PKCS#8: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %s key: want Ed25519 (openssl genpkey -algorithm ed25519)", keyType(k))
	}
	return key, nil
}

// ParsePublic parses every Ed25519 public key of PEM PKIX ("PUBLIC KEY")
// blocks: a file may hold several (old and new during a rotation).
func ParsePublic(data []byte) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "PUBLIC KEY":
		case "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("holds a private key: give agents only the public key (" + PubFile + ")")
		default:
			return nil, fmt.Errorf("PEM block %q: want PUBLIC KEY", block.Type)
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key %d: %w", len(out)+1, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key %d: a %s key, want Ed25519", len(out)+1, keyType(k))
		}
		out = append(out, pub)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM PUBLIC KEY block")
	}
	return out, nil
}

// LoadPublic reads the public keys of one entry of an agent's hub_keys:
// a base64 string of 32 bytes is a key itself, anything else is a file of
// PEM public keys.
func LoadPublic(entry string) ([]ed25519.PublicKey, error) {
	entry = strings.TrimSpace(entry)
	if b, err := base64.StdEncoding.DecodeString(entry); err == nil && len(b) == ed25519.PublicKeySize {
		return []ed25519.PublicKey{b}, nil
	}
	if entry == "" {
		return nil, errors.New("empty: want a PEM file of the hub's public key or the key in base64")
	}
	data, err := os.ReadFile(entry)
	if err != nil {
		return nil, fmt.Errorf("not a base64 Ed25519 public key (32 bytes), and not a readable file: %w", err)
	}
	keys, err := ParsePublic(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", entry, err)
	}
	return keys, nil
}

// LoadKeys reads every entry of an agent's hub_keys (key names the config
// key in errors: "mqtt.hub_keys[1]: ...").
func LoadKeys(entries []string, key string) (*protocol.AckKeys, error) {
	var pubs []ed25519.PublicKey
	for i, e := range entries {
		p, err := LoadPublic(e)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
		}
		pubs = append(pubs, p...)
	}
	return protocol.NewAckKeys(pubs...)
}

// PublicBase64 is a public key as hub_keys takes it inline.
func PublicBase64(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

// Generate makes a new key pair in dir: KeyFile (mode 0600) and PubFile
// (0644). It never overwrites a key: if either file exists it fails.
func Generate(dir string) (*protocol.AckSigner, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	keyPath, pubPath := filepath.Join(dir, KeyFile), filepath.Join(dir, PubFile)
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%s exists: move it away first (a new key is a rotation: README \"Signed acks\")", p)
		}
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	return protocol.NewAckSigner(key)
}

// writeNew creates path (never over an existing file) and syncs it.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// keyType names a key's package: "rsa", "ecdsa", "ecdh".
func keyType(k any) string {
	t, _, _ := strings.Cut(strings.TrimPrefix(fmt.Sprintf("%T", k), "*"), ".")
	return t
}
