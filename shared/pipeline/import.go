package pipeline

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Dispositions: where a source file went once its import was done.
const (
	DispositionDeleted  = "deleted"  // every row was imported; the file (and its seeds) is gone
	DispositionRejected = "rejected" // a row failed; the whole file was moved to seed-rejected
)

// ChunkRows is how many rows of a file an import holds at once: the rows are written to the
// ledger, and the seeds stored and their messages queued, a chunk at a time as the file is
// read, so memory stays flat in the file's size. The checkpoint moves after each chunk.
const ChunkRows = 1000

// maxFileProblems is how many file-level (Line 0) problems an import keeps; the rest are counted.
const maxFileProblems = 100

// RejectedName is the name under which a file with failed rows is kept in seed-rejected: one
// folder per import, so a later upload under the same name never overwrites it.
func RejectedName(importID, name string) string { return importID + "/" + name }

// importFile is Import. The file is streamed twice, never held: each step is safe to repeat,
// and the import's stage in the ledger says which steps a repeated delivery can skip:
//
//	started  → read the file, writing its rows to the ledger a chunk at a time (valid rows
//	           "vaulted"); then record the file's facts and Pending (SealImport) and write the
//	           first report
//	vaulted  → read the file again from the start, skipping the rows up to the checkpoint; for
//	           each chunk store the seeds in the vault, queue each token's message as soon as its
//	           seed is confirmed, and move the checkpoint; a seed the vault refuses fails its row
//	enqueued → every valid seed is confirmed in the vault: the file leaves the inbox
//	done
//
// Nothing needs the whole file at once: where the file goes comes from the counts on the
// import's summary (Invalid, Refused, file-level problems), never from reading the rows back.
func (p *Pipeline) importFile(ctx context.Context, f InboxFile, part int) (*ImportResult, error) {
	if f.Name == "" {
		return nil, token.Errorf(token.KindInvalid, "import: the blob name is empty")
	}
	if f.ETag == "" {
		// The import id, the repeat check and the conditional delete all hang on the ETag.
		return nil, token.Errorf(token.KindInvalid, "import %s: the blob has no ETag; refusing to import it", f.Name)
	}
	var deadline time.Time
	if p.d.ImportBudget > 0 && p.d.Imports != nil {
		deadline = p.now().Add(p.d.ImportBudget)
	}
	id := ImportID(f.Name, f.ETag)
	ctx, log := logctx.WithImport(ctx, id), p.log.With(slog.String(logctx.File, f.Name))

	imp, created, err := p.d.Ledger.BeginImport(ctx, ImportRecord{
		ImportID: id, FileName: f.Name, ETag: f.ETag, Stage: StageStarted, Created: p.now(), Updated: p.now(),
	})
	if err != nil {
		return nil, fmt.Errorf("import %s: begin: %w", f.Name, err)
	}
	if !created {
		log.InfoContext(ctx, "repeated delivery of an import", slog.String("stage", string(imp.Stage)))
	}

	fresh := false // this invocation wrote every row: none has settled yet
	if imp.Stage.Before(StageVaulted) {
		if imp, err = p.recordFile(ctx, log, imp, f); err != nil {
			return nil, err
		}
		fresh = true
	}
	disposition := dispositionOf(imp)
	failed, queued := imp.Refused, 0
	if imp.Stage.Before(StageEnqueued) {
		if !fresh && part <= 1 {
			// A redelivery: the first report may not have been written before the crash. (A
			// continuation's first part wrote it.)
			if err := p.writeReport(ctx, id, disposition); err != nil {
				return nil, err
			}
		}
		r, err := p.storeAndQueue(ctx, log, imp, f, deadline, fresh)
		if err != nil {
			return nil, err
		}
		queued = r.queued
		failed += r.refused
		if failed > 0 {
			disposition = DispositionRejected
		}
		if r.more {
			return p.handOn(ctx, log, imp, f, part, queued, r.checkpoint, !created)
		}
		if err := p.allQueued(ctx, log, id, f, disposition, queued, failed); err != nil {
			return nil, err
		}
		imp.Stage = StageEnqueued
	}
	if imp.Stage.Before(StageDone) {
		if err := p.leaveInbox(ctx, log, id, f, disposition); err != nil {
			return nil, err
		}
	}

	res := &ImportResult{
		ImportID: id, FileName: f.Name, Format: imp.Format, Rows: imp.Rows, Valid: imp.Valid,
		Invalid: imp.Invalid, Queued: queued, Failed: failed, Disposition: disposition,
		Repeat: !created, Problems: imp.Problems,
	}
	log.InfoContext(ctx, "import done", slog.Int("rows", res.Rows), slog.Int("valid", res.Valid),
		slog.Int("invalid", res.Invalid), slog.Int("queued", res.Queued), slog.Int("vaultRefused", failed),
		slog.String("disposition", disposition), slog.Bool("repeat", res.Repeat))
	return res, nil
}

