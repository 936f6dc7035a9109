package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/token"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
)

const (
	ada   = "ada.lovelace@contoso.example"
	grace = "grace.hopper@contoso.example"
	alan  = "alan.turing@contoso.example"
	guest = "pat.partner_fabrikam.example#EXT#@contoso.example"
	gone  = "former.employee@contoso.example"
)

// mixedFileWith is a file with valid rows (assigned and inventory-only), rows Entra will refuse
// (guest, disabled) and rows that fail validation; serials start with pre.
func mixedFileWith(ss *pipelinetest.SeedSet, pre string) []byte {
	return pipelinetest.EntraCSV([]pipelinetest.Row{
		ss.Row(pre+"-1", ada),
		ss.Row(pre+"-2", grace),
		ss.Row(pre+"-3", ""), // inventory only
		ss.Row(pre+"-4", guest),
		ss.Row("@"+pre+"(5)", gone), // a formula in the failures csv unless neutralised
		{UPN: alan, Serial: pre + "-6", Secret: "NOT*BASE32!", Interval: "30", Manufacturer: "Token2", Model: "C202"},
		ss.Row(pre+"-1", alan), // duplicate serial
		{UPN: alan, Serial: pre + "-8", Secret: ss.Fresh(), Interval: "45", Manufacturer: "Token2", Model: "C202"},
	})
}

func mixedFile(ss *pipelinetest.SeedSet) []byte { return mixedFileWith(ss, "TK") }

