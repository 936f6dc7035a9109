package entra

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/otp"
	"github.com/oathpipe/oathpipe/shared/token"
)

// throttleCase is one Graph call that meets an injected 429 (or 503) with a given Retry-After.
type throttleCase struct {
	name  string
	fault graphstandin.Fault // Status, Count and RetryAfter are set by the test
	// prepare sets up what the call needs (without faults) and returns the call.
	prepare func(t *testing.T, e *env, clk *fakeClock) func(ctx context.Context) error
}

// activationTarget creates, and assigns to Ada, the device serial; it returns Ada's id and
// the method id.
func activationTarget(t *testing.T, e *env, serial string, seed token.Seed) (string, string) {
	t.Helper()
	u, err := e.c.ResolveUser(e.ctx, ada)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := e.c.EnsureDevice(e.ctx, tok(serial), seed)
	if err != nil {
		t.Fatal(err)
	}
	mid, err := e.c.Assign(e.ctx, u.ID, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID, mid
}

var throttleCases = []throttleCase{
	{
		name:  "read through the retry middleware",
		fault: graphstandin.Fault{Method: "GET", PathContains: "hardwareOathDevices"},
		prepare: func(t *testing.T, e *env, _ *fakeClock) func(context.Context) error {
			if _, _, err := e.c.EnsureDevice(e.ctx, tok("6001"), seedFor("6001", 30, token.SHA1)); err != nil {
				t.Fatal(err)
			}
			return func(ctx context.Context) error { _, err := e.c.FindDevice(ctx, "6001"); return err }
		},
	},
	{
		name:  "write through the retry middleware",
		fault: graphstandin.Fault{Method: "POST", PathContains: "hardwareOathDevices"},
		prepare: func(_ *testing.T, e *env, _ *fakeClock) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := e.c.CreateDevice(ctx, tok("6002"), seedFor("6002", 30, token.SHA1))
				return err
			}
		},
	},
	{
		name:  "activation with a device code retrying itself with the same code",
		fault: graphstandin.Fault{Method: "POST", PathContains: "/activate"},
		prepare: func(t *testing.T, e *env, clk *fakeClock) func(context.Context) error {
			seed := seedFor("6003", 30, token.SHA1)
			uid, mid := activationTarget(t, e, "6003", seed)
			return func(ctx context.Context) error {
				code, err := otp.Code(seed, clk.Now())
				if err != nil {
					t.Fatal(err)
				}
				return e.c.ActivateWithCode(ctx, uid, mid, code)
			}
		},
	},
	{
		name:  "activation retrying itself with fresh codes",
		fault: graphstandin.Fault{Method: "POST", PathContains: "/activate"},
		prepare: func(t *testing.T, e *env, _ *fakeClock) func(context.Context) error {
			seed := seedFor("6004", 30, token.SHA1)
			uid, mid := activationTarget(t, e, "6004", seed)
			return func(ctx context.Context) error { return activate(e.c, ctx, uid, mid, seed) }
		},
	},
}

// throttleEnv starts the stand-in and a client on a fake clock 5 s into a time step, so
// Activate never waits for the next step; Activate's own waits are recorded in clk.slept
// (and take no time), the middleware's waits are real.
func throttleEnv(t *testing.T) (*env, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 11, 27, 10, 0, 5, 0, time.UTC)}
	e := start(t, graphstandin.Options{Now: clk.Now, WriteRate: -1}, Options{Now: clk.Now})
	e.c.sleep = clk.Sleep
	return e, clk
}

