package pipeline_test

import (
	"context"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/token"
)

// TestVaultRefusalSurvivesARedelivery: a row the vault refused (a different seed under its
// serial) is told apart on a repeated delivery by its cause (pipeline.CauseVaultRefused on the
// ledger row), never by the words of its reason. The first delivery stops before its checkpoint
// is recorded; the redelivery reads the row back, counts it as refused, and the file goes to
// seed-rejected instead of being deleted with a failed row in it.
func TestVaultRefusalSurvivesARedelivery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ledger func(t *testing.T) pipeline.Ledger
	}{
		{"fake ledger", func(*testing.T) pipeline.Ledger { return pipelinetest.NewMemLedger() }},
		{"table ledger on Azurite", func(t *testing.T) pipeline.Ledger { return storageAccount(t).Ledger }},
	} {
		t.Run(tc.name, func(t *testing.T) { vaultRefusalSurvivesARedelivery(t, tc.ledger(t)) })
	}
}

func vaultRefusalSurvivesARedelivery(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	s := testkit.NewStack(t, testkit.Options{})
	q, b := &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	ss := &testkit.SeedSet{}
	// Names and serials of their own: the Azurite ledger is shared by the package's tests.
	tag := strings.ToUpper(strings.ReplaceAll(t.Name(), "/", "-"))
	if _, err := p.Import(ctx, b.Upload(tag+"-first.csv", testkit.EntraCSV([]testkit.Row{ss.Row(tag+"-1", ada)}))); err != nil {
		t.Fatal(err)
	}
	pipelinetest.Drain(t, ctx, p, q)

	plan := &crashPlan{op: "ledger.SetImportCheckpoint"}
	p = s.Pipeline(crashLedger{l, plan}, q, b, nil)
	f := b.Upload(tag+"-second.csv", testkit.EntraCSV([]testkit.Row{ss.Row(tag+"-1", ada), ss.Row(tag+"-2", grace)}))
	if _, err := p.Import(ctx, f); token.KindOf(err) != token.KindTransient || !plan.fired {
		t.Fatalf("first delivery: %v (crash fired: %v)", err, plan.fired)
	}
	row, err := l.GetToken(ctx, pipeline.ImportID(f.Name, f.ETag), 2)
	if err != nil || row.Status != pipeline.StatusFailed || row.Cause != pipeline.CauseVaultRefused {
		t.Fatalf("the refused row after the first delivery: %+v %v", row, err)
	}
	res, err := p.Import(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || res.Disposition != pipeline.DispositionRejected {
		t.Errorf("redelivery: %+v, want 1 failed and the file rejected", res)
	}
	if _, ok := b.Inbox[f.Name]; ok || len(b.Rejected) != 1 {
		t.Errorf("inbox %d, rejected %d: the file must be kept in seed-rejected", len(b.Inbox), len(b.Rejected))
	}
	pipelinetest.Drain(t, ctx, p, q)
	st, err := p.ImportStatus(ctx, f.Name)
	if err != nil || !st.Settled || st.Tokens[0].Status != pipeline.StatusFailed || !strings.HasPrefix(st.Tokens[0].Reason, "not stored in the vault: ") {
		t.Errorf("status %+v %v", st, err)
	}
}