func TestImportAndProvisionMixedFile(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	ss := &pipelinetest.SeedSet{}
	f := b.Upload("vendor-2026.csv", mixedFile(ss))

	res, err := p.Import(ctx, f)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if res.Rows != 8 || res.Valid != 5 || res.Invalid != 3 || res.Queued != 5 || res.Disposition != pipeline.DispositionRejected || res.Repeat {
		t.Fatalf("first import: %+v", res)
	}
	again, err := p.Import(ctx, f)
	if err != nil {
		t.Fatalf("repeated Import: %v", err)
	}
	if !again.Repeat || again.Queued != 0 || again.ImportID != res.ImportID {
		t.Fatalf("repeated import: %+v", again)
	}
	if len(q.Sent) != 5 {
		t.Fatalf("sent %d messages, want 5 (the repeated delivery must not queue again)", len(q.Sent))
	}
	if _, ok := b.Inbox[f.Name]; ok {
		t.Fatal("the file is still in the inbox")
	}
	// A plain file is kept only encrypted to the deployment's key.
	if got := b.Rejected[pipeline.RejectedName(res.ImportID, f.Name)+".gpg"]; got == nil || bytes.Contains(got, []byte("upn")) ||
		string(pipelinetest.DecryptRejected(t, got)) != string(f.Content) {
		t.Fatal("the rejected file was not kept whole, encrypted, in seed-rejected")
	}

	pipelinetest.Drain(t, ctx, p, q)

	want := map[string]struct{ status, upn string }{
		"TK-1":   {"activated", ada},
		"TK-2":   {"activated", grace},
		"TK-3":   {"available", ""},
		"TK-4":   {"available", ""}, // created in the inventory, refused for the guest
		"@TK(5)": {"available", ""},
	}
	devs := s.Graph.Server.Devices()
	if len(devs) != len(want) {
		t.Fatalf("Graph holds %d devices, want %d: %+v", len(devs), len(want), devs)
	}
	for _, d := range devs {
		w, ok := want[d.Serial]
		if !ok || d.Status != w.status || !strings.EqualFold(d.AssignedUPN, w.upn) {
			t.Errorf("device %s: status %s user %q, want %+v", d.Serial, d.Status, d.AssignedUPN, w)
		}
		if d.Activations > 1 {
			t.Errorf("device %s activated %d times", d.Serial, d.Activations)
		}
	}

	st, err := p.ImportStatus(ctx, f.Name)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus := map[int]pipeline.RowStatus{2: pipeline.StatusActivated, 3: pipeline.StatusActivated, 4: pipeline.StatusAvailable, 5: pipeline.StatusFailed, 6: pipeline.StatusFailed, 7: pipeline.StatusRejected, 8: pipeline.StatusRejected, 9: pipeline.StatusRejected}
	for _, tl := range st.Tokens {
		if tl.Status != wantStatus[tl.Line] {
			t.Errorf("line %d (%s): status %s reason %q, want %s", tl.Line, tl.SerialNumber, tl.Status, tl.Reason, wantStatus[tl.Line])
		}
	}
	if !st.Settled || st.Pending != 0 || st.Counts[pipeline.StatusActivated] != 2 || st.Counts[pipeline.StatusFailed] != 2 || st.Counts[pipeline.StatusRejected] != 3 {
		t.Errorf("status: settled %v pending %d counts %v", st.Settled, st.Pending, st.Counts)
	}
	// Rejected rows carry the serial and UPN the reader saw (the duplicate: the repeated serial).
	wantNamed := map[int][2]string{7: {"TK-6", alan}, 8: {"TK-1", alan}, 9: {"TK-8", alan}}
	for _, tl := range st.Tokens {
		if w, ok := wantNamed[tl.Line]; ok && (tl.SerialNumber != w[0] || tl.UserPrincipalName != w[1]) {
			t.Errorf("rejected line %d: serial %q upn %q, want %q %q", tl.Line, tl.SerialNumber, tl.UserPrincipalName, w[0], w[1])
		}
	}
	if r, err := l.GetToken(ctx, res.ImportID, 8); err != nil || r.Serial != "TK-1" || r.UserPrincipalName != alan {
		t.Errorf("ledger row of line 8 = %+v, %v", r, err)
	}
	if r, err := l.TokenBySerial(ctx, "TK-1"); err != nil || r.Line != 2 {
		t.Errorf("TokenBySerial(TK-1) = line %d, %v; want the valid line 2, not the rejected duplicate", r.Line, err)
	}
	for _, tl := range st.Tokens {
		if tl.Line == 5 && (!strings.Contains(tl.Reason, "guest") || !strings.Contains(tl.Reason, "is in the Entra ID inventory, unassigned")) {
			t.Errorf("guest row reason %q: want what exists in Entra (in the inventory, unassigned) and why", tl.Reason)
		}
	}

	// The report on disk is the final one, and the failures CSV neutralises formulas.
	js, ok := b.Report(f.Name + ".json")
	if !ok {
		t.Fatal("no report")
	}
	var rep pipeline.ImportStatus
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Settled || rep.Counts[pipeline.StatusActivated] != 2 || rep.Disposition != pipeline.DispositionRejected {
		t.Errorf("report not final: settled %v counts %v disposition %q", rep.Settled, rep.Counts, rep.Disposition)
	}
	csv, ok := b.Report(f.Name + ".failures.csv")
	if !ok {
		t.Fatal("no failures csv")
	}
	if strings.Contains(string(csv), ",@TK") || !strings.Contains(string(csv), ",'@TK(5)") {
		t.Errorf("formula not neutralised:\n%s", csv)
	}
	for _, want := range []string{"serial.duplicate", "secret.not-base32", "interval.unsupported", "TK-4", "guest", "disabled",
		"7,TK-6," + alan + ",rejected,secret key,secret.not-base32", "8,TK-1," + alan + ",rejected,serial number,serial.duplicate"} {
		if !strings.Contains(string(csv), want) {
			t.Errorf("failures csv lacks %q:\n%s", want, csv)
		}
	}

	var leaks []string
	leaks = append(leaks, ss.Leaks("logs", s.Logs.String())...)
	leaks = append(leaks, ss.Leaks("queue", strings.Join(q.Sent, "\n"))...)
	leaks = append(leaks, ss.Leaks("ledger", string(l.Dump()))...)
	leaks = append(leaks, ss.Leaks("reports", b.All())...)
	for _, lk := range leaks {
		t.Error("seed leaked: " + lk)
	}
	if len(ss.Secrets) < 7 {
		t.Fatal("leak scan has too few secrets to mean anything")
	}
}

