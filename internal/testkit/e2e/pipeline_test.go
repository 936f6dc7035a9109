package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/storage"
)

// TestPipelineOnStorage runs the real pipeline over these adapters and the real ledger on
// Azurite, with the vault and entra clients on the Key Vault and Graph stand-ins: the wiring
// wire.go does. It checks what only the real storage shows — the inbox blob leaves only after
// the import, messages are plain text the worker reads back, the final report is rewritten
// once the last token settles (every message delivered twice, concurrently), audit records land
// in their table — and scans everything stored for the seeds.
func TestPipelineOnStorage(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	ctx := context.Background()
	conn := testkit.StartAzurite(t)
	a := testkit.OpenAccount(t, conn)
	stack := testkit.NewStack(t, testkit.Options{})
	p := stack.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)

	var seeds testkit.SeedSet
	upns := []string{"ada.lovelace@contoso.example", "grace.hopper@contoso.example", "alan.turing@contoso.example", "edsger.dijkstra@contoso.example", ""}
	var rows []testkit.Row
	for i, u := range upns {
		rows = append(rows, seeds.Row(fmt.Sprintf("86596120%05d", i+1), u))
	}
	good := string(testkit.EntraCSV(rows))
	bad := string(testkit.EntraCSV([]testkit.Row{seeds.Row("8659612100001", "barbara.liskov@contoso.example")})) +
		"ken.thompson@contoso.example,8659612100002,not*base32!,30,Token2,C202\n"
	files := map[string]string{"vendor/good batch ü.csv": good, "bad #1.csv": bad}

	imports := map[string]*pipeline.ImportResult{}
	for name, content := range files {
		if _, err := a.PutInbox(ctx, name, []byte(content), nil); err != nil {
			t.Fatal(err)
		}
		f, err := a.Blobs.ReadInbox(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.Import(ctx, f)
		if err != nil {
			t.Fatalf("Import(%q): %v", name, err)
		}
		imports[name] = res
		if _, err := a.Blobs.ReadInbox(ctx, name); err == nil {
			t.Errorf("%q is still in the inbox after its import", name)
		}
	}
	if r := imports["vendor/good batch ü.csv"]; r.Disposition != pipeline.DispositionDeleted || r.Queued != 5 {
		t.Fatalf("good file: %+v", r)
	}
	r := imports["bad #1.csv"]
	if r.Disposition != pipeline.DispositionRejected || r.Queued != 1 || r.Invalid != 1 {
		t.Fatalf("bad file: %+v", r)
	}
	// A plain file is kept only encrypted to the deployment's PGP key.
	if kept, err := a.Blobs.Read(ctx, pipeline.RejectedContainer, pipeline.RejectedName(r.ImportID, "bad #1.csv")+".gpg"); err != nil ||
		strings.Contains(string(kept), "ken.thompson") || string(testkit.DecryptRejected(t, kept)) != bad {
		t.Fatalf("rejected file: %v", err)
	}

	// Play the host: every message delivered twice, at once.
	var texts []string
	for {
		resp, err := a.ProvisionClient.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Messages) == 0 {
			break
		}
		for _, m := range resp.Messages {
			texts = append(texts, *m.MessageText)
			if _, err := a.ProvisionClient.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(texts) != 6 {
		t.Fatalf("%d messages on the queue, want 6", len(texts))
	}
	var wg sync.WaitGroup
	for _, text := range append(append([]string{}, texts...), texts...) {
		var m pipeline.ProvisionMessage
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			t.Fatalf("message %q: %v", text, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Provision(ctx, m, 1); err != nil {
				t.Errorf("Provision line %d of %s: %v", m.Line, m.FileName, err)
			}
		}()
	}
	wg.Wait()

	for name, res := range imports {
		imp, err := a.Ledger.GetImport(ctx, res.ImportID)
		if err != nil || imp.Pending != 0 || imp.Stage != pipeline.StageDone {
			t.Errorf("%q in the ledger: %+v, %v", name, imp, err)
		}
		var st pipeline.ImportStatus
		js, err := a.Blobs.Read(ctx, pipeline.ReportsContainer, name+storage.ReportSuffix)
		if err != nil || json.Unmarshal(js, &st) != nil {
			t.Fatalf("report of %q: %v", name, err)
		}
		if !st.Settled || st.Pending != 0 {
			t.Errorf("final report of %q not rewritten: settled=%v pending=%d", name, st.Settled, st.Pending)
		}
	}
	if st, err := p.ImportStatus(ctx, "vendor/good batch ü.csv"); err != nil || st.Counts[pipeline.StatusActivated] != 4 || st.Counts[pipeline.StatusAvailable] != 1 {
		t.Errorf("ImportStatus = %+v, %v; want 4 activated, 1 available", st, err)
	}

	// The HTTP API: take a token back, give it to someone else; both audited.
	if _, err := p.UnassignToken(ctx, "8659612000001", "hr-system"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AssignToken(ctx, pipeline.AssignRequest{Serial: "8659612000001", UserPrincipalName: "radia.perlman@contoso.example", Activate: true, Caller: "hr-system"}); err != nil {
		t.Fatal(err)
	}
	trail, err := a.Ledger.AuditTrail(ctx, "8659612000001", 0)
	if err != nil || len(trail) != 2 || trail[0].ToUser != "radia.perlman@contoso.example" || trail[1].FromUser != "ada.lovelace@contoso.example" {
		t.Errorf("audit trail = %+v, %v", trail, err)
	}
	if row, err := a.Ledger.TokenBySerial(ctx, "8659612000001"); err != nil || row.UserPrincipalName != "radia.perlman@contoso.example" || row.Status != pipeline.StatusActivated {
		t.Errorf("ledger row after reassignment = %+v, %v", row, err)
	}

	// Nothing stored anywhere but the vault and seed-rejected holds a seed.
	stored := append(append([]string{}, texts...), testkit.StoredOutsideVault(t, ctx, conn))
	if n := strings.Count(stored[len(stored)-1], "\n"); n < 20 {
		t.Fatalf("scanned only %d stored lines", n)
	}
	for i, text := range stored {
		for _, leak := range seeds.Leaks(fmt.Sprintf("stored item %d", i), text) {
			t.Error(leak)
		}
	}
}
