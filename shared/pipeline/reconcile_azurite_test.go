package pipeline_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/token"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// vaultCatalog lists the stack vault's seeds for the reconciliation (main.go wires the same).
type vaultCatalog struct{ v *vault.Vault }

func (c vaultCatalog) SeedEntries(ctx context.Context) ([]pipeline.SeedEntry, error) {
	es, err := c.v.List(ctx)
	var out []pipeline.SeedEntry
	for _, e := range es {
		if e.Enabled {
			out = append(out, pipeline.SeedEntry{Serial: e.Serial, Manufacturer: e.Manufacturer, ImportID: e.ImportID})
		}
	}
	return out, err
}

// TestReconcileOnAzurite makes every disagreement the reconciliation names, against the Graph
// and Key Vault stand-ins and the Azurite ledger and report container, and checks each is
// found, that a plain run writes nothing to Entra, and that OATHPIPE_RECONCILE_TAKE_BACK=disabled
// takes the disabled account's token back with the reconciliation named in the audit.
func TestReconcileOnAzurite(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	p := s.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)
	ss := &pipelinetest.SeedSet{}
	const (
		edsger  = "edsger.dijkstra@contoso.example"
		barbara = "barbara.liskov@contoso.example"
	)
	rows := []pipelinetest.Row{ss.Row("RC-1", ada), ss.Row("RC-2", grace), ss.Row("RC-3", grace), ss.Row("RC-4", alan), ss.Row("RC-5", ""), ss.Row("RC-6", edsger)}
	res, err := p.Import(ctx, upload(t, ctx, a, "reconcile/tokens.csv", pipelinetest.EntraCSV(rows)))
	if err != nil || res.Valid != len(rows) {
		t.Fatalf("import: %+v %v", res, err)
	}
	(&host{p: p, q: a.Provision.Client(), workers: 2}).drain(t, ctx, settled(ctx, a.Ledger, res.ImportID))
	// RC-7: assigned, never activated (OATHPIPE_ACTIVATION=none).
	pn := s.Pipeline(a.Ledger, a.Provision, a.Blobs, func(d *pipeline.Deps) { d.Activation = config.ActivationNone })
	res2, err := pn.Import(ctx, upload(t, ctx, a, "reconcile/assigned.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("RC-7", barbara)})))
	if err != nil || res2.Valid != 1 {
		t.Fatalf("import 2: %+v %v", res2, err)
	}
	(&host{p: pn, q: a.Provision.Client(), workers: 1}).drain(t, ctx, settled(ctx, a.Ledger, res2.ImportID))

	// The disagreements.
	if !s.Graph.Server.SetAccountEnabled(alan, false) || !s.Graph.Server.DeleteUser(edsger) {
		t.Fatal("stand-in directory")
	}
	if _, _, err := s.Dir.EnsureDevice(ctx, token.Token{Serial: "RC-X", Manufacturer: "Token2", Model: "C202"}, freshSeed(ss)); err != nil {
		t.Fatal(err)
	}
	rc5, _ := s.Graph.Server.DeviceBySerial("RC-5")
	if err := s.Dir.DeleteDevice(ctx, rc5.ID); err != nil {
		t.Fatal(err)
	}
	adaUser, _ := s.Dir.ResolveUser(ctx, ada)
	ms, err := s.Dir.ListUserMethods(ctx, adaUser.ID)
	if err != nil || len(ms) != 1 {
		t.Fatalf("ada's methods: %v %v", ms, err)
	}
	if err := s.Dir.Unassign(ctx, adaUser.ID, ms[0].ID); err != nil {
		t.Fatal(err)
	}

	// Ten days later.
	notes := make(chan string, 10)
	later := s.Pipeline(a.Ledger, a.Provision, a.Blobs, func(d *pipeline.Deps) {
		d.Now = func() time.Time { return time.Now().Add(10 * 24 * time.Hour) }
		d.Notifier = chanNotifier(notes)
	})
	l := pipeline.NewLifecycle(later, pipeline.LifecycleDeps{Inventory: s.Dir, Seeds: s.Vault})
	before := s.Graph.Server.Stats()
	rep, err := l.Reconcile(ctx, vaultCatalog{s.Vault}, pipeline.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Graph.Server.Stats().Writes != before.Writes {
		t.Errorf("a plain reconciliation wrote to Entra: %d writes", s.Graph.Server.Stats().Writes-before.Writes)
	}
	want := map[string][]string{
		pipeline.FindingHeldByDisabled:    {"RC-4"},
		pipeline.FindingHeldByDeleted:     {"RC-6"},
		pipeline.FindingDeviceWithoutSeed: {"RC-X"},
		pipeline.FindingSeedWithoutDevice: {"RC-5"},
		pipeline.FindingSeveralTokens:     {"RC-2", "RC-3"},
		pipeline.FindingStuck:             {"RC-7"},
		pipeline.FindingLedgerDisagrees:   {"RC-1", "RC-5"},
	}
	got := map[string][]string{}
	for _, f := range rep.Findings {
		got[f.Kind] = append(got[f.Kind], f.SerialNumber)
		if f.Action != "" {
			t.Errorf("plain run acted: %+v", f)
		}
	}
	for k, w := range want {
		if strings.Join(got[k], ",") != strings.Join(w, ",") {
			t.Errorf("%s: %v, want %v", k, got[k], w)
		}
	}
	if len(got) != len(want) || rep.Devices != 7 || rep.Seeds != 7 {
		t.Errorf("report: %d kinds, %d devices, %d seeds: %+v", len(got), rep.Devices, rep.Seeds, got)
	}
	js, err := a.Blobs.Read(ctx, config.ReportsContainer, "reconcile/"+rep.Date+".json")
	if err != nil {
		t.Fatal(err)
	}
	csv, err := a.Blobs.Read(ctx, config.ReportsContainer, "reconcile/"+rep.Date+".failures.csv")
	if err != nil || !strings.Contains(string(csv), "held-by-disabled,RC-4,") {
		t.Errorf("CSV: %v\n%s", err, csv)
	}
	var note string
	select {
	case note = <-notes:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification of the findings")
	}
	if !strings.Contains(note, "held-by-disabled 1") || !strings.Contains(note, "seed-reports/reconcile/"+rep.Date+".json") {
		t.Errorf("notification: %s", note)
	}
	var stored pipeline.ReconcileReport
	if err := json.Unmarshal(js, &stored); err != nil || len(stored.Findings) != len(rep.Findings) {
		t.Errorf("stored report: %v", err)
	}

	// With take-back: alan's token goes back to the inventory; nothing else changes.
	rep2, err := l.Reconcile(ctx, vaultCatalog{s.Vault}, pipeline.ReconcileOptions{TakeBackDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep2.Findings {
		if f.Kind == pipeline.FindingHeldByDisabled && f.Action != "taken-back" {
			t.Errorf("take-back: %+v", f)
		}
	}
	if s.Graph.Server.Stats().Writes == before.Writes {
		t.Error("the stand-in counted no write for the take-back: the plain run's check of no writes proves nothing")
	}
	if d, _ := s.Graph.Server.DeviceBySerial("RC-4"); d.AssignedUserID != "" {
		t.Errorf("RC-4 still held after take-back: %+v", d)
	}
	if d, _ := s.Graph.Server.DeviceBySerial("RC-6"); d.AssignedUserID == "" {
		t.Error("the deleted account's token was taken back; only disabled accounts' are")
	}
	if row, err := a.Ledger.TokenBySerial(ctx, "RC-4"); err != nil || row.Status != pipeline.StatusAvailable {
		t.Errorf("RC-4 ledger row: %+v %v", row, err)
	}
	if rep3, err := l.Reconcile(ctx, vaultCatalog{s.Vault}, pipeline.ReconcileOptions{}); err != nil || rep3.Counts[pipeline.FindingHeldByDisabled] != 0 {
		t.Errorf("after take-back: %+v %v", rep3.Counts, err)
	}

	// A device the ledger never knew (uploaded by hand), assigned and never activated: the
	// first reconciliation that sees it only notes it (Untracked); one more than StuckAfter
	// later, reading that report back, finds it stuck since then.
	barbaraUser, err := s.Dir.ResolveUser(ctx, barbara)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Dir.EnsureDevice(ctx, token.Token{Serial: "RC-Y", Manufacturer: "Token2", Model: "C202", AssignTo: barbaraUser.ID}, freshSeed(ss)); err != nil {
		t.Fatal(err)
	}
	rep4, err := pipeline.Reconciliation{Lifecycle: l, Seeds: vaultCatalog{s.Vault}, Reports: a.Blobs}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f := findingsOf(rep4, pipeline.FindingStuck); strings.Join(f, ",") != "RC-7" {
		t.Errorf("first sight of RC-Y: stuck %v, want RC-7 only", f)
	}
	if len(rep4.Untracked) != 1 || rep4.Untracked[0].SerialNumber != "RC-Y" || rep4.Untracked[0].Status != string(token.StatusAssigned) {
		t.Fatalf("untracked: %+v, want RC-Y assigned (RC-X is available: never stuck)", rep4.Untracked)
	}
	firstSeen := rep4.Untracked[0].Since
	muchLater := s.Pipeline(a.Ledger, a.Provision, a.Blobs, func(d *pipeline.Deps) {
		d.Now = func() time.Time { return time.Now().Add(20 * 24 * time.Hour) }
	})
	lm := pipeline.NewLifecycle(muchLater, pipeline.LifecycleDeps{Inventory: s.Dir, Seeds: s.Vault})
	rep5, err := pipeline.Reconciliation{Lifecycle: lm, Seeds: vaultCatalog{s.Vault}, Reports: a.Blobs}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f := findingsOf(rep5, pipeline.FindingStuck); strings.Join(f, ",") != "RC-7,RC-Y" {
		t.Errorf("ten days after first sight: stuck %v, want RC-7 and RC-Y", f)
	}
	if len(rep5.Untracked) != 1 || !rep5.Untracked[0].Since.Equal(firstSeen) {
		t.Errorf("untracked carried over: %+v, want RC-Y since %v", rep5.Untracked, firstSeen)
	}
	// Without the previous report the sighting starts again: not stuck yet.
	rep6, err := lm.Reconcile(ctx, vaultCatalog{s.Vault}, pipeline.ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f := findingsOf(rep6, pipeline.FindingStuck); strings.Join(f, ",") != "RC-7" {
		t.Errorf("no previous report: stuck %v, want RC-7 only", f)
	}

	for _, leak := range append(ss.Leaks("report", string(js)+string(csv)+note), ss.Leaks("logs", s.Logs.String())...) {
		t.Error(leak)
	}
}

// findingsOf lists the serials of rep's findings of kind, in report order.
func findingsOf(rep *pipeline.ReconcileReport, kind string) []string {
	var out []string
	for _, f := range rep.Findings {
		if f.Kind == kind {
			out = append(out, f.SerialNumber)
		}
	}
	return out
}

// chanNotifier hands each notification to a channel.
type chanNotifier chan string

func (c chanNotifier) Notify(_ context.Context, text string) error {
	c <- text
	return nil
}
