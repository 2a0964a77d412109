// Package prototest holds the golden vectors of the wire protocol: one
// exported table of bytes <-> value, malformed and refused cases included,
// shared by the encoder and decoder tests here and by the hub's tests.
// protocol/testdata/golden holds the same bytes as .hex files for other
// implementations (a test keeps them in step with this table).
package prototest

import (
	"encoding/hex"
	"math"
	"strings"

	"github.com/freshet-iot/freshet/protocol"
)

// Kinds of vector.
const (
	KindBatch  = "batch"
	KindAck    = "ack"
	KindStatus = "status"
)

// Vector is one golden case.
//
//   - Hex set, Err nil: a valid message; decoding Hex gives the value, and
//     encoding the value gives Hex exactly.
//   - Hex set, Err set: decoding Hex fails with an error matching Err.
//   - Hex empty, Err set: encoding the value fails with an error matching Err.
type Vector struct {
	Name   string
	Kind   string
	Hex    string          // wire bytes, hex; spaces are ignored
	Limits protocol.Limits // zero: defaults
	Batch  *protocol.Batch
	Ack    *protocol.Ack
	Status *protocol.Status
	Err    error
}

// Bytes returns the vector's wire bytes.
func (v Vector) Bytes() []byte { return mustHex(v.Hex) }

// Pieces of batch/minimal, spliced into the malformed cases below.
const (
	minHead   = "98 01 01 a4 67772d31 01 01 cf 17979cfee8fa5e00 c0 91"  // array(8) v1 batch "gw-1" epoch 1 seq 1 sealTime no-gap array(1)
	minMeta   = "99 a6 626d65323830 ab 74656d7065726174757265 a1 43 90" // array(9) "bme280" "temperature" "C" labels[]
	minTimes  = "c4 08 09 80c49fd50c 02 00"                             // bin(8): precision 1 s, t0, +1, dod 0
	minValues = "c4 04 b221 02 03"                                      // bin(4): 2137, +1, -2
	minimal   = minHead + minMeta + "00 fe 03" + minTimes + minValues   // float, exponent -2, 3 readings
	// a one-reading series body after the metadata: count 1, t0
	oneTime = "01 c4 06 09 80c49fd50c"
)

