package protocol_test

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/freshet-iot/freshet/protocol"
	"github.com/freshet-iot/freshet/protocol/prototest"
)

var update = flag.Bool("update", false, "rewrite testdata/golden and the fuzz seed corpus from prototest.Vectors")

var equate = cmpopts.EquateEmpty()

// decode decodes v's bytes by its kind, returning the value or an error.
func decode(v prototest.Vector, data []byte) (any, error) {
	c := protocol.NewCodec(v.Limits)
	switch v.Kind {
	case prototest.KindBatch:
		var b protocol.Batch
		err := c.DecodeBatch(data, &b)
		return &b, err
	case prototest.KindAck:
		return c.DecodeAck(data)
	case prototest.KindStatus:
		return c.DecodeStatus(data)
	}
	return nil, fmt.Errorf("unknown kind %q", v.Kind)
}

func value(v prototest.Vector) any {
	switch v.Kind {
	case prototest.KindBatch:
		return v.Batch
	case prototest.KindAck:
		return v.Ack
	}
	return v.Status
}

func encode(v prototest.Vector) ([]byte, error) {
	c := protocol.NewCodec(v.Limits)
	switch v.Kind {
	case prototest.KindBatch:
		return c.EncodeBatch(v.Batch)
	case prototest.KindAck:
		return c.EncodeAck(v.Ack)
	}
	return c.EncodeStatus(v.Status)
}

func TestGoldenDecode(t *testing.T) {
	for _, v := range prototest.Vectors {
		if v.Hex == "" && v.Err != nil && v.Name != "bad-empty-input" {
			continue // an encode-only vector
		}
		t.Run(v.Name, func(t *testing.T) {
			got, err := decode(v, v.Bytes())
			if v.Err != nil {
				if !errors.Is(err, v.Err) {
					t.Fatalf("decode error = %v, want %v", err, v.Err)
				}
				if r := protocol.Reason(err); r == "other" || r == "" {
					t.Errorf("Reason(%v) = %q, want a named reason", err, r)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmp.Diff(value(v), got, equate); diff != "" {
				t.Errorf("decoded value differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGoldenEncode(t *testing.T) {
	for _, v := range prototest.Vectors {
		if v.Batch == nil && v.Ack == nil && v.Status == nil {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			got, err := encode(v)
			if v.Err != nil {
				if !errors.Is(err, v.Err) {
					t.Fatalf("encode error = %v, want %v", err, v.Err)
				}
				return
			}
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if want := v.Bytes(); string(got) != string(want) {
				t.Errorf("encoding differs\n got %x\nwant %x", got, want)
			}
		})
	}
}

func TestGoldenNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range prototest.Vectors {
		if seen[v.Name] {
			t.Errorf("duplicate vector name %q", v.Name)
		}
		seen[v.Name] = true
		if v.Hex == "" && v.Err == nil {
			t.Errorf("%s: neither bytes nor an error", v.Name)
		}
	}
}

// TestGoldenFiles keeps testdata/golden/*.hex (for other implementations)
// and the fuzz seed corpus in step with the table; -update rewrites them.
func TestGoldenFiles(t *testing.T) {
	want := map[string]string{}
	for _, v := range prototest.Vectors {
		if v.Hex == "" {
			continue
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "# %s (%s)", v.Name, v.Kind)
		if v.Err != nil {
			fmt.Fprintf(&sb, ": refused with %q", protocol.Reason(v.Err))
		}
		if v.Limits != (protocol.Limits{}) {
			fmt.Fprintf(&sb, " under limits %+v", v.Limits)
		}
		fmt.Fprintf(&sb, "\n%s\n", hex.EncodeToString(v.Bytes()))
		want[filepath.Join("testdata", "golden", v.Name+".hex")] = sb.String()
		fuzzDir := map[string]string{prototest.KindBatch: "FuzzDecodeBatch", prototest.KindAck: "FuzzDecodeAck", prototest.KindStatus: "FuzzDecodeStatus"}[v.Kind]
		want[filepath.Join("testdata", "fuzz", fuzzDir, v.Name)] = fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", v.Bytes())
	}
	if *update {
		for _, dir := range []string{"testdata/golden", "testdata/fuzz/FuzzDecodeBatch", "testdata/fuzz/FuzzDecodeAck", "testdata/fuzz/FuzzDecodeStatus"} {
			os.MkdirAll(dir, 0o755)
		}
		for p, s := range want {
			if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for p, s := range want {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%v (run go test ./protocol -run TestGoldenFiles -update)", err)
			continue
		}
		if string(got) != s {
			t.Errorf("%s is out of date (run go test ./protocol -run TestGoldenFiles -update)", p)
		}
	}
	files, _ := filepath.Glob("testdata/golden/*.hex")
	for _, f := range files {
		if _, ok := want[f]; !ok {
			t.Errorf("%s has no vector in prototest.Vectors", f)
		}
	}
}

// TestPeekHeader: a batch that fails deep inside still yields its header,
// so the hub can reject it by seq; garbage yields an error.
func TestPeekHeader(t *testing.T) {
	c := protocol.NewCodec(protocol.Limits{})
	for _, v := range prototest.Vectors {
		if v.Kind != prototest.KindBatch || v.Hex == "" {
			continue
		}
		p, err := c.PeekHeader(v.Bytes())
		switch v.Name {
		case "batch-minimal", "bad-float-nan", "bad-values-trailing", "bad-labels-unsorted":
			if err != nil || p != (protocol.Peeked{Version: 1, Device: "gw-1", Epoch: 1, Seq: 1}) {
				t.Errorf("%s: PeekHeader = %+v %v", v.Name, p, err)
			}
		case "batch-settled-v2", "bad-batch-v2-before-negative":
			if err != nil || p != (protocol.Peeked{Version: 2, Device: "gw-1", Epoch: 1, Seq: 43}) {
				t.Errorf("%s: PeekHeader = %+v %v", v.Name, p, err)
			}
		case "bad-empty-input", "bad-not-array", "bad-version-3", "bad-version-2-v1-fields", "bad-device-slash", "bad-seq-zero":
			if err == nil {
				t.Errorf("%s: PeekHeader accepted it", v.Name)
			}
		}
	}
}
