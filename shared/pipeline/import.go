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
	log := p.log.With(slog.String("importId", id), slog.String("file", f.Name))

	imp, created, err := p.d.Ledger.BeginImport(ctx, ImportRecord{
		ImportID: id, FileName: f.Name, ETag: f.ETag, Stage: StageStarted, Created: p.now(), Updated: p.now(),
	})
	if err != nil {
		return nil, fmt.Errorf("import %s: begin: %w", f.Name, err)
	}
	if !created {
		log.Info("repeated delivery of an import", slog.String("stage", imp.Stage))
	}

	fresh := false // this invocation wrote every row: none has settled yet
	if stageBefore(imp.Stage, StageVaulted) {
		if imp, err = p.recordFile(ctx, log, imp, f); err != nil {
			return nil, err
		}
		fresh = true
	}
	disposition := dispositionOf(imp)
	failed, queued := imp.Refused, 0
	if stageBefore(imp.Stage, StageEnqueued) {
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
		if err := p.d.Ledger.SetImportStage(ctx, id, StageEnqueued, disposition); err != nil {
			return nil, fmt.Errorf("import %s: record stage: %w", f.Name, err)
		}
		imp.Stage = StageEnqueued
		log.Info("every valid seed is in the vault and its message queued", slog.Int("queued", queued), slog.Int("vaultRefused", failed))
		// Tokens may all have settled while later seeds were still being queued, before the
		// import knew its disposition: make sure the report on disk is the final one.
		if cur, err := p.d.Ledger.GetImport(ctx, id); err == nil && cur.Pending == 0 {
			if err := p.writeReport(ctx, id, disposition); err != nil {
				return nil, err
			}
		}
	}

	if stageBefore(imp.Stage, StageDone) {
		// Every valid seed is confirmed in the vault (StageEnqueued): the source may leave the inbox.
		if f.outer != "" {
			// A file inside an archive: the archive leaves the inbox once, after all its files.
		} else if disposition == DispositionRejected {
			if err := p.reject(ctx, log, f, RejectedName(id, f.Name)); err != nil {
				return nil, err
			}
		} else {
			if err := p.d.Blobs.DeleteInbox(ctx, f.Name, f.ETag); err != nil {
				return nil, fmt.Errorf("import %s: delete from inbox: %w", f.Name, err)
			}
		}
		if err := p.d.Ledger.SetImportStage(ctx, id, StageDone, disposition); err != nil {
			return nil, fmt.Errorf("import %s: record stage: %w", f.Name, err)
		}
	}

	res := &ImportResult{
		ImportID: id, FileName: f.Name, Format: imp.Format, Rows: imp.Rows, Valid: imp.Valid,
		Invalid: imp.Invalid, Queued: queued, Failed: failed, Disposition: disposition,
		Repeat: !created, Problems: imp.Problems,
	}
	log.Info("import done", slog.Int("rows", res.Rows), slog.Int("valid", res.Valid),
		slog.Int("invalid", res.Invalid), slog.Int("queued", res.Queued), slog.Int("vaultRefused", failed),
		slog.String("disposition", disposition), slog.Bool("repeat", res.Repeat))
	return res, nil
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
	rows := make([]TokenRecord, 0, ChunkRows+1)
	var fileProblems []seedfile.Problem
	omitted, written := 0, 0
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		if err := p.d.Ledger.AddTokens(ctx, imp, rows); err != nil {
			return fmt.Errorf("import %s: write %d ledger rows (lines %d-%d): %w", f.Name, len(rows), rows[0].Line, rows[len(rows)-1].Line, err)
		}
		written += len(rows)
		p.chunkHook(len(rows))
		clear(rows)
		rows = rows[:0]
		return nil
	}
	// A row's problems arrive together, before the next row (seedfile.Read reports in file
	// order): a chunk is cut only where a new line begins.
	next := func() error {
		if len(rows) >= ChunkRows {
			return flush()
		}
		return nil
	}
	sum, err := p.readSeeds(ctx, f,
		func(r seedfile.Record) error {
			clear(r.Seed.Secret) // not needed in this stage
			if err := next(); err != nil {
				return err
			}
			rows = append(rows, TokenRecord{
				ImportID: imp.ImportID, Line: r.Line, Serial: r.Token.Serial, Manufacturer: r.Token.Manufacturer,
				Model: r.Token.Model, UserPrincipalName: r.UserPrincipalName, Status: StatusVaulted,
				Problems:        r.Warnings, // a valid row's problems are its warnings (a hinted model, an expiry)
				SeedFingerprint: r.Seed.Fingerprint(), Updated: p.now(),
			})
			return nil
		},
		func(pr seedfile.Problem) error {
			if pr.Line <= 0 {
				if len(fileProblems) < maxFileProblems {
					fileProblems = append(fileProblems, pr)
				} else {
					omitted++
				}
				return nil
			}
			if n := len(rows); n > 0 && rows[n-1].Line == pr.Line && rows[n-1].Status == StatusRejected {
				last := &rows[n-1]
				last.Problems = append(last.Problems, pr)
				last.Reason += "; " + pr.Field + ": " + pr.Message
				// The reader names the row by its serial and UPN cells when it knows them.
				last.Serial, last.UserPrincipalName = cmp.Or(last.Serial, pr.Serial), cmp.Or(last.UserPrincipalName, pr.UserPrincipalName)
				return nil
			}
			if err := next(); err != nil {
				return err
			}
			rows = append(rows, TokenRecord{ImportID: imp.ImportID, Line: pr.Line, Serial: pr.Serial, UserPrincipalName: pr.UserPrincipalName,
				Status: StatusRejected, Problems: []seedfile.Problem{pr}, Reason: pr.Field + ": " + pr.Message, Updated: p.now()})
			return nil
		})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return imp, err
	}
	if omitted > 0 {
		log.Warn("more file-level problems than an import keeps", slog.Int("kept", len(fileProblems)), slog.Int("omitted", omitted))
	}
	imp.Format, imp.Rows, imp.Valid, imp.Invalid = string(sum.Format), sum.Rows, sum.Valid, sum.Invalid
	imp.Problems, imp.Pending = fileProblems, sum.Valid
	imp.Disposition = dispositionOf(imp)
	if err := p.d.Ledger.SealImport(ctx, imp); err != nil {
		return imp, fmt.Errorf("import %s: record the file's facts: %w", f.Name, err)
	}
	imp.Stage = StageVaulted
	log.Info("file read and recorded", slog.String("format", imp.Format), slog.Int("rows", imp.Rows),
		slog.Int("valid", imp.Valid), slog.Int("invalid", imp.Invalid), slog.Int("fileProblems", len(imp.Problems)),
		slog.Int("ledgerRows", written))
	if err := p.writeReport(ctx, imp.ImportID, imp.Disposition); err != nil {
		return imp, err
	}
	return imp, nil
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
	id := imp.ImportID
	var out stored
	out.checkpoint = imp.Checkpoint
	if !fresh {
		log.Info("resuming the import", slog.Int("checkpoint", imp.Checkpoint))
	}
	chunk := make([]seedfile.Record, 0, ChunkRows)
	errHandOn := errors.New("hand on")
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
		p.chunkHook(len(chunk))
		todo := chunk
		var priorRefused []int // lines refused by the vault in an earlier attempt, past the checkpoint
		if !fresh {
			status := make(map[int]TokenRecord, len(chunk))
			err := p.d.Ledger.EachToken(ctx, id, chunk[0].Line, chunk[len(chunk)-1].Line, func(r TokenRecord) error {
				status[r.Line] = r
				return nil
			})
			if err != nil {
				return fmt.Errorf("import %s: read back lines %d-%d: %w", f.Name, chunk[0].Line, chunk[len(chunk)-1].Line, err)
			}
			todo = make([]seedfile.Record, 0, len(chunk))
			for _, r := range chunk {
				switch row, ok := status[r.Line]; {
				case !ok || row.Status == StatusVaulted:
					// Not settled: store (a no-op for a seed already there) and queue.
					todo = append(todo, r)
				case row.Status == StatusFailed && strings.HasPrefix(row.Reason, vaultFailurePrefix):
					priorRefused = append(priorRefused, r.Line)
				}
			}
		}
		q, refusedLines, more, cp, err := p.vaultAndQueue(ctx, log, id, f.Name, todo, deadline)
		out.queued += q
		if err == nil && !more {
			cp = chunk[len(chunk)-1].Line // the whole chunk is done, settled rows included
		}
		if cp > out.checkpoint {
			n := 0
			for _, l := range append(refusedLines, priorRefused...) {
				if l > out.checkpoint && l <= cp {
					n++
				}
			}
			// Best effort on failure too: a retry then queues fewer messages again.
			if cerr := p.d.Ledger.SetImportCheckpoint(ctx, id, cp, n); cerr != nil {
				if err == nil {
					err = fmt.Errorf("import %s: record checkpoint: %w", f.Name, cerr)
				}
			} else {
				out.checkpoint = cp
				out.refused += n
			}
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
	log.Debug("seeds stored and messages queued", slog.Int("queued", out.queued), slog.Int("refused", out.refused),
		slog.Bool("more", out.more), slog.Int("checkpoint", out.checkpoint))
	return out, nil
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
	log.Info("time budget used: import handed on to its next part", slog.Int("checkpoint", checkpoint),
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
	log := p.log.With(slog.String("file", r.Name))
	if r.ImportID != "" {
		log = log.With(slog.String("importId", r.ImportID))
	}
	f, err := p.d.Inbox.ReadInbox(ctx, r.Name)
	switch {
	case token.KindOf(err) == token.KindNotFound:
		// An earlier delivery finished the import and removed the file, or someone deleted it.
		log.Info("the blob is no longer in the inbox; nothing to import", slog.Bool("continuation", r.Continuation))
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
		log.Warn("the file was replaced before its import finished; the new upload is imported on its own event",
			slog.String("etag", r.ETag), slog.String("newEtag", f.ETag))
		return &ImportResult{ImportID: r.ImportID, FileName: r.Name, Replaced: true}, nil
	}
	if !r.Continuation && r.ETag != "" && f.ETag != r.ETag {
		log.Info("the blob changed since its event; importing what it holds now",
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

// vaultFailurePrefix starts the reason of a valid row the vault refused, so a repeated delivery
// can tell those rows from tokens that failed later, in provisioning.
const vaultFailurePrefix = "not stored in the vault: "

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
	type job struct {
		i int
		r seedfile.Record
	}
	type ready struct {
		i int
		m ProvisionMessage
	}
	work := make(chan job)
	out := make(chan ready, 256)
	var (
		mu       sync.Mutex
		writers  sync.WaitGroup
		senders  sync.WaitGroup
		nQueued  int
		nRefused []int
		stalled  bool
		done     = make([]bool, len(records))
		low      int // records[:low] are all done
	)
	fail := func(err error) { cancel(err) }
	finished := func(is ...int) {
		mu.Lock()
		for _, i := range is {
			done[i] = true
		}
		for low < len(done) && done[low] {
			low++
		}
		mu.Unlock()
	}
	pastDeadline := func() bool { return !deadline.IsZero() && !p.now().Before(deadline) }

	for range p.d.VaultConcurrency {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for j := range work {
				r := j.r
				err := p.putSeed(ctx, log, importID, r, deadline)
				switch {
				case err == nil:
					select {
					case out <- ready{j.i, ProvisionMessage{
						ImportID: importID, FileName: name, Line: r.Line, SerialNumber: r.Token.Serial,
						Manufacturer: r.Token.Manufacturer, UserPrincipalName: r.UserPrincipalName,
					}}:
					case <-ctx.Done():
						return
					}
				case errors.Is(err, errStalled):
					mu.Lock()
					stalled = true
					mu.Unlock()
				case token.IsTransient(err):
					fail(fmt.Errorf("store seed of %s (line %d): %w", r.Token.Serial, r.Line, err))
					return
				default:
					p.log.Warn("seed refused by the vault", slog.String("importId", importID),
						slog.String("serial", r.Token.Serial), slog.Int("line", r.Line), slog.String("kind", string(token.KindOf(err))),
						slog.String("requestId", token.RequestIDOf(err)), slog.String("reason", reasonOf(err)))
					o := Outcome{Status: StatusFailed, Reason: vaultFailurePrefix + reasonOf(err), UserPrincipalName: r.UserPrincipalName}
					if err := p.settle(ctx, importID, r.Line, o); err != nil {
						fail(err)
						return
					}
					mu.Lock()
					nRefused = append(nRefused, r.Line)
					mu.Unlock()
					finished(j.i)
				}
			}
		}()
	}

	// Two senders batch confirmed tokens: a batch goes out as soon as no more are waiting.
	const maxBatch = 64
	for range 2 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for m := range out {
				batch := []ready{m}
			fill:
				for len(batch) < maxBatch {
					select {
					case m, ok := <-out:
						if !ok {
							break fill
						}
						batch = append(batch, m)
					default:
						break fill
					}
				}
				if ctx.Err() != nil {
					continue // drain: a failure is already recorded
				}
				msgs := make([]ProvisionMessage, len(batch))
				is := make([]int, len(batch))
				for k, b := range batch {
					msgs[k], is[k] = b.m, b.i
				}
				if err := p.d.Queue.Enqueue(ctx, msgs); err != nil {
					fail(fmt.Errorf("queue %d provisioning messages: %w", len(batch), err))
					continue
				}
				mu.Lock()
				nQueued += len(batch)
				mu.Unlock()
				finished(is...)
			}
		}()
	}

feed:
	for i, r := range records {
		mu.Lock()
		stop := stalled
		mu.Unlock()
		if stop || pastDeadline() {
			more = true
			break feed
		}
		select {
		case work <- job{i, r}:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	writers.Wait()
	close(out)
	senders.Wait()
	mu.Lock()
	if low > 0 {
		checkpoint = records[low-1].Line
	}
	more = more || stalled
	if low == len(records) {
		more = false // everything got done after all
	}
	mu.Unlock()
	if err := context.Cause(ctx); err != nil {
		return nQueued, nil, false, checkpoint, fmt.Errorf("import %s: %w", name, err)
	}
	log.Debug("seeds stored and messages queued", slog.Int("queued", nQueued), slog.Int("refused", len(nRefused)),
		slog.Bool("more", more), slog.Int("checkpoint", checkpoint))
	return nQueued, nRefused, more, checkpoint, nil
}

// errStalled is a transient vault failure that lasted until the import's deadline: the record
// is left for the next part of the import.
var errStalled = errors.New("the vault kept failing until the time budget ended")

// putSeed stores one record's seed, backing off on transient failures (throttling, outages):
// waits start at RetryWait and double up to MaxRetryWait. With a deadline it keeps trying
// until the deadline (then errStalled); without one, for OutageWindow (then the last error).
func (p *Pipeline) putSeed(ctx context.Context, log *slog.Logger, importID string, r seedfile.Record, deadline time.Time) error {
	wait := p.d.RetryWait
	var since time.Time
	for {
		_, err := p.d.Vault.PutSeed(ctx, r.Token, r.Seed, importID)
		if err == nil || !token.IsTransient(err) || ctx.Err() != nil {
			return err
		}
		now := p.now()
		if since.IsZero() {
			since = now
		}
		if !deadline.IsZero() {
			if !now.Add(wait).Before(deadline) {
				return errStalled
			}
		} else if now.Add(wait).Sub(since) > p.d.OutageWindow {
			return err
		}
		log.Warn("vault unavailable; backing off inside the invocation", slog.String("serial", r.Token.Serial),
			slog.Int("line", r.Line), slog.Duration("wait", wait), slog.String("kind", string(token.KindOf(err))),
			slog.String("reason", reasonOf(err)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
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

// stageBefore reports whether stage a comes before stage b.
func stageBefore(a, b string) bool { return stageRank(a) < stageRank(b) }

func stageRank(s string) int {
	switch s {
	case StageVaulted:
		return 1
	case StageEnqueued:
		return 2
	case StageDone:
		return 3
	}
	return 0
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
