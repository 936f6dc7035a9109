package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/internal/azurite"
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/storage"
	"github.com/oathpipe/oathpipe/shared/token"
)

var (
	azOnce   sync.Once
	azServer *azurite.Server
	azErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if azServer != nil {
		azServer.Stop()
	}
	os.Exit(code)
}

// storageAccount opens E's real adapters (blobs, queues, ledger) on one Azurite shared by the
// package's tests; each test uses its own file names and drains the queue it fills.
func storageAccount(tb testing.TB) *storage.Account {
	tb.Helper()
	azOnce.Do(func() { azServer, azErr = azurite.Start(context.Background()) })
	if azErr != nil {
		tb.Fatalf("Azurite: %v", azErr)
	}
	a, err := storage.OpenWith(storage.Options{ConnectionString: azServer.ConnectionString()})
	if err != nil {
		tb.Fatal(err)
	}
	if err := a.EnsureResources(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return a
}

// host plays the Functions host's queue trigger against the Azurite queue: workers dequeue,
// call Provision (twice when twice is set: at-least-once delivery), delete the message on
// success, make it visible again on failure, and hand it to RecordPoisoned after 5 dequeues.
type host struct {
	p       *pipeline.Pipeline
	q       *azqueue.QueueClient
	workers int
	twice   bool

	mu       sync.Mutex
	texts    []string // every message text received, for the leak scan
	poisoned int
}

// upload drops content into the Azurite inbox and returns what the blob trigger passes the
// import: name, ETag and bytes.
func upload(tb testing.TB, ctx context.Context, a *storage.Account, name string, content []byte) pipeline.InboxFile {
	tb.Helper()
	if _, err := a.Blobs.PutInbox(ctx, name, content, nil); err != nil {
		tb.Fatal(err)
	}
	f, err := a.Blobs.ReadInbox(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

func (h *host) drain(tb testing.TB, ctx context.Context, until func() bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	jobs := make(chan *azqueue.DequeuedMessage)
	var inflight atomic.Int64
	var wg sync.WaitGroup
	var failures atomic.Int64
	for range h.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for msg := range jobs {
				h.handle(tb, ctx, msg, &failures)
				inflight.Add(-1)
			}
		}()
	}
	idle := 0
	for ctx.Err() == nil {
		resp, err := h.q.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(32)), VisibilityTimeout: to.Ptr(int32(60))})
		if err != nil {
			tb.Errorf("dequeue: %v", err)
			break
		}
		if len(resp.Messages) == 0 {
			if inflight.Load() == 0 {
				idle++
				if until() || idle > 200 {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		idle = 0
		for _, m := range resp.Messages {
			inflight.Add(1)
			jobs <- m
		}
	}
	close(jobs)
	wg.Wait()
	if ctx.Err() != nil {
		tb.Fatalf("draining the queue timed out")
	}
	if n := failures.Load(); n > 0 {
		tb.Logf("%d provisioning attempts failed and were retried", n)
	}
}

func (h *host) handle(tb testing.TB, ctx context.Context, msg *azqueue.DequeuedMessage, failures *atomic.Int64) {
	text := *msg.MessageText
	h.mu.Lock()
	h.texts = append(h.texts, text)
	h.mu.Unlock()
	var m pipeline.ProvisionMessage
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		tb.Errorf("queue message is not a ProvisionMessage: %q", text)
		return
	}
	count := int(*msg.DequeueCount)
	_, err := h.p.Provision(ctx, m, count)
	if err == nil && h.twice {
		_, err = h.p.Provision(ctx, m, count)
	}
	if err != nil {
		failures.Add(1)
		if count >= 5 { // the host moves it to the poison queue; ProvisionFailed records it
			if err := h.p.RecordPoisoned(ctx, m, err.Error()); err != nil {
				tb.Errorf("RecordPoisoned: %v", err)
			}
			h.mu.Lock()
			h.poisoned++
			h.mu.Unlock()
		} else {
			backoff := int32(1)
			if ra := token.RetryAfterOf(err); ra > time.Second {
				backoff = int32(ra / time.Second)
			}
			if _, uerr := h.q.UpdateMessage(ctx, *msg.MessageID, *msg.PopReceipt, text, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(backoff)}); uerr != nil {
				tb.Errorf("update message: %v", uerr)
			}
			return
		}
	}
	if _, err := h.q.DeleteMessage(ctx, *msg.MessageID, *msg.PopReceipt, nil); err != nil {
		tb.Errorf("delete message: %v", err)
	}
}

