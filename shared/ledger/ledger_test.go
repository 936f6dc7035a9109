package ledger

import (
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/internal/azurite"
	"github.com/oathpipe/oathpipe/internal/ledgertest"
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

// TestContract runs the Ledger contract suite on Azurite (the in-memory fake runs it too, in
// shared/pipeline/pipelinetest).
func TestContract(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) pipeline.Ledger { return newLedger(t) })
}

var t0 = ledgertest.T0

func begin(t *testing.T, l *Ledger, id, name string, created time.Time) pipeline.ImportRecord {
	t.Helper()
	return ledgertest.Begin(t, l, id, name, created)
}

var vaultedRows = ledgertest.VaultedRows

// TestCrashBeforeSeal: some rows written, in transactions the repeat does not know of, then a
// crash; the repeated chunk meets them (a lost race inside its transaction), writes only the
// missing rows and leaves the stored ones as they are, and the seal counts Pending.
func TestCrashBeforeSeal(t *testing.T) {
	l := newLedger(t)
	ctx := context.Background()
	imp := begin(t, l, "imp-crash", "crash.csv", t0)
	rows := vaultedRows(imp.ImportID, 5)
	pk := keyFor(imp.ImportID)
	for _, r := range rows[:3] {
		r.Reason = "written before the crash"
		if _, err := l.table.AddEntity(ctx, mustJSON(newRowEntity(pk, r)), nil); err != nil {
			t.Fatal(err)
		}
	}
	imp.Rows, imp.Valid, imp.Pending = 5, 5, 5
	if err := l.AddTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	if err := l.SealImport(ctx, imp); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.GetImport(ctx, imp.ImportID); got.Pending != 5 || got.Stage != pipeline.StageVaulted {
		t.Fatalf("after recovery: %+v", got)
	}
	list, err := l.ListTokens(ctx, imp.ImportID)
	if err != nil || len(list) != 5 || list[0].Reason != "written before the crash" || list[4].Reason != "" {
		t.Fatalf("after recovery: %d rows (%v), first %+v", len(list), err, list)
	}
	if tr, err := l.TokenBySerial(ctx, rows[0].Serial); err != nil || tr.Line != 2 {
		t.Fatalf("serial index after recovery: %+v, %v", tr, err)
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
		imp.Rows, imp.Valid, imp.Pending = 1, 1, 1
		if err := l.AddTokens(ctx, imp, []pipeline.TokenRecord{row}); err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if err := l.SealImport(ctx, imp); err != nil {
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
	imp.Rows, imp.Valid, imp.Pending = len(rows), len(rows), len(rows)
	if err := l.AddTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	if err := l.SealImport(ctx, imp); err != nil {
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
	if err := l.AddTokens(ctx, pipeline.ImportRecord{ImportID: id}, vaultedRows(id, b.N)); err != nil {
		b.Fatal(err)
	}
	if err := l.SealImport(ctx, pipeline.ImportRecord{ImportID: id, Rows: b.N, Valid: b.N, Pending: b.N}); err != nil {
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

// BenchmarkAddTokens measures recording an import of 1,000 rows as the pipeline does (rows and
// serial index in one AddTokens, then SealImport counting Pending).
func BenchmarkAddTokens(b *testing.B) {
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
		if err := l.AddTokens(ctx, pipeline.ImportRecord{ImportID: id}, rows); err != nil {
			b.Fatal(err)
		}
		if err := l.SealImport(ctx, pipeline.ImportRecord{ImportID: id, Rows: len(rows), Valid: len(rows), Pending: len(rows)}); err != nil {
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
	imp.Rows, imp.Invalid = len(rows), len(rows)
	if err := l.AddTokens(ctx, imp, rows); err != nil {
		t.Fatal(err)
	}
	if err := l.SealImport(ctx, imp); err != nil {
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
