// Package ledgertest is the contract suite of pipeline.Ledger: what every ledger must do, so
// that the Table storage ledger (package ledger, run on Azurite) and the in-memory fake the flow
// tests use (pipelinetest.MemLedger) count and settle rows the same way. Each implementation's
// tests call Run with a constructor. For tests only.
package ledgertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Run runs the contract against ledgers made by open, a fresh empty one for every subtest.
func Run(t *testing.T, open func(t *testing.T) pipeline.Ledger) {
	for _, c := range []struct {
		name string
		test func(*testing.T, pipeline.Ledger)
	}{
		{"ImportRoundTrip", testImportRoundTrip},
		{"BeginImport", testBeginImport},
		{"NotFound", testNotFound},
		{"Invalid", testInvalid},
		{"ConcurrentOutcomes", testConcurrentOutcomes},
		{"Counting", testCounting},
		{"NewerImportHoldsNames", testNewerImportHoldsNames},
		{"RejectedRowsWithSerialAreNotIndexed", testRejectedRowsNotIndexed},
		{"ChunkedRecording", testChunkedRecording},
		{"Warnings", testWarnings},
		{"ClaimNotificationOnce", testClaimNotificationOnce},
	} {
		t.Run(c.name, func(t *testing.T) { c.test(t, open(t)) })
	}
}