// settled reports whether every named import has settled in the ledger.
func settled(ctx context.Context, l pipeline.Ledger, ids ...string) func() bool {
	return func() bool {
		for _, id := range ids {
			imp, err := l.GetImport(ctx, id)
			if err != nil || imp.Pending > 0 || imp.Stage != pipeline.StageDone {
				return false
			}
		}
		return true
	}
}

// TestEndToEndOnAzurite plays the host end to end on E's real storage adapters: upload to the
// Azurite inbox, Import with what the blob trigger passes (twice), drain the Azurite queue into
// Provision calls (each message twice), then check Entra (the Graph stand-in), the ledger, the
// reports, the inbox, seed-rejected, and scan everything stored or logged for seeds.
func TestEndToEndOnAzurite(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	p := s.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)
	ss := &pipelinetest.SeedSet{}

	files := map[string][]byte{
		"e2e/clean batch ü.csv": pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("E2E-1", ada), ss.Row("E2E-2", grace), ss.Row("E2E-3", "")}),
		"e2e/mixed #1.csv":      mixedFileWith(ss, "E2M"),
		"e2e/misplaced.csv":     pipelinetest.MisplacedSeedsFile(ss, "E2X", ada), // seeds in public columns: issue 18 item 1
	}
	results := map[string]*pipeline.ImportResult{}
	for name, content := range files {
		f := upload(t, ctx, a, name, content)
		for i := range 2 {
			res, err := p.Import(ctx, f)
			if err != nil {
				t.Fatalf("Import %s #%d: %v", name, i+1, err)
			}
			if i == 0 {
				results[name] = res
			} else if !res.Repeat || res.Queued != 0 {
				t.Fatalf("repeated Import %s: %+v", name, res)
			}
		}
		if _, err := a.Blobs.ReadInbox(ctx, name); token.KindOf(err) != token.KindNotFound {
			t.Errorf("%s is still in the inbox: %v", name, err)
		}
	}
	h := &host{p: p, q: a.Provision.Client(), workers: 4, twice: true}
	h.drain(t, ctx, settled(ctx, a.Ledger, results["e2e/clean batch ü.csv"].ImportID, results["e2e/mixed #1.csv"].ImportID, results["e2e/misplaced.csv"].ImportID))
	if len(h.texts) != 3+5+1 {
		t.Errorf("%d messages received, want 9 (one per valid token, none duplicated by the repeated import)", len(h.texts))
	}

	want := map[string]struct{ status, upn string }{
		"E2E-1": {"activated", ada}, "E2E-2": {"activated", grace}, "E2E-3": {"available", ""},
		"E2M-1": {"activated", ada}, "E2M-2": {"activated", grace}, "E2M-3": {"available", ""},
		"E2M-4": {"available", ""}, "@E2M(5)": {"available", ""},
		"E2X-OK": {"activated", ada},
	}
	devs := s.Graph.Server.Devices()
	if len(devs) != len(want) {
		t.Errorf("Graph holds %d devices, want %d", len(devs), len(want))
	}
	for _, d := range devs {
		w := want[d.Serial]
		if d.Status != w.status || !strings.EqualFold(d.AssignedUPN, w.upn) || d.Activations > 1 {
			t.Errorf("%s: %s for %q (%d activations), want %+v", d.Serial, d.Status, d.AssignedUPN, d.Activations, w)
		}
	}

	clean, mixed := results["e2e/clean batch ü.csv"], results["e2e/mixed #1.csv"]
	if clean.Disposition != pipeline.DispositionDeleted || mixed.Disposition != pipeline.DispositionRejected {
		t.Errorf("dispositions %s / %s", clean.Disposition, mixed.Disposition)
	}
	kept, err := a.Blobs.Read(ctx, config.RejectedContainer, pipeline.RejectedName(mixed.ImportID, "e2e/mixed #1.csv")+".gpg")
	if err != nil || string(pipelinetest.DecryptRejected(t, kept)) != string(files["e2e/mixed #1.csv"]) {
		t.Errorf("the mixed file was not kept whole in seed-rejected: %v", err)
	}
	for name, wantCounts := range map[string]map[pipeline.RowStatus]int{
		"e2e/clean batch ü.csv": {pipeline.StatusActivated: 2, pipeline.StatusAvailable: 1},
		"e2e/mixed #1.csv":      {pipeline.StatusActivated: 2, pipeline.StatusAvailable: 1, pipeline.StatusFailed: 2, pipeline.StatusRejected: 3},
	} {
		js, err := a.Blobs.Read(ctx, config.ReportsContainer, name+".json")
		if err != nil {
			t.Fatal(err)
		}
		var rep pipeline.ImportStatus
		if err := json.Unmarshal(js, &rep); err != nil {
			t.Fatal(err)
		}
		if !rep.Settled || fmt.Sprint(rep.Counts) != fmt.Sprint(wantCounts) {
			t.Errorf("report %s: settled %v counts %v, want %v", name, rep.Settled, rep.Counts, wantCounts)
		}
		st, err := p.ImportStatus(ctx, name)
		if err != nil || fmt.Sprint(st.Counts) != fmt.Sprint(wantCounts) {
			t.Errorf("ImportStatus %s: %+v %v", name, st, err)
		}
		_, csvErr := a.Blobs.Read(ctx, config.ReportsContainer, name+".failures.csv")
		if hasFailures := wantCounts[pipeline.StatusFailed]+wantCounts[pipeline.StatusRejected] > 0; hasFailures != (csvErr == nil) {
			t.Errorf("%s: failures csv present=%v, want %v", name, csvErr == nil, hasFailures)
		}
	}

	if _, err := p.AssignToken(ctx, pipeline.AssignRequest{Serial: "E2E-3", UserPrincipalName: alan, Activate: true, Caller: "hr"}); err != nil {
		t.Fatal(err)
	}
	if row, err := a.Ledger.TokenBySerial(ctx, "E2E-3"); err != nil || row.Status != pipeline.StatusActivated || !strings.EqualFold(row.UserPrincipalName, alan) {
		t.Errorf("ledger after PUT: %+v %v", row, err)
	}

	stored := pipelinetest.StoredOutsideVault(t, ctx, azServer.ConnectionString())
	var leaks []string
	leaks = append(leaks, ss.Leaks("logs", s.Logs.String())...)
	leaks = append(leaks, ss.Leaks("queue messages", strings.Join(h.texts, "\n"))...)
	leaks = append(leaks, ss.Leaks("ledger, audit and reports", stored)...)
	for _, lk := range leaks {
		t.Error("seed leaked: " + lk)
	}
	if !strings.Contains(stored, "E2M-1") || !strings.Contains(s.Logs.String(), "E2E-1") {
		t.Fatal("the leak scan did not see the stored data")
	}
}

