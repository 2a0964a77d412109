package boundlog_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/freshet-iot/freshet/internal/boundlog"
)

// TestLinesBounded: a long message, string, error or grouped attribute is
// clipped; short ones pass as they are.
func TestLinesBounded(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(boundlog.New(slog.NewTextHandler(&buf, nil)))
	long := strings.Repeat("x", 20000)
	log.With("client", long).Warn(long, "topic", long, "err", errors.New(long), slog.Group("seqs", "list", long), "n", 7, "short", "ok")
	line := buf.String()
	if len(line) > 6*(boundlog.MaxValue+40)+200 {
		t.Fatalf("a line of %d bytes", len(line))
	}
	for _, want := range []string{"n=7", "short=ok", "(20000 bytes)"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}
	if strings.Count(line, "(20000 bytes)") != 5 {
		t.Errorf("want 5 clipped values (message, client, topic, err, seqs.list): %s", line)
	}
}
