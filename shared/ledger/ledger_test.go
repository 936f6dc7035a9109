package ledger

import (
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/internal/azurite"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

var _ pipeline.Ledger = (*Ledger)(nil)

var server *azurite.Server

func TestMain(m *testing.M) {
	// Listing tests and running the key fuzzer need no Azurite.
	args := strings.Join(os.Args, " ")
	if !strings.Contains(args, "-test.fuzz") && !strings.Contains(args, "-test.list") {
		s, err := azurite.Start(context.Background())
		if err != nil {
			fmt.Fprintln(os.Stderr, "ledger tests need Azurite:", err)
			os.Exit(1)
		}
		server = s
	}
	code := m.Run()
	server.Stop()
	os.Exit(code)
}

var tableSeq atomic.Int64

// newLedger returns a Ledger on fresh tables of the shared Azurite.
func newLedger(t *testing.T) *Ledger {
	t.Helper()
	if server == nil {
		t.Skip("no Azurite in this run")
	}
	n := tableSeq.Add(1)
	l, err := New(Options{
		ConnectionString: server.ConnectionString(),
		LedgerTable:      fmt.Sprintf("ledger%d", n),
		AuditTable:       fmt.Sprintf("audit%d", n),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := l.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.EnsureTables(ctx); err != nil { // twice: idempotent
		t.Fatalf("second EnsureTables: %v", err)
	}
	return l
}

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func begin(t *testing.T, l *Ledger, id, name string, created time.Time) pipeline.ImportRecord {
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

func vaultedRows(id string, n int) []pipeline.TokenRecord {
	rows := make([]pipeline.TokenRecord, n)
	for i := range rows {
		rows[i] = pipeline.TokenRecord{
			ImportID: id, Line: i + 2, Serial: fmt.Sprintf("86596120%05d", i+1), Manufacturer: "Token2", Model: "C202",
			UserPrincipalName: fmt.Sprintf("user%d@contoso.com", i), Status: pipeline.StatusVaulted,
			SeedFingerprint: fmt.Sprintf("%016x", i), Updated: t0,
		}
	}
	return rows
}

func TestImportRoundTrip(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-0123456789abcdef01234567", "tokens.csv", t0)
	if imp.Stage != pipeline.StageStarted || imp.FileName != "tokens.csv" || !imp.Created.Equal(t0) {
		t.Fatalf("BeginImport returned %+v", imp)
	}
	again, made, err := l.BeginImport(ctx, pipeline.ImportRecord{ImportID: imp.ImportID, FileName: "other.csv"})
	if err != nil || made || again.FileName != "tokens.csv" {
		t.Fatalf("repeated BeginImport = %+v, %v, %v; want the stored record, created=false", again, made, err)
	}

	rows := vaultedRows(imp.ImportID, 3)
	rows[2].Status, rows[2].Reason = pipeline.StatusFailed, "vault: conflict"
	rows = append(rows, pipeline.TokenRecord{
		ImportID: imp.ImportID, Line: 9, Status: pipeline.StatusRejected, Reason: "secret key: not Base32",
		Problems: []seedfile.Problem{{Line: 9, Field: "secret key", Code: "secret.not-base32", Message: "not Base32"}},
	})
	imp.Format, imp.Rows, imp.Valid, imp.Invalid = "entra-csv", 4, 3, 1
	imp.Problems = []seedfile.Problem{{Field: "file", Code: "file.note", Message: "a file-level note"}}
	if err := l.PutTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	got, err := l.GetImport(ctx, imp.ImportID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stage != pipeline.StageVaulted || got.Pending != 2 || got.Rows != 4 || got.Invalid != 1 || got.Format != "entra-csv" ||
		len(got.Problems) != 1 || got.Problems[0].Code != "file.note" {
		t.Fatalf("after PutTokens: %+v", got)
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
	if r := list[3]; r.Status != pipeline.StatusRejected || len(r.Problems) != 1 || r.Problems[0].Field != "secret key" {
		t.Fatalf("rejected row = %+v", r)
	}
	if r := list[0]; r.Serial != rows[0].Serial || r.UserPrincipalName != rows[0].UserPrincipalName || r.SeedFingerprint != rows[0].SeedFingerprint || !r.Updated.Equal(t0) {
		t.Fatalf("row 2 = %+v, want %+v", r, rows[0])
	}

	// A worker settles line 2; then the whole import is delivered again: nothing moves back,
	// nothing is counted twice.
	if last, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{Status: pipeline.StatusActivated, UserPrincipalName: "user0@contoso.com", DeviceID: "dev-1", UserID: "u-1"}); err != nil || last {
		t.Fatalf("SetTokenOutcome line 2 = %v, %v; want false, nil", last, err)
	}
	if err := l.PutTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.GetToken(ctx, imp.ImportID, 2); got.Status != pipeline.StatusActivated || got.DeviceID != "dev-1" || got.UserID != "u-1" {
		t.Fatalf("after repeated PutTokens, line 2 = %+v; want it still activated", got)
	}
	if got, _ := l.GetImport(ctx, imp.ImportID); got.Pending != 1 {
		t.Fatalf("after repeated PutTokens, Pending = %d, want 1", got.Pending)
	}
	// The same outcome again: no write, not last.
	if last, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{Status: pipeline.StatusActivated, UserPrincipalName: "user0@contoso.com"}); err != nil || last {
		t.Fatalf("repeated outcome = %v, %v", last, err)
	}
	// The last pending row fails: this call, and only this one, settles the import.
	last, err := l.SetTokenOutcome(ctx, imp.ImportID, 3, pipeline.Outcome{Status: pipeline.StatusFailed, Reason: "guest_user: guests cannot hold tokens", UserPrincipalName: "user1@contoso.com"})
	if err != nil || !last {
		t.Fatalf("settling the last pending row = %v, %v; want true", last, err)
	}
	if got, _ := l.GetToken(ctx, imp.ImportID, 3); got.UserPrincipalName != "user1@contoso.com" || got.Reason == "" {
		t.Fatalf("failed row = %+v", got)
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
	got, _ = l.GetImport(ctx, imp.ImportID)
	if got.Stage != pipeline.StageDone || got.Disposition != pipeline.DispositionRejected || got.Pending != 0 {
		t.Fatalf("after SetImportStage: %+v", got)
	}
	if err := l.SetImportStage(ctx, imp.ImportID, "sideways", ""); token.KindOf(err) != token.KindInvalid {
		t.Fatalf("unknown stage: %v, want KindInvalid", err)
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

func TestNotFound(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	for name, err := range map[string]error{
		"GetImport":     func() error { _, err := l.GetImport(ctx, "imp-none"); return err }(),
		"ImportByName":  func() error { _, err := l.ImportByName(ctx, "never.csv"); return err }(),
		"GetToken":      func() error { _, err := l.GetToken(ctx, "imp-none", 2); return err }(),
		"TokenBySerial": func() error { _, err := l.TokenBySerial(ctx, "000"); return err }(),
		"Outcome": func() error {
			_, err := l.SetTokenOutcome(ctx, "imp-none", 2, pipeline.Outcome{Status: "failed"})
			return err
		}(),
		"Stage":     l.SetImportStage(ctx, "imp-none", pipeline.StageDone, ""),
		"PutTokens": l.PutTokens(ctx, pipeline.ImportRecord{ImportID: "imp-none"}, vaultedRows("imp-none", 1)),
	} {
		if token.KindOf(err) != token.KindNotFound {
			t.Errorf("%s: %v (kind %q), want KindNotFound", name, err, token.KindOf(err))
		}
	}
}

// TestConcurrentOutcomes is why the conditional updates exist: 20 workers settle 20 tokens of
// one import at once, each message delivered twice; no count is lost and exactly one call
// learns it settled the import.
func TestConcurrentOutcomes(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-concurrent", "big.csv", t0)
	const n = 20
	if err := l.PutTokens(ctx, imp, vaultedRows(imp.ImportID, n)); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.GetImport(ctx, imp.ImportID); got.Pending != n {
		t.Fatalf("Pending = %d, want %d", got.Pending, n)
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
	got, err := l.GetImport(ctx, imp.ImportID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Pending != 0 {
		t.Errorf("Pending = %d after every token settled, want 0", got.Pending)
	}
	if lasts.Load() != 1 {
		t.Errorf("%d calls reported lastSettled, want exactly 1", lasts.Load())
	}
}

func TestManyRowsSpanTransactions(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-many", "many.csv", t0)
	rows := vaultedRows(imp.ImportID, 250)
	if err := l.PutTokens(ctx, imp, rows[:120]); err != nil { // a crash half way ...
		t.Fatal(err)
	}
	// ... is not what happened here (the stage moved), so force the "started" case by a fresh import.
	imp2 := begin(t, l, "imp-many-2", "many.csv", t0.Add(time.Minute))
	rows2 := vaultedRows(imp2.ImportID, 250)
	if err := l.PutTokens(ctx, imp2, rows2); err != nil {
		t.Fatal(err)
	}
	got, _ := l.GetImport(ctx, imp2.ImportID)
	list, _ := l.ListTokens(ctx, imp2.ImportID)
	if got.Pending != 250 || len(list) != 250 {
		t.Fatalf("Pending %d, %d rows; want 250, 250", got.Pending, len(list))
	}
	// The newer import holds the file name and the serials.
	if byName, _ := l.ImportByName(ctx, "many.csv"); byName.ImportID != imp2.ImportID {
		t.Fatalf("ImportByName = %s, want %s", byName.ImportID, imp2.ImportID)
	}
	if tr, _ := l.TokenBySerial(ctx, rows[0].Serial); tr.ImportID != imp2.ImportID {
		t.Fatalf("TokenBySerial = %s, want the newer import", tr.ImportID)
	}
	// A late repeated delivery of the older import does not take them back.
	if _, made, err := l.BeginImport(ctx, pipeline.ImportRecord{ImportID: imp.ImportID, FileName: "many.csv", Created: t0}); err != nil || made {
		t.Fatal(made, err)
	}
	if err := l.PutTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
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

// TestCrashBeforeCount: rows written, summary not yet updated (a crash): a repeated PutTokens
// counts Pending from what is stored.
func TestCrashBeforeCount(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-crash", "crash.csv", t0)
	rows := vaultedRows(imp.ImportID, 5)
	pk := keyFor(imp.ImportID)
	for _, r := range rows[:3] {
		if _, err := l.table.AddEntity(ctx, mustJSON(newRowEntity(pk, r)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.PutTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.GetImport(ctx, imp.ImportID); got.Pending != 5 || got.Stage != pipeline.StageVaulted {
		t.Fatalf("after recovery: %+v", got)
	}
}

func TestOddKeys(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	names := []string{
		"plain.csv",
		"vendor/2026/batch 7 (Ω) #1?.csv",
		`back\slash'quote''s%41~tilde.csv`,
		"tab\tand\x01control\u0085.csv",
		"日本語のファイル.csv",
		strings.Repeat("long/name-", 100) + ".csv",
	}
	for i, name := range names {
		id := fmt.Sprintf("imp-odd-%d", i)
		imp := begin(t, l, id, name, t0.Add(time.Duration(i)*time.Second))
		serial := fmt.Sprintf("SN/%d#?\\'%%~ü", i)
		if i == len(names)-1 {
			serial = strings.Repeat("9", 900)
		}
		row := pipeline.TokenRecord{Line: 2, Serial: serial, Status: pipeline.StatusVaulted}
		if err := l.PutTokens(ctx, imp, []pipeline.TokenRecord{row}); err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		got, err := l.ImportByName(ctx, name)
		if err != nil || got.ImportID != id || got.FileName != name {
			t.Errorf("ImportByName(%q) = %+v, %v", name, got, err)
		}
		tr, err := l.TokenBySerial(ctx, serial)
		if err != nil || tr.Serial != serial || tr.ImportID != id {
			t.Errorf("TokenBySerial(%q) = %+v, %v", serial, tr, err)
		}
		if _, err := l.SetTokenOutcome(ctx, id, 2, pipeline.Outcome{Status: pipeline.StatusAvailable}); err != nil {
			t.Errorf("SetTokenOutcome(%q): %v", name, err)
		}
		if err := l.Audit(ctx, pipeline.AuditRecord{Caller: "hr", Action: "assign", Serial: serial, ToUser: "a@b"}); err != nil {
			t.Errorf("Audit(%q): %v", serial, err)
		}
		if trail, err := l.AuditTrail(ctx, serial, 0); err != nil || len(trail) != 1 {
			t.Errorf("AuditTrail(%q) = %v, %v", serial, trail, err)
		}
	}
	if _, err := l.ImportByName(ctx, "vendor/2026/batch 7 (Ω) #1.csv"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("a near name found something: %v", err)
	}
}

func TestAudit(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	for i, to := range []string{"ada@contoso.com", "bob@contoso.com", ""} {
		if err := l.Audit(ctx, pipeline.AuditRecord{
			Time: t0.Add(time.Duration(i) * time.Minute), Caller: "hr-system", Action: "assign", Serial: "8659612000001",
			FromUser: "x", ToUser: to, Outcome: "changed",
		}); err != nil {
			t.Fatal(err)
		}
	}
	_ = l.Audit(ctx, pipeline.AuditRecord{Time: t0, Caller: "hr", Action: "assign", Serial: "other", Outcome: "changed"})
	trail, err := l.AuditTrail(ctx, "8659612000001", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != 3 || trail[0].ToUser != "" || trail[2].ToUser != "ada@contoso.com" || !trail[2].Time.Equal(t0) || trail[0].Caller != "hr-system" {
		t.Fatalf("trail = %+v; want 3 records, newest first", trail)
	}
	if two, _ := l.AuditTrail(ctx, "8659612000001", 2); len(two) != 2 {
		t.Fatalf("AuditTrail max 2 = %d records", len(two))
	}
}

// TestNoSeedInEntities writes rows for tokens whose seeds are known, then reads every entity of
// both tables raw and checks that no property holds the seed in any usual spelling, and that no
// property is named like a secret.
func TestNoSeedInEntities(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-scan", "scan.csv", t0)
	var seeds [][]byte
	var rows []pipeline.TokenRecord
	for i := 0; i < 5; i++ {
		secret := []byte(fmt.Sprintf("12345678901234567890-%02d", i))
		seeds = append(seeds, secret)
		s := token.Seed{Secret: secret, Hash: token.SHA1, Digits: 6, Period: 30}
		rows = append(rows, pipeline.TokenRecord{
			Line: i + 2, Serial: fmt.Sprintf("S%d", i), Status: pipeline.StatusVaulted, SeedFingerprint: s.Fingerprint(),
			Reason: fmt.Sprintf("stored %v", s), // a Seed formatted by mistake must not leak either
		})
	}
	imp.Problems = []seedfile.Problem{{Field: "file", Code: "x", Message: "note"}}
	if err := l.PutTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	_, _ = l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{Status: pipeline.StatusActivated})
	_ = l.Audit(ctx, pipeline.AuditRecord{Caller: "c", Action: "assign", Serial: "S1", Outcome: "changed"})

	var spellings []string
	for _, s := range seeds {
		spellings = append(spellings,
			base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(s), hex.EncodeToString(s),
			base64.StdEncoding.EncodeToString(s), string(s))
	}
	scanned := 0
	for _, c := range []*aztables.Client{l.table, l.audit} {
		pager := c.NewListEntitiesPager(nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, raw := range page.Entities {
				scanned++
				low := strings.ToLower(string(raw))
				for _, bad := range []string{`"secret`, `"seed"`, `"seedvalue`, `"key"`, `"secretkey`} {
					if strings.Contains(low, bad) {
						t.Errorf("entity has a secret-like property %s: %s", bad, raw)
					}
				}
				for _, sp := range spellings {
					if strings.Contains(string(raw), sp) || strings.Contains(low, strings.ToLower(sp)) {
						t.Errorf("entity holds a seed: %s", raw)
					}
				}
			}
		}
	}
	if scanned < 8 {
		t.Fatalf("scanned only %d entities", scanned)
	}
}

// BenchmarkSetTokenOutcome measures settling tokens of one import from parallel workers (the
// contended case: every settle moves the same summary entity). Reports ns per settled token.
func BenchmarkSetTokenOutcome(b *testing.B) {
	if server == nil {
		b.Skip("no Azurite")
	}
	l, err := New(Options{ConnectionString: server.ConnectionString(), LedgerTable: "benchledger", AuditTable: "benchaudit"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := l.EnsureTables(ctx); err != nil {
		b.Fatal(err)
	}
	id := fmt.Sprintf("imp-bench-%d", time.Now().UnixNano())
	if _, _, err := l.BeginImport(ctx, pipeline.ImportRecord{ImportID: id, FileName: id + ".csv"}); err != nil {
		b.Fatal(err)
	}
	if err := l.PutTokens(ctx, pipeline.ImportRecord{ImportID: id}, vaultedRows(id, b.N)); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.SetParallelism(benchWorkers) // x GOMAXPROCS workers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			line := int(next.Add(1)) + 1
			if _, err := l.SetTokenOutcome(ctx, id, line, pipeline.Outcome{Status: pipeline.StatusActivated}); err != nil {
				b.Error(err)
			}
		}
	})
	b.StopTimer()
	if imp, _ := l.GetImport(ctx, id); imp.Pending != 0 {
		b.Fatalf("Pending = %d after the run", imp.Pending)
	}
}

var benchWorkers = 8 // times GOMAXPROCS goroutines

// BenchmarkPutTokens measures recording an import of 1,000 rows (rows, Pending, serial index).
func BenchmarkPutTokens(b *testing.B) {
	if server == nil {
		b.Skip("no Azurite")
	}
	l, err := New(Options{ConnectionString: server.ConnectionString(), LedgerTable: "benchput", AuditTable: "benchputaudit"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := l.EnsureTables(ctx); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("imp-put-%d-%d", time.Now().UnixNano(), i)
		if _, _, err := l.BeginImport(ctx, pipeline.ImportRecord{ImportID: id, FileName: id + ".csv"}); err != nil {
			b.Fatal(err)
		}
		rows := vaultedRows(id, 1000)
		for j := range rows {
			rows[j].Serial = fmt.Sprintf("%s-%d", id, j)
		}
		if err := l.PutTokens(ctx, pipeline.ImportRecord{ImportID: id}, rows); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLargeRows: rows near the service's limits (long reasons, many problems) are clipped, and
// a file of them is split into transactions under the 4 MiB payload limit.
func TestLargeRows(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-large", "large.csv", t0)
	var probs []seedfile.Problem
	for i := 0; i < 300; i++ {
		probs = append(probs, seedfile.Problem{Line: 2, Field: "upn", Code: "upn.invalid", Message: strings.Repeat("é", 100)})
	}
	var rows []pipeline.TokenRecord
	for i := 0; i < 120; i++ {
		rows = append(rows, pipeline.TokenRecord{Line: i + 2, Status: pipeline.StatusRejected, Reason: strings.Repeat("ü", 10000), Problems: probs})
	}
	if err := l.PutTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	list, err := l.ListTokens(ctx, imp.ImportID)
	if err != nil || len(list) != 120 {
		t.Fatalf("%d rows, %v", len(list), err)
	}
	if r := list[0]; len(r.Reason) > maxReasonBytes+len("…") || !strings.HasSuffix(r.Reason, "…") || len(r.Problems) == 0 || len(r.Problems) >= 300 {
		t.Fatalf("row not clipped: reason %d bytes, %d problems", len(r.Reason), len(r.Problems))
	}
	if _, err := l.SetTokenOutcome(ctx, imp.ImportID, 2, pipeline.Outcome{Status: pipeline.StatusFailed, Reason: strings.Repeat("x", 70000)}); err != nil {
		t.Fatalf("long outcome reason: %v", err)
	}
}

func TestBatches(t *testing.T) {
	one := func(int) int { return 1 }
	if got := batches(make([]int, 250), one); len(got) != 3 || len(got[0]) != 100 || len(got[2]) != 50 {
		t.Fatalf("250 small rows: %d batches", len(got))
	}
	big := func(int) int { return maxBatchBytes / 3 }
	if got := batches(make([]int, 7), big); len(got) != 3 || len(got[0]) != 3 {
		t.Fatalf("7 big rows: batch sizes %d", len(got))
	}
	huge := func(int) int { return maxBatchBytes * 2 }
	if got := batches(make([]int, 2), huge); len(got) != 2 {
		t.Fatalf("2 huge rows: %d batches, want one each", len(got))
	}
	if got := batches([]int{}, one); len(got) != 0 {
		t.Fatalf("no rows: %d batches", len(got))
	}
}

// A rejected row now carries the serial the reader saw (a duplicate, a bad secret): it is kept
// and listed with that serial, but it never becomes the serial's latest token — neither within
// its import (a duplicate after the valid line) nor from a later import of only rejected rows.
func TestRejectedRowsWithSerialAreNotIndexed(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-aaaaaaaaaaaaaaaaaaaaaaaa", "first.csv", t0)
	rows := vaultedRows(imp.ImportID, 1)
	serial := rows[0].Serial
	dup := pipeline.TokenRecord{
		ImportID: imp.ImportID, Line: 3, Serial: serial, UserPrincipalName: "other@contoso.com", Status: pipeline.StatusRejected,
		Reason:   "serial number: this serial number already appears on line 2",
		Problems: []seedfile.Problem{{Line: 3, Field: "serial number", Code: "serial.duplicate", Message: "already on line 2", Serial: serial}},
	}
	imp.Rows, imp.Valid, imp.Invalid = 2, 1, 1
	if err := l.PutTokens(ctx, imp, append(rows, dup)); err != nil {
		t.Fatal(err)
	}
	later := begin(t, l, "imp-bbbbbbbbbbbbbbbbbbbbbbbb", "second.csv", t0.Add(time.Hour))
	bad := dup
	bad.ImportID, bad.Line, bad.Reason = later.ImportID, 2, "secret key: not Base32"
	bad.Problems = []seedfile.Problem{{Line: 2, Field: "secret key", Code: "secret.not-base32", Message: "not Base32"}}
	later.Rows, later.Invalid = 1, 1
	if err := l.PutTokens(ctx, later, []pipeline.TokenRecord{bad}); err != nil {
		t.Fatal(err)
	}

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
	only := begin(t, l, "imp-cccccccccccccccccccccccc", "third.csv", t0.Add(2*time.Hour))
	lone := bad
	lone.ImportID, lone.Serial = only.ImportID, "REJECTED-ONLY"
	only.Rows, only.Invalid = 1, 1
	if err := l.PutTokens(ctx, only, []pipeline.TokenRecord{lone}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.TokenBySerial(ctx, "REJECTED-ONLY"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("TokenBySerial of a rejected-only serial: %v, want not found", err)
	}
}

// TestChunkedRecording records an import the way the pipeline does for a big file: rows a
// chunk at a time (a repeated chunk after a crash part way writes only what is missing), then
// SealImport; rows are read back by line range a page at a time; the checkpoint carries the
// refused count and never counts a chunk twice.
func TestChunkedRecording(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-chunked0000000000000000", "chunked.csv", t0)
	rows := vaultedRows(imp.ImportID, 1250) // lines 2..1251: more than one page of 1,000
	for i := range rows {
		rows[i].Serial = fmt.Sprintf("CHUNK-%05d", i)
	}
	if err := l.AddTokens(ctx, imp, rows[:300]); err != nil {
		t.Fatal(err)
	}
	// A crash after the first 300 rows; the repeat writes an overlapping chunk, then the rest.
	if err := l.AddTokens(ctx, imp, rows[250:700]); err != nil {
		t.Fatalf("repeated chunk: %v", err)
	}
	if err := l.AddTokens(ctx, imp, rows[700:]); err != nil {
		t.Fatal(err)
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
	stop := fmt.Errorf("enough")
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
}

// TestClaimNotificationOnce: instances racing to claim one import's notification get one
// winner per key; a new outcome (another key) is claimed again; an unknown import is not found.
func TestClaimNotificationOnce(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	imp := begin(t, l, "imp-claim", "claim.csv", time.Now())
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
	if _, err := l.ClaimNotification(ctx, "imp-none", "k1"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("unknown import: %v, want not found", err)
	}
}
