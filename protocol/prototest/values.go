package prototest

import (
	"crypto/ed25519"
	"math"

	"github.com/freshet-iot/freshet/protocol"
)

// T0 is 2023-11-14T22:13:20Z in Unix ns, the base time of the vectors.
const T0 = int64(1_700_000_000) * 1e9

const sec = int64(1e9)

// MinimalBatch: one BME280 temperature series at resolution 0.01, 1 Hz.
func MinimalBatch() *protocol.Batch {
	return &protocol.Batch{
		Device: "gw-1", Epoch: 1, Seq: 1, SealTime: T0 + 3*sec,
		Series: []protocol.Series{{
			Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Float, Resolution: 0.01,
			Times:  []int64{T0, T0 + sec, T0 + 2*sec},
			Floats: []float64{21.37, 21.38, 21.36},
		}},
	}
}

// AllTypesBatch: every value type, raw and scaled floats, labels, a large epoch.
func AllTypesBatch() *protocol.Batch {
	ms := int64(1e6)
	return &protocol.Batch{
		Device: "pi-barn.07", Epoch: 0x9e3779b97f4a7c15, Seq: 300, SealTime: T0 + 10*sec,
		Series: []protocol.Series{
			{Sensor: "ina219", Metric: "current", Unit: "A", Type: protocol.Float,
				Labels: []protocol.Label{{Key: "bus", Value: "i2c-1"}, {Key: "site", Value: "north field"}},
				Times:  []int64{T0, T0 + 250*ms, T0 + 500*ms},
				Floats: []float64{0.125, -1.5e-3, math.MaxFloat64}},
			{Sensor: "counter", Metric: "pulses", Type: protocol.Int,
				Times: []int64{T0, T0 + sec, T0 + 2*sec, T0 + 3*sec},
				Ints:  []int64{0, 1, math.MaxInt64, math.MinInt64}},
			{Sensor: "door", Metric: "open", Type: protocol.Bool,
				Times: []int64{T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5, T0 + 6, T0 + 7, T0 + 8, T0 + 9},
				Bools: []bool{true, false, false, true, true, false, false, false, true}},
			{Sensor: "exec", Metric: "state", Type: protocol.String,
				Times:   []int64{T0, T0 + 60*sec},
				Strings: []string{"", "défaut: pompe 2\n"}},
			{Sensor: "bme280", Metric: "pressure", Unit: "Pa", Type: protocol.Float, Resolution: 100,
				Times:  []int64{T0},
				Floats: []float64{101300}},
		},
	}
}

// GapOnlyBatch: nothing but a gap notice (the agent dropped batches 2 and 5..9).
func GapOnlyBatch() *protocol.Batch {
	return &protocol.Batch{
		Device: "gw-1", Epoch: 7, Seq: 10, SealTime: T0,
		Gap: &protocol.Gap{Seqs: []protocol.SeqRange{{First: 2, Last: 2}, {First: 5, Last: 9}}, Readings: 4500, FirstTime: T0 - 3600*sec, LastTime: T0 - 1},
	}
}

// JitterBatch: millisecond timestamps with jitter, one out of order, and an
// RTC-less start in 1970.
func JitterBatch() *protocol.Batch {
	ms := int64(1e6)
	return &protocol.Batch{
		Device: "gw-2", Epoch: 2, Seq: 2, SealTime: 5 * sec,
		Series: []protocol.Series{{
			Sensor: "cpu", Metric: "temperature", Unit: "°C", Type: protocol.Float, Resolution: 0.001,
			Times:  []int64{1000 * ms, 2001 * ms, 2999 * ms, 2998 * ms, 4000 * ms},
			Floats: []float64{48.312, 48.312, 49.001, -0.004, 47},
		}},
	}
}

// SimpleAck settles 1..41 and 43, 44.
func SimpleAck() *protocol.Ack {
	return &protocol.Ack{Device: "gw-1", Epoch: 1, Through: 41, Ranges: []protocol.SeqRange{{First: 43, Last: 44}}}
}