// allQueued moves the import to StageEnqueued (every valid seed is in the vault and its message
// queued) and, when every token has settled already, writes the final report.
func (p *Pipeline) allQueued(ctx context.Context, log *slog.Logger, id string, f InboxFile, disposition string, queued, failed int) error {
	if err := p.d.Ledger.SetImportStage(ctx, id, StageEnqueued, disposition); err != nil {
		return fmt.Errorf("import %s: record stage: %w", f.Name, err)
	}
	log.InfoContext(ctx, "every valid seed is in the vault and its message queued", slog.Int("queued", queued), slog.Int("vaultRefused", failed))
	// Tokens may all have settled while later seeds were still being queued, before the
	// import knew its disposition: make sure the report on disk is the final one.
	if cur, err := p.d.Ledger.GetImport(ctx, id); err == nil && cur.Pending == 0 {
		return p.writeReport(ctx, id, disposition)
	}
	return nil
}

// leaveInbox is the done stage: every valid seed is confirmed in the vault (StageEnqueued), so
// the source leaves the inbox, deleted or (disposition rejected) moved to seed-rejected.
func (p *Pipeline) leaveInbox(ctx context.Context, log *slog.Logger, id string, f InboxFile, disposition string) error {
	switch {
	case f.outer != "":
		// A file inside an archive: the archive leaves the inbox once, after all its files.
	case disposition == DispositionRejected:
		if err := p.reject(ctx, log, f, RejectedName(id, f.Name)); err != nil {
			return err
		}
	default:
		if err := p.d.Blobs.DeleteInbox(ctx, f.Name, f.ETag); err != nil {
			return fmt.Errorf("import %s: delete from inbox: %w", f.Name, err)
		}
	}
	if err := p.d.Ledger.SetImportStage(ctx, id, StageDone, disposition); err != nil {
		return fmt.Errorf("import %s: record stage: %w", f.Name, err)
	}
	return nil
}

// lazyBody opens its stream on the first Read.
type lazyBody struct {
	open func() (io.ReadCloser, error)
	rc   io.ReadCloser
	err  error
}

func (l *lazyBody) Read(b []byte) (int, error) {
	if l.rc == nil && l.err == nil {
		l.rc, l.err = l.open()
	}
	if l.err != nil {
		return 0, l.err
	}
	return l.rc.Read(b)
}

func (l *lazyBody) Close() error {
	if l.rc != nil {
		return l.rc.Close()
	}
	return nil
}

// recordFile is the started stage: it streams the file once, writing its rows to the ledger a
// chunk of ChunkRows at a time (a crash part way leaves rows that a repeat skips), then records
// the file's facts and Pending and writes the first report. Seeds are read and dropped: they go
// to the vault in the next stage, which reads the file again.
func (p *Pipeline) recordFile(ctx context.Context, log *slog.Logger, imp ImportRecord, f InboxFile) (ImportRecord, error) {
	w := &rowWriter{p: p, imp: imp, name: f.Name, rows: make([]TokenRecord, 0, ChunkRows+1)}
	sum, err := p.readSeeds(ctx, f,
		func(r seedfile.Record) error { return w.record(ctx, r) },
		func(pr seedfile.Problem) error { return w.problem(ctx, pr) })
	if err == nil {
		err = w.flush(ctx)
	}
	if err != nil {
		return imp, err
	}
	if w.omitted > 0 {
		log.WarnContext(ctx, "more file-level problems than an import keeps", slog.Int("kept", len(w.fileProblems)), slog.Int("omitted", w.omitted))
	}
	imp.Format, imp.Rows, imp.Valid, imp.Invalid = string(sum.Format), sum.Rows, sum.Valid, sum.Invalid
	imp.Problems, imp.Pending = w.fileProblems, sum.Valid
	imp.Disposition = dispositionOf(imp)
	if err := p.d.Ledger.SealImport(ctx, imp); err != nil {
		return imp, fmt.Errorf("import %s: record the file's facts: %w", f.Name, err)
	}
	imp.Stage = StageVaulted
	log.InfoContext(ctx, "file read and recorded", slog.String("format", imp.Format), slog.Int("rows", imp.Rows),
		slog.Int("valid", imp.Valid), slog.Int("invalid", imp.Invalid), slog.Int("fileProblems", len(imp.Problems)),
		slog.Int("ledgerRows", w.written))
	if err := p.writeReport(ctx, imp.ImportID, imp.Disposition); err != nil {
		return imp, err
	}
	return imp, nil
}

// rowWriter writes the rows of an import's file to the ledger a chunk at a time, as the reader
// reports them, and keeps the file-level problems.
type rowWriter struct {
	p            *Pipeline
	imp          ImportRecord
	name         string
	rows         []TokenRecord
	fileProblems []seedfile.Problem
	omitted      int // file-level problems past maxFileProblems
	written      int
}

