package pipeline_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/token"
)

// raceDir runs meanwhile once, just before the first ActivateWithCode it passes on: a
// concurrent request's change landing between this request's assignment and its activation.
type raceDir struct {
	pipeline.Directory
	once      sync.Once
	meanwhile func()
}

func (d *raceDir) ActivateWithCode(ctx context.Context, userID, methodID, code string) error {
	d.once.Do(d.meanwhile)
	return d.Directory.ActivateWithCode(ctx, userID, methodID, code)
}

// TestReassignRaceAcrossInstances plays, in one order, what TestConcurrentAssign leaves to the
// scheduler: a reassignment on one instance has moved the token from ada to grace and, before
// it activates grace's method, another instance (no shared lock) moves the token on to alan.
// The first request loses with a conflict naming the winner, not a not-found about a method.
func TestReassignRaceAcrossInstances(t *testing.T) {
	ctx := context.Background()
	s, other, l, _ := provisioned(t, func(ss *testkit.SeedSet) []testkit.Row { return []testkit.Row{ss.Row("RC-1", ada)} })
	var meanwhile error
	late := s.Pipeline(l, &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs(), func(d *pipeline.Deps) {
		d.Directory = &raceDir{Directory: d.Directory, meanwhile: func() {
			_, meanwhile = other.AssignToken(ctx, pipeline.AssignRequest{Serial: "RC-1", UserPrincipalName: alan, Caller: "winner"})
		}}
	})
	a, err := late.AssignToken(ctx, pipeline.AssignRequest{Serial: "RC-1", UserPrincipalName: grace, Activate: true, VerificationCode: "123456", Caller: "late"})
	if meanwhile != nil {
		t.Fatalf("the concurrent reassignment failed: %v", meanwhile)
	}
	if token.KindOf(err) != token.KindConflict || !strings.Contains(err.Error(), alan) {
		t.Errorf("late request: %+v %v; want a conflict naming %s", a, err, alan)
	}
	d, _ := s.Graph.Server.DeviceBySerial("RC-1")
	if !strings.EqualFold(d.AssignedUPN, alan) {
		t.Errorf("the token is held by %q, want %s", d.AssignedUPN, alan)
	}
	holders := 0
	for _, u := range []string{ada, grace, alan} {
		for _, m := range s.Graph.Server.UserMethods(u) {
			if m.Serial == "RC-1" {
				holders++
			}
		}
	}
	if holders != 1 {
		t.Errorf("%d users hold RC-1", holders)
	}
	if audits := l.AuditLog(); len(audits) != 2 || audits[1].Caller != "late" || audits[1].Outcome != string(token.KindConflict) {
		t.Errorf("audit records %+v, want the winner's change then the late request's conflict", audits)
	}
}