// T0 is the Created time of the suite's first import.
var T0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// Begin starts a new import of name, created at created, and fails the test unless it is new.
func Begin(t *testing.T, l pipeline.Ledger, id, name string, created time.Time) pipeline.ImportRecord {
	t.Helper()
	rec, made, err := l.BeginImport(context.Background(), pipeline.ImportRecord{
		ImportID: id, FileName: name, ETag: "0x8D" + id, Stage: pipeline.StageStarted, Created: created,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !made {
		t.Fatalf("BeginImport(%s): created=false for a new import", id)
	}
	return rec
}

// record writes rows as the pipeline does: AddTokens, then SealImport with imp's facts.
func record(t *testing.T, l pipeline.Ledger, imp pipeline.ImportRecord, rows []pipeline.TokenRecord) {
	t.Helper()
	ctx := context.Background()
	if err := l.AddTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	if err := l.SealImport(ctx, imp); err != nil {
		t.Fatal(err)
	}
}

// VaultedRows returns n valid rows of import id, lines 2 to n+1.
func VaultedRows(id string, n int) []pipeline.TokenRecord {
	rows := make([]pipeline.TokenRecord, n)
	for i := range rows {
		rows[i] = pipeline.TokenRecord{
			ImportID: id, Line: i + 2, Serial: fmt.Sprintf("86596120%05d", i+1), Manufacturer: "Token2", Model: "C202",
			UserPrincipalName: fmt.Sprintf("user%d@contoso.com", i), Status: pipeline.StatusVaulted,
			SeedFingerprint: fmt.Sprintf("%016x", i), Updated: T0,
		}
	}
	return rows
}

func pending(t *testing.T, l pipeline.Ledger, id string) int {
	t.Helper()
	got, err := l.GetImport(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return got.Pending
}

func settle(t *testing.T, l pipeline.Ledger, id string, line int, s pipeline.RowStatus) bool {
	t.Helper()
	last, err := l.SetTokenOutcome(context.Background(), id, line, pipeline.Outcome{Status: s})
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// recordFour records an import of four rows (two vaulted, one failed, one rejected) and checks
// what reads back.
func recordFour(t *testing.T, l pipeline.Ledger) (pipeline.ImportRecord, []pipeline.TokenRecord) {
	t.Helper()
	ctx := context.Background()
	imp := Begin(t, l, "imp-0123456789abcdef01234567", "tokens.csv", T0)
	if imp.Stage != pipeline.StageStarted || imp.FileName != "tokens.csv" || !imp.Created.Equal(T0) {
		t.Fatalf("BeginImport returned %+v", imp)
	}
	again, made, err := l.BeginImport(ctx, pipeline.ImportRecord{ImportID: imp.ImportID, FileName: "other.csv"})
	if err != nil || made || again.FileName != "tokens.csv" {
		t.Fatalf("repeated BeginImport = %+v, %v, %v; want the stored record, created=false", again, made, err)
	}

	rows := VaultedRows(imp.ImportID, 3)
	rows[2].Status, rows[2].Reason = pipeline.StatusFailed, "vault: conflict"
	rows = append(rows, pipeline.TokenRecord{
		ImportID: imp.ImportID, Line: 9, Status: pipeline.StatusRejected, Reason: "secret key: not Base32",
		Problems: []seedfile.Problem{{Line: 9, Field: "secret key", Code: "secret.not-base32", Message: "not Base32"}},
	})
	imp.Format, imp.Rows, imp.Valid, imp.Invalid, imp.Pending = "entra-csv", 4, 3, 1, 2
	imp.Problems = []seedfile.Problem{{Field: "file", Code: "file.note", Message: "a file-level note"}}
	record(t, l, imp, rows)
	got, err := l.GetImport(ctx, imp.ImportID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stage != pipeline.StageVaulted || got.Pending != 2 || got.Rows != 4 || got.Invalid != 1 || got.Format != "entra-csv" ||
		len(got.Problems) != 1 || got.Problems[0].Code != "file.note" {
		t.Fatalf("after recording: %+v", got)
	}
	list, err := l.ListTokens(ctx, imp.ImportID)
	if err != nil {
		t.Fatal(err)
	}
	var lines []int
	for _, r := range list {
		lines = append(lines, r.Line)
	}
	if fmt.Sprint(lines) != "[2 3 4 9]" {
		t.Fatalf("ListTokens lines = %v, want [2 3 4 9]", lines)
	}
	if r := list[3]; r.Status != pipeline.StatusRejected || len(r.Problems) != 1 || r.Problems[0].Field != "secret key" || r.ImportID != imp.ImportID {
		t.Fatalf("rejected row = %+v", r)
	}
	if r := list[0]; r.Serial != rows[0].Serial || r.UserPrincipalName != rows[0].UserPrincipalName || r.SeedFingerprint != rows[0].SeedFingerprint || !r.Updated.Equal(T0) {
		t.Fatalf("row 2 = %+v, want %+v", r, rows[0])
	}

	return imp, rows
}

func testImportRoundTrip(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp, rows := recordFour(t, l)
	// A worker settles line 2; then the whole import is delivered again: nothing moves back,
	// nothing is counted twice.
	if last, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{Status: pipeline.StatusActivated, UserPrincipalName: "user0@contoso.com", DeviceID: "dev-1", UserID: "u-1"}); err != nil || last {
		t.Fatalf("SetTokenOutcome line 2 = %v, %v; want false, nil", last, err)
	}
	record(t, l, imp, rows)
	if got, _ := l.GetToken(ctx, imp.ImportID, 2); got.Status != pipeline.StatusActivated || got.DeviceID != "dev-1" || got.UserID != "u-1" {
		t.Fatalf("after a repeated recording, line 2 = %+v; want it still activated", got)
	}
	if got := pending(t, l, imp.ImportID); got != 1 {
		t.Fatalf("after a repeated recording, Pending = %d, want 1", got)
	}
	// The same outcome again: no change, not last.
	if last, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{Status: pipeline.StatusActivated, UserPrincipalName: "user0@contoso.com"}); err != nil || last {
		t.Fatalf("repeated outcome = %v, %v", last, err)
	}
	// The last pending row fails: this call, and only this one, settles the import.
	last, err := l.SetTokenOutcome(ctx, imp.ImportID, 3, pipeline.Outcome{Status: pipeline.StatusFailed, Reason: "guest_user: guests cannot hold tokens", UserPrincipalName: "user1@contoso.com"})
	if err != nil || !last {
		t.Fatalf("settling the last pending row = %v, %v; want true", last, err)
	}
	if got, _ := l.GetToken(ctx, imp.ImportID, 3); got.UserPrincipalName != "user1@contoso.com" || got.Reason == "" || got.Updated.Equal(T0) {
		t.Fatalf("failed row = %+v (Updated must move)", got)
	}
	// Unassign through the HTTP API: settled to settled, Pending stays 0, never "last" again.
	if last, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{Status: pipeline.StatusAvailable}); err != nil || last {
		t.Fatalf("unassign = %v, %v", last, err)
	}
	if got, _ := l.GetToken(ctx, imp.ImportID, 2); got.UserPrincipalName != "" || got.UserID != "" || got.DeviceID != "dev-1" || got.Status != pipeline.StatusAvailable {
		t.Fatalf("after unassign line 2 = %+v", got)
	}

	// Stages move forward only; disposition is recorded.
	if err := l.SetImportStage(ctx, imp.ImportID, pipeline.StageDone, pipeline.DispositionRejected); err != nil {
		t.Fatal(err)
	}
	if err := l.SetImportStage(ctx, imp.ImportID, pipeline.StageEnqueued, ""); err != nil {
		t.Fatal(err)
	}
	got, _ := l.GetImport(ctx, imp.ImportID)
	if got.Stage != pipeline.StageDone || got.Disposition != pipeline.DispositionRejected || got.Pending != 0 {
		t.Fatalf("after SetImportStage: %+v", got)
	}

	byName, err := l.ImportByName(ctx, "tokens.csv")
	if err != nil || byName.ImportID != imp.ImportID {
		t.Fatalf("ImportByName = %+v, %v", byName, err)
	}
	bySerial, err := l.TokenBySerial(ctx, rows[1].Serial)
	if err != nil || bySerial.Line != 3 || bySerial.ImportID != imp.ImportID {
		t.Fatalf("TokenBySerial = %+v, %v", bySerial, err)
	}
}

// testBeginImport: BeginImport stores the file facts of its record, not its counts, and stamps
// Created when it is zero; the latest BeginImport of a name wins a tie on Created.
func testBeginImport(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	before := time.Now().Add(-time.Minute)
	rec, made, err := l.BeginImport(ctx, pipeline.ImportRecord{
		ImportID: "imp-counts", FileName: "counts.csv", Stage: pipeline.StageDone, Pending: 7, Checkpoint: 40, Refused: 3, Format: "entra-csv",
	})
	if err != nil || !made {
		t.Fatal(made, err)
	}
	got, err := l.GetImport(ctx, "imp-counts")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []pipeline.ImportRecord{rec, got} {
		if r.Stage != pipeline.StageStarted || r.Pending != 0 || r.Checkpoint != 0 || r.Refused != 0 || r.Format != "entra-csv" ||
			r.Created.Before(before) || r.Updated.IsZero() {
			t.Errorf("BeginImport kept %+v; want stage started, no counts, Created and Updated stamped", r)
		}
	}
	Begin(t, l, "imp-tie-1", "tie.csv", T0)
	Begin(t, l, "imp-tie-2", "tie.csv", T0)
	if got, err := l.ImportByName(ctx, "tie.csv"); err != nil || got.ImportID != "imp-tie-2" {
		t.Errorf("ImportByName of two imports created at the same time = %+v, %v; want the later BeginImport", got, err)
	}
	Begin(t, l, "imp-tie-0", "tie.csv", T0.Add(-time.Hour))
	if got, err := l.ImportByName(ctx, "tie.csv"); err != nil || got.ImportID != "imp-tie-2" {
		t.Errorf("ImportByName after an older import began late = %+v, %v; want imp-tie-2", got, err)
	}
}

func testNotFound(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	for name, err := range map[string]error{
		"GetImport":     func() error { _, err := l.GetImport(ctx, "imp-none"); return err }(),
		"ImportByName":  func() error { _, err := l.ImportByName(ctx, "never.csv"); return err }(),
		"GetToken":      func() error { _, err := l.GetToken(ctx, "imp-none", 2); return err }(),
		"TokenBySerial": func() error { _, err := l.TokenBySerial(ctx, "000"); return err }(),
		"Outcome": func() error {
			_, err := l.SetTokenOutcome(ctx, "imp-none", 2, pipeline.Outcome{Status: pipeline.StatusFailed})
			return err
		}(),
		"Stage":                  l.SetImportStage(ctx, "imp-none", pipeline.StageDone, ""),
		"Checkpoint":             l.SetImportCheckpoint(ctx, "imp-none", 10, 0),
		"AddTokens":              l.AddTokens(ctx, pipeline.ImportRecord{ImportID: "imp-none"}, VaultedRows("imp-none", 1)),
		"AddTokens with Created": l.AddTokens(ctx, pipeline.ImportRecord{ImportID: "imp-none", Created: T0}, VaultedRows("imp-none", 1)),
		"SealImport":             l.SealImport(ctx, pipeline.ImportRecord{ImportID: "imp-none", Pending: 1}),
	} {
		if token.KindOf(err) != token.KindNotFound {
			t.Errorf("%s: %v (kind %q), want KindNotFound", name, err, token.KindOf(err))
		}
	}
	if _, err := l.TokenBySerial(ctx, VaultedRows("imp-none", 1)[0].Serial); token.KindOf(err) != token.KindNotFound {
		t.Errorf("rows refused for want of an import were indexed: %v", err)
	}
	if rows, err := l.ListTokens(ctx, "imp-none"); err != nil || len(rows) != 0 {
		t.Errorf("ListTokens of no import = %v, %v; want none, no error", rows, err)
	}
}

func testInvalid(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp := Begin(t, l, "imp-invalid", "invalid.csv", T0)
	record(t, l, pipeline.ImportRecord{ImportID: imp.ImportID, Rows: 1, Valid: 1, Pending: 1}, VaultedRows(imp.ImportID, 1))
	for name, err := range map[string]error{
		"empty import id": func() error { _, _, err := l.BeginImport(ctx, pipeline.ImportRecord{FileName: "x.csv"}); return err }(),
		"unknown stage":   l.SetImportStage(ctx, imp.ImportID, "sideways", ""),
		"empty status": func() error {
			_, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{})
			return err
		}(),
		"row without a status": l.AddTokens(ctx, imp, []pipeline.TokenRecord{{Line: 3, Serial: "X"}}),
		"negative line":        l.AddTokens(ctx, imp, []pipeline.TokenRecord{{Line: -1, Status: pipeline.StatusVaulted}}),
	} {
		if token.KindOf(err) != token.KindInvalid {
			t.Errorf("%s: %v (kind %q), want KindInvalid", name, err, token.KindOf(err))
		}
	}
	if got, _ := l.GetImport(ctx, imp.ImportID); got.Stage != pipeline.StageVaulted || got.Pending != 1 {
		t.Errorf("a refused call changed the import: %+v", got)
	}
}
