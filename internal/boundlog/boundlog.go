// Package boundlog bounds log lines: a slog.Handler that clips the message
// and every attribute's text, so that what a client sent (a topic, a
// client id, a hostile ack's 1,024 seqs, a decoder's error) never makes a
// line longer than about MaxValue bytes per attribute.
package boundlog

import (
	"context"
	"fmt"
	"log/slog"
)

// MaxValue is the longest text of a message or an attribute, in bytes.
const MaxValue = 512

// Handler wraps a slog.Handler, clipping the text it is given.
type Handler struct{ next slog.Handler }

// New wraps next.
func New(next slog.Handler) *Handler { return &Handler{next: next} }

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, clip(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(clipAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	clipped := make([]slog.Attr, len(as))
	for i, a := range as {
		clipped[i] = clipAttr(a)
	}
	return &Handler{next: h.next.WithAttrs(clipped)}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler { return &Handler{next: h.next.WithGroup(name)} }

func clipAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if len(v.String()) > MaxValue {
			return slog.String(a.Key, clip(v.String()))
		}
	case slog.KindGroup:
		g := v.Group()
		out := make([]any, len(g))
		for i, x := range g {
			out[i] = clipAttr(x)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		var s string
		switch x := v.Any().(type) {
		case error:
			s = x.Error()
		case fmt.Stringer:
			s = x.String()
		default:
			return slog.Attr{Key: a.Key, Value: v}
		}
		if len(s) > MaxValue {
			return slog.String(a.Key, clip(s))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func clip(s string) string {
	if len(s) <= MaxValue {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:MaxValue], len(s))
}