// TestCrashesOnAzurite injects a crash between steps on the real adapters and re-runs the
// invocation: nothing is lost, nothing is done twice.
func TestCrashesOnAzurite(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	for i, c := range []struct {
		op    string
		after bool
	}{
		{"ledger.AddTokens", true}, {"ledger.SealImport", true}, {"queue.Enqueue", true}, {"blobs.PutReport", true}, {"blobs.Reject", true},
		{"blobs.DeleteInbox", true}, {"ledger.SetImportStage." + string(pipeline.StageDone), false},
		{"directory.Assign", true}, {"directory.Activate", true}, {"ledger.SetTokenOutcome", true},
	} {
		t.Run(c.op, func(t *testing.T) {
			s := pipelinetest.NewStack(t, pipelinetest.Options{})
			plan := &crashPlan{op: c.op, after: c.after}
			p := s.Pipeline(crashLedger{a.Ledger, plan}, crashQueue{a.Provision, plan}, crashBlobs{a.Blobs, plan}, func(d *pipeline.Deps) {
				d.Directory = crashDirectory{d.Directory, plan}
			})
			ss := &pipelinetest.SeedSet{}
			pre := fmt.Sprintf("AZC%d-", i)
			names := []string{pre + "clean.csv", pre + "bad.csv"}
			contents := [][]byte{
				pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row(pre+"1", ada), ss.Row(pre+"2", "")}),
				pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row(pre+"3", grace), {UPN: ada, Serial: pre + "4", Secret: "x", Interval: "30", Manufacturer: "Token2", Model: "C202"}}),
			}
			var ids []string
			for j, name := range names {
				f := upload(t, ctx, a, name, contents[j])
				var res *pipeline.ImportResult
				var err error
				for attempt := 0; attempt < 3; attempt++ {
					if res, err = p.Import(ctx, f); err == nil {
						break
					}
				}
				if err != nil {
					t.Fatalf("import %s: %v", name, err)
				}
				ids = append(ids, res.ImportID)
			}
			h := &host{p: p, q: a.Provision.Client(), workers: 2}
			h.drain(t, ctx, settled(ctx, a.Ledger, ids...))
			if !plan.fired {
				t.Fatal("the crash never fired")
			}
			for serial, want := range map[string]string{pre + "1": "activated", pre + "2": "available", pre + "3": "activated"} {
				if d, ok := s.Graph.Server.DeviceBySerial(serial); !ok || d.Status != want || d.Activations > 1 {
					t.Errorf("%s: %+v, want %s once", serial, d, want)
				}
			}
			for j, name := range names {
				if _, err := a.Blobs.ReadInbox(ctx, name); token.KindOf(err) != token.KindNotFound {
					t.Errorf("%s still in the inbox", name)
				}
				js, err := a.Blobs.Read(ctx, config.ReportsContainer, name+".json")
				if err != nil || !strings.Contains(string(js), `"settled": true`) {
					t.Errorf("%s: report not final: %v\n%s", name, err, js)
				}
				if j == 1 {
					if kept, err := a.Blobs.Read(ctx, config.RejectedContainer, pipeline.RejectedName(ids[1], name)+".gpg"); err != nil || string(pipelinetest.DecryptRejected(t, kept)) != string(contents[1]) {
						t.Errorf("rejected file lost: %v", err)
					}
				}
			}
		})
	}
}

