package entra

import (
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/otp"
	"github.com/oathpipe/oathpipe/shared/token"
)

// lenientRun makes start serve the lenient stand-in (every Lenient option on): TestLenientMode
// runs the client's tests again that way, so the client is tested both ways.
var lenientRun bool

// TestLenientMode runs the client's main tests against the lenient stand-in too.
func TestLenientMode(t *testing.T) {
	lenientRun = true
	t.Cleanup(func() { lenientRun = false })
	for name, f := range map[string]func(*testing.T){
		"ProvisionLifecycle":          TestProvisionLifecycle,
		"Errors":                      TestErrors,
		"RetriesAndAmbiguousFailures": TestRetriesAndAmbiguousFailures,
		"SerialsWithQuotesAndPaging":  TestSerialsWithQuotesAndPaging,
		"ActivateAfterAmbiguous":      TestActivateAfterAmbiguousFailure,
		"NoCodeOfAUsedStep":           TestNoCodeOfAUsedStep,
		"CausesFromState":             TestCausesFromState,
	} {
		t.Run(name, f)
	}
}

// TestNoCodeOfAUsedStep (issue 12 item 1): a token activated in a step and activated again in
// the same step (a reassignment right after its import) must not be sent that step's code
// again. Given the last activation's time, Activate waits for the next step; without it (as
// before), the strict stand-in refuses the replayed code and the token ends failedActivation.
func TestNoCodeOfAUsedStep(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 5, 0, time.UTC) // 5 s into a 30 s step
	clk := &fakeClock{t: base}
	e := start(t, graphstandin.Options{Now: clk.Now, WriteRate: -1}, Options{Now: clk.Now})
	e.c.sleep = clk.Sleep
	seed := seedFor("7101", 30, token.SHA1)
	ada, _ := e.c.ResolveUser(e.ctx, ada)
	grace, _ := e.c.ResolveUser(e.ctx, grace)
	d, _, err := e.c.EnsureDevice(e.ctx, tok("7101"), seed)
	if err != nil {
		t.Fatal(err)
	}
	mid, _ := e.c.Assign(e.ctx, ada.ID, d.ID)
	used, err := e.c.Activate(e.ctx, ada.ID, mid, seed, time.Time{})
	if err != nil || !used.Equal(base) {
		t.Fatalf("first activation: %v at %v", err, used)
	}
	// Move it to grace in the same step.
	clk.Sleep(e.ctx, 4*time.Second)
	if err := e.c.Unassign(e.ctx, ada.ID, mid); err != nil {
		t.Fatal(err)
	}
	mid2, err := e.c.Assign(e.ctx, grace.ID, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	clk.slept = nil
	used2, err := e.c.Activate(e.ctx, grace.ID, mid2, seed, used)
	if err != nil {
		t.Fatalf("activation after a move in the same step: %v", err)
	}
	if want := 21 * time.Second; len(clk.slept) != 1 || clk.slept[0] != want {
		t.Fatalf("slept %v, want %v (to the next step)", clk.slept, want)
	}
	if used2.Unix()/30 != used.Unix()/30+1 {
		t.Fatalf("second code at %v, first at %v: want the next step", used2, used)
	}
	if st := e.gs.Stats(); st.ReusedCodes != 0 || st.Activation != 2 {
		t.Fatalf("stats %+v", st)
	}

	// As before the fix: no earlier time given (another instance moved it), the same step's
	// code is sent again and refused; the client then tries once more from the next step.
	if lenientRun {
		return // the lenient stand-in accepts replayed codes
	}
	_ = e.c.Unassign(e.ctx, grace.ID, mid2)
	mid3, _ := e.c.Assign(e.ctx, ada.ID, d.ID)
	clk.slept = nil
	used3, err := e.c.Activate(e.ctx, ada.ID, mid3, seed, time.Time{})
	if err != nil || e.gs.Stats().ReusedCodes != 1 || used3.Unix()/30 != used2.Unix()/30+1 {
		t.Fatalf("replayed step: %v, stats %+v, slept %v", err, e.gs.Stats(), clk.slept)
	}
	if d, _ := e.gs.DeviceBySerial("7101"); d.Status != "activated" {
		t.Fatalf("status %s", d.Status)
	}
}

