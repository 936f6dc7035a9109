package pipeline_test

import (
	"context"

	"encoding/json"
	"fmt"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"sync"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/token"
)

// contQueue records continuation messages (the seed-imports queue) in memory.
type contQueue struct {
	mu sync.Mutex
	cs []pipeline.ImportContinuation
}

func (q *contQueue) EnqueueContinuation(_ context.Context, c pipeline.ImportContinuation) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cs = append(q.cs, c)
	return nil
}

func (q *contQueue) take() (pipeline.ImportContinuation, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.cs) == 0 {
		return pipeline.ImportContinuation{}, false
	}
	c := q.cs[0]
	q.cs = q.cs[1:]
	return c, true
}

// provisionAll hands every queued message to Provision and returns how often each line was queued.
func provisionAll(t *testing.T, ctx context.Context, p *pipeline.Pipeline, q *pipelinetest.MemQueue) map[int]int {
	t.Helper()
	seen := map[int]int{}
	for {
		text, ok := q.Take()
		if !ok {
			return seen
		}
		var m pipeline.ProvisionMessage
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			t.Fatal(err)
		}
		seen[m.Line]++
		if _, err := p.Provision(ctx, m, 1); err != nil {
			t.Fatalf("provision %s: %v", m.SerialNumber, err)
		}
	}
}