// TestConcurrentSettlementOnAzurite: two instances with eight workers each settle one import's
// tokens at the same time through the ledger's conditional updates: no count is lost, the import
// settles exactly when its last token does, and the report on disk is the final one.
func TestConcurrentSettlementOnAzurite(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := pipelinetest.NewStack(t, pipelinetest.Options{Users: benchUsers(12)})
	p1 := s.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)
	p2 := s.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)
	ss := &pipelinetest.SeedSet{}
	const n = 48
	rows := make([]pipelinetest.Row, n)
	for i := range rows {
		rows[i] = ss.Row(fmt.Sprintf("CS-%03d", i), fmt.Sprintf("user%04d@contoso.example", i/4+1))
	}
	name := "concurrent/settle.csv"
	f := upload(t, ctx, a, name, pipelinetest.EntraCSV(rows))
	res, err := p1.Import(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, p := range []*pipeline.Pipeline{p1, p2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			(&host{p: p, q: a.Provision.Client(), workers: 8}).drain(t, ctx, settled(ctx, a.Ledger, res.ImportID))
		}()
	}
	wg.Wait()
	imp, err := a.Ledger.GetImport(ctx, res.ImportID)
	if err != nil || imp.Pending != 0 {
		t.Fatalf("pending %d: %v", imp.Pending, err)
	}
	js, err := a.Blobs.Read(ctx, config.ReportsContainer, name+".json")
	if err != nil {
		t.Fatal(err)
	}
	var rep pipeline.ImportStatus
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Settled || rep.Counts[pipeline.StatusActivated] != n || rep.Pending != 0 {
		t.Errorf("report: settled %v pending %d counts %v", rep.Settled, rep.Pending, rep.Counts)
	}
}

