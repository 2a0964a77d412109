package protocol

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the topic prefix when none is configured.
const DefaultPrefix = "freshet"

// TopicKind is the last level of a freshet topic.
type TopicKind string

// Topic kinds.
const (
	TopicBatch  TopicKind = "batch"
	TopicAck    TopicKind = "ack"
	TopicStatus TopicKind = "status"
)

// Topics builds and parses the topics of one prefix:
// {prefix}/v1/{device}/{batch|ack|status}.
type Topics struct{ prefix string }

// NewTopics validates prefix ("" means DefaultPrefix). A prefix is one or
// more non-empty levels without wildcards, NUL or a leading '$'.
func NewTopics(prefix string) (Topics, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.HasPrefix(prefix, "$") || len(prefix) > 128 {
		return Topics{}, fmt.Errorf("%w: prefix %q: must not start with '$' or exceed 128 bytes", ErrBadTopic, clip(prefix))
	}
	for _, level := range strings.Split(prefix, "/") {
		if level == "" || strings.ContainsAny(level, "+#\x00") {
			return Topics{}, fmt.Errorf("%w: prefix %q: empty level or wildcard", ErrBadTopic, clip(prefix))
		}
	}
	return Topics{prefix: prefix}, nil
}

// Prefix returns the prefix.
func (t Topics) Prefix() string { return t.prefix }

func (t Topics) p() string {
	if t.prefix == "" {
		return DefaultPrefix
	}
	return t.prefix
}

// Topic returns the topic of kind k for device (which must be valid; see ValidDevice).
func (t Topics) Topic(device string, k TopicKind) string {
	return t.p() + "/v1/" + device + "/" + string(k)
}

// Batch, Ack and Status are shorthands for Topic.
func (t Topics) Batch(device string) string  { return t.Topic(device, TopicBatch) }
func (t Topics) Ack(device string) string    { return t.Topic(device, TopicAck) }
func (t Topics) Status(device string) string { return t.Topic(device, TopicStatus) }

// Filter returns the subscription filter for kind k across all devices.
func (t Topics) Filter(k TopicKind) string { return t.p() + "/v1/+/" + string(k) }

// Parse splits a topic of this prefix into its device and kind.
func (t Topics) Parse(topic string) (string, TopicKind, error) {
	rest, ok := strings.CutPrefix(topic, t.p()+"/v1/")
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not under %s/v1/", ErrBadTopic, clip(topic), t.p())
	}
	device, kind, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: %q has no kind level", ErrBadTopic, clip(topic))
	}
	switch k := TopicKind(kind); k {
	case TopicBatch, TopicAck, TopicStatus:
		if err := ValidDevice(device); err != nil {
			return "", "", err
		}
		return device, k, nil
	}
	return "", "", fmt.Errorf("%w: %q: unknown kind %q", ErrBadTopic, clip(topic), clip(kind))
}