// flush writes the rows held.
func (w *rowWriter) flush(ctx context.Context) error {
	if len(w.rows) == 0 {
		return nil
	}
	rows := w.rows
	if err := w.p.d.Ledger.AddTokens(ctx, w.imp, rows); err != nil {
		return fmt.Errorf("import %s: write %d ledger rows (lines %d-%d): %w", w.name, len(rows), rows[0].Line, rows[len(rows)-1].Line, err)
	}
	w.written += len(rows)
	w.p.chunkHook(len(rows))
	clear(rows)
	w.rows = rows[:0]
	return nil
}

// next makes room for a new line's row. A row's problems arrive together, before the next row
// (seedfile.Read reports in file order): a chunk is cut only where a new line begins.
func (w *rowWriter) next(ctx context.Context) error {
	if len(w.rows) >= ChunkRows {
		return w.flush(ctx)
	}
	return nil
}

// record adds a valid row ("vaulted": its seed goes to the vault in the next stage).
func (w *rowWriter) record(ctx context.Context, r seedfile.Record) error {
	clear(r.Seed.Secret) // not needed in this stage
	if err := w.next(ctx); err != nil {
		return err
	}
	w.rows = append(w.rows, TokenRecord{
		ImportID: w.imp.ImportID, Line: r.Line, Serial: r.Token.Serial, Manufacturer: r.Token.Manufacturer,
		Model: r.Token.Model, UserPrincipalName: r.UserPrincipalName, Status: StatusVaulted,
		Problems:        r.Warnings, // a valid row's problems are its warnings (a hinted model, an expiry)
		SeedFingerprint: r.Seed.Fingerprint(), Updated: w.p.now(),
	})
	return nil
}

// problem adds a problem: a file-level one to the file's, else to its line's rejected row.
func (w *rowWriter) problem(ctx context.Context, pr seedfile.Problem) error {
	if pr.Line <= 0 {
		if len(w.fileProblems) < maxFileProblems {
			w.fileProblems = append(w.fileProblems, pr)
		} else {
			w.omitted++
		}
		return nil
	}
	if n := len(w.rows); n > 0 && w.rows[n-1].Line == pr.Line && w.rows[n-1].Status == StatusRejected {
		last := &w.rows[n-1]
		last.Problems = append(last.Problems, pr)
		last.Reason += "; " + pr.Field + ": " + pr.Message
		// The reader names the row by its serial and UPN cells when it knows them.
		last.Serial, last.UserPrincipalName = cmp.Or(last.Serial, pr.Serial), cmp.Or(last.UserPrincipalName, pr.UserPrincipalName)
		return nil
	}
	if err := w.next(ctx); err != nil {
		return err
	}
	w.rows = append(w.rows, TokenRecord{ImportID: w.imp.ImportID, Line: pr.Line, Serial: pr.Serial, UserPrincipalName: pr.UserPrincipalName,
		Status: StatusRejected, Problems: []seedfile.Problem{pr}, Reason: pr.Field + ": " + pr.Message, Updated: w.p.now()})
	return nil
}

// stored is what storeAndQueue did in this invocation.
type stored struct {
	queued, refused int
	more            bool // the time budget ended (or the vault stalled until it did): hand on
	checkpoint      int
}

// storeAndQueue is the vaulted stage: it reads the file again and, a chunk of ChunkRows valid
// records at a time, stores their seeds (VaultConcurrency at once), queues their messages and
// records the checkpoint (with the chunk's refused rows), so a continuation or a redelivery
// resumes after the last whole chunk (or the last line below which everything is done). Rows up
// to the checkpoint are skipped unread; past it, unless this invocation wrote the rows (fresh),
// a chunk's rows are read back from the ledger, one range query a chunk, and only the rows still
// waiting for their seed and message are done: nothing is queued twice.
func (p *Pipeline) storeAndQueue(ctx context.Context, log *slog.Logger, imp ImportRecord, f InboxFile, deadline time.Time, fresh bool) (stored, error) {
	var out stored
	out.checkpoint = imp.Checkpoint
	if !fresh {
		log.InfoContext(ctx, "resuming the import", slog.Int("checkpoint", imp.Checkpoint))
	}
	chunk := make([]seedfile.Record, 0, ChunkRows)
	run := func() error {
		defer func() {
			for i := range chunk {
				clear(chunk[i].Seed.Secret)
			}
			clear(chunk)
			chunk = chunk[:0]
		}()
		if len(chunk) == 0 {
			return nil
		}
		return p.storeChunk(ctx, log, imp.ImportID, f, chunk, deadline, fresh, &out)
	}
	_, err := p.readSeeds(ctx, f,
		func(r seedfile.Record) error {
			if r.Line <= out.checkpoint {
				clear(r.Seed.Secret)
				return nil
			}
			chunk = append(chunk, r)
			if len(chunk) >= ChunkRows {
				return run()
			}
			return nil
		}, nil)
	if err == nil {
		err = run()
	}
	if errors.Is(err, errHandOn) {
		err = nil
	}
	if err != nil {
		return out, err
	}
	log.DebugContext(ctx, "seeds stored and messages queued", slog.Int("queued", out.queued), slog.Int("refused", out.refused),
		slog.Bool("more", out.more), slog.Int("checkpoint", out.checkpoint))
	return out, nil
}

