package pipeline_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/token"
)

// failingInventory fails DeleteDevice its first n calls after doing nothing: a crash between
// taking the token from its holder and deleting it.
type failingInventory struct {
	pipeline.Inventory
	n atomic.Int32
}

func (f *failingInventory) DeleteDevice(ctx context.Context, id string) error {
	if f.n.Add(-1) >= 0 {
		return &token.Error{Kind: token.KindTransient, Op: "delete", Message: "the process stopped"}
	}
	return f.Inventory.DeleteDevice(ctx, id)
}

// failingShelf retires the seed and then fails its first n Retire calls: a crash after the
// vault step, before the ledger and audit are written.
type failingShelf struct {
	pipeline.SeedShelf
	n atomic.Int32
}

func (f *failingShelf) Retire(ctx context.Context, m, s string) error {
	err := f.SeedShelf.Retire(ctx, m, s)
	if err == nil && f.n.Add(-1) >= 0 {
		return &token.Error{Kind: token.KindTransient, Op: "retire seed", Message: "the process stopped"}
	}
	return err
}

// TestLifecycleOnAzurite imports four tokens through the real adapters (Azurite ledger, the
// Key Vault and Graph stand-ins), then checks the inventory views, paging with a
// continuation, the filters, a person's tokens, and retire: redelivered, and crashed between
// its steps, it finishes, and nothing is left half-retired.
func TestLifecycleOnAzurite(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	p := s.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)
	ss := &pipelinetest.SeedSet{}
	rows := []pipelinetest.Row{ss.Row("LC-1", ada), ss.Row("LC-2", grace), ss.Row("LC-3", ""), ss.Row("LC-4", "")}
	rows[3].Model = "C302"
	f := upload(t, ctx, a, "lifecycle/tokens.csv", pipelinetest.EntraCSV(rows))
	res, err := p.Import(ctx, f)
	if err != nil || res.Valid != 4 {
		t.Fatalf("import: %+v %v", res, err)
	}
	(&host{p: p, q: a.Provision.Client(), workers: 2}).drain(t, ctx, settled(ctx, a.Ledger, res.ImportID))
	// One device in Entra that oathpipe never imported (no seed, no ledger row).
	if _, _, err := s.Dir.EnsureDevice(ctx, token.Token{Serial: "LC-X", Manufacturer: "Token2", Model: "C202"}, freshSeed(ss)); err != nil {
		t.Fatal(err)
	}
	inv := &failingInventory{Inventory: s.Dir}
	shelf := &failingShelf{SeedShelf: s.Vault}
	l := pipeline.NewLifecycle(p, pipeline.LifecycleDeps{Inventory: inv, Seeds: shelf})
	var answers []any

	// The whole inventory, two tokens a page.
	var all []pipeline.InventoryToken
	cont := ""
	for pages := 0; ; pages++ {
		pg, err := l.ListTokens(ctx, pipeline.TokenFilter{}, 2, cont)
		if err != nil || pages > 5 {
			t.Fatalf("page %d: %v", pages, err)
		}
		answers = append(answers, pg)
		all = append(all, pg.Tokens...)
		if cont = pg.Continuation; cont == "" {
			break
		}
	}
	bySerial := map[string]pipeline.InventoryToken{}
	for _, tk := range all {
		bySerial[tk.SerialNumber] = tk
	}
	if len(all) != 5 || len(bySerial) != 5 {
		t.Fatalf("inventory: %d tokens %v, want LC-1..4 and LC-X once each", len(all), bySerial)
	}
	if tk := bySerial["LC-1"]; tk.UserPrincipalName != ada || tk.Status != "activated" || !tk.SeedInVault ||
		tk.Import == nil || tk.Import.ImportID != res.ImportID || tk.LastActivation == nil {
		t.Errorf("LC-1 = %+v", tk)
	}
	if tk := bySerial["LC-3"]; tk.Status != "available" || tk.UserPrincipalName != "" || !tk.SeedInVault || tk.Import == nil {
		t.Errorf("LC-3 = %+v", tk)
	}
	if tk := bySerial["LC-X"]; tk.SeedInVault || tk.Import != nil {
		t.Errorf("LC-X (not imported) = %+v", tk)
	}

	// Filters.
	for _, c := range []struct {
		f    pipeline.TokenFilter
		want []string
	}{
		{pipeline.TokenFilter{Status: "available"}, []string{"LC-3", "LC-4", "LC-X"}},
		{pipeline.TokenFilter{Model: "c302"}, []string{"LC-4"}},
		{pipeline.TokenFilter{Manufacturer: "token2", Status: "activated"}, []string{"LC-1", "LC-2"}},
		{pipeline.TokenFilter{UserPrincipalName: grace}, []string{"LC-2"}},
		{pipeline.TokenFilter{Manufacturer: "Feitian"}, nil},
	} {
		pg, err := l.ListTokens(ctx, c.f, 100, "")
		if err != nil {
			t.Errorf("%+v: %v", c.f, err)
			continue
		}
		var got []string
		for _, tk := range pg.Tokens {
			got = append(got, tk.SerialNumber)
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) || pg.Continuation != "" {
			t.Errorf("%+v: %v (continuation %q), want %v", c.f, got, pg.Continuation, c.want)
		}
	}
	if _, err := l.ListTokens(ctx, pipeline.TokenFilter{}, 2, "bm90IGEgY3Vyc29y"); token.KindOf(err) != token.KindInvalid {
		t.Errorf("forged continuation: %v, want KindInvalid", err)
	}

	// A person's tokens.
	ut, err := l.UserTokens(ctx, ada)
	if err != nil || !ut.AccountEnabled || len(ut.Tokens) != 1 || ut.Tokens[0].SerialNumber != "LC-1" || !ut.Tokens[0].SeedInVault {
		t.Errorf("ada's tokens: %+v %v", ut, err)
	}
	answers = append(answers, ut)
	if _, err := l.UserTokens(ctx, "nobody@contoso.example"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("unknown user: %v", err)
	}

	// Retire LC-1 (held by ada): a crash after taking it from ada, before deleting it from Entra.
	inv.n.Store(1)
	if _, err := l.RetireToken(ctx, "LC-1", "hr-system"); err == nil {
		t.Fatal("retire with a failing delete succeeded")
	}
	if d, ok := s.Graph.Server.DeviceBySerial("LC-1"); !ok || d.AssignedUserID != "" {
		t.Fatalf("after the first step: %+v %v", d, ok)
	}
	// A crash after the vault step, before the ledger.
	shelf.n.Store(1)
	if _, err := l.RetireToken(ctx, "LC-1", "hr-system"); err == nil {
		t.Fatal("retire with a failing seed delete succeeded")
	}
	if _, ok := s.Graph.Server.DeviceBySerial("LC-1"); ok {
		t.Fatal("device still in Entra after the second attempt")
	}
	// The retried retire finishes the job.
	r, err := l.RetireToken(ctx, "LC-1", "hr-system")
	if err != nil || !r.Changed || r.Status != pipeline.StatusRetired {
		t.Fatalf("retried retire: %+v %v", r, err)
	}
	answers = append(answers, r)
	if has, err := s.Vault.Has(ctx, "Token2", "LC-1"); err != nil || has {
		t.Errorf("seed still in the vault: %v %v", has, err)
	}
	if row, err := a.Ledger.TokenBySerial(ctx, "LC-1"); err != nil || row.Status != pipeline.StatusRetired {
		t.Errorf("ledger row: %+v %v", row, err)
	}
	// Redelivered: nothing changes.
	r, err = l.RetireToken(ctx, "LC-1", "hr-system")
	if err != nil || r.Changed || r.DeviceDeleted || r.SeedDeleted {
		t.Errorf("repeated retire: %+v %v", r, err)
	}
	// A retire of an available token in one go; of an unknown serial: not found.
	if r, err := l.RetireToken(ctx, "LC-3", "hr-system"); err != nil || !r.DeviceDeleted || !r.SeedDeleted || r.PreviousUserPrincipalName != "" {
		t.Errorf("retire LC-3: %+v %v", r, err)
	}
	if _, err := l.RetireToken(ctx, "LC-NONE", "hr-system"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("retire unknown: %v", err)
	}
	// The retired serial delivered again later with a new seed (a replacement token under the
	// same serial) is a new token: imported, created in Entra and activated, no seed conflict.
	again := ss.Row("LC-3", grace)
	f2 := upload(t, ctx, a, "lifecycle/replacement.csv", pipelinetest.EntraCSV([]pipelinetest.Row{again}))
	res2, err := p.Import(ctx, f2)
	if err != nil || res2.Valid != 1 {
		t.Fatalf("re-import of a retired serial: %+v %v", res2, err)
	}
	(&host{p: p, q: a.Provision.Client(), workers: 1}).drain(t, ctx, settled(ctx, a.Ledger, res2.ImportID))
	if row, err := a.Ledger.TokenBySerial(ctx, "LC-3"); err != nil || row.Status != pipeline.StatusActivated || row.ImportID != res2.ImportID {
		t.Errorf("LC-3 imported again after retire: %+v %v, want activated in the new import", row, err)
	}
	// The report says the serial was retired before (issue 17: "the report says it was retired before").
	st, err := p.ImportStatusByID(ctx, "lifecycle/replacement.csv", res2.ImportID)
	if err != nil || len(st.Tokens) != 1 {
		t.Fatalf("report of the re-import: %+v %v", st, err)
	}
	if ws := st.Tokens[0].Warnings; len(ws) != 1 || ws[0].Code != pipeline.CodeRetiredBefore || !strings.Contains(ws[0].Message, "LC-3 was retired on ") {
		t.Errorf("re-import report line %+v: want one %s warning naming the serial and the date", st.Tokens[0], pipeline.CodeRetiredBefore)
	}
	if ut, err := l.UserTokens(ctx, ada); err != nil || len(ut.Tokens) != 0 {
		t.Errorf("ada after retire: %+v %v", ut, err)
	}

	// Nothing answered or logged holds a seed.
	for i, v := range answers {
		b, _ := json.Marshal(v)
		for _, leak := range ss.Leaks("answer", string(b)) {
			t.Errorf("answer %d: %s", i, leak)
		}
	}
	for _, leak := range ss.Leaks("logs", s.Logs.String()) {
		t.Error(leak)
	}
}

// freshSeed is a new random 30 s SHA-1 seed that the leak scan knows.
func freshSeed(ss *pipelinetest.SeedSet) token.Seed {
	ss.Fresh()
	return token.Seed{Secret: ss.Secrets[len(ss.Secrets)-1], Hash: token.SHA1, Digits: 6, Period: 30}
}
