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

// testWarnings: an outcome's warnings join the row's problems, each once by code.
func testWarnings(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp := Begin(t, l, "imp-warn", "warn.csv", T0)
	rows := VaultedRows(imp.ImportID, 1)
	rows[0].Problems = []seedfile.Problem{{Line: 2, Field: "model", Code: "model.fallback", Message: "model from the fallback"}}
	imp.Rows, imp.Valid, imp.Pending = 1, 1, 1
	record(t, l, imp, rows)
	o := pipeline.Outcome{Status: pipeline.StatusActivated, Warnings: []seedfile.Problem{
		{Line: 2, Field: "serial number", Code: "serial.retired-before", Message: "retired before"},
		{Line: 2, Field: "model", Code: "model.fallback", Message: "again"},
	}}
	for range 2 {
		if _, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, o); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.GetToken(ctx, imp.ImportID, 2)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, p := range got.Problems {
		codes = append(codes, p.Code)
	}
	if fmt.Sprint(codes) != "[model.fallback serial.retired-before]" || got.Problems[0].Message != "model from the fallback" {
		t.Errorf("problems after two outcomes with warnings: %+v", got.Problems)
	}
}

// testClaimNotificationOnce: instances racing to claim one import's notification get one
// winner per key; a new outcome (another key) is claimed again; a claim is not a change of the
// import (Updated stays); an unknown import is not found.
func testClaimNotificationOnce(t *testing.T, l pipeline.Ledger) {
	ctx := context.Background()
	imp := Begin(t, l, "imp-claim", "claim.csv", time.Now())
	before, err := l.GetImport(ctx, imp.ImportID)
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, err := l.ClaimNotification(ctx, imp.ImportID, "k1")
			if err != nil {
				t.Error(err)
			}
			if first {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners for one key, want 1", wins.Load())
	}
	if first, err := l.ClaimNotification(ctx, imp.ImportID, "k2"); err != nil || !first {
		t.Errorf("a new outcome: %v %v, want claimed", first, err)
	}
	if first, err := l.ClaimNotification(ctx, imp.ImportID, "k2"); err != nil || first {
		t.Errorf("the same outcome again: %v %v, want not claimed", first, err)
	}
	if after, _ := l.GetImport(ctx, imp.ImportID); !after.Updated.Equal(before.Updated) {
		t.Errorf("a claim moved the import's Updated from %v to %v", before.Updated, after.Updated)
	}
	if _, err := l.ClaimNotification(ctx, "imp-none", "k1"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("unknown import: %v, want not found", err)
	}
}