func TestImportAllValidDeletesSource(t *testing.T) {
	ctx := context.Background()
	for _, activation := range []string{config.ActivationAuto, config.ActivationNone} {
		t.Run(activation, func(t *testing.T) {
			s := pipelinetest.NewStack(t, pipelinetest.Options{})
			l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
			p := s.Pipeline(l, q, b, func(d *pipeline.Deps) { d.Activation = activation })
			ss := &pipelinetest.SeedSet{}
			f := b.Upload("clean.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("C-1", ada), ss.Row("C-2", grace), ss.Row("C-3", "")}))
			res, err := p.Import(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if res.Disposition != pipeline.DispositionDeleted || len(b.Inbox) != 0 || len(b.Rejected) != 0 {
				t.Fatalf("disposition %s inbox %d rejected %d", res.Disposition, len(b.Inbox), len(b.Rejected))
			}
			if _, ok := b.Report("clean.csv.failures.csv"); ok {
				t.Error("a failures csv for a clean file")
			}
			pipelinetest.Drain(t, ctx, p, q)
			wantAssigned := "activated"
			if activation == config.ActivationNone {
				wantAssigned = "assigned"
			}
			for serial, want := range map[string]string{"C-1": wantAssigned, "C-2": wantAssigned, "C-3": "available"} {
				d, ok := s.Graph.Server.DeviceBySerial(serial)
				if !ok || d.Status != want {
					t.Errorf("%s: %+v, want %s", serial, d, want)
				}
			}
			st, err := p.ImportStatus(ctx, "clean.csv")
			if err != nil || !st.Settled || st.Counts[pipeline.RowStatus(wantAssigned)] != 2 || st.Counts[pipeline.StatusAvailable] != 1 {
				t.Fatalf("status %+v %v", st, err)
			}
		})
	}
}

// A file that is not a seed file at all is a file-level problem: reported, moved whole to
// seed-rejected, nothing stored.
func TestImportUnreadableFile(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	f := b.Upload("notes.txt", []byte("hello,world\nthis is,not a seed file\n"))
	res, err := p.Import(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Disposition != pipeline.DispositionRejected || len(res.Problems) == 0 || res.Queued != 0 {
		t.Fatalf("%+v", res)
	}
	st, err := p.ImportStatus(ctx, "notes.txt")
	if err != nil || !st.Settled || len(st.Problems) != 1 || st.Problems[0].Code != "file.no-header" {
		t.Fatalf("%+v %v; want exactly one file.no-header problem", st, err)
	}
	if len(res.Problems) != 1 {
		t.Errorf("result problems %+v; want one", res.Problems)
	}
	if csv, ok := b.Report("notes.txt.failures.csv"); !ok || !strings.Contains(string(csv), "file.") {
		t.Errorf("failures csv: %q", csv)
	}
}

// The same serial imported again with a different seed is refused by the vault: the row fails,
// the first seed is kept, the file goes to seed-rejected.
func TestImportDifferentSeedUnderSameSerial(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	ss := &pipelinetest.SeedSet{}
	if _, err := p.Import(ctx, b.Upload("a.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("S-1", ada)}))); err != nil {
		t.Fatal(err)
	}
	pipelinetest.Drain(t, ctx, p, q)
	res, err := p.Import(ctx, b.Upload("b.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("S-1", ada), ss.Row("S-2", grace)})))
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || res.Queued != 1 || res.Disposition != pipeline.DispositionRejected {
		t.Fatalf("%+v", res)
	}
	st, _ := p.ImportStatus(ctx, "b.csv")
	if st.Tokens[0].Status != pipeline.StatusFailed || token.KindOf(nil) != "" || !strings.Contains(st.Tokens[0].Reason, "vault") {
		t.Errorf("row 2: %+v", st.Tokens[0])
	}
	pipelinetest.Drain(t, ctx, p, q)
	if d, _ := s.Graph.Server.DeviceBySerial("S-1"); d.Activations != 1 {
		t.Errorf("S-1 activated %d times", d.Activations)
	}
}

// Graph answers 5xx and 429 after carrying out the request (the client cannot tell whether it
// worked) on every kind of write: the retries converge, and no device is created or assigned twice.
func TestGraphFailsAfterApplying(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	for _, f := range []graphstandin.Fault{
		{Method: "POST", PathContains: "/hardwareOathDevices", Status: 503, AfterApply: true, Count: 3},
		{Method: "POST", PathContains: "/authentication/hardwareOathMethods", Status: 504, AfterApply: true, Count: 3},
		{Method: "POST", PathContains: "/activate", Status: 429, AfterApply: true, Count: 3},
		{Method: "GET", PathContains: "/users/", Status: 500, Count: 2},
	} {
		s.Graph.Server.AddFault(f)
	}
	ss := &pipelinetest.SeedSet{}
	users := []string{ada, grace, alan, "edsger.dijkstra@contoso.example", "barbara.liskov@contoso.example"}
	var rows []pipelinetest.Row
	for i, u := range users {
		rows = append(rows, ss.Row(fmt.Sprintf("GF-%d", i), u))
	}
	if _, err := p.Import(ctx, b.Upload("faults.csv", pipelinetest.EntraCSV(rows))); err != nil {
		t.Fatal(err)
	}
	pipelinetest.Drain(t, ctx, p, q)
	devs := s.Graph.Server.Devices()
	if len(devs) != len(users) {
		t.Fatalf("%d devices for %d tokens", len(devs), len(users))
	}
	for _, d := range devs {
		// An activation answered 429 after it was applied is retried by Graph's retry
		// middleware inside entra, so the stand-in may count it more than once; the
		// pipeline's own retry sees the method activated and does not activate again.
		if d.Status != "activated" || d.Activations < 1 {
			t.Errorf("%s: %s, %d activations", d.Serial, d.Status, d.Activations)
		}
	}
	for _, u := range users {
		if n := len(s.Graph.Server.UserMethods(u)); n != 1 {
			t.Errorf("%s holds %d methods", u, n)
		}
	}
	st, err := p.ImportStatus(ctx, "faults.csv")
	if err != nil || !st.Settled || st.Counts[pipeline.StatusActivated] != len(users) {
		t.Fatalf("%+v %v", st, err)
	}
}

// A message the host gave up on (poison queue) is recorded as failed with the reason, settles the
// import, and a late redelivery of it changes nothing.
func TestRecordPoisoned(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	ss := &pipelinetest.SeedSet{}
	if _, err := p.Import(ctx, b.Upload("poison.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("PZ-1", ada), ss.Row("PZ-2", grace)}))); err != nil {
		t.Fatal(err)
	}
	first, _ := q.Take()
	poisoned := pipelinetest.DecodeMessage(t, first)
	for range 2 {
		if err := p.RecordPoisoned(ctx, poisoned, "graph kept answering 503"); err != nil {
			t.Fatal(err)
		}
	}
	pipelinetest.Drain(t, ctx, p, q)
	out, err := p.Provision(ctx, poisoned, 6)
	if err != nil || !out.Repeat || out.Status != pipeline.StatusFailed {
		t.Fatalf("late redelivery: %+v %v", out, err)
	}
	if _, ok := s.Graph.Server.DeviceBySerial(poisoned.SerialNumber); ok {
		t.Error("the poisoned token reached Graph")
	}
	st, err := p.ImportStatus(ctx, "poison.csv")
	if err != nil || !st.Settled || st.Counts[pipeline.StatusFailed] != 1 || st.Counts[pipeline.StatusActivated] != 1 {
		t.Fatalf("%+v %v", st, err)
	}
	for _, tl := range st.Tokens {
		if tl.SerialNumber == poisoned.SerialNumber && (!strings.Contains(tl.Reason, "gave up") || !strings.Contains(tl.Reason, "503")) {
			t.Errorf("reason %q", tl.Reason)
		}
	}
	if csv, ok := b.Report("poison.csv.failures.csv"); !ok || !strings.Contains(string(csv), poisoned.SerialNumber) {
		t.Errorf("failures csv: %q", csv)
	}
}

// Blob metadata hints: spellings of a hash Entra takes are accepted (the file is read with
// them); a value oathpipe does not take is one file-level problem naming the key, never ignored.
func TestImportMetadataHints(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	hexRow := func(serial string) pipelinetest.Row {
		return pipelinetest.Row{UPN: ada, Serial: serial, Secret: "3132333435363738393031323334353637383930", Interval: "30", Manufacturer: "Token2", Model: "C202"}
	}
	tests := []struct {
		md        map[string]string
		wantField string // "" for a clean import
	}{
		{map[string]string{"hash": "sha256", "secretencoding": "hex"}, ""},
		{map[string]string{"Hash": " HMAC-SHA1 ", "SecretEncoding": "HEX", "format": "entra-csv"}, ""},
		{map[string]string{"hash": "md5", "secretencoding": "hex"}, "metadata hash"},
		{map[string]string{"hash": "sha512", "secretencoding": "hex"}, "metadata hash"},
		{map[string]string{"secretencoding": "base64"}, "metadata secretencoding"},
		{map[string]string{"format": "xlsx", "secretencoding": "hex"}, "metadata format"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(tt.md), func(t *testing.T) {
			l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
			p := s.Pipeline(l, q, b, nil)
			name := fmt.Sprintf("hints-%d.csv", i)
			f := b.Upload(name, pipelinetest.EntraCSV([]pipelinetest.Row{hexRow(fmt.Sprintf("H-%d", i))}))
			f.Metadata = tt.md
			res, err := p.Import(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantField == "" {
				if len(res.Problems) != 0 || res.Valid != 1 || res.Queued != 1 || res.Disposition != pipeline.DispositionDeleted {
					t.Fatalf("clean import with hints: %+v", res)
				}
				return
			}
			if len(res.Problems) != 1 || res.Problems[0].Code != pipeline.CodeFileBadHint || res.Problems[0].Field != tt.wantField ||
				res.Queued != 0 || res.Disposition != pipeline.DispositionRejected {
				t.Fatalf("bad hint: %+v; want one %s problem on %q", res, pipeline.CodeFileBadHint, tt.wantField)
			}
			if v := tt.md[strings.TrimPrefix(tt.wantField, "metadata ")]; !strings.Contains(res.Problems[0].Message, v) {
				t.Errorf("message %q does not name the value %q", res.Problems[0].Message, v)
			}
		})
	}
}

// TestSeedInTheWrongColumnLeaksNowhere: rows whose seed sits in a public column (swapped,
// shifted, in the UPN, in the model, lower case, hex, base64) are rejected, never reach Entra,
// and no output holds a seed: logs, queue messages, ledger, report JSON, failures CSV and the
// ImportStatus answer. The rejected rows are still findable: line plus a hidden marker.
func TestSeedInTheWrongColumnLeaksNowhere(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	ss := &pipelinetest.SeedSet{}
	f := b.Upload("misplaced.csv", pipelinetest.MisplacedSeedsFile(ss, "MS", ada))
	res, err := p.Import(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Valid != 1 || res.Invalid != len(pipelinetest.MisplacedRejectedLines) {
		t.Fatalf("import: %+v", res)
	}
	pipelinetest.Drain(t, ctx, p, q)
	if devs := s.Graph.Server.Devices(); len(devs) != 1 || devs[0].Serial != "MS-OK" || devs[0].Model != "C202" {
		t.Fatalf("Graph holds %+v, want only MS-OK", devs)
	}
	st, err := p.ImportStatus(ctx, f.Name)
	if err != nil {
		t.Fatal(err)
	}
	hidden := 0
	for _, tl := range st.Tokens {
		if tl.Line == 9 {
			continue
		}
		if tl.Status != pipeline.StatusRejected {
			t.Errorf("line %d: %s, want rejected", tl.Line, tl.Status)
		}
		if token.IsHidden(tl.SerialNumber) || token.IsHidden(tl.UserPrincipalName) {
			hidden++
		}
	}
	if hidden < 4 {
		t.Errorf("only %d rejected rows show a hidden marker: %+v", hidden, st.Tokens)
	}
	api, _ := json.Marshal(st)
	csv, _ := b.Report(f.Name + ".failures.csv")
	if !strings.Contains(string(csv), "row.columns-shifted") {
		t.Errorf("failures csv lacks row.columns-shifted:\n%s", csv)
	}
	var leaks []string
	leaks = append(leaks, ss.Leaks("logs", s.Logs.String())...)
	leaks = append(leaks, ss.Leaks("queue", strings.Join(q.Sent, "\n"))...)
	leaks = append(leaks, ss.Leaks("ledger", string(l.Dump()))...)
	leaks = append(leaks, ss.Leaks("reports", b.All())...)
	leaks = append(leaks, ss.Leaks("ImportStatus answer", string(api))...)
	for _, lk := range leaks {
		t.Error("seed leaked: " + lk)
	}
	if len(ss.Secrets) < 12 || !strings.Contains(b.All(), "MS-OK") {
		t.Fatal("the leak scan did not see the data")
	}
}

// TestEarlierImportStaysReachable: a second upload under a name is a new import; the first
// import's record is still answered by its import id, the name alone answers the latest, and
// the answer is live (it follows a later reassignment) while the report is the import's record.
func TestEarlierImportStaysReachable(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	ss := &pipelinetest.SeedSet{}
	first, err := p.Import(ctx, b.Upload("batch.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("ER-1", ada)})))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Drain(t, ctx, p, q)
	second, err := p.Import(ctx, b.Upload("batch.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("ER-2", grace)})))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Drain(t, ctx, p, q)
	if first.ImportID == second.ImportID {
		t.Fatalf("both uploads got import id %s", first.ImportID)
	}
	latest, err := p.ImportStatus(ctx, "batch.csv")
	if err != nil || latest.ImportID != second.ImportID {
		t.Fatalf("latest: %+v %v", latest, err)
	}
	old, err := p.ImportStatusByID(ctx, "batch.csv", first.ImportID)
	if err != nil || old.ImportID != first.ImportID || len(old.Tokens) != 1 || old.Tokens[0].SerialNumber != "ER-1" {
		t.Fatalf("first import by id: %+v %v", old, err)
	}
	if _, err := p.ImportStatusByID(ctx, "other.csv", first.ImportID); token.KindOf(err) != token.KindNotFound {
		t.Errorf("an id under another name: %v", err)
	}
	if _, err := p.ImportStatusByID(ctx, "batch.csv", "imp-000000000000000000000000"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("an unknown id: %v", err)
	}
	// Live: a reassignment shows in the API answer; the report keeps the import's outcome.
	if _, err := p.AssignToken(ctx, pipeline.AssignRequest{Serial: "ER-2", UserPrincipalName: alan, Activate: true, Caller: "hr"}); err != nil {
		t.Fatal(err)
	}
	live, err := p.ImportStatus(ctx, "batch.csv")
	if err != nil || !strings.EqualFold(live.Tokens[0].UserPrincipalName, alan) {
		t.Errorf("live answer after a reassignment: %+v %v", live, err)
	}
}
