package runner

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/handlers"
	"github.com/oathpipe/oathpipe/internal/azurite"
)

var (
	azOnce      sync.Once
	az          *azurite.Server
	azErr       error
	storageConn string
)

// TestMain stops Azurite when a test started it. Azurite starts lazily (needStorage), so the
// fuzz targets and unit tests run without it.
func TestMain(m *testing.M) {
	code := m.Run()
	if az != nil {
		az.Stop()
	}
	os.Exit(code)
}

// needStorage starts Azurite once for the package and returns its connection string.
func needStorage(t *testing.T) string {
	t.Helper()
	azOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		az, azErr = azurite.Start(ctx)
		if azErr == nil {
			storageConn = az.ConnectionString()
		}
	})
	if azErr != nil {
		t.Fatalf("azurite: %v", azErr)
	}
	return storageConn
}

// call is one invocation the recording handler received, decoded with the handler's own decoder.
type call struct {
	fn  string
	inv *handlers.Invocation
	raw map[string]json.RawMessage
}

// fakeHandler records invocations and answers with answer(fn, inv) (status, body).
type fakeHandler struct {
	mu     sync.Mutex
	calls  []call
	answer func(r *http.Request, fn string, inv *handlers.Invocation) (int, string)
}

func (h *fakeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fn := strings.TrimPrefix(r.URL.Path, "/")
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "want POST application/json", http.StatusBadRequest)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	inv, err := handlers.DecodeInvocation(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(body, &raw)
	h.mu.Lock()
	h.calls = append(h.calls, call{fn: fn, inv: inv, raw: raw})
	h.mu.Unlock()
	status, answer := http.StatusOK, `{"Outputs":{},"Logs":["ok"]}`
	if h.answer != nil {
		status, answer = h.answer(r, fn, inv)
	}
	ct := "application/json"
	if rest, ok := strings.CutPrefix(answer, "text:"); ok {
		ct, answer = "text/plain", rest
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, answer)
}

func (h *fakeHandler) callsTo(fn string) []call {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []call
	for _, c := range h.calls {
		if c.fn == fn {
			out = append(out, c)
		}
	}
	return out
}

// startRunner runs a runner over the project's functions against the fake handler until the
// test ends (or stop is called).
func startRunner(t *testing.T, h http.Handler) (r *Runner, stop func()) {
	t.Helper()
	return startRunnerWith(t, h, nil)
}

// startRunnerWith is startRunner with host.json settings changed by tune.
func startRunnerWith(t *testing.T, h http.Handler, tune func(*Host)) (r *Runner, stop func()) {
	t.Helper()
	return startRunnerOpts(t, h, func(o *Options) {
		if tune != nil {
			tune(&o.Host)
		}
	})
}

