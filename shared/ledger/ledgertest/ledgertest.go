// Package ledgertest is the contract suite of pipeline.Ledger: what every ledger must do, so
// that the Table storage ledger (package ledger, run on Azurite) and the in-memory fake the flow
// tests use (pipelinetest.MemLedger) count and settle rows the same way. Each implementation's
// tests call Run with a constructor. For tests only.
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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
		"Stage":      l.SetImportStage(ctx, "imp-none", pipeline.StageDone, ""),
		"Checkpoint": l.SetImportCheckpoint(ctx, "imp-none", 10, 0),
		"AddTokens":  l.AddTokens(ctx, pipeline.ImportRecord{ImportID: "imp-none"}, VaultedRows("imp-none", 1)),
		"SealImport": l.SealImport(ctx, pipeline.ImportRecord{ImportID: "imp-none", Pending: 1}),
	} {
		if token.KindOf(err) != token.KindNotFound {
			t.Errorf("%s: %v (kind %q), want KindNotFound", name, err, token.KindOf(err))
		}
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

// testConcurrentOutcomes is why the Table ledger's conditional updates exist: 20 workers settle
// 20 tokens of one import at once, each message delivered twice; no count is lost and exactly
// one call learns it settled the import.
func testConcurrentOutcomes(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp := Begin(t, l, "imp-concurrent", "big.csv", T0)
	const n = 20
	imp.Rows, imp.Valid, imp.Pending = n, n, n
	record(t, l, imp, VaultedRows(imp.ImportID, n))
	if got := pending(t, l, imp.ImportID); got != n {
		t.Fatalf("Pending = %d, want %d", got, n)
	}
	var (
		wg    sync.WaitGroup
		lasts atomic.Int32
		errs  = make(chan error, 2*n)
	)
	for i := 0; i < 2*n; i++ {
		wg.Add(1)
		go func(line int) {
			defer wg.Done()
			status := pipeline.StatusActivated
			if line%3 == 0 {
				status = pipeline.StatusFailed
			}
			last, err := l.SetTokenOutcome(ctx, imp.ImportID, line, pipeline.Outcome{Status: status, Reason: "r", UserPrincipalName: "x@contoso.com"})
			if err != nil {
				errs <- err
			}
			if last {
				lasts.Add(1)
			}
		}(2 + i%n)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := pending(t, l, imp.ImportID); got != 0 {
		t.Errorf("Pending = %d after every token settled, want 0", got)
	}
	if lasts.Load() != 1 {
		t.Errorf("%d calls reported lastSettled, want exactly 1", lasts.Load())
	}
}

// testCounting: how Pending moves. A row that settles before SealImport is not counted (the
// seal counts); a row that stops being settled counts up again; Pending never goes below zero.
func testCounting(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp := Begin(t, l, "imp-count", "count.csv", T0)
	rows := VaultedRows(imp.ImportID, 3)
	if err := l.AddTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	if settle(t, l, imp.ImportID, 4, pipeline.StatusFailed) || pending(t, l, imp.ImportID) != 0 {
		t.Fatalf("a row settled before the seal counted: Pending %d", pending(t, l, imp.ImportID))
	}
	imp.Rows, imp.Valid, imp.Pending = 3, 3, 2 // the caller counts: line 4 has failed
	if err := l.SealImport(ctx, imp); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, l, imp.ImportID); got != 2 {
		t.Fatalf("Pending after the seal = %d, want 2", got)
	}
	if settle(t, l, imp.ImportID, 2, pipeline.StatusActivated) || pending(t, l, imp.ImportID) != 1 {
		t.Fatalf("after settling line 2: Pending %d, want 1", pending(t, l, imp.ImportID))
	}
	// Line 2 goes back to waiting (settled to unsettled): counted again.
	if settle(t, l, imp.ImportID, 2, pipeline.StatusVaulted) || pending(t, l, imp.ImportID) != 2 {
		t.Fatalf("after line 2 went back to vaulted: Pending %d, want 2", pending(t, l, imp.ImportID))
	}
	if settle(t, l, imp.ImportID, 3, pipeline.StatusAvailable) {
		t.Fatal("settling line 3 reported the last, with line 2 pending")
	}
	if !settle(t, l, imp.ImportID, 2, pipeline.StatusActivated) || pending(t, l, imp.ImportID) != 0 {
		t.Fatalf("settling the last row: Pending %d; want 0 and last", pending(t, l, imp.ImportID))
	}

	// A seal with a negative count stores zero; a settle that finds Pending at zero keeps it
	// there (and says last again: the report is rewritten, never left stale).
	low := Begin(t, l, "imp-low", "low.csv", T0)
	if err := l.AddTokens(ctx, low, VaultedRows(low.ImportID, 2)); err != nil {
		t.Fatal(err)
	}
	low.Pending = -3
	if err := l.SealImport(ctx, low); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, l, low.ImportID); got != 0 {
		t.Fatalf("Pending after a seal of -3 = %d, want 0", got)
	}
	if !settle(t, l, low.ImportID, 2, pipeline.StatusFailed) || pending(t, l, low.ImportID) != 0 {
		t.Fatalf("a settle below zero: Pending %d; want 0 and last", pending(t, l, low.ImportID))
	}
}