// RangesAck settles 1..41, 43..1000 and 2000..2007: one range stands for
// any number of seqs.
func RangesAck() *protocol.Ack {
	return &protocol.Ack{Device: "gw-1", Epoch: 1, Through: 41, Ranges: []protocol.SeqRange{{First: 43, Last: 1000}, {First: 2000, Last: 2007}}}
}

// SettledBatch is MinimalBatch as a version 2 agent seals it after 41
// batches settled: its settled mark and the time bound of the earlier readings.
func SettledBatch() *protocol.Batch {
	b := MinimalBatch()
	b.Seq, b.Settled, b.Before = 43, 41, T0-sec
	return b
}

// V1 marks a message value as version 1.
func V1[T *protocol.Batch | *protocol.Ack | *protocol.Status](m T) T {
	switch m := any(m).(type) {
	case *protocol.Batch:
		m.Version = 1
	case *protocol.Ack:
		m.Version = 1
	case *protocol.Status:
		m.Version = 1
	}
	return m
}

// V2 marks a message value as version 2 (as decoded).
func V2[T *protocol.Batch | *protocol.Ack | *protocol.Status](m T) T {
	switch m := any(m).(type) {
	case *protocol.Batch:
		m.Version = 2
	case *protocol.Ack:
		m.Version = 2
	case *protocol.Status:
		m.Version = 2
	}
	return m
}

// AckTestSeed is the seed of the Ed25519 key the golden signed ack is
// signed with: RFC 8032's first test key, so any Ed25519 implementation can
// check the vector. Never use it for anything else.
const AckTestSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"

// AckTestKey is the private key of AckTestSeed.
func AckTestKey() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(mustHex(AckTestSeed)) }

// SignedAck settles 1..41 and 43, 44, says 43 was refused, and is signed
// with AckTestKey (key id 21fe31dfa154a261). Ed25519 signatures are
// deterministic: signing it again gives the same Sig.
func SignedAck() *protocol.Ack {
	return &protocol.Ack{Version: 2, Device: "gw-1", Epoch: 1, Through: 41, Ranges: []protocol.SeqRange{{First: 43, Last: 44}},
		Rejected: []protocol.Rejection{{Seq: 43, Reason: "not_finite", Detail: "value not finite: reading 0 is NaN"}},
		KeyID:    "21fe31dfa154a261",
		Sig: mustHex("1d77e95d897338bbd58e081ed9106d9d9fb5b31d8680c25708c42b26eebbdd9c" +
			"204412ef32536cb8207d5b5af00780c2ea65cc5fa4aba244c107b149aebd9b07"),
	}
}

// RejectingAck settles 1..3 and says 2 was refused.
func RejectingAck() *protocol.Ack {
	return &protocol.Ack{Device: "gw-1", Epoch: 1, Through: 3,
		Rejected: []protocol.Rejection{{Seq: 2, Reason: "not_finite", Detail: "value not finite: reading 0 is NaN"}}}
}

// OnlineStatus is a birth status with two sensors.
func OnlineStatus() *protocol.Status {
	return &protocol.Status{
		Device: "gw-1", State: protocol.StateOnline, Time: T0, AgentVersion: "v0.1.0",
		Epoch: 1, LastSeq: 42, Backlog: protocol.Backlog{Batches: 2, Readings: 900, Bytes: 2700},
		Dropped: 0, ClockSynced: true,
		Sensors: []protocol.SensorStatus{
			{Name: "bme280", Interval: sec, Reads: 86400, Errors: 1, LastError: "i2c: nack"},
			{Name: "cpu", Interval: 10 * sec, Reads: 8640},
		},
	}
}

// OfflineStatus is a last will: no time, no sensors.
func OfflineStatus() *protocol.Status {
	return &protocol.Status{Device: "gw-1", State: protocol.StateOffline, AgentVersion: "v0.1.0", Epoch: 1,
		Notice: "outbox corrupt: moved aside, new epoch"}
}
