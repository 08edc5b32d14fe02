// Package requestid gives every request a short ID that travels with it:
// the edge makes one for each frame a browser sends, natsrpc carries it in
// a NATS header (protocol.HeaderRequestID) to every service the request
// reaches, and every line logged with the request's context names it, so
// one grep follows a click through the whole system.
package requestid

import (
	"context"
	"log/slog"

	"github.com/buddytok/buddytok/pkg/protocol"
)

type key struct{}

// New returns a fresh request ID.
func New() string { return protocol.NewID() }

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the request ID ctx carries, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}

// Attr is the log attribute that names a request.
const Attr = "request_id"

// Handler wraps h: a record logged with a context that carries a request
// ID gets it as the request_id attribute.
func Handler(h slog.Handler) slog.Handler { return handler{h} }

type handler struct{ slog.Handler }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	if id := From(ctx); id != "" {
		r = r.Clone()
		r.AddAttrs(slog.String(Attr, id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return handler{h.Handler.WithAttrs(attrs)}
}

func (h handler) WithGroup(name string) slog.Handler {
	return handler{h.Handler.WithGroup(name)}
}