// errHandOn stops the read of a file whose import hands itself on to its next part.
var errHandOn = errors.New("hand on")

// storeChunk stores and queues one chunk (past fresh, only its rows still waiting) and moves
// the checkpoint past what it did. It returns errHandOn when the time budget ended first.
func (p *Pipeline) storeChunk(ctx context.Context, log *slog.Logger, id string, f InboxFile, chunk []seedfile.Record, deadline time.Time, fresh bool, out *stored) error {
	p.chunkHook(len(chunk))
	todo := chunk
	var priorRefused []int // lines refused by the vault in an earlier attempt, past the checkpoint
	if !fresh {
		var err error
		if todo, priorRefused, err = p.chunkTodo(ctx, id, f.Name, chunk); err != nil {
			return err
		}
	}
	q, refusedLines, more, cp, err := p.vaultAndQueue(ctx, log, id, f.Name, todo, deadline)
	out.queued += q
	if err == nil && !more {
		cp = chunk[len(chunk)-1].Line // the whole chunk is done, settled rows included
	}
	// Best effort on failure too: a retry then queues fewer messages again.
	if cerr := p.advanceCheckpoint(ctx, id, f.Name, cp, append(refusedLines, priorRefused...), out); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if more {
		out.more = true
		return errHandOn
	}
	return nil
}