// TestReuploadSameNameIsANewImport: the import id comes from the ETag read from storage, so a
// corrected file uploaded under the same name is imported, and the inbox ends empty.
func TestReuploadSameNameIsANewImport(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := testkit.NewStack(t, testkit.Options{})
	q := &pipelinetest.MemQueue{}
	p := s.Pipeline(a.Ledger, q, a.Blobs, func(d *pipeline.Deps) { d.Inbox = a.Blobs })
	ss := &testkit.SeedSet{}
	name := fmt.Sprintf("reupload-%d.csv", time.Now().UnixNano())
	var ids []string
	pre := fmt.Sprintf("RU-%d", time.Now().UnixNano()%1000000)
	first := ss.Row(pre+"-1", ada)
	// The corrected file adds a row; the first row (same seed) is already in the vault.
	for i, rows := range [][]testkit.Row{{first}, {first, ss.Row(pre+"-2", "")}} {
		if _, err := a.PutInbox(ctx, name, testkit.EntraCSV(rows), nil); err != nil {
			t.Fatal(err)
		}
		res, err := p.ImportFromInbox(ctx, pipeline.ImportRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if res.Repeat || res.Rows != len(rows) || res.Disposition != pipeline.DispositionDeleted {
			t.Fatalf("upload %d: %+v; want a new import of %d rows, deleted", i+1, res, len(rows))
		}
		ids = append(ids, res.ImportID)
		if _, err := a.Blobs.ReadInbox(ctx, name); token.KindOf(err) != token.KindNotFound {
			t.Fatalf("upload %d still in the inbox: %v", i+1, err)
		}
		provisionAll(t, ctx, p, q)
	}
	if ids[0] == ids[1] {
		t.Fatalf("both uploads got import id %s", ids[0])
	}
	// The event of a blob already imported and gone is answered, not retried.
	res, err := p.ImportFromInbox(ctx, pipeline.ImportRequest{Name: name})
	if err != nil || !res.Gone {
		t.Fatalf("event for a gone blob: %+v, %v", res, err)
	}
}

// TestImportBudgetResumes: an import cut off by its time budget records its checkpoint, queues
// a continuation, and the next invocation resumes there: every row is queued exactly once and
// the import finishes.
func TestImportBudgetResumes(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := testkit.NewStack(t, testkit.Options{Latency: 40 * time.Millisecond})
	q := &pipelinetest.MemQueue{}
	cq := &contQueue{}
	p := s.Pipeline(a.Ledger, q, a.Blobs, func(d *pipeline.Deps) {
		d.Inbox, d.Imports, d.ImportBudget, d.VaultConcurrency = a.Blobs, cq, 400*time.Millisecond, 2
	})
	ss := &testkit.SeedSet{}
	var rows []testkit.Row
	for i := range 40 {
		rows = append(rows, ss.Row(fmt.Sprintf("BUD-%d-%02d", time.Now().UnixNano()%100000, i), ""))
	}
	name := fmt.Sprintf("budget-%d.csv", time.Now().UnixNano())
	if _, err := a.PutInbox(ctx, name, testkit.EntraCSV(rows), nil); err != nil {
		t.Fatal(err)
	}
	req := pipeline.ImportRequest{Name: name}
	parts := 0
	var last *pipeline.ImportResult
	for {
		parts++
		res, err := p.ImportFromInbox(ctx, req)
		if err != nil {
			t.Fatalf("part %d: %v", parts, err)
		}
		last = res
		if !res.Continued {
			break
		}
		c, ok := cq.take()
		if !ok {
			t.Fatalf("part %d continued without a continuation message", parts)
		}
		if c.ImportID != res.ImportID || c.BlobETag == "" || c.Part != parts+1 {
			t.Fatalf("continuation %+v", c)
		}
		req = pipeline.ImportRequest{Name: c.BlobName, ETag: c.BlobETag, Continuation: true, ImportID: c.ImportID, Part: c.Part}
		if parts > 50 {
			t.Fatal("the import never finished")
		}
	}
	if parts < 2 {
		t.Fatalf("finished in %d part; the budget did not cut it off", parts)
	}
	if last.Disposition != pipeline.DispositionDeleted {
		t.Fatalf("final part %+v", last)
	}
	seen := provisionAll(t, ctx, p, q)
	for i := range rows {
		if seen[i+2] != 1 {
			t.Errorf("line %d queued %d times; want once", i+2, seen[i+2])
		}
	}
	st, err := p.ImportStatus(ctx, name)
	if err != nil || !st.Settled || st.Counts[pipeline.StatusAvailable] != len(rows) {
		t.Fatalf("status %+v, %v", st, err)
	}
	t.Logf("imported in %d parts", parts)
}

// TestVaultOutageMidImport: a Key Vault outage that starts while an import is storing seeds is
// ridden out inside the invocation (backoff), and every token ends activated. The outage is
// scaled to 3 s with the backoff scaled alike (RetryWait 100 ms, MaxRetryWait 500 ms); the
// production window (OutageWindow, default 2 minutes, or the time budget with continuations)
// is what covers 60 s and more: TestDefaultsRideOutAMinute checks those defaults.
func TestVaultOutageMidImport(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	const n = 24
	// The vault client's own retries (8, honouring Retry-After) would hide a 3 s outage: keep
	// them to one so the pipeline's backoff is what rides it out.
	s := testkit.NewStack(t, testkit.Options{Latency: 20 * time.Millisecond, Users: benchUsers(n/4 + 1),
		VaultRetry: &policy.RetryOptions{MaxRetries: 1, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 20 * time.Millisecond}})
	q := &pipelinetest.MemQueue{}
	p := s.Pipeline(a.Ledger, q, a.Blobs, func(d *pipeline.Deps) {
		d.Inbox, d.RetryWait, d.MaxRetryWait, d.VaultConcurrency = a.Blobs, 100*time.Millisecond, 500*time.Millisecond, 2
	})
	ss := &testkit.SeedSet{}
	pre := fmt.Sprintf("OUT-%d", time.Now().UnixNano()%1000000)
	var rows []testkit.Row
	for i := range n {
		rows = append(rows, ss.Row(fmt.Sprintf("%s-%02d", pre, i), fmt.Sprintf("user%04d@contoso.example", i/4+1)))
	}
	name := pre + ".csv"
	if _, err := a.PutInbox(ctx, name, testkit.EntraCSV(rows), nil); err != nil {
		t.Fatal(err)
	}
	// The outage begins once the import has stored a few seeds.
	before := s.KV.Server.Stats().Transactions
	started := make(chan struct{})
	go func() {
		defer close(started)
		for s.KV.Server.Stats().Transactions < before+8 {
			time.Sleep(2 * time.Millisecond)
		}
		s.KV.Server.Outage(3 * time.Second)
	}()
	begin := time.Now()
	res, err := p.ImportFromInbox(ctx, pipeline.ImportRequest{Name: name})
	<-started
	if err != nil {
		t.Fatalf("import failed during the outage: %v", err)
	}
	if time.Since(begin) < 2*time.Second || res.Disposition != pipeline.DispositionDeleted || res.Queued != n {
		t.Fatalf("import %+v after %v; want it to wait the outage out and finish", res, time.Since(begin))
	}
	if s.KV.Server.Stats().Injected == 0 {
		t.Fatal("the outage never hit a request")
	}
	provisionAll(t, ctx, p, q)
	st, err := p.ImportStatus(ctx, name)
	if err != nil || st.Counts[pipeline.StatusActivated] != n {
		t.Fatalf("status %+v, %v; want every token activated", st.Counts, err)
	}
}

func TestDefaultsRideOutAMinute(t *testing.T) {
	d := pipeline.Deps{}.WithDefaults()
	if d.OutageWindow < 60*time.Second {
		t.Fatalf("OutageWindow default %v; the import must ride out a 60 s outage", d.OutageWindow)
	}
}
