package pipeline_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/token"
)

// streamBlob is a pipeline.BlobReader over bytes that counts how often the import opens it and
// how much it reads: the import must stream the blob, never look at InboxFile.Content.
type streamBlob struct {
	content []byte
	opens   atomic.Int32
}

func (b *streamBlob) Open(context.Context) (io.ReadCloser, error) {
	b.opens.Add(1)
	return io.NopCloser(bytes.NewReader(b.content)), nil
}

func (b *streamBlob) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	return bytes.NewReader(b.content).ReadAt(p, off)
}

// noReadBack fails the test when the import reads an import's rows whole (ListTokens): that
// grows with the file. (Writing them whole cannot happen: pipeline.Ledger only takes chunks,
// AddTokens.)
type noReadBack struct {
	*pipelinetest.MemLedger
	t     *testing.T
	armed atomic.Bool
}

func (l *noReadBack) ListTokens(ctx context.Context, id string) ([]pipeline.TokenRecord, error) {
	if l.armed.Load() {
		l.t.Errorf("the import read every row of %s back with ListTokens", id)
	}
	return l.MemLedger.ListTokens(ctx, id)
}

// steppedClock stands still until jump is set, then is one hour later: it ends an import's time
// budget at a chosen point.
type steppedClock struct {
	start time.Time
	jump  atomic.Bool
}

func (c *steppedClock) now() time.Time {
	if c.jump.Load() {
		return c.start.Add(time.Hour)
	}
	return c.start
}

// countingVault counts PutSeed calls and ends the budget (clock.jump) after stop of them.
type countingVault struct {
	pipeline.SeedVault
	n     atomic.Int64
	stop  int64
	clock *steppedClock
}

func (v *countingVault) PutSeed(ctx context.Context, t token.Token, s token.Seed, id string) (time.Time, error) {
	if v.n.Add(1) == v.stop {
		v.clock.jump.Store(true)
	}
	return v.SeedVault.PutSeed(ctx, t, s, id)
}

// memInbox serves one InboxFile to ImportFromInbox.
type memInbox struct{ f pipeline.InboxFile }

func (i memInbox) ReadInbox(_ context.Context, name string) (pipeline.InboxFile, error) {
	if name != i.f.Name {
		return pipeline.InboxFile{}, token.Errorf(token.KindNotFound, "no %s", name)
	}
	return i.f, nil
}

