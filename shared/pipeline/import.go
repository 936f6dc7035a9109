package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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

// RejectedName is the name under which a file with failed rows is kept in seed-rejected: one
// folder per import, so a later upload under the same name never overwrites it.
func RejectedName(importID, name string) string { return importID + "/" + name }

// importFile is Import. Each step is safe to repeat; the import's stage in the ledger says which
// steps a repeated delivery can skip:
//
//	started  → read the file, write every row to the ledger (valid rows "vaulted", Pending
//	           counted) while the first seeds already go to the vault
//	vaulted  → write the first report; queue each token's message as soon as its seed is
//	           confirmed (provisioning starts while later seeds are still being stored); a seed
//	           the vault refuses fails its row
//	enqueued → every valid seed is confirmed in the vault: the file leaves the inbox
//	done
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

	disposition, failed, queued := DispositionDeleted, 0, 0
	if stageBefore(imp.Stage, StageEnqueued) {
		var more bool
		var checkpoint int
		if imp, disposition, queued, failed, more, checkpoint, err = p.storeAndQueue(ctx, log, imp, f, deadline); err != nil {
			return nil, err
		}
		if more {
			return p.handOn(ctx, log, imp, f, part, queued, checkpoint, !created)
		}
	} else {
		// Done by an earlier delivery: read the outcome back for the answer and the disposition.
		rows, err := p.d.Ledger.ListTokens(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("import %s: list token rows: %w", f.Name, err)
		}
		disposition, failed, _ = dispositionOf(imp, rows)
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

// storeAndQueue runs the vaulted and enqueued stages. On the first delivery the seeds start
// going to the vault while the rows are being written to the ledger; messages wait until the
// rows and the first report are written (a worker needs the row; the first report must not
// overwrite a final one).
func (p *Pipeline) storeAndQueue(ctx context.Context, log *slog.Logger, imp ImportRecord, f InboxFile, deadline time.Time) (_ ImportRecord, disposition string, queued, failed int, more bool, checkpoint int, err error) {
	id := imp.ImportID
	records, problems, sum := f.part.records, f.part.problems, f.part.sum // read by readDelivered
	checkpoint = imp.Checkpoint
	first := stageBefore(imp.Stage, StageVaulted)
	todo := records
	if first {
		imp = p.importFacts(imp, problems, sum)
		disposition = DispositionDeleted
		if len(imp.Problems) > 0 || imp.Rows == 0 || imp.Invalid > 0 {
			disposition = DispositionRejected
		}
	} else {
		// A repeated delivery: rows exist; store and queue what has not settled yet.
		// Rows up to the checkpoint have their seed stored and their message queued: a
		// continuation (or a redelivery) never queues them twice.
		rows, err := p.d.Ledger.ListTokens(ctx, id)
		if err != nil {
			return imp, "", 0, 0, false, 0, fmt.Errorf("import %s: list token rows: %w", f.Name, err)
		}
		var unsettled map[int]bool
		disposition, failed, unsettled = dispositionOf(imp, rows)
		todo = nil
		for _, r := range records {
			if unsettled[r.Line] && r.Line > imp.Checkpoint {
				todo = append(todo, r)
			}
		}
		log.Info("resuming the import", slog.Int("checkpoint", imp.Checkpoint), slog.Int("remaining", len(todo)))
	}

	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gate := make(chan struct{})
	type result struct {
		queued, refused int
		more            bool
		checkpoint      int
		err             error
	}
	done := make(chan result, 1)
	go func() {
		q, r, more, cp, err := p.vaultAndQueue(vctx, log, id, f.Name, todo, gate, deadline)
		done <- result{q, r, more, cp, err}
	}()
	prepare := func() error {
		if first {
			if err := p.recordRows(ctx, log, imp, records, problems); err != nil {
				return err
			}
			imp.Stage = StageVaulted
		}
		return p.writeReport(ctx, id, disposition)
	}
	if err := prepare(); err != nil {
		cancel()
		<-done
		return imp, "", 0, 0, false, 0, err
	}
	close(gate)
	res := <-done
	if res.checkpoint > checkpoint {
		checkpoint = res.checkpoint
		// Best effort on failure too: a retry then queues fewer messages again.
		if err := p.d.Ledger.SetImportCheckpoint(ctx, id, checkpoint); err != nil && res.err == nil {
			return imp, "", 0, 0, false, 0, fmt.Errorf("import %s: record checkpoint: %w", f.Name, err)
		}
	}
	if res.err != nil {
		return imp, "", 0, 0, false, 0, res.err
	}
	if res.refused > 0 {
		failed += res.refused
		disposition = DispositionRejected
		if res.more {
			// Recorded in the rows (their reason); the next part reads it back from there.
			failed -= res.refused
		}
	}
	if res.more {
		return imp, disposition, res.queued, failed, true, checkpoint, nil
	}
	if err := p.d.Ledger.SetImportStage(ctx, id, StageEnqueued, disposition); err != nil {
		return imp, "", 0, 0, false, 0, fmt.Errorf("import %s: record stage: %w", f.Name, err)
	}
	log.Info("every valid seed is in the vault and its message queued", slog.Int("queued", res.queued), slog.Int("vaultRefused", res.refused))
	// Tokens may all have settled while later seeds were still being queued, before the import
	// knew its disposition: make sure the report on disk is the final one.
	if cur, err := p.d.Ledger.GetImport(ctx, id); err == nil && cur.Pending == 0 {
		if err := p.writeReport(ctx, id, disposition); err != nil {
			return imp, "", 0, 0, false, 0, err
		}
	}
	return imp, disposition, res.queued, failed, false, checkpoint, nil
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

// dispositionOf works out from the ledger rows where the file goes, how many rows the vault
// refused, and which lines still wait for their seed and message.
func dispositionOf(imp ImportRecord, rows []TokenRecord) (disposition string, refused int, unsettled map[int]bool) {
	disposition = DispositionDeleted
	if len(imp.Problems) > 0 || imp.Rows == 0 {
		disposition = DispositionRejected
	}
	unsettled = map[int]bool{}
	for _, r := range rows {
		switch {
		case r.Status == StatusRejected:
			disposition = DispositionRejected
		case r.Status == StatusFailed && strings.HasPrefix(r.Reason, vaultFailurePrefix):
			refused++
			disposition = DispositionRejected
		case r.Status == StatusVaulted:
			unsettled[r.Line] = true
		}
	}
	return disposition, refused, unsettled
}

// vaultFailurePrefix starts the reason of a valid row the vault refused, so a repeated delivery
// can tell those rows from tokens that failed later, in provisioning.
const vaultFailurePrefix = "not stored in the vault: "

// importFacts records the file's summary and file-level problems on imp.
func (p *Pipeline) importFacts(imp ImportRecord, problems []seedfile.Problem, sum seedfile.Summary) ImportRecord {
	imp.Format, imp.Rows, imp.Valid, imp.Invalid = string(sum.Format), sum.Rows, sum.Valid, sum.Invalid
	imp.Problems = nil
	for _, pr := range problems {
		if pr.Line <= 0 {
			imp.Problems = append(imp.Problems, pr)
		}
	}
	return imp
}

// recordRows writes every row of the file to the ledger: valid rows "vaulted", rejected rows
// with their problems. The ledger counts Pending and moves the import to StageVaulted.
func (p *Pipeline) recordRows(ctx context.Context, log *slog.Logger, imp ImportRecord, records []seedfile.Record, problems []seedfile.Problem) error {
	byLine := map[int][]seedfile.Problem{}
	for _, pr := range problems {
		if pr.Line > 0 {
			byLine[pr.Line] = append(byLine[pr.Line], pr)
		}
	}
	rows := make([]TokenRecord, 0, len(records)+len(byLine))
	for _, r := range records {
		rows = append(rows, TokenRecord{
			ImportID: imp.ImportID, Line: r.Line, Serial: r.Token.Serial, Manufacturer: r.Token.Manufacturer,
			Model: r.Token.Model, UserPrincipalName: r.UserPrincipalName, Status: StatusVaulted,
			Problems:        r.Warnings, // a valid row's problems are its warnings (a hinted model, an expiry)
			SeedFingerprint: r.Seed.Fingerprint(), Updated: p.now(),
		})
	}
	for line, prs := range byLine {
		msgs := make([]string, len(prs))
		for i, pr := range prs {
			msgs[i] = pr.Field + ": " + pr.Message
		}
		// The reader names the row by its serial and UPN cells when it knows them.
		var serial, upn string
		for _, pr := range prs {
			serial, upn = cmp.Or(serial, pr.Serial), cmp.Or(upn, pr.UserPrincipalName)
		}
		rows = append(rows, TokenRecord{ImportID: imp.ImportID, Line: line, Serial: serial, UserPrincipalName: upn,
			Status: StatusRejected, Problems: prs, Reason: strings.Join(msgs, "; "), Updated: p.now()})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Line < rows[j].Line })
	imp.Pending = len(records)
	if err := p.d.Ledger.PutTokens(ctx, imp, rows); err != nil {
		return fmt.Errorf("import %s: write %d ledger rows: %w", imp.FileName, len(rows), err)
	}
	log.Info("file read and recorded", slog.String("format", imp.Format), slog.Int("rows", imp.Rows),
		slog.Int("valid", imp.Valid), slog.Int("invalid", imp.Invalid), slog.Int("fileProblems", len(imp.Problems)))
	return nil
}

// vaultAndQueue stores the records' seeds with VaultConcurrency writers and queues each token's
// message as soon as its seed is confirmed, in small batches, while later seeds are still being
// stored: provisioning of a big file starts within a second. A seed the vault refuses (a
// different seed under the serial, ...) fails its row. A transient vault failure is retried
// with backoff inside the invocation: until the deadline when there is one (then more=true and
// the import hands itself on), else for OutageWindow before the failure is returned and the
// whole import retried (storing and queueing are both safe to repeat). records are in line
// order; checkpoint is the last line up to which every record is stored and queued.
func (p *Pipeline) vaultAndQueue(ctx context.Context, log *slog.Logger, importID, name string, records []seedfile.Record, gate <-chan struct{}, deadline time.Time) (queued, refused int, more bool, checkpoint int, err error) {
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
		nRefused int
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
				case retryable(err):
					fail(fmt.Errorf("store seed of %s (line %d): %w", r.Token.Serial, r.Line, err))
					return
				default:
					p.log.Warn("seed refused by the vault", slog.String("importId", importID),
						slog.String("serial", r.Token.Serial), slog.Int("line", r.Line), slog.String("kind", string(token.KindOf(err))),
						slog.String("requestId", token.RequestIDOf(err)), slog.String("reason", reasonOf(err)))
					o := Outcome{Status: StatusFailed, Reason: vaultFailurePrefix + reasonOf(err), UserPrincipalName: r.UserPrincipalName}
					if !wait(ctx, gate) {
						return
					}
					if err := p.settle(ctx, importID, r.Line, o); err != nil {
						fail(err)
						return
					}
					mu.Lock()
					nRefused++
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
			open := wait(ctx, gate) // the rows and the first report come first
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
				if !open || ctx.Err() != nil {
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
		return nQueued, nRefused, false, checkpoint, fmt.Errorf("import %s: %w", name, err)
	}
	log.Debug("seeds stored and messages queued", slog.Int("queued", nQueued), slog.Int("refused", nRefused),
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
		if err == nil || !retryable(err) || ctx.Err() != nil {
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

// wait blocks until gate is closed (true) or ctx is done (false).
func wait(ctx context.Context, gate <-chan struct{}) bool {
	select {
	case <-gate:
		return true
	case <-ctx.Done():
		return false
	}
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

// retryable reports whether a failure is worth another delivery: throttling, transient upstream
// failures, unclassified (internal) failures, and cancelled or expired contexts.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch token.KindOf(err) {
	case token.KindTransient, token.KindThrottled, token.KindInternal:
		return true
	}
	return false
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