// chunkTodo reads a chunk's rows back from the ledger: it returns the records not settled yet
// (to store, a no-op for a seed already there, and queue) and the lines the vault refused in an
// earlier attempt.
func (p *Pipeline) chunkTodo(ctx context.Context, id, name string, chunk []seedfile.Record) (todo []seedfile.Record, refused []int, err error) {
	first, last := chunk[0].Line, chunk[len(chunk)-1].Line
	status := make(map[int]TokenRecord, len(chunk))
	err = p.d.Ledger.EachToken(ctx, id, first, last, func(r TokenRecord) error {
		status[r.Line] = r
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("import %s: read back lines %d-%d: %w", name, first, last, err)
	}
	todo = make([]seedfile.Record, 0, len(chunk))
	for _, r := range chunk {
		switch row, ok := status[r.Line]; {
		case !ok || row.Status == StatusVaulted:
			todo = append(todo, r)
		case row.Status == StatusFailed && row.Cause == CauseVaultRefused:
			refused = append(refused, r.Line)
		}
	}
	return todo, refused, nil
}

// advanceCheckpoint moves the import's checkpoint to cp when that is forward, counting the
// refused lines between the old checkpoint and cp.
func (p *Pipeline) advanceCheckpoint(ctx context.Context, id, name string, cp int, refused []int, out *stored) error {
	if cp <= out.checkpoint {
		return nil
	}
	n := 0
	for _, l := range refused {
		if l > out.checkpoint && l <= cp {
			n++
		}
	}
	if err := p.d.Ledger.SetImportCheckpoint(ctx, id, cp, n); err != nil {
		return fmt.Errorf("import %s: record checkpoint: %w", name, err)
	}
	out.checkpoint = cp
	out.refused += n
	return nil
}

// handOn ends an invocation whose time budget ran out: the checkpoint is recorded, and a
// continuation goes to the seed-imports queue; the next invocation resumes from the checkpoint.
func (p *Pipeline) handOn(ctx context.Context, log *slog.Logger, imp ImportRecord, f InboxFile, part, queued, checkpoint int, repeat bool) (*ImportResult, error) {
	// A file inside an archive continues through its archive: the blob the next part reads.
	c := ImportContinuation{Kind: ContinuationKind, BlobName: cmp.Or(f.outer, f.Name), BlobETag: f.ETag, ImportID: imp.ImportID,
		Checkpoint: checkpoint, Part: max(part, 1) + 1}
	if err := p.d.Imports.EnqueueContinuation(ctx, c); err != nil {
		return nil, fmt.Errorf("import %s: queue its continuation: %w", f.Name, err)
	}
	log.InfoContext(ctx, "time budget used: import handed on to its next part", slog.Int("checkpoint", checkpoint),
		slog.Int("queued", queued), slog.Int("part", c.Part))
	return &ImportResult{
		ImportID: imp.ImportID, FileName: f.Name, Format: imp.Format, Rows: imp.Rows, Valid: imp.Valid,
		Invalid: imp.Invalid, Queued: queued, Repeat: repeat, Continued: true, Checkpoint: checkpoint,
		Problems: imp.Problems,
	}, nil
}

// importFromInbox is ImportFromInbox.
func (p *Pipeline) importFromInbox(ctx context.Context, r ImportRequest) (*ImportResult, error) {
	if p.d.Inbox == nil {
		return nil, token.Errorf(token.KindInternal, "import %s: no inbox configured", r.Name)
	}
	if r.Name == "" {
		return nil, token.Errorf(token.KindInvalid, "import: the blob name is empty")
	}
	log := p.log.With(slog.String(logctx.File, r.Name))
	if r.ImportID != "" {
		ctx = logctx.WithImport(ctx, r.ImportID)
	}
	f, err := p.d.Inbox.ReadInbox(ctx, r.Name)
	switch {
	case token.KindOf(err) == token.KindNotFound:
		// An earlier delivery finished the import and removed the file, or someone deleted it.
		log.InfoContext(ctx, "the blob is no longer in the inbox; nothing to import", slog.Bool("continuation", r.Continuation))
		return &ImportResult{ImportID: r.ImportID, FileName: r.Name, Gone: true}, nil
	case err != nil:
		return nil, fmt.Errorf("import %s: read from the inbox: %w", r.Name, err)
	}
	if f.ETag == "" {
		return nil, token.Errorf(token.KindInvalid, "import %s: storage reported no ETag for the blob; refusing to import it", r.Name)
	}
	if r.Continuation && f.ETag != r.ETag {
		// The file this import was reading was replaced: its remaining rows cannot be read any
		// more. The new upload is a new import with its own BlobCreated event.
		log.WarnContext(ctx, "the file was replaced before its import finished; the new upload is imported on its own event",
			slog.String("etag", r.ETag), slog.String("newEtag", f.ETag))
		return &ImportResult{ImportID: r.ImportID, FileName: r.Name, Replaced: true}, nil
	}
	if !r.Continuation && r.ETag != "" && f.ETag != r.ETag {
		log.InfoContext(ctx, "the blob changed since its event; importing what it holds now",
			slog.String("eventEtag", r.ETag), slog.String("etag", f.ETag))
	}
	return p.importDelivered(ctx, f, r.Part)
}

// dispositionOf works out from the import's summary where the file goes: rejected when the
// file has a file-level problem, no rows, a rejected row, or a row the vault refused (counted
// up to the checkpoint), or when an earlier part already said so.
func dispositionOf(imp ImportRecord) string {
	if len(imp.Problems) > 0 || imp.Rows == 0 || imp.Invalid > 0 || imp.Refused > 0 || imp.Disposition == DispositionRejected {
		return DispositionRejected
	}
	return DispositionDeleted
}

// vaultRefusedReason starts the reason of a valid row the vault refused, for people; code tells
// those rows from tokens that failed later by their cause, CauseVaultRefused.
const vaultRefusedReason = "not stored in the vault: "

// vaultAndQueue stores the records' seeds with VaultConcurrency writers and queues each token's
// message as soon as its seed is confirmed, in small batches, while later seeds are still being
// stored: provisioning of a big file starts within a second. A seed the vault refuses (a
// different seed under the serial, ...) fails its row. A transient vault failure is retried
// with backoff inside the invocation: until the deadline when there is one (then more=true and
// the import hands itself on), else for OutageWindow before the failure is returned and the
// whole import retried (storing and queueing are both safe to repeat). records (one chunk) are
// in line order, and their ledger rows exist; checkpoint is the last line up to which every
// record is stored and queued (0: none); refused are the lines the vault refused.
func (p *Pipeline) vaultAndQueue(ctx context.Context, log *slog.Logger, importID, name string, records []seedfile.Record, deadline time.Time) (queued int, refused []int, more bool, checkpoint int, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	v := &vaultRun{p: p, ctx: ctx, fail: cancel, log: log, importID: importID, name: name, records: records, deadline: deadline,
		work: make(chan vaultJob), out: make(chan vaultReady, 256), done: make([]bool, len(records))}
	var writers, senders sync.WaitGroup
	for range p.d.VaultConcurrency {
		writers.Go(v.writer)
	}
	// Two senders batch confirmed tokens: a batch goes out as soon as no more are waiting.
	for range 2 {
		senders.Go(v.sender)
	}
	more = v.feed()
	close(v.work)
	writers.Wait()
	close(v.out)
	senders.Wait()
	checkpoint, more = v.reached(more)
	if err := context.Cause(ctx); err != nil {
		return v.queued, nil, false, checkpoint, fmt.Errorf("import %s: %w", name, err)
	}
	log.DebugContext(ctx, "seeds stored and messages queued", slog.Int("queued", v.queued), slog.Int("refused", len(v.refused)),
		slog.Bool("more", more), slog.Int("checkpoint", checkpoint))
	return v.queued, v.refused, more, checkpoint, nil
}

// vaultRun is one vaultAndQueue call: the feed hands records to the writers, which store their
// seeds and pass confirmed tokens to the senders, which queue them in batches. done marks the
// records finished (queued or refused); records[:low] are all done.
type vaultRun struct {
	p        *Pipeline
	ctx      context.Context // cancelled with the cause of the first failure
	fail     context.CancelCauseFunc
	log      *slog.Logger
	importID string
	name     string
	records  []seedfile.Record
	deadline time.Time
	work     chan vaultJob
	out      chan vaultReady

	mu      sync.Mutex
	queued  int
	refused []int
	stalled bool
	done    []bool
	low     int
}

// vaultJob is one record for a writer; i is its index in records.
type vaultJob struct {
	i int
	r seedfile.Record
}

// vaultReady is a token whose seed is confirmed in the vault, with its message.
type vaultReady struct {
	i int
	m ProvisionMessage
}

// maxQueueBatch is how many messages a sender queues at once.
const maxQueueBatch = 64

// feed hands the records to the writers in order until the vault stalls, the deadline passes
// (more=true: the import hands on) or the run fails.
func (v *vaultRun) feed() (more bool) {
	for i, r := range v.records {
		v.mu.Lock()
		stop := v.stalled
		v.mu.Unlock()
		if stop || (!v.deadline.IsZero() && !v.p.now().Before(v.deadline)) {
			return true
		}
		select {
		case v.work <- vaultJob{i, r}:
		case <-v.ctx.Done():
			return false
		}
	}
	return false
}

// writer stores the seeds of the jobs it takes until the work runs out or the run fails.
func (v *vaultRun) writer() {
	for j := range v.work {
		if !v.store(j) {
			return
		}
	}
}

// store stores one record's seed and passes its message on; a refused seed fails its row. It
// returns false when the run has failed.
func (v *vaultRun) store(j vaultJob) bool {
	r := j.r
	retired, err := v.p.putSeed(v.ctx, v.log, v.importID, r, v.deadline)
	switch {
	case err == nil:
		m := ProvisionMessage{ImportID: v.importID, FileName: v.name, Line: r.Line, SerialNumber: r.Token.Serial,
			Manufacturer: r.Token.Manufacturer, UserPrincipalName: r.UserPrincipalName, RetiredBefore: retired}
		select {
		case v.out <- vaultReady{j.i, m}:
			return true
		case <-v.ctx.Done():
			return false
		}
	case errors.Is(err, errStalled):
		v.mu.Lock()
		v.stalled = true
		v.mu.Unlock()
		return true
	case token.IsTransient(err):
		v.fail(fmt.Errorf("store seed of %s (line %d): %w", r.Token.Serial, r.Line, err))
		return false
	}
	return v.refuse(j, err)
}

// refuse fails the row of a record whose seed the vault refused.
func (v *vaultRun) refuse(j vaultJob, err error) bool {
	r := j.r
	v.p.log.WarnContext(v.ctx, "seed refused by the vault", slog.String(logctx.ImportID, v.importID),
		slog.String(logctx.Serial, r.Token.Serial), slog.Int(logctx.Line, r.Line), slog.String(logctx.Kind, string(token.KindOf(err))),
		slog.String(logctx.RequestID, token.RequestIDOf(err)), slog.String(logctx.Reason, reasonOf(err)))
	o := Outcome{Status: StatusFailed, Cause: CauseVaultRefused, Reason: vaultRefusedReason + reasonOf(err), UserPrincipalName: r.UserPrincipalName}
	if err := v.p.settle(v.ctx, v.importID, r.Line, o); err != nil {
		v.fail(err)
		return false
	}
	v.mu.Lock()
	v.refused = append(v.refused, r.Line)
	v.mu.Unlock()
	v.finished(j.i)
	return true
}

// sender queues confirmed tokens in batches of what is waiting, until the writers are done.
func (v *vaultRun) sender() {
	for m := range v.out {
		batch := v.batch(m)
		if v.ctx.Err() != nil {
			continue // drain: a failure is already recorded
		}
		msgs := make([]ProvisionMessage, len(batch))
		is := make([]int, len(batch))
		for k, b := range batch {
			msgs[k], is[k] = b.m, b.i
		}
		if err := v.p.d.Queue.Enqueue(v.ctx, msgs); err != nil {
			v.fail(fmt.Errorf("queue %d provisioning messages: %w", len(batch), err))
			continue
		}
		v.mu.Lock()
		v.queued += len(batch)
		v.mu.Unlock()
		v.finished(is...)
	}
}

// batch is first and whatever else is waiting, up to maxQueueBatch.
func (v *vaultRun) batch(first vaultReady) []vaultReady {
	batch := []vaultReady{first}
	for len(batch) < maxQueueBatch {
		select {
		case m, ok := <-v.out:
			if !ok {
				return batch
			}
			batch = append(batch, m)
		default:
			return batch
		}
	}
	return batch
}

// finished marks records done and moves low past the done prefix.
func (v *vaultRun) finished(is ...int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, i := range is {
		v.done[i] = true
	}
	for v.low < len(v.done) && v.done[v.low] {
		v.low++
	}
}

// reached is the checkpoint the run reached (the last line of the done prefix) and whether
// records are left for the next part.
func (v *vaultRun) reached(more bool) (checkpoint int, left bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.low > 0 {
		checkpoint = v.records[v.low-1].Line
	}
	return checkpoint, (more || v.stalled) && v.low < len(v.records)
}

// errStalled is a transient vault failure that lasted until the import's deadline: the record
// is left for the next part of the import.
var errStalled = errors.New("the vault kept failing until the time budget ended")

// putSeed stores one record's seed, backing off on transient failures (throttling, outages):
// waits start at RetryWait and double up to MaxRetryWait. With a deadline it keeps trying
// until the deadline (then errStalled); without one, for OutageWindow (then the last error).
// It answers when the serial was retired before, when it was (SeedVault.PutSeed).
func (p *Pipeline) putSeed(ctx context.Context, log *slog.Logger, importID string, r seedfile.Record, deadline time.Time) (time.Time, error) {
	wait := p.d.RetryWait
	var since time.Time
	for {
		retired, err := p.d.Vault.PutSeed(ctx, r.Token, r.Seed, importID)
		if err == nil || !token.IsTransient(err) || ctx.Err() != nil {
			return retired, err
		}
		now := p.now()
		if since.IsZero() {
			since = now
		}
		if !deadline.IsZero() {
			if !now.Add(wait).Before(deadline) {
				return time.Time{}, errStalled
			}
		} else if now.Add(wait).Sub(since) > p.d.OutageWindow {
			return time.Time{}, err
		}
		log.WarnContext(ctx, "vault unavailable; backing off inside the invocation", slog.String(logctx.Serial, r.Token.Serial),
			slog.Int(logctx.Line, r.Line), slog.Duration("wait", wait), slog.String(logctx.Kind, string(token.KindOf(err))),
			slog.String(logctx.Reason, reasonOf(err)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, p.d.MaxRetryWait)
	}
}

// readSeeds streams f through seedInput into seedfile.Read, calling onRecord for each valid
// record and onProblem for each problem, in file order; nothing of the file is held but the
// reader's buffer and its duplicate indexes. A file-level failure (not a seed file, wrong PSKC
// key, a bad metadata hint, an envelope that cannot be opened, ...) becomes a Line 0 problem:
// it is the file's outcome, not a reason to retry. A failure to read the blob from storage,
// or an error from a callback, is returned (worth a retry).
func (p *Pipeline) readSeeds(ctx context.Context, f InboxFile, onRecord func(seedfile.Record) error, onProblem func(seedfile.Problem) error) (seedfile.Summary, error) {
	if onProblem == nil {
		onProblem = func(seedfile.Problem) error { return nil }
	}
	if f.part != nil {
		return replayPart(f.part, onRecord, onProblem)
	}
	opts, bad := optionsFor(p.d.ReadOptions, f.Metadata)
	if len(bad) > 0 {
		// The file is not read with a hint it did not mean: it is rejected whole.
		for _, pr := range bad {
			if err := onProblem(pr); err != nil {
				return seedfile.Summary{Format: opts.Format}, err
			}
		}
		return seedfile.Summary{Format: opts.Format}, nil
	}
	body, err := f.Open(ctx)
	if err != nil {
		return seedfile.Summary{Format: opts.Format}, fmt.Errorf("import %s: read the blob: %w", f.Name, err)
	}
	defer body.Close()
	src := &storageReader{r: body}
	in, err := p.seedInput(ctx, f, src)
	if err == nil {
		var stop error // the first error of a callback: stops the read, returned as is
		var sum seedfile.Summary
		sum, err = seedfile.Read(in, opts,
			func(r seedfile.Record) error {
				if stop = onRecord(r); stop != nil {
					clear(r.Seed.Secret)
				}
				return stop
			},
			func(pr seedfile.Problem) {
				if stop == nil {
					stop = onProblem(pr)
				}
			})
		switch {
		case src.err != nil:
			return sum, fmt.Errorf("import %s: read the blob: %w", f.Name, src.err)
		case stop != nil:
			return sum, stop
		}
		var fe *seedfile.FileError
		if err == nil || errors.As(err, &fe) {
			// A *FileError's problem was already delivered through onProblem.
			return sum, nil
		}
		return sum, onProblem(seedfile.Problem{Field: "file", Code: CodeFileUnreadable, Message: err.Error()})
	}
	if src.err != nil {
		return seedfile.Summary{Format: opts.Format}, fmt.Errorf("import %s: read the blob: %w", f.Name, src.err)
	}
	return seedfile.Summary{Format: opts.Format}, onProblem(seedfile.Problem{Field: "file", Code: CodeFileUnreadable, Message: err.Error()})
}

// replayPart hands a seed file read whole from an envelope (readDelivered) to the callbacks in
// line order, as seedfile.Read would: file-level problems first, then each line's problems or
// its record. Each record gets its own copy of the seed, which the callback may clear (the
// import replays a part twice).
func replayPart(pt *seedPart, onRecord func(seedfile.Record) error, onProblem func(seedfile.Problem) error) (seedfile.Summary, error) {
	probs := pt.problems
	i := 0
	for i < len(probs) && probs[i].Line <= 0 {
		if err := onProblem(probs[i]); err != nil {
			return pt.sum, err
		}
		i++
	}
	rest := append([]seedfile.Problem(nil), probs[i:]...)
	sort.SliceStable(rest, func(a, b int) bool { return rest[a].Line < rest[b].Line })
	j := 0
	for _, r := range pt.records {
		for j < len(rest) && rest[j].Line < r.Line {
			if err := onProblem(rest[j]); err != nil {
				return pt.sum, err
			}
			j++
		}
		r.Seed.Secret = bytes.Clone(r.Seed.Secret)
		if err := onRecord(r); err != nil {
			return pt.sum, err
		}
	}
	for ; j < len(rest); j++ {
		if err := onProblem(rest[j]); err != nil {
			return pt.sum, err
		}
	}
	return pt.sum, nil
}

// storageReader remembers the first failure of the blob download under it, so a storage outage
// part way through a file is retried instead of being taken for a broken file.
type storageReader struct {
	r   io.Reader
	err error
}

func (s *storageReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// seedInput is the one place where the delivered stream of an inbox blob becomes the input of
// the seed-file reader. content streams the blob from its start (each call of the import gets a
// fresh stream); f.ReaderAt(ctx) and f.ContentSize() give random access by ranged reads for a
// format that needs it (a zip archive's central directory) without holding the file. An
// envelope (PGP, zip) is unwrapped here, before seedfile.Read sees the content; an envelope
// that cannot be opened is the file's outcome (a Line 0 problem: return it as an error).
func (p *Pipeline) seedInput(_ context.Context, _ InboxFile, content io.Reader) (io.Reader, error) {
	return content, nil
}

// File-level problem codes the pipeline adds to seedfile's.
const (
	CodeFileUnreadable = "file.unreadable" // the reader failed for another reason than the file's content
	CodeFileBadHint    = "file.bad-hint"   // a blob metadata hint (format, secretencoding, hash) has a value oathpipe does not take
)

// optionsFor applies per-file hints from the blob's user metadata (format, secretencoding, hash)
// over the configured options, so a vendor's hex CSV can be dropped with x-ms-meta-secretencoding=hex.
// A hint with a value oathpipe does not take is a file-level problem (never ignored: reading
// the file another way than the uploader said could mis-decode its seeds).
func optionsFor(base seedfile.Options, md map[string]string) (seedfile.Options, []seedfile.Problem) {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)                  // problems in a stable order
	base.Advice = seedfile.AdviceUpload // the report's reader uploaded a blob: hints, not flags
	var bad []seedfile.Problem
	hint := func(key, value, want string) {
		bad = append(bad, seedfile.Problem{Field: "metadata " + key, Code: CodeFileBadHint,
			Message: fmt.Sprintf("blob metadata %s=%q is not a value oathpipe takes (%s)", key, clipHint(value), want)})
	}
	for _, k := range keys {
		v := strings.TrimSpace(md[k])
		switch key := strings.ToLower(k); key {
		case "format":
			switch f := seedfile.Format(strings.ToLower(v)); f {
			case seedfile.FormatEntraCSV, seedfile.FormatGraphCSV, seedfile.FormatPSKC, seedfile.FormatOATHCSV:
				base.Format = f
			case seedfile.FormatAuto:
				// An empty hint: detect from the content.
			default:
				hint(key, v, "entra-csv, graph-csv, pskc or oath-csv")
			}
		case "secretencoding":
			switch e := strings.ToLower(v); e {
			case "base32", "hex":
				base.SecretEncoding = e
			case "":
			default:
				hint(key, v, "base32 or hex")
			}
		case "model", "manufacturer":
			// Used for rows whose file names none (Feitian's PSKC has no <Model>).
			if !seedfile.ValidHint(v) {
				hint(key, v, "plain text of at most 256 characters")
			} else if key == "model" {
				base.Model = v
			} else {
				base.Manufacturer = v
			}
		case "hash":
			if v == "" {
				continue
			}
			h, ok := seedfile.ParseHash(v)
			if !ok || (h != token.SHA1 && h != token.SHA256) {
				hint(key, v, "sha1 or sha256; Entra ID takes no other")
				continue
			}
			base.Hash = h
		}
	}
	return base, bad
}

// clipHint keeps a metadata value short in a problem message (metadata is small and holds no
// seed, but a message is not the place for a long value).
func clipHint(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}

// reasonOf is the plain reason recorded for a permanent failure.
func reasonOf(err error) string {
	var te *token.Error
	if errors.As(err, &te) {
		if te.Message == "" {
			return te.Error()
		}
		// The message is already a sentence naming the user or token; the operation prefix
		// would only repeat it.
		if te.RequestID != "" {
			return te.Message + " (request-id " + te.RequestID + ")"
		}
		return te.Message
	}
	return err.Error()
}