// TestImportHoldsAChunkAtATime proves the import's memory is bounded by ChunkRows, not by the
// file: a file of 2.5 chunks (with rejected rows scattered through it) is streamed from a
// BlobReader (twice: rows, then seeds), the ledger is written and the seeds stored a chunk of at
// most ChunkRows at a time, no call reads or writes every row at once, the time budget cut in
// the middle of a chunk resumes from the checkpoint in the next part with every valid row queued
// exactly once, and the report lists at most MaxReportTokens tokens while the failures CSV
// lists every rejected row.
func TestImportHoldsAChunkAtATime(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{Quiet: true})
	ml := pipelinetest.NewMemLedger()
	l := &noReadBack{MemLedger: ml, t: t}
	q, b := &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	cq := &contQueue{}
	clock := &steppedClock{start: time.Now()}
	total := 2*pipeline.ChunkRows + pipeline.ChunkRows/2
	var rows []pipelinetest.Row
	ss := &pipelinetest.SeedSet{}
	invalid := 0
	for i := range total {
		if i%700 == 350 {
			rows = append(rows, pipelinetest.Row{Serial: fmt.Sprintf("CH-%05d", i), Secret: "x", Interval: "30", Manufacturer: "Token2", Model: "C202"})
			invalid++
			continue
		}
		rows = append(rows, ss.Row(fmt.Sprintf("CH-%05d", i), ""))
	}
	valid := total - invalid
	content := pipelinetest.EntraCSV(rows)
	uploaded := b.Upload("big/chunks.csv", content)
	blob := &streamBlob{content: content}
	f := pipeline.InboxFile{Name: uploaded.Name, ETag: uploaded.ETag, Size: int64(len(content)), Blob: blob}

	var (
		mu               sync.Mutex
		chunks, maxChunk int
	)
	var vault *countingVault
	p := s.Pipeline(l, q, b, func(d *pipeline.Deps) {
		vault = &countingVault{SeedVault: d.Vault, stop: int64(pipeline.ChunkRows + pipeline.ChunkRows/3), clock: clock}
		d.Vault = vault
		d.Inbox, d.Imports, d.ImportBudget, d.Now = memInbox{f}, cq, time.Minute, clock.now
	})
	pipeline.SetChunkHook(p, func(n int) {
		mu.Lock()
		defer mu.Unlock()
		chunks++
		maxChunk = max(maxChunk, n)
	})

	l.armed.Store(true)
	res, err := p.ImportFromInbox(ctx, pipeline.ImportRequest{Name: f.Name, ETag: f.ETag})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Continued || res.Checkpoint <= pipeline.ChunkRows || res.Checkpoint >= total {
		t.Fatalf("part 1 = %+v; want it handed on with a checkpoint inside the second chunk of seeds", res)
	}
	firstPart := vault.n.Load()
	c, ok := cq.take()
	if !ok {
		t.Fatal("no continuation queued")
	}
	res, err = p.ImportFromInbox(ctx, pipeline.ImportRequest{Name: c.BlobName, ETag: c.BlobETag, Continuation: true, ImportID: c.ImportID, Part: c.Part})
	if err != nil {
		t.Fatal(err)
	}
	l.armed.Store(false)
	if res.Continued || res.Rows != total || res.Valid != valid || res.Invalid != invalid || res.Disposition != pipeline.DispositionRejected {
		t.Fatalf("part 2 = %+v", res)
	}

	// Bounded: never more than a chunk at once; the blob streamed (rows, seeds, seeds again in
	// part 2, the copy to seed-rejected), never read from Content.
	if maxChunk > pipeline.ChunkRows || chunks < 2*(total/pipeline.ChunkRows) {
		t.Errorf("%d chunks, the largest %d rows; want chunks of at most %d", chunks, maxChunk, pipeline.ChunkRows)
	}
	if n := blob.opens.Load(); n != 4 {
		t.Errorf("the blob was opened %d times; want 4 (rows, seeds, seeds after the checkpoint, the rejected copy)", n)
	}
	// Resumed, never started over: part 2 stored only what part 1 had not.
	if got := vault.n.Load(); got != int64(valid) || firstPart >= int64(valid) {
		t.Errorf("%d seeds stored (%d in part 1); want each of the %d exactly once", got, firstPart, valid)
	}
	seen := map[int]int{}
	for _, text := range q.Sent {
		var m pipeline.ProvisionMessage
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			t.Fatal(err)
		}
		seen[m.Line]++
	}
	for line, n := range seen {
		if n != 1 {
			t.Errorf("line %d queued %d times", line, n)
		}
	}
	if len(seen) != valid {
		t.Errorf("%d lines queued; want %d", len(seen), valid)
	}

	// The report is cut; its counts are not; the failures CSV is whole.
	js, _ := b.Report(f.Name + ".json")
	var st pipeline.ImportStatus
	if err := json.Unmarshal(js, &st); err != nil {
		t.Fatal(err)
	}
	counted := 0
	for _, n := range st.Counts {
		counted += n
	}
	if len(st.Tokens) != pipeline.MaxReportTokens || st.TokensOmitted != total-pipeline.MaxReportTokens || st.FullList == "" || counted != total {
		t.Errorf("report: %d tokens, %d omitted, fullList %q, counts %v; want %d listed of %d", len(st.Tokens), st.TokensOmitted, st.FullList, st.Counts, pipeline.MaxReportTokens, total)
	}
	if len(js) > 512<<10 {
		t.Errorf("the report is %d bytes", len(js))
	}
	fails, _ := b.Report(f.Name + ".failures.csv")
	lines, err := csv.NewReader(bytes.NewReader(fails)).ReadAll()
	if err != nil || len(lines) < invalid+1 {
		t.Errorf("failures CSV: %d lines, %v; want every one of the %d rejected rows", len(lines), err, invalid)
	}
	// A plain file is kept encrypted to the deployment's PGP key, streamed through the encryption.
	kept := b.Rejected[pipeline.RejectedName(res.ImportID, f.Name)+".gpg"]
	if kept == nil || !bytes.Equal(pipelinetest.DecryptRejected(t, kept), content) {
		t.Errorf("seed-rejected holds %d bytes; want the file whole, encrypted", len(kept))
	}
}

// failingBlob streams content but fails after cut bytes on its first open, like a connection
// dropped for longer than the SDK's retry reader rides out.
type failingBlob struct {
	streamBlob
	cut   int
	fired atomic.Bool
}

type cutReader struct {
	r   io.Reader
	n   int
	err error
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, c.err
	}
	if len(p) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

func (b *failingBlob) Open(ctx context.Context) (io.ReadCloser, error) {
	rc, _ := b.streamBlob.Open(ctx)
	if b.fired.CompareAndSwap(false, true) {
		return io.NopCloser(&cutReader{r: rc, n: b.cut, err: token.Errorf(token.KindTransient, "storage: connection reset")}), nil
	}
	return rc, nil
}

// A storage failure part way through the stream fails the invocation (a retry), never the file:
// no file-level problem is recorded and the redelivery imports every row.
func TestImportStreamFailureIsRetried(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{Quiet: true})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, nil)
	ss := &pipelinetest.SeedSet{}
	var rows []pipelinetest.Row
	for i := range 300 {
		rows = append(rows, ss.Row(fmt.Sprintf("CUT-%03d", i), ""))
	}
	content := pipelinetest.EntraCSV(rows)
	up := b.Upload("cut.csv", content)
	blob := &failingBlob{streamBlob: streamBlob{content: content}, cut: len(content) / 2}
	f := pipeline.InboxFile{Name: up.Name, ETag: up.ETag, Size: int64(len(content)), Blob: blob}
	if _, err := p.Import(ctx, f); err == nil || token.KindOf(err) != token.KindTransient {
		t.Fatalf("import over a broken stream = %v; want a transient error (a retry)", err)
	}
	if imp, err := l.GetImport(ctx, pipeline.ImportID(f.Name, f.ETag)); err != nil || len(imp.Problems) != 0 || imp.Stage != pipeline.StageStarted {
		t.Fatalf("after the broken stream: %+v, %v; want no file-level problem, still started", imp, err)
	}
	res, err := p.Import(ctx, f)
	if err != nil || res.Rows != 300 || res.Valid != 300 || res.Queued != 300 || res.Disposition != pipeline.DispositionDeleted {
		t.Fatalf("redelivery = %+v, %v", res, err)
	}
}
