package protocol_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/freshet-iot/freshet/protocol"
	"github.com/freshet-iot/freshet/protocol/prototest"
)

func testSigner(t testing.TB) *protocol.AckSigner {
	s, err := protocol.NewAckSigner(prototest.AckTestKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testKeys(t testing.TB, pubs ...ed25519.PublicKey) *protocol.AckKeys {
	k, err := protocol.NewAckKeys(pubs...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func unsignedCopy(a *protocol.Ack) *protocol.Ack {
	c := *a
	c.KeyID, c.Sig = "", nil
	return &c
}

// TestAckSignGolden: signing the golden ack gives its key id and signature
// exactly, the signed form is the documented layout, and it verifies.
// testdata/golden/ack-signature.txt spells it out for other
// implementations (-update rewrites it).
func TestAckSignGolden(t *testing.T) {
	s := testSigner(t)
	want := prototest.SignedAck()
	a := unsignedCopy(want)
	if err := s.Sign(a); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, a, equate); diff != "" {
		t.Fatalf("signed ack differs from the golden one (-want +got):\n%s", diff)
	}
	if err := testKeys(t, s.Public()).Verify(a); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// The layout, field by field.
	form := "667265736865742d61636b2d763200" + // "freshet-ack-v2" 0x00
		"02" + // version
		"00000004" + hex.EncodeToString([]byte("gw-1")) +
		"0000000000000001" + "0000000000000029" + // epoch 1, through 41
		"00000001" + "000000000000002b" + "000000000000002c" + // one range: 43..44
		"00000001" + "000000000000002b" + // one rejection: seq 43
		"0000000a" + hex.EncodeToString([]byte("not_finite")) +
		"00000022" + hex.EncodeToString([]byte("value not finite: reading 0 is NaN")) +
		"00000010" + hex.EncodeToString([]byte("21fe31dfa154a261"))
	if got := hex.EncodeToString(protocol.AckSigned(a)); got != form {
		t.Errorf("signed form\n got %s\nwant %s", got, form)
	}
	text := fmt.Sprintf("# The golden signed ack (ack-signed-v2.hex), for other implementations.\n"+
		"# Ed25519 seed (RFC 8032 test 1)\n%s\n# public key\n%x\n# key id: the first 8 bytes of SHA-256(public key), hex\n%s\n"+
		"# signed form: \"freshet-ack-v2\\x00\" version device epoch through ranges rejected key-id (protocol/sign.go)\n%s\n# signature\n%x\n",
		prototest.AckTestSeed, []byte(s.Public()), s.KeyID(), form, a.Sig)
	path := filepath.Join("testdata", "golden", "ack-signature.txt")
	if *update {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != text {
		t.Errorf("%s is out of date (run go test ./protocol -run TestAckSignGolden -update): %v", path, err)
	}
}

// TestAckTamper: changing any field of a signed ack, or any bit of its
// wire bytes that still decodes, fails verification.
func TestAckTamper(t *testing.T) {
	keys := testKeys(t, testSigner(t).Public())
	for name, tc := range map[string]struct {
		f    func(a *protocol.Ack)
		want error
	}{
		"version 1":        {func(a *protocol.Ack) { a.Version = 1 }, protocol.ErrUnsigned},
		"device":           {func(a *protocol.Ack) { a.Device = "gw-2" }, protocol.ErrBadSignature},
		"epoch":            {func(a *protocol.Ack) { a.Epoch++ }, protocol.ErrBadSignature},
		"through":          {func(a *protocol.Ack) { a.Through = 44 }, protocol.ErrBadSignature},
		"range first":      {func(a *protocol.Ack) { a.Ranges[0].First = 42 }, protocol.ErrBadSignature},
		"range last":       {func(a *protocol.Ack) { a.Ranges[0].Last = 99 }, protocol.ErrBadSignature},
		"range added":      {func(a *protocol.Ack) { a.Ranges = append(a.Ranges, protocol.SeqRange{First: 46, Last: 50}) }, protocol.ErrBadSignature},
		"ranges dropped":   {func(a *protocol.Ack) { a.Ranges = nil }, protocol.ErrBadSignature},
		"rejection seq":    {func(a *protocol.Ack) { a.Rejected[0].Seq = 44 }, protocol.ErrBadSignature},
		"rejection reason": {func(a *protocol.Ack) { a.Rejected[0].Reason = "bad_name" }, protocol.ErrBadSignature},
		"rejection detail": {func(a *protocol.Ack) { a.Rejected[0].Detail = "" }, protocol.ErrBadSignature},
		"rejection added": {func(a *protocol.Ack) {
			a.Rejected = append(a.Rejected, protocol.Rejection{Seq: 44, Reason: "x"})
		}, protocol.ErrBadSignature},
		"rejections dropped": {func(a *protocol.Ack) { a.Rejected = nil }, protocol.ErrBadSignature},
		"key id":             {func(a *protocol.Ack) { a.KeyID = "0000000000000000" }, protocol.ErrUnknownKey},
		"signature bit":      {func(a *protocol.Ack) { a.Sig[17] ^= 4 }, protocol.ErrBadSignature},
		"signature short":    {func(a *protocol.Ack) { a.Sig = a.Sig[:63] }, protocol.ErrBadSignature},
		"signature gone":     {func(a *protocol.Ack) { a.Sig = nil }, protocol.ErrBadSignature},
		"unsigned":           {func(a *protocol.Ack) { a.KeyID, a.Sig = "", nil }, protocol.ErrUnsigned},
		// Moving bytes between adjacent strings keeps their concatenation:
		// the length prefixes tell them apart.
		"reason/detail boundary": {func(a *protocol.Ack) {
			a.Rejected[0].Reason, a.Rejected[0].Detail = "not_finitev", "alue not finite: reading 0 is NaN"
		}, protocol.ErrBadSignature},
	} {
		t.Run(name, func(t *testing.T) {
			a := prototest.SignedAck()
			tc.f(a)
			err := keys.Verify(a)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if protocol.Reason(err) == "other" {
				t.Errorf("no named reason for %v", err)
			}
		})
	}
	// Every single-bit flip of the wire bytes: refused by the decoder, or
	// decoded into an ack that does not verify.
	wire, err := protocol.NewCodec(protocol.Limits{}).EncodeAck(prototest.SignedAck())
	if err != nil {
		t.Fatal(err)
	}
	c := protocol.NewCodec(protocol.Limits{})
	decoded := 0
	for i := range wire {
		for bit := range 8 {
			b := append([]byte(nil), wire...)
			b[i] ^= 1 << bit
			a, err := c.DecodeAck(b)
			if err != nil {
				continue
			}
			decoded++
			if err := keys.Verify(a); err == nil {
				t.Fatalf("byte %d bit %d flipped: %+v still verifies", i, bit, a)
			}
		}
	}
	if decoded < len(wire) {
		t.Errorf("only %d of %d flipped messages decoded: the test checks little", decoded, 8*len(wire))
	}
}

// TestAckKeys: another key's acks are refused whatever key id they claim;
// several keys (rotation, hubs with keys of their own) each verify their
// own; malformed keys are refused.
func TestAckKeys(t *testing.T) {
	ours := testSigner(t)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	other, err := protocol.NewAckSigner(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if ours.KeyID() == other.KeyID() || len(other.KeyID()) != 16 {
		t.Fatalf("key ids %q %q", ours.KeyID(), other.KeyID())
	}
	keys := testKeys(t, ours.Public())
	a := unsignedCopy(prototest.SignedAck())
	other.Sign(a)
	if err := keys.Verify(a); !errors.Is(err, protocol.ErrUnknownKey) {
		t.Errorf("another key's ack: %v", err)
	}
	a.KeyID = ours.KeyID() // claims ours, signed with the other
	if err := keys.Verify(a); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("another key's signature under our key id: %v", err)
	}
	both := testKeys(t, ours.Public(), other.Public(), ours.Public())
	if n := len(both.IDs()); n != 2 {
		t.Errorf("IDs: %d, want 2", n)
	}
	for _, s := range []*protocol.AckSigner{ours, other} {
		a := unsignedCopy(prototest.SignedAck())
		if err := s.Sign(a); err != nil {
			t.Fatal(err)
		}
		if err := both.Verify(a); err != nil {
			t.Errorf("key %s: %v", s.KeyID(), err)
		}
	}
	if err := (&protocol.AckKeys{}).Verify(prototest.SignedAck()); !errors.Is(err, protocol.ErrUnknownKey) {
		t.Errorf("no keys: %v", err)
	}
	if err := ours.Sign(prototest.V1(prototest.SimpleAck())); !errors.Is(err, protocol.ErrBadValue) {
		t.Errorf("signing a version 1 ack: %v", err)
	}
	if err := keys.Verify(prototest.V1(prototest.SimpleAck())); !errors.Is(err, protocol.ErrUnsigned) {
		t.Errorf("a version 1 ack: %v", err)
	}
	if _, err := protocol.NewAckKeys(ours.Public()[:31]); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("a short public key: %v", err)
	}
	if _, err := protocol.NewAckSigner(otherKey[:32]); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("a seed for a private key: %v", err)
	}
	// A signed ack round-trips the wire and still verifies.
	wire, err := protocol.NewCodec(protocol.Limits{}).EncodeAck(prototest.SignedAck())
	if err != nil {
		t.Fatal(err)
	}
	back, err := protocol.NewCodec(protocol.Limits{}).DecodeAck(wire)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Verify(back); err != nil {
		t.Errorf("after the wire: %v", err)
	}
}

func BenchmarkAckSign(b *testing.B) {
	s := testSigner(b)
	a := prototest.SignedAck()
	for b.Loop() {
		s.Sign(a)
	}
}

func BenchmarkAckVerify(b *testing.B) {
	keys := testKeys(b, testSigner(b).Public())
	a := prototest.SignedAck()
	for b.Loop() {
		if err := keys.Verify(a); err != nil {
			b.Fatal(err)
		}
	}
}