// testNewerImportHoldsNames: the file name and the serials belong to the import created last;
// a late repeated delivery of an older import does not take them back.
func testNewerImportHoldsNames(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp := Begin(t, l, "imp-many", "many.csv", T0)
	rows := VaultedRows(imp.ImportID, 250)
	if err := l.AddTokens(ctx, imp, rows[:120]); err != nil { // a crash half way
		t.Fatal(err)
	}
	imp2 := Begin(t, l, "imp-many-2", "many.csv", T0.Add(time.Minute))
	rows2 := VaultedRows(imp2.ImportID, 250)
	imp2.Rows, imp2.Valid, imp2.Pending = 250, 250, 250
	record(t, l, imp2, rows2)
	got, _ := l.GetImport(ctx, imp2.ImportID)
	list, _ := l.ListTokens(ctx, imp2.ImportID)
	if got.Pending != 250 || len(list) != 250 {
		t.Fatalf("Pending %d, %d rows; want 250, 250", got.Pending, len(list))
	}
	if byName, _ := l.ImportByName(ctx, "many.csv"); byName.ImportID != imp2.ImportID {
		t.Fatalf("ImportByName = %s, want %s", byName.ImportID, imp2.ImportID)
	}
	if tr, _ := l.TokenBySerial(ctx, rows[0].Serial); tr.ImportID != imp2.ImportID {
		t.Fatalf("TokenBySerial = %s, want the newer import", tr.ImportID)
	}
	// A late repeated delivery of the older import does not take them back.
	if _, made, err := l.BeginImport(ctx, pipeline.ImportRecord{ImportID: imp.ImportID, FileName: "many.csv", Created: T0}); err != nil || made {
		t.Fatal(made, err)
	}
	imp.Rows, imp.Valid, imp.Pending = 250, 250, 250
	record(t, l, imp, rows)
	if byName, _ := l.ImportByName(ctx, "many.csv"); byName.ImportID != imp2.ImportID {
		t.Fatalf("after a late older delivery ImportByName = %s", byName.ImportID)
	}
	if tr, _ := l.TokenBySerial(ctx, rows[200].Serial); tr.ImportID != imp2.ImportID {
		t.Fatalf("after a late older delivery TokenBySerial = %s", tr.ImportID)
	}
	if list, _ := l.ListTokens(ctx, imp.ImportID); len(list) != 250 {
		t.Fatalf("older import has %d rows after its repeated delivery, want 250", len(list))
	}
}

// testRejectedRowsNotIndexed: a rejected row carries the serial the reader saw (a duplicate, a
// bad secret): it is kept and listed with that serial, but it never becomes the serial's
// latest token — neither within its import (a duplicate after the valid line) nor from a later
// import of only rejected rows.
func testRejectedRowsNotIndexed(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp := Begin(t, l, "imp-aaaaaaaaaaaaaaaaaaaaaaaa", "first.csv", T0)
	rows := VaultedRows(imp.ImportID, 1)
	serial := rows[0].Serial
	dup := pipeline.TokenRecord{
		ImportID: imp.ImportID, Line: 3, Serial: serial, UserPrincipalName: "other@contoso.com", Status: pipeline.StatusRejected,
		Reason:   "serial number: this serial number already appears on line 2",
		Problems: []seedfile.Problem{{Line: 3, Field: "serial number", Code: "serial.duplicate", Message: "already on line 2", Serial: serial}},
	}
	imp.Rows, imp.Valid, imp.Invalid, imp.Pending = 2, 1, 1, 1
	record(t, l, imp, append(rows, dup))
	later := Begin(t, l, "imp-bbbbbbbbbbbbbbbbbbbbbbbb", "second.csv", T0.Add(time.Hour))
	bad := dup
	bad.ImportID, bad.Line, bad.Reason = later.ImportID, 2, "secret key: not Base32"
	bad.Problems = []seedfile.Problem{{Line: 2, Field: "secret key", Code: "secret.not-base32", Message: "not Base32"}}
	later.Rows, later.Invalid = 1, 1
	record(t, l, later, []pipeline.TokenRecord{bad})

	got, err := l.TokenBySerial(ctx, serial)
	if err != nil || got.ImportID != imp.ImportID || got.Line != 2 || got.Status != pipeline.StatusVaulted {
		t.Fatalf("TokenBySerial = %+v, %v; want line 2 of %s (the valid row)", got, err, imp.ImportID)
	}
	for _, c := range []struct {
		id   string
		line int
	}{{imp.ImportID, 3}, {later.ImportID, 2}} {
		r, err := l.GetToken(ctx, c.id, c.line)
		if err != nil || r.Status != pipeline.StatusRejected || r.Serial != serial || r.UserPrincipalName != "other@contoso.com" {
			t.Errorf("rejected row %s/%d = %+v, %v; want it kept with its serial and UPN", c.id, c.line, r, err)
		}
	}
	// A serial seen only on rejected rows is not a token the ledger knows.
	only := Begin(t, l, "imp-cccccccccccccccccccccccc", "third.csv", T0.Add(2*time.Hour))
	lone := bad
	lone.ImportID, lone.Serial = only.ImportID, "REJECTED-ONLY"
	only.Rows, only.Invalid = 1, 1
	record(t, l, only, []pipeline.TokenRecord{lone})
	if _, err := l.TokenBySerial(ctx, "REJECTED-ONLY"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("TokenBySerial of a rejected-only serial: %v, want not found", err)
	}
}

