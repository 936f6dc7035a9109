package entra

import (
	"context"
	"testing"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/otp"
	"github.com/oathpipe/oathpipe/shared/token"
)

// activateCall is one way to activate: with the seed (fresh code per try) or a device code.
type activateCall struct {
	name string
	call func(ctx context.Context, e *env, clk *fakeClock, uid, mid string, seed token.Seed) error
}

var activateCalls = []activateCall{
	{"Activate", func(ctx context.Context, e *env, _ *fakeClock, uid, mid string, seed token.Seed) error {
		return activate(e.c, ctx, uid, mid, seed)
	}},
	{"ActivateWithCode", func(ctx context.Context, e *env, clk *fakeClock, uid, mid string, seed token.Seed) error {
		code, err := otp.Code(seed, clk.Now())
		if err != nil {
			return err
		}
		return e.c.ActivateWithCode(ctx, uid, mid, code)
	}},
}

// TestActivateAfterAmbiguousFailure: Graph carries the activation out but the answer is lost
// (503 or 429 after applying). The client must look at the method, find it activated and
// succeed without sending a second activation (which Entra may refuse, and the stand-in does).
// When the failure really left the method unactivated, the look says so and the activation
// is sent again; a refused code after that stays a bad code.
func TestActivateAfterAmbiguousFailure(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		afterApply bool
		badCode    bool // ActivateWithCode sends a wrong code
		want       token.Kind
		requests   int // requests that reach Graph: activations and looks at the method
		activated  bool
	}{
		{"503 after applying", 503, true, false, "", 2, true},            // activate, look
		{"429 after applying", 429, true, false, "", 2, true},            // activate, look
		{"503 before applying: retried", 503, false, false, "", 3, true}, // activate, look, activate
		{"429 before applying: retried", 429, false, false, "", 3, true},
		{"503 before applying, then a refused code", 503, false, true, token.KindBadCode, 4, false}, // ..., activate (400), look
	}
	for _, ac := range activateCalls {
		for i, tc := range tests {
			if tc.badCode && ac.name != "ActivateWithCode" {
				continue
			}
			t.Run(ac.name+"/"+tc.name, func(t *testing.T) {
				e, clk := throttleEnv(t)
				serial := "7" + string(rune('0'+i)) + "01"
				seed := seedFor(serial, 30, token.SHA1)
				uid, mid := activationTarget(t, e, serial, seed)
				call := ac.call
				if tc.badCode {
					call = func(ctx context.Context, e *env, _ *fakeClock, uid, mid string, _ token.Seed) error {
						return e.c.ActivateWithCode(ctx, uid, mid, "000000")
					}
				}
				e.gs.AddFault(graphstandin.Fault{Method: "POST", PathContains: "/activate", Status: tc.status, AfterApply: tc.afterApply, Count: 1, RetryAfter: 1})
				before := e.gs.Stats()
				err := call(context.Background(), e, clk, uid, mid, seed)
				if tc.want == "" && err != nil {
					t.Fatalf("activate: %v", err)
				}
				if tc.want != "" {
					wantKind(t, err, tc.want)
				}
				st := e.gs.Stats()
				wantActivations := int64(0)
				if tc.activated {
					wantActivations = 1
				}
				if n := st.Activation - before.Activation; n != wantActivations {
					t.Fatalf("%d activations applied, want %d", n, wantActivations)
				}
				d, _ := e.gs.DeviceBySerial(serial)
				if d.Activations != int(wantActivations) || (tc.activated && d.Status != "activated") {
					t.Fatalf("device %+v", d)
				}
				if n := st.Requests - before.Requests; n != int64(tc.requests) {
					t.Fatalf("%d requests reached Graph, want %d", n, tc.requests)
				}
			})
		}
	}
}