// TestAPIOnAzurite runs the HTTP API flows over the real ledger with serials that need escaping
// everywhere (OData filters, Table keys, URLs): quotes, slashes, '#', '?' and unicode.
func TestAPIOnAzurite(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	p := s.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)
	ss := &pipelinetest.SeedSet{}
	serials := []string{`AZ-O'Brien`, `AZ-"q"`, "AZ-Ωmega-Ü", "AZ-a/b#c?d", `AZ-back\slash`}
	var rows []pipelinetest.Row
	for _, ser := range serials {
		rows = append(rows, ss.Row(ser, ""))
	}
	name := "api/awkward.csv"
	f := upload(t, ctx, a, name, pipelinetest.EntraCSV(rows))
	res, err := p.Import(ctx, f)
	if err != nil || res.Valid != len(serials) {
		t.Fatalf("import: %+v %v", res, err)
	}
	(&host{p: p, q: a.Provision.Client(), workers: 2}).drain(t, ctx, settled(ctx, a.Ledger, res.ImportID))

	for i, ser := range serials {
		upn := []string{ada, grace, alan, "edsger.dijkstra@contoso.example", "barbara.liskov@contoso.example"}[i]
		got, err := p.AssignToken(ctx, pipeline.AssignRequest{Serial: ser, UserPrincipalName: upn, Activate: true, Caller: "hr-system"})
		if err != nil || !got.Changed || got.Status != pipeline.StatusActivated {
			t.Errorf("PUT %q: %+v %v", ser, got, err)
			continue
		}
		row, err := a.Ledger.TokenBySerial(ctx, ser)
		if err != nil || row.Status != pipeline.StatusActivated || !strings.EqualFold(row.UserPrincipalName, upn) {
			t.Errorf("ledger row of %q: %+v %v", ser, row, err)
		}
		st, err := p.TokenState(ctx, ser)
		if err != nil || st.SeedInVault == nil || !*st.SeedInVault || !strings.EqualFold(st.UserPrincipalName, upn) {
			t.Errorf("GET %q: %+v %v", ser, st, err)
		}
		if got, err := p.UnassignToken(ctx, ser, "hr-system"); err != nil || !got.Changed {
			t.Errorf("DELETE %q: %+v %v", ser, got, err)
		}
		if row, err := a.Ledger.TokenBySerial(ctx, ser); err != nil || row.Status != pipeline.StatusAvailable {
			t.Errorf("ledger row of %q after DELETE: %+v %v", ser, row, err)
		}
	}

	// Every change is in the audit table, with caller, serial, users, outcome and time.
	svc, err := aztables.NewServiceClientFromConnectionString(azServer.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]int{}
	pager := svc.NewClient(config.AuditTable).NewListEntitiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entities {
			var rec map[string]any
			if err := json.Unmarshal(e, &rec); err != nil {
				t.Fatal(err)
			}
			for _, ser := range serials {
				if rec["Caller"] == "hr-system" && rec["Serial"] == ser && rec["Outcome"] == "changed" {
					found[ser]++
				}
			}
		}
	}
	for _, ser := range serials {
		if found[ser] != 2 {
			t.Errorf("%q: %d audit records of changes, want 2 (assign, unassign)", ser, found[ser])
		}
	}
}