// testChunkedRecording records an import the way the pipeline does for a big file: rows a
// chunk at a time (a repeated chunk after a crash part way writes only what is missing), then
// SealImport; rows are read back by line range; the checkpoint carries the refused count and
// never counts a chunk twice.
func testChunkedRecording(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp := Begin(t, l, "imp-chunked0000000000000000", "chunked.csv", T0)
	rows := VaultedRows(imp.ImportID, 1250) // lines 2..1251: more than one page of 1,000
	for i := range rows {
		rows[i].Serial = fmt.Sprintf("CHUNK-%05d", i)
	}
	if err := l.AddTokens(ctx, imp, rows[:300]); err != nil {
		t.Fatal(err)
	}
	// A crash after the first 300 rows; the repeat writes an overlapping chunk, then the rest.
	changed := rows[250]
	changed.UserPrincipalName = "someone-else@contoso.com"
	if err := l.AddTokens(ctx, imp, append([]pipeline.TokenRecord{changed}, rows[251:700]...)); err != nil {
		t.Fatalf("repeated chunk: %v", err)
	}
	if err := l.AddTokens(ctx, imp, rows[700:]); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.GetToken(ctx, imp.ImportID, rows[250].Line); got.UserPrincipalName != rows[250].UserPrincipalName {
		t.Errorf("a repeated chunk overwrote a stored row: %+v", got)
	}
	if got, _ := l.GetImport(ctx, imp.ImportID); got.Stage != pipeline.StageStarted || got.Pending != 0 {
		t.Fatalf("AddTokens touched the summary: %+v", got)
	}
	imp.Format, imp.Rows, imp.Valid, imp.Pending, imp.Disposition = "entra-csv", 1250, 1250, 1250, pipeline.DispositionDeleted
	if err := l.SealImport(ctx, imp); err != nil {
		t.Fatal(err)
	}
	if _, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{Status: pipeline.StatusAvailable}); err != nil {
		t.Fatal(err)
	}
	if err := l.SealImport(ctx, imp); err != nil { // a repeat after the stage moved counts nothing again
		t.Fatal(err)
	}
	got, err := l.GetImport(ctx, imp.ImportID)
	if err != nil || got.Stage != pipeline.StageVaulted || got.Pending != 1249 || got.Rows != 1250 || got.Disposition != pipeline.DispositionDeleted {
		t.Fatalf("after SealImport: %+v, %v", got, err)
	}
	var all []int
	if err := l.EachToken(ctx, imp.ImportID, 0, 0, func(r pipeline.TokenRecord) error { all = append(all, r.Line); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(all) != 1250 || all[0] != 2 || all[1249] != 1251 {
		t.Fatalf("EachToken saw %d rows", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			t.Fatalf("EachToken out of line order at %d: %d after %d", i, all[i], all[i-1])
		}
	}
	var some []int
	if err := l.EachToken(ctx, imp.ImportID, 998, 1003, func(r pipeline.TokenRecord) error { some = append(some, r.Line); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(some) != "[998 999 1000 1001 1002 1003]" {
		t.Errorf("EachToken(998, 1003) = %v", some)
	}
	stop := errors.New("enough")
	n := 0
	if err := l.EachToken(ctx, imp.ImportID, 0, 0, func(pipeline.TokenRecord) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("EachToken with a failing callback = %v after %d rows; want the callback's error after 1", err, n)
	}
	if r, err := l.TokenBySerial(ctx, "CHUNK-01000"); err != nil || r.Line != 1002 {
		t.Errorf("serial index of a later chunk: %+v, %v", r, err)
	}

	for _, c := range []struct{ line, refused, want, cp int }{{500, 2, 2, 500}, {500, 2, 2, 500}, {400, 5, 2, 500}, {900, 1, 3, 900}} {
		if err := l.SetImportCheckpoint(ctx, imp.ImportID, c.line, c.refused); err != nil {
			t.Fatal(err)
		}
		if got, _ := l.GetImport(ctx, imp.ImportID); got.Refused != c.want || got.Checkpoint != c.cp {
			t.Errorf("after checkpoint %d (+%d refused): checkpoint %d, refused %d; want refused %d", c.line, c.refused, got.Checkpoint, got.Refused, c.want)
		}
	}
	if got, _ := l.GetImport(ctx, imp.ImportID); !strings.EqualFold(got.FileName, "chunked.csv") || got.Stage != pipeline.StageVaulted {
		t.Errorf("checkpoints changed the import: %+v", got)
	}
}
