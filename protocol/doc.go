// Package protocol is freshet's wire format, version 2 (it reads version
// 1 too): the messages agents and hubs exchange over MQTT, their topics,
// and the limits every decoder enforces. Both sides build on it:
// agent/outbox seals batches with its Packer, agent/forward decodes and
// verifies acks, hub/ingest decodes batches and statuses and encodes and
// signs acks.
//
// # Messages
//
//   - Batch (agent -> hub, freshet/v1/{device}/batch, QoS 1): the readings
//     sealed under one (device, epoch, seq), as columnar Series, with an
//     optional Gap notice of readings the agent dropped.
//   - Ack (hub -> agent, freshet/v1/{device}/ack): the seqs the hub has
//     settled (stored, or refused for good with a Rejection), signed by
//     the hub (version 2).
//   - Status (agent, retained, also its last will): online or offline,
//     backlog, dropped readings, clock state, per-sensor counters.
//
// Every message is a msgpack array that begins with the protocol version
// and the message kind, so an unknown version is refused by name before
// anything else is read. Topics (Topics, ParseTopic) carry a configurable
// prefix; device ids are topic-safe (ValidDevice).
//
// # Encoding and decoding
//
// A Codec encodes and decodes under one set of Limits and reuses its
// buffers (one per goroutine). Decoding checks every limit before
// allocating for it and fails with a sentinel error from errors.go;
// Reason turns it into a stable label for counters. The encoder applies
// the same rules, so an agent never sends what a hub would refuse. The
// column layout (delta-of-delta times, scaled decimals) is in columns.go.
//
// Packer turns a stream of Readings into batches that never exceed the
// message size limit, tracking the exact encoded size as readings arrive.
//
// # Signed acks
//
// An ack makes the agent delete readings, so only the hub may send one.
// The hub signs each version 2 ack with its Ed25519 key (AckSigner); the
// agent verifies it with the hub public keys it was given (AckKeys) and
// ignores any ack that is unsigned, signed by another key, or altered.
// The signature covers the ack's signed form (AckSigned): the domain
// "freshet-ack-v2\x00", then version, device, epoch, through, the settled
// ranges, the rejections (seq, reason, detail) and the key id, in a fixed
// big-endian layout described in sign.go, so it does not depend on how the
// msgpack was written. The key id is the first 8 bytes of the SHA-256 of
// the public key, in hex (AckKeyID). Version 1 acks cannot carry a
// signature: an agent that verifies ignores them.
//
// The golden vectors shared by the encoder, decoder and fuzz tests are in
// protocol/prototest.
package protocol
