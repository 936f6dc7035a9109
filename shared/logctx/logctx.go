// Package logctx holds the log keys every package uses and a slog handler that adds the
// invocation id, import id and serial carried by a context to every record logged with one of
// slog's *Context methods. It imports only the standard library, so any package may use it.
package logctx

import (
	"context"
	"log/slog"
)

// Log keys: camelCase, one spelling per idea. Use these instead of string literals.
const (
	// Ids carried by the context (NewHandler adds them).
	InvocationID = "invocationId" // the Functions host's X-Azure-Functions-InvocationId
	ImportID     = "importId"     // pipeline.ImportID of a delivered seed file
	Serial       = "serial"       // a hardware token's serial number

	// Entra ID objects.
	DeviceID   = "deviceId"   // hardwareOathDevice id
	UserID     = "userId"     // user object id
	MethodID   = "methodId"   // hardwareOathMethod id
	AssignedTo = "assignedTo" // user a token is created assigned to
	User       = "user"       // a user principal name

	// What a record is about.
	Function     = "function"     // the Functions function invoked
	Component    = "component"    // the package that logs
	File         = "file"         // a blob name in a seed container
	Line         = "line"         // a line of a seed file (the runner: of a function's Logs)
	Secret       = "secret"       // a Key Vault secret name
	Manufacturer = "manufacturer" // a token's manufacturer
	Caller       = "caller"       // who called the HTTP API
	Op           = "op"           // the operation that failed or is retried
	Kind         = "kind"         // token.Kind of an error
	Status       = "status"       // an HTTP status or a ledger row status
	Reason       = "reason"       // why something failed or was skipped
	RequestID    = "requestId"    // the Azure service's request id
	Error        = "error"        // an error's text (never a seed)
	DequeueCount = "dequeueCount" // deliveries of a queue message so far
	MessageID    = "messageId"    // a queue message id

	// Seeds in Key Vault.
	Fingerprint       = "fingerprint"       // fingerprint of a seed or PGP key, never the seed
	StoredFingerprint = "storedFingerprint" // fingerprint of the seed already in the vault
	Outcome           = "outcome"           // vault.Outcome of a put
	Version           = "version"           // a secret version
)

type ctxKey int

const (
	invocationKey ctxKey = iota
	importKey
	serialKey
)

// carried lists the context keys NewHandler reads, in the order their attributes are added.
var carried = [...]struct {
	ctx ctxKey
	key string
}{
	{invocationKey, InvocationID},
	{importKey, ImportID},
	{serialKey, Serial},
}

// WithInvocation returns ctx carrying the Functions invocation id. An empty id removes one
// carried by ctx.
func WithInvocation(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, invocationKey, id)
}

// WithImport returns ctx carrying an import id. An empty id removes one carried by ctx.
func WithImport(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, importKey, id)
}

// WithSerial returns ctx carrying a token serial. An empty serial removes one carried by ctx.
func WithSerial(ctx context.Context, serial string) context.Context {
	return context.WithValue(ctx, serialKey, serial)
}

// InvocationFrom returns the invocation id ctx carries, or "".
func InvocationFrom(ctx context.Context) string { return from(ctx, invocationKey) }

// ImportFrom returns the import id ctx carries, or "".
func ImportFrom(ctx context.Context) string { return from(ctx, importKey) }

// SerialFrom returns the serial ctx carries, or "".
func SerialFrom(ctx context.Context) string { return from(ctx, serialKey) }

func from(ctx context.Context, k ctxKey) string {
	if ctx == nil {
		return ""
	}
	s, _ := ctx.Value(k).(string)
	return s
}

// NewHandler returns a handler that adds the invocation id, import id and serial carried by
// the context of each record (see WithInvocation, WithImport, WithSerial) as top-level
// attributes, then passes the record to next. A key the record already has, as its own
// attribute or one added by Logger.With before any group, is not added again. Records logged
// without a context (Info rather than InfoContext) carry nothing from it.
//
// Inside a group (Logger.WithGroup) the ids still go to the top level of the record. A next
// that NewHandler made already is returned as it is, so wrapping twice adds nothing twice.
func NewHandler(next slog.Handler) slog.Handler {
	if h, ok := next.(*handler); ok {
		return h
	}
	return &handler{next: next, base: next}
}

// handler is NewHandler's slog.Handler.
type handler struct {
	next slog.Handler // base with every With and WithGroup applied
	// base is next before the first group: the ids are added to it, so they stay top level.
	base slog.Handler
	// grouped holds the WithAttrs and WithGroup calls after the first group, replayed on base
	// (after the ids) when a record has ids to add.
	grouped []step
	has     map[string]bool // top-level keys added by WithAttrs
}

// step is one WithAttrs (group == "") or WithGroup call made inside a group.
type step struct {
	group string
	attrs []slog.Attr
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	ids := h.missing(ctx, r)
	if len(ids) == 0 {
		return h.next.Handle(ctx, r)
	}
	if len(h.grouped) == 0 {
		r.AddAttrs(ids...)
		return h.next.Handle(ctx, r)
	}
	// Inside a group: put the ids on base, then replay the groups and their attributes.
	next := h.base.WithAttrs(ids)
	for _, s := range h.grouped {
		if s.group != "" {
			next = next.WithGroup(s.group)
		} else {
			next = next.WithAttrs(s.attrs)
		}
	}
	return next.Handle(ctx, r)
}

// missing returns the carried ids of ctx that neither the record nor the handler's top-level
// attributes already have.
func (h *handler) missing(ctx context.Context, r slog.Record) []slog.Attr {
	var ids []slog.Attr
	for _, c := range carried {
		v := from(ctx, c.ctx)
		if v == "" || h.has[c.key] {
			continue
		}
		if len(h.grouped) == 0 && recordHas(r, c.key) {
			continue
		}
		ids = append(ids, slog.String(c.key, v))
	}
	return ids
}

func recordHas(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	c := *h
	c.next = h.next.WithAttrs(as)
	if len(h.grouped) > 0 {
		c.grouped = append(h.grouped[:len(h.grouped):len(h.grouped)], step{attrs: as})
		return &c
	}
	c.base = c.next
	c.has = make(map[string]bool, len(h.has)+len(as))
	for k := range h.has {
		c.has[k] = true
	}
	for _, a := range as {
		c.has[a.Key] = true
	}
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	c.grouped = append(h.grouped[:len(h.grouped):len(h.grouped)], step{group: name})
	return &c
}