func TestStepWait(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(1_800_000_000+s), 0) } // a multiple of 60
	for _, tc := range []struct {
		now, last, period int
		want              time.Duration
	}{
		{5, 0, 30, 25 * time.Second},
		{29, 0, 30, time.Second},
		{30, 0, 30, 0},
		{40, 0, 60, 20 * time.Second},
		{61, 0, 60, 0},
		{5, 31, 30, 55 * time.Second}, // last in a later step than now (clock skew): wait past it
	} {
		if got := StepWait(at(tc.now), at(tc.last), tc.period); got != tc.want {
			t.Errorf("StepWait(%d, %d, %d) = %v, want %v", tc.now, tc.last, tc.period, got, tc.want)
		}
	}
	if StepWait(at(5), time.Time{}, 30) != 0 {
		t.Error("no last activation: no wait")
	}
}

// TestCausesFromState (issue 12 items 3, 5, 6, 2): with every 400 worded "Invalid request.",
// the client finds causes from state, never from words; serials match case-insensitively.
func TestCausesFromState(t *testing.T) {
	for _, opaque := range []bool{false, true} {
		name := "plain messages"
		if opaque {
			name = "opaque messages"
		}
		t.Run(name, func(t *testing.T) {
			e := start(t, graphstandin.Options{WriteRate: -1, OpaqueMessages: opaque, DistinctMethodIDs: opaque}, Options{})
			ctx := e.ctx
			seed := seedFor("GP7001", 30, token.SHA1)
			d, created, err := e.c.EnsureDevice(ctx, tok("GP7001"), seed)
			if err != nil || !created {
				t.Fatal(err)
			}
			// Item 6: gp7001 is GP7001; the tenant's spelling is reported.
			if f, err := e.c.FindDevice(ctx, "gp7001"); !lenientRun && (err != nil || f.ID != d.ID || f.Serial != "GP7001") {
				t.Fatalf("case-insensitive find: %+v %v", f, err)
			}
			// Item 3: a duplicate create refused (400 strictly) is found and is success.
			if again, err := e.c.CreateDevice(ctx, tok("GP7001"), seed); err != nil || again.ID != d.ID {
				t.Fatalf("duplicate create: %+v %v", again, err)
			}
			guest, _ := e.c.ResolveUser(ctx, guest)
			coll, _ := e.c.ResolveUser(ctx, collector)
			adaU, _ := e.c.ResolveUser(ctx, ada)
			if guest.ID == "" || coll.ID == "" || adaU.ID == "" {
				t.Fatal("users not resolved")
			}
			// Item 5: causes from state.
			if _, err := e.c.Assign(ctx, guest.ID, d.ID); token.KindOf(err) != token.KindGuest {
				t.Fatalf("guest: %v", err)
			}
			if _, err := e.c.Assign(ctx, coll.ID, d.ID); token.KindOf(err) != token.KindTooManyMethods {
				t.Fatalf("five methods: %v", err)
			}
			if n, err := e.c.CountOathMethods(ctx, coll.ID); err != nil || n != 5 {
				t.Fatalf("count: %d %v (authenticator apps count)", n, err)
			}
			mid, err := e.c.Assign(ctx, adaU.ID, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			g2, _ := e.c.ResolveUser(ctx, grace)
			if _, err := e.c.Assign(ctx, g2.ID, d.ID); token.KindOf(err) != token.KindAssignedElsewhere {
				t.Fatalf("assigned elsewhere: %v", err)
			}
			code, _ := otp.Code(seed, time.Now().Add(-5*time.Minute))
			err = e.c.ActivateWithCode(ctx, adaU.ID, mid, code)
			if token.KindOf(err) != token.KindBadCode {
				t.Fatalf("bad code: %v", err)
			}
			if opaque && !strings.Contains(err.Error(), "Invalid request") {
				t.Fatalf("Graph's words are quoted: %v", err)
			}
			// An unrecognised refusal that state cannot explain keeps Graph's words.
			if opaque {
				e.gs.AddFault(graphstandin.Fault{Method: "POST", PathContains: "hardwareOathMethods", Status: 400, Count: 1})
				_, err := e.c.Assign(ctx, g2.ID, d.ID+"x")
				if k := token.KindOf(err); k == token.KindGuest || k == token.KindTooManyMethods || k == token.KindAssignedElsewhere {
					t.Fatalf("unexplained refusal named %s: %v", k, err)
				}
			}
		})
	}
}
