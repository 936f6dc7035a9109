package pipelinetest_test

import (
	"context"
	"testing"

	"github.com/oathpipe/oathpipe/internal/ledgertest"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
)

var _ pipeline.Ledger = (*pipelinetest.MemLedger)(nil)

// TestMemLedgerContract holds the in-memory fake to the contract the Table storage ledger
// passes on Azurite (shared/ledger's TestContract).
func TestMemLedgerContract(t *testing.T) {
	ledgertest.Run(t, func(*testing.T) pipeline.Ledger { return pipelinetest.NewMemLedger() })
}

// TestStatusOnlyLedger: the compact form counts, settles and lists like the full one and keeps
// only each row's status.
func TestStatusOnlyLedger(t *testing.T) {
	ctx := context.Background()
	l := pipelinetest.NewStatusOnlyLedger()
	imp, _, err := l.BeginImport(ctx, pipeline.ImportRecord{ImportID: "imp-compact", FileName: "c.csv"})
	if err != nil {
		t.Fatal(err)
	}
	rows := ledgertest.VaultedRows(imp.ImportID, 3)
	rows = append(rows, pipeline.TokenRecord{Line: 7, Status: pipeline.StatusRejected})
	if err := l.AddTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	if err := l.AddTokens(ctx, imp, []pipeline.TokenRecord{{Line: 2, Status: "sideways"}}); err != nil {
		t.Fatalf("a stored line again: %v (left as it is, like any ledger)", err)
	}
	if err := l.AddTokens(ctx, imp, []pipeline.TokenRecord{{Line: 9, Status: "sideways"}}); err == nil {
		t.Fatal("a status the compact ledger has no code for was accepted")
	}
	imp.Pending = 3
	if err := l.SealImport(ctx, imp); err != nil {
		t.Fatal(err)
	}
	var lines []int
	if err := l.EachToken(ctx, imp.ImportID, 3, 0, func(r pipeline.TokenRecord) error {
		if r.ImportID != imp.ImportID || r.Serial != "" {
			t.Errorf("row %+v: want the import id and status only", r)
		}
		lines = append(lines, r.Line)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || lines[0] != 3 || lines[2] != 7 {
		t.Fatalf("EachToken from line 3 = %v, want [3 4 7]", lines)
	}
	for i, line := range []int{2, 3, 4} {
		last, err := l.SetTokenOutcome(ctx, imp.ImportID, line, pipeline.Outcome{Status: pipeline.StatusActivated, UserPrincipalName: "x@contoso.com"})
		if err != nil || last != (i == 2) {
			t.Fatalf("settling line %d = %v, %v", line, last, err)
		}
	}
	if r, err := l.GetToken(ctx, imp.ImportID, 4); err != nil || r.Status != pipeline.StatusActivated {
		t.Fatalf("line 4 = %+v, %v", r, err)
	}
	if _, err := l.GetToken(ctx, imp.ImportID, 5); err == nil {
		t.Fatal("a line never written was found")
	}
}