// TestThrottledBeyondDeadline: Graph throttles with a Retry-After longer than the time left
// before the caller's deadline. The call must not wait (kiota would wait, then return
// ctx.Err() and lose Graph's answer): it returns at once with KindThrottled, Graph's
// Retry-After and request-id, so the HTTP API can answer 429 with Retry-After.
func TestThrottledBeyondDeadline(t *testing.T) {
	for _, tc := range throttleCases {
		t.Run(tc.name, func(t *testing.T) {
			e, clk := throttleEnv(t)
			call := tc.prepare(t, e, clk)
			f := tc.fault
			f.Status, f.Count, f.RetryAfter = 429, 10, 30
			e.gs.AddFault(f)
			before := e.gs.Stats().Requests

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			err := call(ctx)
			took := time.Since(start)
			if ctx.Err() != nil {
				t.Fatalf("returned after the deadline (%v): %v", took, err)
			}
			te := wantKind(t, err, token.KindThrottled)
			if token.RetryAfterOf(err) != 30*time.Second {
				t.Fatalf("RetryAfter %v, want 30s (Graph's Retry-After)", token.RetryAfterOf(err))
			}
			if te.RequestID == "" {
				t.Fatalf("no Graph request-id in %+v", te)
			}
			if n := e.gs.Stats().Requests - before; n != 1 {
				t.Fatalf("%d requests reached Graph, want 1 (no retry that cannot finish in time)", n)
			}
			if len(clk.slept) != 0 {
				t.Fatalf("Activate waited %v past the deadline", clk.slept)
			}
			t.Logf("returned in %v", took.Round(time.Millisecond))
		})
	}
}

// TestThrottledWithinDeadlineRetries: a Retry-After that ends before the deadline (or no
// deadline at all) is still waited out and the call retried until it succeeds.
func TestThrottledWithinDeadlineRetries(t *testing.T) {
	deadlines := []struct {
		name    string
		timeout time.Duration // 0 = no deadline
	}{
		{"30s deadline", 30 * time.Second},
		{"no deadline", 0},
	}
	for _, dl := range deadlines {
		for _, tc := range throttleCases {
			t.Run(dl.name+"/"+tc.name, func(t *testing.T) {
				e, clk := throttleEnv(t)
				call := tc.prepare(t, e, clk)
				f := tc.fault
				f.Status, f.Count, f.RetryAfter = 429, 1, 1
				e.gs.AddFault(f)
				before := e.gs.Stats().Requests

				ctx := context.Background()
				if dl.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, dl.timeout)
					defer cancel()
				}
				if err := call(ctx); err != nil {
					t.Fatalf("call after one 429 (Retry-After: 1): %v", err)
				}
				want := int64(2) // the 429 and its retry
				if tc.fault.PathContains == "/activate" {
					want = 3 // activations look at the method between the two
				}
				if n := e.gs.Stats().Requests - before; n != want {
					t.Fatalf("%d requests reached Graph, want %d", n, want)
				}
				if tc.name == "activation retrying itself with fresh codes" && (len(clk.slept) != 1 || clk.slept[0] != time.Second) {
					t.Fatalf("Activate slept %v, want one Retry-After of 1s", clk.slept)
				}
			})
		}
	}
}

func TestRetryWithinDeadline(t *testing.T) {
	should := retryWithinDeadline(3) // kiota's default backoff base
	tests := []struct {
		name       string
		retryAfter string
		timeout    time.Duration // 0 = no deadline
		executions int           // retries done so far
		want       bool
	}{
		{"no deadline, long Retry-After", "30", 0, 0, true},
		{"Retry-After beyond deadline", "30", 2 * time.Second, 0, false},
		{"Retry-After within deadline", "1", 30 * time.Second, 0, true},
		{"Retry-After as a date beyond deadline", time.Now().Add(time.Minute).UTC().Format(time.RFC1123), 10 * time.Second, 0, false},
		{"backoff 3s+jitter within deadline", "", 10 * time.Second, 0, true},
		{"backoff 3s+jitter beyond deadline", "", 2 * time.Second, 0, false},
		{"third backoff 12s+jitter beyond deadline", "", 10 * time.Second, 2, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://graph.example/v1.0/users", nil)
			resp := &http.Response{StatusCode: 429, Header: http.Header{}}
			if tc.retryAfter != "" {
				resp.Header.Set("Retry-After", tc.retryAfter)
			}
			if got := should(0, tc.executions, req, resp); got != tc.want {
				t.Fatalf("retry = %v, want %v", got, tc.want)
			}
		})
	}
}
