package protocol_test

import (
	"crypto/ed25519"
	"reflect"
	"testing"

	"github.com/freshet-iot/freshet/protocol"
	"github.com/freshet-iot/freshet/protocol/prototest"
)

// The seed corpus is testdata/fuzz/Fuzz*/ (written from prototest.Vectors by
// TestGoldenFiles -update) plus the f.Add calls below.

func seed(f *testing.F, kind string) {
	for _, v := range prototest.Vectors {
		if v.Kind == kind && v.Hex != "" {
			f.Add(v.Bytes())
		}
	}
}

// FuzzDecodeBatch: no input panics, hangs or decodes into something the
// encoder refuses; whatever decodes re-encodes and decodes to the same batch.
func FuzzDecodeBatch(f *testing.F) {
	seed(f, prototest.KindBatch)
	c := protocol.NewCodec(protocol.Limits{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var b protocol.Batch
		if err := c.DecodeBatch(data, &b); err != nil {
			if protocol.Reason(err) == "other" {
				t.Fatalf("error without a named reason: %v", err)
			}
			return
		}
		again, err := c.EncodeBatch(&b)
		if err != nil {
			t.Fatalf("decoded batch does not re-encode: %v", err)
		}
		var b2 protocol.Batch
		if err := c.DecodeBatch(again, &b2); err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if !sameBatch(&b, &b2) {
			t.Fatalf("round trip changed the batch")
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	seed(f, prototest.KindAck)
	c := protocol.NewCodec(protocol.Limits{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := c.DecodeAck(data)
		if err != nil {
			if protocol.Reason(err) == "other" {
				t.Fatalf("error without a named reason: %v", err)
			}
			return
		}
		if _, err := c.EncodeAck(a); err != nil {
			t.Fatalf("decoded ack does not re-encode: %v", err)
		}
	})
}

func FuzzDecodeStatus(f *testing.F) {
	seed(f, prototest.KindStatus)
	c := protocol.NewCodec(protocol.Limits{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := c.DecodeStatus(data)
		if err != nil {
			if protocol.Reason(err) == "other" {
				t.Fatalf("error without a named reason: %v", err)
			}
			return
		}
		if _, err := c.EncodeStatus(s); err != nil {
			t.Fatalf("decoded status does not re-encode: %v", err)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"freshet/v1/gw-1/batch", "freshet/v1/+/ack", "freshet/v1//status", "x"} {
		f.Add(s)
	}
	tp, _ := protocol.NewTopics("")
	f.Fuzz(func(t *testing.T, topic string) {
		d, k, err := tp.Parse(topic)
		if err != nil {
			return
		}
		if tp.Topic(d, k) != topic {
			t.Fatalf("Parse(%q) = %q, %q which builds %q", topic, d, k, tp.Topic(d, k))
		}
	})
}

// FuzzVerifyAck: whatever decodes and verifies with the golden key is the
// golden signed ack, field for field (the fuzzer cannot sign: a mutation
// that still verifies is a field the signature does not cover), and every
// refusal has a named reason.
func FuzzVerifyAck(f *testing.F) {
	seed(f, prototest.KindAck)
	c := protocol.NewCodec(protocol.Limits{})
	keys, err := protocol.NewAckKeys(prototest.AckTestKey().Public().(ed25519.PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	want := prototest.SignedAck()
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := c.DecodeAck(data)
		if err != nil {
			return
		}
		if err := keys.Verify(a); err != nil {
			if protocol.Reason(err) == "other" {
				t.Fatalf("error without a named reason: %v", err)
			}
			return
		}
		if !reflect.DeepEqual(a, want) {
			t.Fatalf("verified, but differs from the signed ack: %+v", a)
		}
	})
}
