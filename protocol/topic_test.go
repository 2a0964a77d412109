package protocol_test

import (
	"errors"
	"testing"

	"github.com/freshet-iot/freshet/protocol"
)

func TestTopics(t *testing.T) {
	tp, err := protocol.NewTopics("")
	if err != nil {
		t.Fatal(err)
	}
	if got := tp.Batch("gw-1"); got != "freshet/v1/gw-1/batch" {
		t.Errorf("Batch = %q", got)
	}
	if got := tp.Filter(protocol.TopicAck); got != "freshet/v1/+/ack" {
		t.Errorf("Filter = %q", got)
	}
	site, _ := protocol.NewTopics("acme/site-3")
	for _, tc := range []struct {
		tp     protocol.Topics
		topic  string
		device string
		kind   protocol.TopicKind
		err    error
	}{
		{tp, "freshet/v1/gw-1/batch", "gw-1", protocol.TopicBatch, nil},
		{tp, "freshet/v1/gw-1/status", "gw-1", protocol.TopicStatus, nil},
		{site, "acme/site-3/v1/pi.7/ack", "pi.7", protocol.TopicAck, nil},
		{tp, "freshet/v2/gw-1/batch", "", "", protocol.ErrBadTopic},
		{tp, "freshet/v1/gw-1/other", "", "", protocol.ErrBadTopic},
		{tp, "freshet/v1/gw-1", "", "", protocol.ErrBadTopic},
		{tp, "freshet/v1//batch", "", "", protocol.ErrBadDevice},
		{tp, "freshet/v1/$SYS/batch", "", "", protocol.ErrBadDevice},
		{tp, "freshet/v1/a/b/batch", "", "", protocol.ErrBadTopic},
		{site, "freshet/v1/gw-1/batch", "", "", protocol.ErrBadTopic},
	} {
		d, k, err := tc.tp.Parse(tc.topic)
		if !errors.Is(err, tc.err) || d != tc.device || k != tc.kind {
			t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q, %v", tc.topic, d, k, err, tc.device, tc.kind, tc.err)
		}
	}
	for _, bad := range []string{"$share", "a/+/b", "a//b", "a/#", "/a"} {
		if _, err := protocol.NewTopics(bad); !errors.Is(err, protocol.ErrBadTopic) {
			t.Errorf("NewTopics(%q) = %v, want ErrBadTopic", bad, err)
		}
	}
}

func TestValidDevice(t *testing.T) {
	for _, ok := range []string{"a", "gw-1", "pi_barn.07", "0"} {
		if err := protocol.ValidDevice(ok); err != nil {
			t.Errorf("ValidDevice(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "a/b", "a+b", "a#", "a b", "$SYS", "é", string(make([]byte, 65))} {
		if err := protocol.ValidDevice(bad); !errors.Is(err, protocol.ErrBadDevice) {
			t.Errorf("ValidDevice(%q) = %v, want ErrBadDevice", bad, err)
		}
	}
}