// Vectors is the table. Names are unique and stable: they name the .hex
// files and the fuzz seeds.
var Vectors = []Vector{
	// Valid messages.
	{Name: "batch-minimal", Kind: KindBatch, Batch: V1(MinimalBatch()), Hex: minimal},
	{Name: "batch-all-types", Kind: KindBatch, Batch: V1(AllTypesBatch()), Hex: "" +
		"980101aa70692d6261726e2e3037cf9e3779b97f4a7c15cd012ccf17979d008a35e400c095" +
		"99a6696e61323139a763757272656e74a14194a3627573a56932632d31a473697465ab6e6f727468206669656c6400c003" +
		"c409078090d1ccf2093200c418000000000000c03ffa7e6abc749358bfffffffffffffef7f" +
		"99a7636f756e746572a670756c736573a09001c004c4090980c49fd50c020000c40d0002fcffffffffffffffff0102" +
		"99a4646f6f72a46f70656ea09002c009c412008280d0e2c6bfce972f0200000000000000c4021901" +
		"99a465786563a57374617465a09003c002c4070980c49fd50c7892a0b164c3a9666175743a20706f6d706520320a" +
		"99a6626d65323830a87072657373757265a2506190000201c4060980c49fd50cc402ea0f"},
	{Name: "batch-gap-only", Kind: KindBatch, Batch: V1(GapOnlyBatch()),
		Hex: "980101a467772d31070acf17979cfe362a0000 94 92 920202 920509 cd1194cf179799b805716000cf17979cfe3629ffff90"},
	{Name: "batch-jitter-1970", Kind: KindBatch, Batch: V1(JitterBatch()),
		Hex: "980101a467772d320202cf000000012a05f200c09199a3637075ab74656d7065726174757265a3c2b0439000fd05c40a06d00fd20f05cd0fd60fc40cf0f20500e20ad9fd05b8de05"},
	{Name: "ack-simple", Kind: KindAck, Ack: V1(SimpleAck()), Hex: "970102a467772d310129922b2c90"},
	{Name: "ack-rejection", Kind: KindAck, Ack: V1(RejectingAck()),
		Hex: "970102a467772d31010390919302aa6e6f745f66696e697465d92276616c7565206e6f742066696e6974653a2072656164696e672030206973204e614e"},
	{Name: "status-online", Kind: KindStatus, Status: V1(OnlineStatus()),
		Hex: "9d0103a467772d31a66f6e6c696e65cf17979cfe362a0000a676302e312e30012a9302cd0384cd0a8c00c3a09295a6626d65323830ce3b9aca00ce0001518001a96932633a206e61636b95a3637075cf00000002540be400cd21c000a0"},
	{Name: "status-offline-will", Kind: KindStatus, Status: V1(OfflineStatus()),
		Hex: "9d0103a467772d31a76f66666c696e6500a676302e312e3001009300000000c2d9266f7574626f7820636f72727570743a206d6f7665642061736964652c206e65772065706f636890"},
	// Version 2.
	{Name: "batch-settled-v2", Kind: KindBatch, Batch: V2(SettledBatch()),
		Hex: "9a0201a467772d31012bcf17979cfee8fa5e00c0 29 cf17979cfdfa8f3600 9199a6626d65323830ab74656d7065726174757265a1439000fe03c4080980c49fd50c0200c404b2210203"},
	{Name: "ack-ranges-v2", Kind: KindAck, Ack: V2(RangesAck()), Hex: "990202a467772d31012992922bcd03e892cd07d0cd07d790a0c0"},
	// SignedAck: ranges and a rejection, then the key id (str 16) and the
	// signature (bin 64) of AckTestKey.
	{Name: "ack-signed-v2", Kind: KindAck, Ack: SignedAck(), Hex: "990202a467772d31012991922b2c91932baa6e6f745f66696e697465" +
		"d92276616c7565206e6f742066696e6974653a2072656164696e672030206973204e614e" +
		"b0 32316665333164666131353461323631" +
		"c440 1d77e95d897338bbd58e081ed9106d9d9fb5b31d8680c25708c42b26eebbdd9c204412ef32536cb8207d5b5af00780c2ea65cc5fa4aba244c107b149aebd9b07"},
	{Name: "status-online-v2", Kind: KindStatus, Status: V2(with2(OnlineStatus(), func(s *protocol.Status) { s.Settled = 40 })),
		Hex: "9e0203a467772d31a66f6e6c696e65cf17979cfe362a0000a676302e312e30012a289302cd0384cd0a8c00c3a09295a6626d65323830ce3b9aca00ce0001518001a96932633a206e61636b95a3637075cf00000002540be400cd21c000a0"},

	// Malformed or refused on decode.
	{Name: "bad-empty-input", Kind: KindBatch, Hex: "", Err: protocol.ErrMalformed},
	{Name: "bad-not-array", Kind: KindBatch, Hex: "80", Err: protocol.ErrMalformed},
	{Name: "bad-version-3", Kind: KindBatch, Hex: "98 03" + minimal[5:], Err: protocol.ErrUnknownVersion},
	{Name: "bad-version-2-v1-fields", Kind: KindBatch, Hex: "98 02" + minimal[5:], Err: protocol.ErrMalformed},
	{Name: "bad-version-first", Kind: KindBatch, Hex: "92 07 01", Err: protocol.ErrUnknownVersion},
	{Name: "bad-kind-ack-as-batch", Kind: KindBatch, Hex: "970102a467772d310129922b2c90", Err: protocol.ErrUnknownKind},
	{Name: "bad-kind-batch-as-status", Kind: KindStatus, Hex: minimal, Err: protocol.ErrUnknownKind},
	{Name: "bad-field-count", Kind: KindBatch, Hex: "97 01 01 a4 67772d31 01 01 cf 17979cfee8fa5e00 c0", Err: protocol.ErrMalformed},
	{Name: "bad-truncated", Kind: KindBatch, Hex: minimal[:len(minimal)-2], Err: protocol.ErrMalformed},
	{Name: "bad-trailing-byte", Kind: KindBatch, Hex: minimal + "00", Err: protocol.ErrMalformed},
	{Name: "bad-device-slash", Kind: KindBatch, Hex: "98 01 01 a4 67772f31" + minimal[len("98 01 01 a4 67772d31"):], Err: protocol.ErrBadDevice},
	{Name: "bad-device-wildcard", Kind: KindBatch, Hex: "98 01 01 a4 67772b31" + minimal[len("98 01 01 a4 67772d31"):], Err: protocol.ErrBadDevice},
	{Name: "bad-epoch-zero", Kind: KindBatch, Hex: "98 01 01 a4 67772d31 00 01" + minimal[len("98 01 01 a4 67772d31 01 01"):], Err: protocol.ErrBadSeq},
	{Name: "bad-seq-zero", Kind: KindBatch, Hex: "98 01 01 a4 67772d31 01 00" + minimal[len("98 01 01 a4 67772d31 01 01"):], Err: protocol.ErrBadSeq},
	{Name: "bad-epoch-negative", Kind: KindBatch, Hex: "98 01 01 a4 67772d31 ff 01" + minimal[len("98 01 01 a4 67772d31 01 01"):], Err: protocol.ErrMalformed},
	{Name: "bad-epoch-float", Kind: KindBatch, Hex: "98 01 01 a4 67772d31 cb 3ff0000000000000 01" + minimal[len("98 01 01 a4 67772d31 01 01"):], Err: protocol.ErrMalformed},
	{Name: "bad-seal-time-negative", Kind: KindBatch, Hex: "98 01 01 a4 67772d31 01 01 ff c0 91" + minMeta + "00 fe 03" + minTimes + minValues, Err: protocol.ErrTimeRange},
	{Name: "bad-empty-batch", Kind: KindBatch, Hex: "98 01 01 a4 67772d31 01 01 cf 17979cfee8fa5e00 c0 90", Err: protocol.ErrEmpty},
	{Name: "bad-gap-reversed", Kind: KindBatch, Hex: "980101a467772d31070acf17979cfe362a0000 94 91 920905 cd1194cf179799b805716000cf17979cfe3629ffff90", Err: protocol.ErrBadSeq},
	{Name: "bad-gap-beyond-seq", Kind: KindBatch, Hex: "980101a467772d31070acf17979cfe362a0000 94 91 92050a cd1194cf179799b805716000cf17979cfe3629ffff90", Err: protocol.ErrBadSeq},
	{Name: "bad-gap-seq-zero", Kind: KindBatch, Hex: "980101a467772d31070acf17979cfe362a0000 94 91 920009 cd1194cf179799b805716000cf17979cfe3629ffff90", Err: protocol.ErrBadSeq},
	{Name: "bad-gap-unsorted", Kind: KindBatch, Hex: "980101a467772d31070acf17979cfe362a0000 94 92 920509 920202 cd1194cf179799b805716000cf17979cfe3629ffff90", Err: protocol.ErrBadSeq},
	{Name: "bad-gap-adjacent", Kind: KindBatch, Hex: "980101a467772d31070acf17979cfe362a0000 94 92 920204 920509 cd1194cf179799b805716000cf17979cfe3629ffff90", Err: protocol.ErrBadSeq},
	{Name: "bad-gap-no-readings", Kind: KindBatch, Hex: "980101a467772d31070acf17979cfe362a0000 94 91 920509 00 cf179799b805716000cf17979cfe3629ffff90", Err: protocol.ErrBadSeq},
	{Name: "bad-gap-short", Kind: KindBatch, Hex: "980101a467772d31070acf17979cfe362a0000 93 91 920509 cd1194 cf179799b805716000 90", Err: protocol.ErrMalformed},
	{Name: "bad-gap-range-short", Kind: KindBatch, Hex: "980101a467772d31070acf17979cfe362a0000 94 91 9105 cd1194cf179799b805716000cf17979cfe3629ffff90", Err: protocol.ErrMalformed},
	{Name: "bad-series-short", Kind: KindBatch, Hex: minHead + "98 a6 626d65323830 ab 74656d7065726174757265 a1 43 90 00 fe 03" + minTimes, Err: protocol.ErrMalformed},
	{Name: "bad-sensor-as-bin", Kind: KindBatch, Hex: minHead + "99 c4 06 626d65323830 ab 74656d7065726174757265 a1 43 90 00 fe 03" + minTimes + minValues, Err: protocol.ErrMalformed},
	{Name: "bad-sensor-empty", Kind: KindBatch, Hex: minHead + "99 a0 ab 74656d7065726174757265 a1 43 90 00 fe 03" + minTimes + minValues, Err: protocol.ErrBadName},
	{Name: "bad-sensor-space", Kind: KindBatch, Hex: minHead + "99 a6 626d65203830 ab 74656d7065726174757265 a1 43 90 00 fe 03" + minTimes + minValues, Err: protocol.ErrBadName},
	{Name: "bad-unit-control-char", Kind: KindBatch, Hex: minHead + "99 a6 626d65323830 ab 74656d7065726174757265 a1 07 90 00 fe 03" + minTimes + minValues, Err: protocol.ErrBadName},
	{Name: "bad-labels-unsorted", Kind: KindBatch, Hex: minHead + "99 a6 626d65323830 ab 74656d7065726174757265 a1 43 94 a1 62 a1 78 a1 61 a1 79 00 fe 03" + minTimes + minValues, Err: protocol.ErrBadName},
	{Name: "bad-label-reserved", Kind: KindBatch, Hex: minHead + "99 a6 626d65323830 ab 74656d7065726174757265 a1 43 92 a6 646576696365 a1 78 00 fe 03" + minTimes + minValues, Err: protocol.ErrBadName},
	{Name: "bad-labels-odd", Kind: KindBatch, Hex: minHead + "99 a6 626d65323830 ab 74656d7065726174757265 a1 43 91 a1 62 00 fe 03" + minTimes + minValues, Err: protocol.ErrMalformed},
	{Name: "bad-value-type", Kind: KindBatch, Hex: minHead + minMeta + "07 fe 03" + minTimes + minValues, Err: protocol.ErrBadValue},
	{Name: "bad-resolution-exponent", Kind: KindBatch, Hex: minHead + minMeta + "00 0c 03" + minTimes + minValues, Err: protocol.ErrResolution},
	{Name: "bad-resolution-on-int", Kind: KindBatch, Hex: minHead + minMeta + "01 fe 03" + minTimes + minValues, Err: protocol.ErrResolution},
	{Name: "bad-count-zero", Kind: KindBatch, Hex: minHead + minMeta + "00 fe 00 c4 01 09 c4 00", Err: protocol.ErrMalformed},
	{Name: "bad-count-above-times", Kind: KindBatch, Hex: minHead + minMeta + "00 fe 04" + minTimes + minValues, Err: protocol.ErrMalformed},
	{Name: "bad-count-below-times", Kind: KindBatch, Hex: minHead + minMeta + "00 fe 02" + minTimes + minValues, Err: protocol.ErrMalformed},
	{Name: "bad-time-precision", Kind: KindBatch, Hex: minHead + minMeta + "00 fe 03 c4 08 0a 80c49fd50c 02 00" + minValues, Err: protocol.ErrMalformed},
	{Name: "bad-time-negative", Kind: KindBatch, Hex: minHead + minMeta + "00 fe 03 c4 04 09 01 02 00" + minValues, Err: protocol.ErrTimeRange},
	{Name: "bad-time-after-2200", Kind: KindBatch, Hex: minHead + minMeta + "00 fe 01 c4 06 09 80c0b2cd3b c4 02 b221", Err: protocol.ErrTimeRange},
	{Name: "bad-time-overflow", Kind: KindBatch, Hex: minHead + minMeta + "00 fe 02 c4 10 09 80c49fd50c feffffffffffffffff01 c4 03 b221 00", Err: protocol.ErrTimeRange},
	{Name: "bad-values-trailing", Kind: KindBatch, Hex: minHead + minMeta + "00 fe 03" + minTimes + "c4 05 b221 02 03 00", Err: protocol.ErrMalformed},
	{Name: "bad-scaled-beyond-2^53", Kind: KindBatch, Hex: minHead + minMeta + "00 fe" + oneTime + "c4 09 8080808080808080 02", Err: protocol.ErrResolution},
	{Name: "bad-float-nan", Kind: KindBatch, Hex: minHead + minMeta + "00 c0" + oneTime + "c4 08 000000000000f87f", Err: protocol.ErrNotFinite},
	{Name: "bad-float-inf", Kind: KindBatch, Hex: minHead + minMeta + "00 c0" + oneTime + "c4 08 000000000000f0ff", Err: protocol.ErrNotFinite},
	{Name: "bad-float-short-column", Kind: KindBatch, Hex: minHead + minMeta + "00 c0" + oneTime + "c4 07 00000000000000", Err: protocol.ErrMalformed},
	{Name: "bad-bool-spare-bits", Kind: KindBatch, Hex: minHead + minMeta + "02 c0" + oneTime + "c4 01 03", Err: protocol.ErrMalformed},
	{Name: "bad-string-not-utf8", Kind: KindBatch, Hex: minHead + minMeta + "03 c0" + oneTime + "91 a1 ff", Err: protocol.ErrBadValue},
	{Name: "bad-string-count", Kind: KindBatch, Hex: minHead + minMeta + "03 c0" + oneTime + "92 a1 61 a1 62", Err: protocol.ErrMalformed},
	{Name: "bad-string-as-bin", Kind: KindBatch, Hex: minHead + minMeta + "03 c0" + oneTime + "c4 01 61", Err: protocol.ErrMalformed},
	{Name: "limit-too-large", Kind: KindBatch, Hex: strings.Repeat("c0", 513), Limits: protocol.Limits{MaxMessageBytes: 512}, Err: protocol.ErrTooLarge},
	{Name: "limit-series", Kind: KindBatch, Hex: "", Limits: protocol.Limits{MaxSeries: 4}, Err: protocol.ErrTooManySeries}, // Hex filled in init from batch-all-types
	{Name: "limit-readings", Kind: KindBatch, Hex: minimal, Limits: protocol.Limits{MaxReadings: 2}, Err: protocol.ErrTooManyReadings},
	{Name: "limit-name-length", Kind: KindBatch, Hex: minimal, Limits: protocol.Limits{MaxNameLen: 8}, Err: protocol.ErrStringTooLong},
	{Name: "limit-labels", Kind: KindBatch, Hex: "", Limits: protocol.Limits{MaxLabels: 1}, Err: protocol.ErrTooManyLabels}, // from batch-all-types
	{Name: "limit-time-window", Kind: KindBatch, Hex: minimal, Limits: protocol.Limits{MinTime: T0 + 1}, Err: protocol.ErrTimeRange},
	{Name: "bad-ack-applied-unsorted", Kind: KindAck, Hex: "970102a467772d310129922c2b90", Err: protocol.ErrBadSeq},
	{Name: "bad-ack-applied-not-above", Kind: KindAck, Hex: "970102a467772d310129922929 90", Err: protocol.ErrBadSeq},
	{Name: "bad-ack-epoch-zero", Kind: KindAck, Hex: "970102a467772d310029922b2c90", Err: protocol.ErrBadSeq},
	{Name: "limit-ack-seqs", Kind: KindAck, Hex: "970102a467772d310129922b2c90", Limits: protocol.Limits{MaxAckSeqs: 1}, Err: protocol.ErrTooManySeqs},
	{Name: "bad-ack-rejection-seq-zero", Kind: KindAck, Hex: "970102a467772d310103909193 00 aa6e6f745f66696e697465 a0", Err: protocol.ErrBadSeq},
	{Name: "bad-status-state", Kind: KindStatus, Hex: "9d0103a467772d31a5736c65657000a676302e312e3001009300000000c2a090", Err: protocol.ErrBadValue},
	{Name: "bad-status-version", Kind: KindStatus, Hex: "9d0903a467772d31a76f66666c696e6500a676302e312e3001009300000000c2a090", Err: protocol.ErrUnknownVersion},
	{Name: "bad-ack-v2-range-adjacent", Kind: KindAck, Hex: "990202a467772d3101299192 2a cd03e8 90a0c0", Err: protocol.ErrBadSeq},
	{Name: "bad-ack-v2-range-reversed", Kind: KindAck, Hex: "990202a467772d3101299192 cd03e8 2b 90a0c0", Err: protocol.ErrBadSeq},
	{Name: "bad-ack-v2-sig-without-key", Kind: KindAck, Hex: "990202a467772d310129 90 90 a0 c4 02 0102", Err: protocol.ErrBadSignature},
	{Name: "bad-ack-v2-short-sig", Kind: KindAck, Hex: "990202a467772d310129 90 90 a1 6b c4 02 0102", Err: protocol.ErrBadSignature},
	{Name: "bad-ack-v2-v1-fields", Kind: KindAck, Hex: "970202a467772d310129922b2c90", Err: protocol.ErrMalformed},
	{Name: "bad-batch-v2-before-negative", Kind: KindBatch, Hex: "9a0201a467772d31012bcf17979cfee8fa5e00c0 29 ff 9199a6626d65323830ab74656d7065726174757265a1439000fe03c4080980c49fd50c0200c404b2210203", Err: protocol.ErrTimeRange},
	{Name: "bad-batch-v2-settled-not-below", Kind: KindBatch, Hex: "9a0201a467772d31012bcf17979cfee8fa5e00c0 2b cf17979cfdfa8f3600 9199a6626d65323830ab74656d7065726174757265a1439000fe03c4080980c49fd50c0200c404b2210203", Err: protocol.ErrBadSeq},
	{Name: "bad-status-clock-not-bool", Kind: KindStatus, Hex: "9d0103a467772d31a76f66666c696e6500a676302e312e3001009300000000 01 a090", Err: protocol.ErrMalformed},

	// Refused on encode: the agent can never send what the hub would refuse.
	{Name: "enc-nan", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Series[0].Floats[1] = math.NaN() }), Err: protocol.ErrNotFinite},
	{Name: "enc-inf", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Series[0].Floats[1] = math.Inf(-1) }), Err: protocol.ErrNotFinite},
	{Name: "enc-seq-zero", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Seq = 0 }), Err: protocol.ErrBadSeq},
	{Name: "enc-device", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Device = "gw#1" }), Err: protocol.ErrBadDevice},
	{Name: "enc-beyond-resolution", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Series[0].Floats[0] = 1e300 }), Err: protocol.ErrResolution},
	{Name: "enc-resolution-not-pow10", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Series[0].Resolution = 0.05 }), Err: protocol.ErrResolution},
	{Name: "enc-length-mismatch", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Series[0].Floats = b.Series[0].Floats[:2] }), Err: protocol.ErrBadValue},
	{Name: "enc-time-negative", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Series[0].Times[0] = -1 }), Err: protocol.ErrTimeRange},
	{Name: "enc-empty", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Series = nil }), Err: protocol.ErrEmpty},
	{Name: "enc-labels-unsorted", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) {
		b.Series[0].Labels = []protocol.Label{{Key: "site", Value: "a"}, {Key: "bus", Value: "b"}}
	}), Err: protocol.ErrBadName},
	{Name: "enc-string-too-long", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) {
		b.Series[0] = protocol.Series{Sensor: "exec", Metric: "out", Type: protocol.String, Times: []int64{T0}, Strings: []string{strings.Repeat("x", 1025)}}
	}), Err: protocol.ErrStringTooLong},
	{Name: "enc-label-trailing-backslash", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) {
		b.Series[0].Labels = []protocol.Label{{Key: "path", Value: `C:\`}}
	}), Err: protocol.ErrBadName},
	{Name: "enc-ack-unsorted", Kind: KindAck, Ack: &protocol.Ack{Device: "gw-1", Epoch: 1, Ranges: []protocol.SeqRange{{First: 5, Last: 5}, {First: 3, Last: 3}}}, Err: protocol.ErrBadSeq},
	{Name: "enc-ack-adjacent", Kind: KindAck, Ack: &protocol.Ack{Device: "gw-1", Epoch: 1, Through: 4, Ranges: []protocol.SeqRange{{First: 5, Last: 7}}}, Err: protocol.ErrBadSeq},
	{Name: "enc-ack-v1-too-many-seqs", Kind: KindAck, Ack: &protocol.Ack{Version: 1, Device: "gw-1", Epoch: 1, Ranges: []protocol.SeqRange{{First: 2, Last: 1026}}}, Err: protocol.ErrTooManySeqs},
	{Name: "enc-batch-settled-not-below", Kind: KindBatch, Batch: with(SettledBatch(), func(b *protocol.Batch) { b.Settled = b.Seq }), Err: protocol.ErrBadSeq},
	{Name: "enc-batch-v1-settled", Kind: KindBatch, Batch: V1(SettledBatch()), Err: protocol.ErrBadValue},
	{Name: "enc-version-3", Kind: KindBatch, Batch: with(MinimalBatch(), func(b *protocol.Batch) { b.Version = 3 }), Err: protocol.ErrUnknownVersion},
	{Name: "enc-status-state", Kind: KindStatus, Status: &protocol.Status{Device: "gw-1", State: "asleep"}, Err: protocol.ErrBadValue},
}

func init() {
	for i := range Vectors {
		if Vectors[i].Name == "limit-series" || Vectors[i].Name == "limit-labels" {
			Vectors[i].Hex = Vectors[1].Hex // batch-all-types
		}
	}
}

func with(b *protocol.Batch, f func(*protocol.Batch)) *protocol.Batch { f(b); return b }

func with2(s *protocol.Status, f func(*protocol.Status)) *protocol.Status { f(s); return s }

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic("prototest: " + err.Error())
	}
	return b
}
