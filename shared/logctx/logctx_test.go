package logctx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"testing/slogtest"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

func TestHandlerAddsContextIDs(t *testing.T) {
	all := func(ctx context.Context) context.Context {
		ctx = logctx.WithInvocation(ctx, "inv-1")
		ctx = logctx.WithImport(ctx, "imp-1")
		return logctx.WithSerial(ctx, "SN1")
	}
	cases := []struct {
		name string
		ctx  func(context.Context) context.Context
		log  func(ctx context.Context, l *slog.Logger)
		want string // the JSON line without time, level and msg
	}{
		{
			name: "no ids in the context",
			ctx:  func(ctx context.Context) context.Context { return ctx },
			log:  func(ctx context.Context, l *slog.Logger) { l.InfoContext(ctx, "m", "a", 1) },
			want: `{"a":1}`,
		},
		{
			name: "every id",
			ctx:  all,
			log:  func(ctx context.Context, l *slog.Logger) { l.InfoContext(ctx, "m", "a", 1) },
			want: `{"a":1,"invocationId":"inv-1","importId":"imp-1","serial":"SN1"}`,
		},
		{
			name: "only the invocation id",
			ctx:  func(ctx context.Context) context.Context { return logctx.WithInvocation(ctx, "inv-2") },
			log:  func(ctx context.Context, l *slog.Logger) { l.WarnContext(ctx, "m") },
			want: `{"invocationId":"inv-2"}`,
		},
		{
			name: "an empty id removes the one carried",
			ctx:  func(ctx context.Context) context.Context { return logctx.WithImport(all(ctx), "") },
			log:  func(ctx context.Context, l *slog.Logger) { l.InfoContext(ctx, "m") },
			want: `{"invocationId":"inv-1","serial":"SN1"}`,
		},
		{
			name: "the innermost id wins",
			ctx:  func(ctx context.Context) context.Context { return logctx.WithSerial(all(ctx), "SN2") },
			log:  func(ctx context.Context, l *slog.Logger) { l.InfoContext(ctx, "m") },
			want: `{"invocationId":"inv-1","importId":"imp-1","serial":"SN2"}`,
		},
		{
			name: "a record attribute is not duplicated",
			ctx:  all,
			log: func(ctx context.Context, l *slog.Logger) {
				l.InfoContext(ctx, "m", logctx.Serial, "own")
			},
			want: `{"serial":"own","invocationId":"inv-1","importId":"imp-1"}`,
		},
		{
			name: "an attribute added by With is not duplicated",
			ctx:  all,
			log: func(ctx context.Context, l *slog.Logger) {
				l.With(logctx.ImportID, "with").InfoContext(ctx, "m")
			},
			want: `{"importId":"with","invocationId":"inv-1","serial":"SN1"}`,
		},
		{
			name: "a logger without a context method carries nothing",
			ctx:  all,
			log:  func(_ context.Context, l *slog.Logger) { l.Info("m") },
			want: `{}`,
		},
		{
			name: "ids stay at the top level inside a group",
			ctx:  all,
			log: func(ctx context.Context, l *slog.Logger) {
				l.With("top", 1).WithGroup("g").With(logctx.Serial, "inner").InfoContext(ctx, "m", "a", 2)
			},
			want: `{"top":1,"invocationId":"inv-1","importId":"imp-1","serial":"SN1","g":{"serial":"inner","a":2}}`,
		},
		{
			name: "a top-level With before a group still counts",
			ctx:  all,
			log: func(ctx context.Context, l *slog.Logger) {
				l.With(logctx.InvocationID, "mine").WithGroup("g").InfoContext(ctx, "m")
			},
			want: `{"invocationId":"mine","importId":"imp-1","serial":"SN1"}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(logctx.NewHandler(slog.NewJSONHandler(&buf, nil)))
			tc.log(tc.ctx(context.Background()), l)
			if got := strip(t, buf.String()); got != tc.want {
				t.Errorf("logged %s\nwant       %s", got, tc.want)
			}
		})
	}
}

// strip removes time, level and msg from one JSON line, keeping the order of the rest.
func strip(t *testing.T, line string) string {
	t.Helper()
	line = strings.TrimSpace(line)
	if strings.Count(line, "\n") != 0 {
		t.Fatalf("want one line, got %q", line)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not JSON: %q: %v", line, err)
	}
	for _, k := range []string{"time", "level", "msg"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("no %q in %s", k, line)
		}
	}
	// Drop the three leading keys textually to keep the handler's attribute order.
	i := strings.Index(line, `"msg":"m"`)
	if i < 0 {
		t.Fatalf("no msg in %s", line)
	}
	rest := strings.TrimPrefix(line[i+len(`"msg":"m"`):], ",")
	return "{" + rest
}

func TestHandlerKeepsLevelAndDuplicatesNothingTwice(t *testing.T) {
	var buf bytes.Buffer
	h := logctx.NewHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := logctx.WithInvocation(context.Background(), "inv")
	if h.Enabled(ctx, slog.LevelInfo) {
		t.Error("Info enabled under a Warn handler")
	}
	l := slog.New(h)
	l.InfoContext(ctx, "dropped")
	l.WarnContext(ctx, "kept")
	l.WarnContext(ctx, "kept again")
	out := buf.String()
	if strings.Contains(out, "dropped") {
		t.Errorf("a record below the level was written: %s", out)
	}
	if n := strings.Count(out, `"invocationId":"inv"`); n != 2 {
		t.Errorf("invocationId written %d times in two records: %s", n, out)
	}
}

func TestFrom(t *testing.T) {
	ctx := logctx.WithSerial(logctx.WithImport(logctx.WithInvocation(context.Background(), "i"), "m"), "s")
	if got := logctx.InvocationFrom(ctx) + logctx.ImportFrom(ctx) + logctx.SerialFrom(ctx); got != "ims" {
		t.Errorf("got %q, want ims", got)
	}
	if got := logctx.SerialFrom(context.Background()); got != "" {
		t.Errorf("empty context carries serial %q", got)
	}
}

// TestHandlerConformance holds NewHandler to the standard library's slog.Handler rules.
func TestHandlerConformance(t *testing.T) {
	var buf bytes.Buffer
	newHandler := func(*testing.T) slog.Handler {
		buf.Reset()
		return logctx.NewHandler(slog.NewJSONHandler(&buf, nil))
	}
	result := func(t *testing.T) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	slogtest.Run(t, newHandler, result)
}