// startRunnerOpts is startRunner with the runner's options changed by tune.
func startRunnerOpts(t *testing.T, h http.Handler, tune func(*Options)) (r *Runner, stop func()) {
	t.Helper()
	needStorage(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	fns, err := LoadFunctions(filepath.Join("..", "..", "functions"))
	if err != nil {
		t.Fatal(err)
	}
	host, err := LoadHost(filepath.Join("..", "..", "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	host.VisibilityTimeout, host.MaxPollInterval = 0, 100*time.Millisecond
	o := Options{Functions: fns, Host: host, HandlerURL: srv.URL, Connection: map[string]string{"SeedStorage": storageConn},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), PollInterval: 50 * time.Millisecond,
		// Reconcile's %OATHPIPE_RECONCILE_SCHEDULE%: 30 February, so it never fires during a test.
		AppSetting: func(name string) string {
			return map[string]string{"OATHPIPE_RECONCILE_SCHEDULE": "0 0 0 30 2 *"}[name]
		}}
	if tune != nil {
		tune(&o)
	}
	r, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return r, stop
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func clients(t *testing.T) (*azblob.Client, *azqueue.ServiceClient) {
	t.Helper()
	bc, err := azblob.NewClientFromConnectionString(storageConn, nil)
	if err != nil {
		t.Fatal(err)
	}
	qc, err := azqueue.NewServiceClientFromConnectionString(storageConn, nil)
	if err != nil {
		t.Fatal(err)
	}
	return bc, qc
}

// resetStorage removes what earlier tests left in the containers and queues the functions use.
func resetStorage(t *testing.T) {
	t.Helper()
	needStorage(t)
	ctx := context.Background()
	bc, qc := clients(t)
	for _, c := range []string{"seed-inbox", ReceiptsContainer} {
		_, _ = bc.DeleteContainer(ctx, c, nil)
	}
	for _, q := range []string{"token-provisioning", "token-provisioning-poison", "token-provisioning-poison-poison", "seed-imports", BlobPoisonQueue} {
		_, _ = qc.DeleteQueue(ctx, q, nil)
	}
	// Azurite deletes a container asynchronously; wait until it can be created again.
	waitFor(t, "seed-inbox recreated", 10*time.Second, func() bool {
		_, err := bc.CreateContainer(ctx, "seed-inbox", nil)
		return err == nil
	})
	for _, q := range []string{"token-provisioning", "token-provisioning-poison", "seed-imports"} {
		if _, err := qc.CreateQueue(ctx, q, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// blobFunction is a blob-triggered function for the runner's blob-trigger tests (the project
// has none since ImportSeeds became a queue trigger).
func blobFunction(source string) Function {
	return Function{Name: "BlobFn", Bindings: []Binding{{Name: "file", Type: BlobTrigger, Direction: "in",
		Path: "seed-inbox/{name}", Source: source, Connection: "SeedStorage", DataType: "binary"}}}
}

// delivered collects the runner's deliveries (Options.Observe) and polling turns
// (Options.Polled) so a test waits on events, not sleeps.
type delivered struct {
	mu    sync.Mutex
	ds    []Delivery
	polls []Poll
}

func (d *delivered) add(x Delivery) { d.mu.Lock(); d.ds = append(d.ds, x); d.mu.Unlock() }
func (d *delivered) poll(p Poll)    { d.mu.Lock(); d.polls = append(d.polls, p); d.mu.Unlock() }

// watch sets the options that feed d.
func (d *delivered) watch(o *Options) { o.Observe, o.Polled = d.add, d.poll }

func (d *delivered) keys(fn string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, x := range d.ds {
		if x.Function == fn {
			out = append(out, x.Key)
		}
	}
	return out
}

// turnSince reports whether fn's watcher ("" for an Event Grid subscription) finished a turn
// that began after since and for which ok holds.
func (d *delivered) turnSince(fn string, since time.Time, ok func(Poll) bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.polls {
		if p.Function == fn && p.Began.After(since) && ok(p) {
			return true
		}
	}
	return false
}

// settle waits until fn's watcher has begun a turn after now and found nothing to do with
// nothing running: whatever it was going to deliver by then has been delivered and reported.
// A test asserting that something did not happen calls it first, so the thing had its chance.
func (d *delivered) settle(t *testing.T, fn string) {
	t.Helper()
	since := time.Now()
	waitFor(t, fmt.Sprintf("a settled turn of %q", fn), 10*time.Second, func() bool {
		return d.turnSince(fn, since, Poll.Settled)
	})
}

// TestBlobTriggerHostShape: Metadata.Properties is the v12 BlobProperties as Newtonsoft writes
// it (ETag {}, BlobType a number, CreatedOn, ContentHash base64), Metadata an object; with
// source EventGrid there are no receipts, so a restarted runner delivers the blob again.
func TestBlobTriggerHostShape(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	bc, _ := clients(t)
	content := []byte("serial,secret\nTK1,hidden\n")
	if _, err := bc.UploadBuffer(ctx, "seed-inbox", "vendor/batch 1.csv", content, &azblob.UploadBufferOptions{
		Metadata: map[string]*string{"uploadedby": to.Ptr("ada")},
	}); err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{}
	_, stop := startRunnerOpts(t, h, func(o *Options) { o.Functions = []Function{blobFunction("EventGrid")} })
	waitFor(t, "BlobFn invocation", 10*time.Second, func() bool { return len(h.callsTo("BlobFn")) == 1 })
	inv := h.callsTo("BlobFn")[0].inv
	got, err := inv.DataBytes("file")
	if err != nil || string(got) != string(content) {
		t.Fatalf("Data.file = %q, %v", got, err)
	}
	if raw := string(inv.Metadata["name"]); raw != `"\"vendor/batch 1.csv\""` {
		t.Errorf("raw Metadata.name = %s; want the host's double encoding", raw)
	}
	var props map[string]json.RawMessage
	if err := inv.MetaObject("Properties", &props); err != nil {
		t.Fatal(err)
	}
	if e := string(props["ETag"]); e != "{}" {
		t.Errorf("Properties.ETag = %s; want {} (Azure.ETag has no public field)", e)
	}
	if bt := string(props["BlobType"]); bt != "0" {
		t.Errorf("Properties.BlobType = %s; want 0 (BlobType.Block as a number)", bt)
	}
	for _, k := range []string{"CreatedOn", "LastModified", "ContentHash"} {
		if len(props[k]) == 0 {
			t.Errorf("Properties.%s missing: %s", k, inv.Metadata["Properties"])
		}
	}
	if _, ok := props["Created"]; ok {
		t.Errorf("Properties.Created is the v11 name; v12 has CreatedOn")
	}
	var hash string
	if err := json.Unmarshal(props["ContentHash"], &hash); err != nil {
		t.Errorf("ContentHash %s: %v", props["ContentHash"], err)
	} else if b, err := base64.StdEncoding.DecodeString(hash); err != nil || len(b) != 16 {
		t.Errorf("ContentHash %q is not a base64 MD5", hash)
	}
	if l := string(props["ContentLength"]); l != fmt.Sprint(len(content)) {
		t.Errorf("Properties.ContentLength = %s", l)
	}
	var meta map[string]string
	if err := inv.MetaObject("Metadata", &meta); err != nil || meta["uploadedby"] != "ada" {
		t.Errorf("Metadata.Metadata = %v, %v", meta, err)
	}
	if _, err := bc.ServiceClient().NewContainerClient(ReceiptsContainer).NewBlobClient("x").GetProperties(ctx, nil); err == nil {
		t.Errorf("a receipt container exists")
	}
	pager := bc.NewListBlobsFlatPager(ReceiptsContainer, nil)
	if pager.More() {
		if page, err := pager.NextPage(ctx); err == nil && len(page.Segment.BlobItems) > 0 {
			t.Errorf("receipts written with an Event Grid source: %d", len(page.Segment.BlobItems))
		}
	}
	// No receipts: a restarted runner delivers the blob again.
	stop()
	h2 := &fakeHandler{}
	_, _ = startRunnerOpts(t, h2, func(o *Options) { o.Functions = []Function{blobFunction("EventGrid")} })
	waitFor(t, "redelivery after restart", 10*time.Second, func() bool { return len(h2.callsTo("BlobFn")) == 1 })
}

// TestBlobTriggerScanReceipts: in scan mode a receipt keeps a restarted runner from delivering
// the same upload again; the test waits for a sentinel blob to be delivered and for a settled
// listing after it, then checks.
func TestBlobTriggerScanReceipts(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	bc, _ := clients(t)
	if _, err := bc.UploadBuffer(ctx, "seed-inbox", "a.csv", []byte("a"), nil); err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{}
	_, stop := startRunnerOpts(t, h, func(o *Options) { o.Functions = []Function{blobFunction("")} })
	waitFor(t, "first delivery", 10*time.Second, func() bool { return len(h.callsTo("BlobFn")) == 1 })
	stop()
	var seen delivered
	h2 := &fakeHandler{}
	_, _ = startRunnerOpts(t, h2, func(o *Options) { o.Functions = []Function{blobFunction("")}; seen.watch(o) })
	if _, err := bc.UploadBuffer(ctx, "seed-inbox", "sentinel.csv", []byte("s"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sentinel delivered", 10*time.Second, func() bool { return len(seen.keys("BlobFn")) >= 1 })
	// A later listing that starts nothing while nothing runs: a.csv, listed before the
	// sentinel, had its chance, and any delivery of it has been reported.
	seen.settle(t, "BlobFn")
	if keys := seen.keys("BlobFn"); fmt.Sprint(keys) != "[sentinel.csv]" {
		t.Fatalf("deliveries after restart %v; want only the sentinel (a.csv has a receipt)", keys)
	}
}

// TestBlobTriggerImmediateRetries: a failed blob is retried at once (host.json's
// visibilityTimeout does not apply), poisonBlobThreshold times, then poisoned.
func TestBlobTriggerImmediateRetries(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	bc, qc := clients(t)
	if _, err := bc.UploadBuffer(ctx, "seed-inbox", "bad.csv", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{answer: func(*http.Request, string, *handlers.Invocation) (int, string) {
		return http.StatusInternalServerError, `{"Outputs":{},"Logs":["worth retrying"]}`
	}}
	var seen delivered
	start := time.Now()
	_, _ = startRunnerOpts(t, h, func(o *Options) {
		o.Functions = []Function{blobFunction("EventGrid")}
		o.Host.PoisonBlobThreshold = 3
		o.Host.VisibilityTimeout = time.Hour // must not delay blob retries
		seen.watch(o)
	})
	waitFor(t, "blob poison message", 15*time.Second, func() bool {
		resp, err := qc.NewQueueClient(BlobPoisonQueue).PeekMessages(ctx, nil)
		return err == nil && len(resp.Messages) == 1
	})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("three tries took %v; want them at once", d)
	}
	waitFor(t, "third delivery reported", 5*time.Second, func() bool { return len(seen.keys("BlobFn")) == 3 })
	seen.settle(t, "BlobFn") // a listing after the poisoning delivers it no more
	if n := len(h.callsTo("BlobFn")); n != 3 {
		t.Fatalf("%d tries; want poisonBlobThreshold = 3", n)
	}
	resp, _ := qc.NewQueueClient(BlobPoisonQueue).PeekMessages(ctx, nil)
	var msg map[string]string
	if err := json.Unmarshal([]byte(*resp.Messages[0].MessageText), &msg); err != nil {
		t.Fatal(err)
	}
	if msg["BlobName"] != "bad.csv" || msg["ContainerName"] != "seed-inbox" || msg["FunctionId"] != "Host.Functions.BlobFn" {
		t.Fatalf("poison message = %v", msg)
	}
}

// TestEventGridBlobCreated: the runner plays the Event Grid subscription: a blob created in
// seed-inbox becomes one BlobCreated event (EventGridSchema, plain JSON) on seed-imports, and
// ImportSeeds receives it with the event's top-level fields copied into Metadata.
func TestEventGridBlobCreated(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	bc, _ := clients(t)
	h := &fakeHandler{}
	var seen delivered
	_, _ = startRunnerOpts(t, h, func(o *Options) {
		o.EventGrid = []EventGridSubscription{{Connection: "SeedStorage", Container: "seed-inbox", Queue: "seed-imports"}}
		seen.watch(o)
	})
	up, err := bc.UploadBuffer(ctx, "seed-inbox", "dir/a b.csv", []byte("serial\n1\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ImportSeeds invocation", 10*time.Second, func() bool { return len(h.callsTo("ImportSeeds")) == 1 })
	// One event: a listing after it queues no other, and the queue then has nothing left.
	seen.settle(t, "")
	seen.settle(t, "ImportSeeds")
	if n := len(h.callsTo("ImportSeeds")); n != 1 {
		t.Fatalf("%d ImportSeeds invocations; want one event for one blob", n)
	}
	inv := h.callsTo("ImportSeeds")[0].inv
	text, ok := inv.DataString("event")
	if !ok {
		t.Fatalf("no Data.event: %s", h.callsTo("ImportSeeds")[0].raw["Data"])
	}
	var ev GridEvent
	if err := json.Unmarshal([]byte(text), &ev); err != nil {
		t.Fatalf("Data.event is not one JSON event: %v: %s", err, text)
	}
	if ev.EventType != BlobCreatedType || ev.Subject != "/blobServices/default/containers/seed-inbox/blobs/dir/a b.csv" ||
		ev.Data["eTag"] != strings.Trim(string(*up.ETag), `"`) || !strings.HasSuffix(fmt.Sprint(ev.Data["url"]), "/seed-inbox/dir/a%20b.csv") {
		t.Fatalf("event = %+v", ev)
	}
	// Utility.ApplyBindingData: strings twice encoded, objects as objects, "id" over "Id".
	if raw := string(inv.Metadata["subject"]); !strings.HasPrefix(raw, `"\"/blobServices`) {
		t.Errorf("Metadata.subject = %s", raw)
	}
	var data map[string]any
	if err := json.Unmarshal(inv.Metadata["data"], &data); err != nil || data["eTag"] == nil {
		t.Errorf("Metadata.data = %s (%v)", inv.Metadata["data"], err)
	}
	if inv.Meta("Id") != ev.ID {
		t.Errorf("Metadata.Id = %q; want the event's id %q (the message field wins)", inv.Meta("Id"), ev.ID)
	}
}

// TestPoisonQueueHasNoPoisonQueue: a failing message of token-provisioning-poison is not
// moved anywhere (no -poison-poison queue): it stays invisible for 10 minutes, and a message
// already past maxDequeueCount is skipped without an invocation.
func TestPoisonQueueHasNoPoisonQueue(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	_, qc := clients(t)
	pq := qc.NewQueueClient("token-provisioning-poison")
	if _, err := pq.EnqueueMessage(ctx, `{"serialNumber":"WORN"}`, nil); err != nil {
		t.Fatal(err)
	}
	// Dequeue it past maxDequeueCount (5) by hand, as earlier instances would have.
	for range 5 {
		resp, err := pq.DequeueMessage(ctx, &azqueue.DequeueMessageOptions{VisibilityTimeout: to.Ptr(int32(30))})
		if err != nil || len(resp.Messages) != 1 {
			t.Fatalf("dequeue: %v %v", resp, err)
		}
		m := resp.Messages[0]
		if _, err := pq.UpdateMessage(ctx, *m.MessageID, *m.PopReceipt, *m.MessageText,
			&azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(0))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pq.EnqueueMessage(ctx, `{"serialNumber":"FRESH"}`, nil); err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{answer: func(*http.Request, string, *handlers.Invocation) (int, string) {
		return http.StatusInternalServerError, `{}`
	}}
	var seen delivered
	_, _ = startRunnerOpts(t, h, seen.watch)
	waitFor(t, "both messages handled", 10*time.Second, func() bool { return len(seen.keys("ProvisionFailed")) == 2 })
	// A dequeue after both that receives nothing: neither came back, and no third try runs.
	seen.settle(t, "ProvisionFailed")
	calls := h.callsTo("ProvisionFailed")
	if len(calls) != 1 {
		t.Fatalf("%d invocations; want 1 (the worn message is skipped)", len(calls))
	}
	if n := len(seen.keys("ProvisionFailed")); n != 2 {
		t.Fatalf("%d deliveries; want 2 (one failed, one skipped, neither again)", n)
	}
	if job, _ := calls[0].inv.DataString("job"); !strings.Contains(job, "FRESH") {
		t.Fatalf("invoked with %q", job)
	}
	seen.mu.Lock()
	var skipped, poisoned int
	for _, d := range seen.ds {
		if d.Skipped {
			skipped++
		}
		if d.Poisoned {
			poisoned++
		}
	}
	seen.mu.Unlock()
	if skipped != 1 || poisoned != 0 {
		t.Errorf("skipped %d, poisoned %d; want 1 and 0", skipped, poisoned)
	}
	if _, err := qc.NewQueueClient("token-provisioning-poison-poison").GetProperties(ctx, nil); err == nil {
		t.Errorf("a -poison-poison queue exists")
	}
	// Both stay invisible (failed: 10 minutes; skipped: left hidden).
	if resp, err := pq.PeekMessages(ctx, nil); err != nil || len(resp.Messages) != 0 {
		t.Errorf("visible messages %v, %v; want none", resp, err)
	}
}

// TestQueueConcurrency: one queue runs at most batchSize + newBatchThreshold invocations at once.
func TestQueueConcurrency(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	_, qc := clients(t)
	q := qc.NewQueueClient("token-provisioning")
	for i := range 12 {
		if _, err := q.EnqueueMessage(ctx, fmt.Sprintf(`{"serialNumber":"C%d"}`, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	running, peak := 0, 0
	release := make(chan struct{})
	h := &fakeHandler{answer: func(r *http.Request, _ string, _ *handlers.Invocation) (int, string) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done(): // the runner stopped: a failed test ends without waiting here
		}
		mu.Lock()
		running--
		mu.Unlock()
		return http.StatusOK, `{}`
	}}
	var seen delivered
	_, _ = startRunnerOpts(t, h, func(o *Options) { o.Host.BatchSize, o.Host.NewBatchThreshold = 4, 2; seen.watch(o) })
	waitFor(t, "six running", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return running == 6 })
	// The runner had its chance to start a seventh: a turn after the sixth found no free slot.
	since := time.Now()
	waitFor(t, "a turn with no free slot", 10*time.Second, func() bool {
		return seen.turnSince("ProvisionToken", since, func(p Poll) bool { return p.Full && p.InFlight == 6 })
	})
	mu.Lock()
	if peak != 6 {
		t.Errorf("peak %d at once while six were held; want batchSize + newBatchThreshold = 6", peak)
	}
	mu.Unlock()
	close(release)
	waitFor(t, "all twelve", 10*time.Second, func() bool { return len(h.callsTo("ProvisionToken")) == 12 })
	if peak != 6 {
		t.Fatalf("peak %d at once; want batchSize + newBatchThreshold = 6", peak)
	}
}

func TestQueueTriggerRetriesThenPoison(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	_, qc := clients(t)
	q := qc.NewQueueClient("token-provisioning")
	good := `{"importId":"imp-1","serialNumber":"GOOD"}`
	bad := `{"importId":"imp-1","serialNumber":"BAD"}`
	for _, m := range []string{good, bad} {
		if _, err := q.EnqueueMessage(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	h := &fakeHandler{answer: func(_ *http.Request, fn string, inv *handlers.Invocation) (int, string) {
		if job, _ := inv.DataString("job"); fn == "ProvisionToken" && strings.Contains(job, "BAD") {
			return http.StatusInternalServerError, `{}`
		}
		return http.StatusOK, `{"Outputs":{}}`
	}}
	var seen delivered
	_, _ = startRunnerOpts(t, h, seen.watch)
	// Wait on the runner's own reports (deliveries finished, messages deleted), not on a sleep,
	// then for a dequeue of each queue that finds nothing: no seventh try, no second poisoning.
	waitFor(t, "ProvisionFailed delivered", 20*time.Second, func() bool { return len(seen.keys("ProvisionFailed")) == 1 })
	waitFor(t, "six ProvisionToken deliveries", 5*time.Second, func() bool { return len(seen.keys("ProvisionToken")) == 6 })
	seen.settle(t, "ProvisionToken")
	seen.settle(t, "ProvisionFailed")
	if n, m := len(seen.keys("ProvisionToken")), len(seen.keys("ProvisionFailed")); n != 6 || m != 1 {
		t.Fatalf("%d ProvisionToken and %d ProvisionFailed deliveries; want 6 and 1", n, m)
	}

	var goodTries, badCounts []int
	for _, c := range h.callsTo("ProvisionToken") {
		job, ok := c.inv.DataString("job")
		if !ok {
			t.Fatal("no Data.job")
		}
		switch job {
		case good:
			goodTries = append(goodTries, c.inv.MetaInt("DequeueCount"))
		case bad:
			badCounts = append(badCounts, c.inv.MetaInt("DequeueCount"))
		default:
			t.Fatalf("Data.job = %q", job)
		}
		if c.inv.Meta("Id") == "" || c.inv.Meta("PopReceipt") == "" || c.inv.Meta("InsertionTime") == "" {
			t.Errorf("queue metadata incomplete: %s", c.raw["Metadata"])
		}
	}
	if fmt.Sprint(goodTries) != "[1]" {
		t.Errorf("good message tries %v; want [1]", goodTries)
	}
	if fmt.Sprint(badCounts) != "[1 2 3 4 5]" {
		t.Errorf("bad message DequeueCounts %v; want [1 2 3 4 5]", badCounts)
	}
	if job, _ := h.callsTo("ProvisionFailed")[0].inv.DataString("job"); job != bad {
		t.Errorf("ProvisionFailed got %q; want the poisoned message", job)
	}
	for _, name := range []string{"token-provisioning", "token-provisioning-poison"} {
		props, err := qc.NewQueueClient(name).GetProperties(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := *props.ApproximateMessagesCount; n != 0 {
			t.Errorf("%s holds %d messages after delivery; want 0", name, n)
		}
	}
}

func TestQueueMessageReleasedOnShutdown(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	_, qc := clients(t)
	q := qc.NewQueueClient("token-provisioning")
	if _, err := q.EnqueueMessage(ctx, `{"serialNumber":"SLOW"}`, nil); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 1)
	h := &fakeHandler{answer: func(r *http.Request, _ string, _ *handlers.Invocation) (int, string) {
		started <- struct{}{}
		<-r.Context().Done() // blocks until the runner gives up
		return http.StatusOK, `{}`
	}}
	_, stop := startRunner(t, h)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("message not delivered")
	}
	stop()
	// Visible again at once, not after the function timeout.
	resp, err := q.DequeueMessage(ctx, nil)
	if err != nil || len(resp.Messages) != 1 {
		t.Fatalf("message not visible after shutdown: %v, %v", resp.Messages, err)
	}
	// 2: delivered once, then dequeued by the test. A poll already in flight when the runner
	// stopped may have received the released message too and released it again (3): the host
	// does the same, and the message is still visible at once.
	if c := *resp.Messages[0].DequeueCount; c != 2 && c != 3 {
		t.Fatalf("DequeueCount %d; want 2 (or 3 after a poll in flight at shutdown)", c)
	}
}

// An invocation running past functionTimeout is cancelled and counts as a failed try.
func TestQueueFunctionTimeout(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	_, qc := clients(t)
	if _, err := qc.NewQueueClient("token-provisioning").EnqueueMessage(ctx, `{"serialNumber":"SLOW"}`, nil); err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{answer: func(r *http.Request, fn string, inv *handlers.Invocation) (int, string) {
		if fn == "ProvisionToken" && inv.MetaInt("DequeueCount") == 1 {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}
		return http.StatusOK, `{}`
	}}
	start := time.Now()
	_, _ = startRunnerWith(t, h, func(h *Host) { h.FunctionTimeout = 300 * time.Millisecond })
	waitFor(t, "the second try", 8*time.Second, func() bool { return len(h.callsTo("ProvisionToken")) == 2 })
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second try after %v; the first was not cut off at functionTimeout", d)
	}
}

func TestHTTPFront(t *testing.T) {
	h := &fakeHandler{answer: func(_ *http.Request, fn string, inv *handlers.Invocation) (int, string) {
		req, err := inv.DataHTTPRequest("req")
		if err != nil {
			return http.StatusBadRequest, err.Error()
		}
		switch req.Params["serial"] {
		case "BROKEN":
			return http.StatusInternalServerError, `{}`
		case "NOOUT":
			return http.StatusOK, `{"Outputs":{}}`
		case "EMPTY":
			return http.StatusOK, ``
		case "TEXT":
			return http.StatusOK, `text:{"Outputs":{}}`
		case "OBJ":
			return http.StatusOK, `{"Outputs":{"res":{"statusCode":"409","body":{"error":"conflict"}}}}`
		}
		echo, _ := json.Marshal(map[string]any{"fn": fn, "method": req.Method, "params": req.Params, "query": req.Query,
			"body": req.Body, "ct": req.Header("content-type"), "url": req.URL, "name": inv.Meta("name"), "serial": inv.Meta("serial")})
		out, _ := json.Marshal(map[string]any{"Outputs": map[string]any{"res": map[string]any{
			"statusCode": 202, "body": string(echo), "headers": map[string]string{"Content-Type": "application/json", "X-Test": "1"},
		}}, "Logs": []string{"answered"}})
		return http.StatusOK, string(out)
	}}
	r, _ := startRunner(t, h)
	front := httptest.NewServer(r)
	defer front.Close()

	do := func(method, path, body string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, front.URL+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	status, body, hdr := do("PUT", "/api/tokens/TK%2F1/assignment?dryRun=true", `{"userPrincipalName":"ada@contoso.example"}`)
	if status != 202 || hdr.Get("X-Test") != "1" || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("PUT = %d %v %s", status, hdr, body)
	}
	var echo map[string]any
	if err := json.Unmarshal([]byte(body), &echo); err != nil {
		t.Fatalf("echo %q: %v", body, err)
	}
	// Kestrel leaves %2F encoded in route values (dotnet/aspnetcore#30655); the handler decodes it.
	if echo["fn"] != "TokenAssignment" || echo["method"] != "PUT" || echo["serial"] != "TK%2F1" ||
		echo["params"].(map[string]any)["serial"] != "TK%2F1" || echo["query"].(map[string]any)["dryRun"] != "true" ||
		echo["body"] != `{"userPrincipalName":"ada@contoso.example"}` || echo["ct"] != "application/json" ||
		!strings.HasSuffix(echo["url"].(string), "/api/tokens/TK%2F1/assignment?dryRun=true") {
		t.Fatalf("invocation as the handler saw it: %v", echo)
	}
	// A chunked request has no Content-Length: the host sends no Body (GetRequestAsJObject).
	creq, _ := http.NewRequest("PUT", front.URL+"/api/tokens/CHUNKED/assignment", io.MultiReader(strings.NewReader(`{"a":1}`)))
	creq.ContentLength = -1
	creq.Header.Set("Content-Type", "application/json")
	cresp, err := http.DefaultClient.Do(creq)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := io.ReadAll(cresp.Body)
	cresp.Body.Close()
	if !strings.Contains(string(cb), `"body":""`) {
		t.Errorf("chunked PUT reached the handler with a body: %s", cb)
	}
	if status, body, _ := do("GET", "/api/imports/batch.csv", ""); status != 202 || !strings.Contains(body, `"fn":"ImportStatus"`) || !strings.Contains(body, `"name":"batch.csv"`) {
		t.Fatalf("GET imports = %d %s", status, body)
	}
	tests := []struct {
		method, path string
		want         int
		contains     string
	}{
		// function.json lists every standard method (the handler answers 405 with Allow); a
		// method it does not list gets the host's plain 404.
		{"PROPFIND", "/api/tokens/TK1/assignment", 404, "not for this method"},
		{"GET", "/api/nothing", 404, "no function"},
		{"GET", "/tokens/TK1/assignment", 404, "/api/"},
		{"GET", "/api/tokens/BROKEN/assignment", 500, "answered 500"},
		{"GET", "/api/tokens/NOOUT/assignment", 200, "{}"}, // a missing res answers 200 {}
		{"GET", "/api/tokens/EMPTY/assignment", 500, "empty answer"},
		{"GET", "/api/tokens/TEXT/assignment", 500, "not application/json"},
		{"GET", "/api/tokens/OBJ/assignment", 409, `{"error":"conflict"}`},
	}
	for _, tt := range tests {
		status, body, _ := do(tt.method, tt.path, "")
		if status != tt.want || !strings.Contains(body, tt.contains) {
			t.Errorf("%s %s = %d %q; want %d containing %q", tt.method, tt.path, status, body, tt.want, tt.contains)
		}
	}
}

func TestHTTPBinaryBodyIsBase64(t *testing.T) {
	var got string
	h := &fakeHandler{answer: func(_ *http.Request, _ string, inv *handlers.Invocation) (int, string) {
		var req struct{ Body string }
		_ = json.Unmarshal(inv.Data["req"], &req)
		got = req.Body
		return http.StatusOK, `{"Outputs":{"res":{"statusCode":204}}}`
	}}
	r, _ := startRunner(t, h)
	front := httptest.NewServer(r)
	defer front.Close()
	req, _ := http.NewRequest("PUT", front.URL+"/api/tokens/X/assignment", strings.NewReader("\x00\x01"))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || got != base64.StdEncoding.EncodeToString([]byte("\x00\x01")) {
		t.Fatalf("status %d, Body %q; want 204 and base64", resp.StatusCode, got)
	}
}
