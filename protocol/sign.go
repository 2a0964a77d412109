package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// An ack makes an agent delete readings, so the hub signs every version 2
// ack with an Ed25519 key and the agent obeys only acks signed by a key it
// was given: whoever else can publish on the ack topic (a broker open by
// mistake, a compromised device account) cannot make it delete anything.
//
// The signature covers the ack's signed form (AckSigned): a domain prefix,
// then every field the ack carries except the signature itself, each in a
// fixed binary layout independent of the msgpack on the wire:
//
//	"freshet-ack-v2" 0x00       15 bytes: the domain, so no other message signed with the key reads as an ack
//	version                     u8 (2)
//	device                      str
//	epoch, through              u64, u64
//	ranges                      u32 count, then first u64, last u64 each
//	rejected                    u32 count, then seq u64, reason str, detail str each
//	key id                      str
//
// Integers are big-endian; a str is its byte length as a u32, then its
// bytes. Version 1 acks carry no signature.

// AckSigDomain begins the signed form of every ack.
const AckSigDomain = "freshet-ack-v2\x00"

// AckKeyID names a hub's public key in acks: the first 8 bytes of its
// SHA-256, in hex (16 characters). It is stable, and short enough for
// every ack.
func AckKeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// AckSigned returns the bytes a's signature covers (see above). a need not
// be valid: AckSigner.Sign and AckKeys.Verify work on validated acks.
func AckSigned(a *Ack) []byte {
	n := len(AckSigDomain) + 1 + 4 + len(a.Device) + 16 + 4 + 16*len(a.Ranges) + 4 + 4 + len(a.KeyID)
	for _, r := range a.Rejected {
		n += 8 + 4 + len(r.Reason) + 4 + len(r.Detail)
	}
	b := make([]byte, 0, n)
	str := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	b = append(b, AckSigDomain...)
	b = append(b, a.Version)
	str(a.Device)
	b = binary.BigEndian.AppendUint64(b, a.Epoch)
	b = binary.BigEndian.AppendUint64(b, a.Through)
	b = binary.BigEndian.AppendUint32(b, uint32(len(a.Ranges)))
	for _, r := range a.Ranges {
		b = binary.BigEndian.AppendUint64(b, r.First)
		b = binary.BigEndian.AppendUint64(b, r.Last)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(a.Rejected)))
	for _, r := range a.Rejected {
		b = binary.BigEndian.AppendUint64(b, r.Seq)
		str(r.Reason)
		str(r.Detail)
	}
	str(a.KeyID)
	return b
}

// AckSigner signs acks with a hub's private key. It is safe for
// concurrent use.
type AckSigner struct {
	key ed25519.PrivateKey
	id  string
}

// NewAckSigner returns a signer for an Ed25519 private key.
func NewAckSigner(key ed25519.PrivateKey) (*AckSigner, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: an Ed25519 private key is %d bytes, not %d", ErrBadSignature, ed25519.PrivateKeySize, len(key))
	}
	return &AckSigner{key: key, id: AckKeyID(key.Public().(ed25519.PublicKey))}, nil
}

// KeyID is the id the signer puts in its acks (AckKeyID of its public key).
func (s *AckSigner) KeyID() string { return s.id }

// Public is the signer's public key: what agents are given.
func (s *AckSigner) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign sets a's KeyID and Sig. Only version 2 acks carry a signature:
// signing a version 1 ack fails with ErrBadValue.
func (s *AckSigner) Sign(a *Ack) error {
	v, err := version(a.Version)
	if err != nil {
		return err
	}
	if v < 2 {
		return fmt.Errorf("%w: version 1 acks are not signed", ErrBadValue)
	}
	a.Version, a.KeyID = v, s.id
	a.Sig = ed25519.Sign(s.key, AckSigned(a))
	return nil
}

// AckKeys are the hub public keys an agent obeys, by key id. Several keys
// serve hubs with keys of their own and key rotation (old and new listed
// together). The zero value holds none and verifies nothing.
type AckKeys struct {
	keys map[string]ed25519.PublicKey
}

// NewAckKeys returns the set of pubs; a key listed twice counts once.
func NewAckKeys(pubs ...ed25519.PublicKey) (*AckKeys, error) {
	k := &AckKeys{keys: make(map[string]ed25519.PublicKey, len(pubs))}
	for i, p := range pubs {
		if len(p) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: key %d: an Ed25519 public key is %d bytes, not %d", ErrBadSignature, i, ed25519.PublicKeySize, len(p))
		}
		k.keys[AckKeyID(p)] = p
	}
	return k, nil
}

// IDs lists the key ids, in no particular order.
func (k *AckKeys) IDs() []string {
	out := make([]string, 0, len(k.keys))
	for id := range k.keys {
		out = append(out, id)
	}
	return out
}

// Verify reports whether a is signed by one of the keys: nil if so, else
// an error wrapping ErrUnsigned (no signature, or version 1),
// ErrUnknownKey (a key id not among the keys) or ErrBadSignature (the
// signature does not verify: a forgery, or an ack changed on the way).
func (k *AckKeys) Verify(a *Ack) error {
	if a.Version < 2 || a.KeyID == "" && len(a.Sig) == 0 {
		return fmt.Errorf("%w: version %d ack without a signature", ErrUnsigned, a.Version)
	}
	pub, ok := k.keys[a.KeyID]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownKey, clip(a.KeyID))
	}
	if len(a.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, AckSigned(a), a.Sig) {
		return fmt.Errorf("%w: ack for %s epoch %016x through %d does not verify with key %s", ErrBadSignature, clip(a.Device), a.Epoch, a.Through, a.KeyID)
	}
	return nil
}
