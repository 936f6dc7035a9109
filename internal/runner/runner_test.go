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
	w.Header().Set("Content-Type", "application/json")
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
	if tune != nil {
		tune(&host)
	}
	r, err = New(Options{Functions: fns, Host: host, HandlerURL: srv.URL, Connection: map[string]string{"SeedStorage": storageConn},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), PollInterval: 50 * time.Millisecond})
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
	for _, q := range []string{"token-provisioning", "token-provisioning-poison", "token-provisioning-poison-poison", BlobPoisonQueue} {
		_, _ = qc.DeleteQueue(ctx, q, nil)
	}
	// Azurite deletes a container asynchronously; wait until it can be created again.
	waitFor(t, "seed-inbox recreated", 10*time.Second, func() bool {
		_, err := bc.CreateContainer(ctx, "seed-inbox", nil)
		return err == nil
	})
	for _, q := range []string{"token-provisioning", "token-provisioning-poison"} {
		if _, err := qc.CreateQueue(ctx, q, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBlobTriggerDeliversEachUploadOnce(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	bc, _ := clients(t)
	content := []byte("serial,secret\nTK1,hidden\n")
	up, err := bc.UploadBuffer(ctx, "seed-inbox", "vendor/batch 1.csv", content, &azblob.UploadBufferOptions{
		Metadata: map[string]*string{"uploadedby": to.Ptr("ada")},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{}
	_, stop := startRunner(t, h)
	waitFor(t, "ImportSeeds invocation", 10*time.Second, func() bool { return len(h.callsTo("ImportSeeds")) == 1 })
	time.Sleep(300 * time.Millisecond) // several more listings
	calls := h.callsTo("ImportSeeds")
	if len(calls) != 1 {
		t.Fatalf("%d invocations; want 1", len(calls))
	}
	inv := calls[0].inv
	got, err := inv.DataBytes("seedFile")
	if err != nil || string(got) != string(content) {
		t.Fatalf("Data.seedFile = %q, %v", got, err)
	}
	if n := inv.Meta("name"); n != "vendor/batch 1.csv" {
		t.Errorf("Metadata.name = %q", n)
	}
	// The host sends primitives JSON-encoded twice.
	if raw := string(inv.Metadata["name"]); raw != `"\"vendor/batch 1.csv\""` {
		t.Errorf("raw Metadata.name = %s; want the host's double encoding", raw)
	}
	// The handler's lenient decoder unwraps the quoted ETag; compare without quotes.
	if e := inv.MetaProperty("ETag"); strings.Trim(e, `"`) != strings.Trim(string(*up.ETag), `"`) || e == "" {
		t.Errorf("Properties.ETag = %q; want %q", e, *up.ETag)
	}
	if l := inv.MetaProperty("ContentLength"); l != fmt.Sprint(len(content)) {
		t.Errorf("Properties.ContentLength = %q", l)
	}
	var meta map[string]string
	if err := inv.MetaObject("Metadata", &meta); err != nil || meta["uploadedby"] != "ada" {
		t.Errorf("Metadata.Metadata = %v, %v", meta, err)
	}
	if u := inv.Meta("Uri"); !strings.HasSuffix(u, "/seed-inbox/vendor/batch%201.csv") {
		t.Errorf("Metadata.Uri = %q", u)
	}
	var sys map[string]string
	if err := inv.MetaObject("sys", &sys); err != nil || sys["MethodName"] != "ImportSeeds" || sys["RandGuid"] == "" {
		t.Errorf("Metadata.sys = %v, %v", sys, err)
	}

	// A new runner (a restarted host) finds the receipt and does not deliver it again.
	stop()
	h2 := &fakeHandler{}
	_, _ = startRunner(t, h2)
	time.Sleep(400 * time.Millisecond)
	if n := len(h2.callsTo("ImportSeeds")); n != 0 {
		t.Fatalf("restarted runner delivered the same upload %d times", n)
	}
	// A new upload under the same name (new ETag) is a new delivery.
	if _, err := bc.UploadBuffer(ctx, "seed-inbox", "vendor/batch 1.csv", []byte("v2"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second upload delivered", 10*time.Second, func() bool { return len(h2.callsTo("ImportSeeds")) == 1 })
}

func TestBlobTriggerPoisonAfterFiveFailures(t *testing.T) {
	resetStorage(t)
	ctx := context.Background()
	bc, qc := clients(t)
	if _, err := bc.UploadBuffer(ctx, "seed-inbox", "bad.csv", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{answer: func(*http.Request, string, *handlers.Invocation) (int, string) {
		return http.StatusInternalServerError, `{"Outputs":{},"Logs":["worth retrying"]}`
	}}
	_, _ = startRunner(t, h)
	waitFor(t, "blob poison message", 15*time.Second, func() bool {
		resp, err := qc.NewQueueClient(BlobPoisonQueue).PeekMessages(ctx, nil)
		return err == nil && len(resp.Messages) == 1
	})
	time.Sleep(300 * time.Millisecond)
	if n := len(h.callsTo("ImportSeeds")); n != 5 {
		t.Fatalf("%d tries; want 5", n)
	}
	resp, _ := qc.NewQueueClient(BlobPoisonQueue).PeekMessages(ctx, nil)
	var msg map[string]string
	if err := json.Unmarshal([]byte(*resp.Messages[0].MessageText), &msg); err != nil {
		t.Fatal(err)
	}
	if msg["BlobName"] != "bad.csv" || msg["ContainerName"] != "seed-inbox" || msg["FunctionId"] != "Host.Functions.ImportSeeds" || msg["ETag"] == "" {
		t.Fatalf("poison message = %v", msg)
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
	_, _ = startRunner(t, h)
	waitFor(t, "ProvisionFailed invocation", 20*time.Second, func() bool { return len(h.callsTo("ProvisionFailed")) == 1 })

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
	time.Sleep(200 * time.Millisecond)
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
	if c := *resp.Messages[0].DequeueCount; c != 2 {
		t.Fatalf("DequeueCount %d; want 2", c)
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
	if echo["fn"] != "TokenAssignment" || echo["method"] != "PUT" || echo["serial"] != "TK/1" ||
		echo["params"].(map[string]any)["serial"] != "TK/1" || echo["query"].(map[string]any)["dryRun"] != "true" ||
		echo["body"] != `{"userPrincipalName":"ada@contoso.example"}` || echo["ct"] != "application/json" ||
		!strings.HasSuffix(echo["url"].(string), "/api/tokens/TK%2F1/assignment?dryRun=true") {
		t.Fatalf("invocation as the handler saw it: %v", echo)
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
		{"GET", "/api/tokens/NOOUT/assignment", 500, "no Outputs.res"},
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
