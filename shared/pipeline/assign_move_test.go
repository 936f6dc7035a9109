package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/token"
)

const collector = "token.collector@contoso.example" // holds five OATH methods (authenticator apps)

// TestMoveNeverStrandsAToken (issue 12 items 1 and 2), against the strict stand-in: a move right
// after the import waits for the next time step instead of replaying the import's code; a move
// to a user who cannot take the token is refused before the holder loses it; a move whose
// assignment stays throttled gives the token back and says who holds it now, in the answer and
// the audit record. It also counts the writes each path costs.
func TestMoveNeverStrandsAToken(t *testing.T) {
	ctx := context.Background()
	s, p, l, _ := provisioned(t, func(ss *testkit.SeedSet) []testkit.Row {
		return []testkit.Row{ss.Row("MV-1", ada)}
	})
	imported := s.Graph.Server.Stats()
	if imported.Writes != 2 || imported.Activation != 1 {
		t.Fatalf("import path: %d writes, %d activations; want 2 (create with assignTo, activate) and 1", imported.Writes, imported.Activation)
	}
	t.Logf("import path: %d writes per activated token", imported.Writes)

	// 1. Right after the import, in the same step (or the next): no replayed code.
	start := time.Now()
	a, err := p.AssignToken(ctx, pipeline.AssignRequest{Serial: "MV-1", UserPrincipalName: grace, Activate: true, Caller: "hr"})
	if err != nil || a.Status != pipeline.StatusActivated {
		t.Fatalf("move right after the import: %+v %v", a, err)
	}
	moved := s.Graph.Server.Stats()
	if moved.ReusedCodes != 0 || moved.Activation != 2 {
		t.Fatalf("stats %+v: the move replayed the import's code", moved)
	}
	if w := moved.Writes - imported.Writes; w != 3 {
		t.Fatalf("reassignment path: %d writes, want 3 (unassign, assign, activate)", w)
	}
	t.Logf("reassignment path: %d writes; waited %v for a later step", moved.Writes-imported.Writes, time.Since(start).Round(time.Second))

	// 2. To a user holding five OATH methods (authenticator apps): refused before grace loses it.
	_, err = p.AssignToken(ctx, pipeline.AssignRequest{Serial: "MV-1", UserPrincipalName: collector, Activate: true, Caller: "hr"})
	var se *pipeline.StateError
	if token.KindOf(err) != token.KindTooManyMethods || !errors.As(err, &se) || !strings.EqualFold(se.HeldBy, grace) || se.TokenStatus != "activated" {
		t.Fatalf("move to a full user: %v", err)
	}
	if d, _ := s.Graph.Server.DeviceBySerial("MV-1"); !strings.EqualFold(d.AssignedUPN, grace) || d.Status != "activated" {
		t.Fatalf("the holder lost the token: %+v", d)
	}
	if w := s.Graph.Server.Stats().Writes - moved.Writes; w != 0 {
		t.Fatalf("a refused move wrote %d times", w)
	}

	// 3. The new user's assignment stays throttled: the token goes back to grace, activated
	// again from a later step, and the answer and the audit record say so.
	alanID := "53e82e7a-742c-5c9a-8a73-a909be4ae98b"
	s.Graph.Server.AddFault(graphstandin.Fault{Method: "POST", PathContains: alanID + "/authentication/hardwareOathMethods", Status: 429, Count: 7, RetryAfter: 1})
	_, err = p.AssignToken(ctx, pipeline.AssignRequest{Serial: "MV-1", UserPrincipalName: alan, Activate: true, Caller: "hr"})
	if token.KindOf(err) != token.KindThrottled || !errors.As(err, &se) || !strings.EqualFold(se.HeldBy, grace) || se.TokenStatus != "activated" {
		t.Fatalf("throttled move: %v (%+v)", err, se)
	}
	if !strings.Contains(err.Error(), "held by "+grace) {
		t.Errorf("the message does not say who holds the token now: %v", err)
	}
	if st := s.Graph.Server.Stats(); st.ReusedCodes != 0 {
		t.Fatalf("the give-back replayed a code: %+v", st)
	}
	audits := l.AuditLog()
	last := audits[len(audits)-1]
	if last.Outcome != string(token.KindThrottled) || !strings.EqualFold(last.HeldBy, grace) || last.TokenStatus != "activated" {
		t.Fatalf("audit record %+v", last)
	}
	if strings.Contains(strings.ToLower(err.Error()), "will be retried") {
		t.Errorf("a 429 answer promises a retry nothing performs: %v", err)
	}
}

// TestFoundWithAnotherSeed (issue 12 item 7): a serial already in Entra with another seed (the
// same maker, model and period, so nothing tells it apart before activation) is reported as
// such, not as a wrong or expired code; and the serial matches whatever its case (item 6).
func TestFoundWithAnotherSeed(t *testing.T) {
	ctx := context.Background()
	s := testkit.NewStack(t, testkit.Options{})
	other := token.Seed{Secret: []byte("another seed, twenty"), Hash: token.SHA1, Digits: 6, Period: 30}
	if _, err := s.Dir.CreateDevice(ctx, token.Token{Serial: "AS-1", Manufacturer: "Token2", Model: "C202"}, other); err != nil {
		t.Fatal(err)
	}
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	ss := &testkit.SeedSet{}
	res, err := p.Import(ctx, b.Upload("tokens.csv", testkit.EntraCSV([]testkit.Row{ss.Row("as-1", ada)})))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Drain(t, ctx, p, q)
	rows, err := l.ListTokens(ctx, res.ImportID)
	if err != nil || len(rows) != 1 {
		t.Fatalf("%+v %v", rows, err)
	}
	if r := rows[0]; r.Status != pipeline.StatusFailed || !strings.Contains(r.Reason, "this serial is already in Entra with another seed") {
		t.Fatalf("row %+v: want the other seed named", r)
	}
	if n := len(s.Graph.Server.Devices()); n != 1 {
		t.Fatalf("%d devices: as-1 must be found as AS-1, not created again", n)
	}
}
