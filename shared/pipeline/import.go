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
func (p *Pipeline) importFile(ctx context.Context, f InboxFile) (*ImportResult, error) {
	if f.Name == "" {
		return nil, token.Errorf(token.KindInvalid, "import: the blob name is empty")
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
		if imp, disposition, queued, failed, err = p.storeAndQueue(ctx, log, imp, f); err != nil {
			return nil, err
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
func (p *Pipeline) storeAndQueue(ctx context.Context, log *slog.Logger, imp ImportRecord, f InboxFile) (_ ImportRecord, disposition string, queued, failed int, err error) {
	id := imp.ImportID
	records, problems, sum := f.part.records, f.part.problems, f.part.sum
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
		rows, err := p.d.Ledger.ListTokens(ctx, id)
		if err != nil {
			return imp, "", 0, 0, fmt.Errorf("import %s: list token rows: %w", f.Name, err)
		}
		var unsettled map[int]bool
		disposition, failed, unsettled = dispositionOf(imp, rows)
		todo = nil
		for _, r := range records {
			if unsettled[r.Line] {
				todo = append(todo, r)
			}
		}
	}

	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gate := make(chan struct{})
	type result struct {
		queued, refused int
		err             error
	}
	done := make(chan result, 1)
	go func() {
		q, r, err := p.vaultAndQueue(vctx, log, id, f.Name, todo, gate)
		done <- result{q, r, err}
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
		return imp, "", 0, 0, err
	}
	close(gate)
	res := <-done
	if res.err != nil {
		return imp, "", 0, 0, res.err
	}
	if res.refused > 0 {
		failed += res.refused
		disposition = DispositionRejected
	}
	if err := p.d.Ledger.SetImportStage(ctx, id, StageEnqueued, disposition); err != nil {
		return imp, "", 0, 0, fmt.Errorf("import %s: record stage: %w", f.Name, err)
	}
	log.Info("every valid seed is in the vault and its message queued", slog.Int("queued", res.queued), slog.Int("vaultRefused", res.refused))
	// Tokens may all have settled while later seeds were still being queued, before the import
	// knew its disposition: make sure the report on disk is the final one.
	if cur, err := p.d.Ledger.GetImport(ctx, id); err == nil && cur.Pending == 0 {
		if err := p.writeReport(ctx, id, disposition); err != nil {
			return imp, "", 0, 0, err
		}
	}
	return imp, disposition, res.queued, failed, nil
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
// different seed under the serial, ...) fails its row; a transient failure stops everything and
// is returned, and the whole import is retried (storing and queueing are both safe to repeat).
func (p *Pipeline) vaultAndQueue(ctx context.Context, log *slog.Logger, importID, name string, records []seedfile.Record, gate <-chan struct{}) (queued, refused int, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan seedfile.Record)
	ready := make(chan ProvisionMessage, 256)
	var (
		mu       sync.Mutex
		writers  sync.WaitGroup
		senders  sync.WaitGroup
		nQueued  int
		nRefused int
	)
	fail := func(err error) { cancel(err) }

	for range p.d.VaultConcurrency {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for r := range work {
				_, err := p.d.Vault.PutSeed(ctx, r.Token, r.Seed, importID)
				switch {
				case err == nil:
					select {
					case ready <- ProvisionMessage{
						ImportID: importID, FileName: name, Line: r.Line, SerialNumber: r.Token.Serial,
						Manufacturer: r.Token.Manufacturer, UserPrincipalName: r.UserPrincipalName,
					}:
					case <-ctx.Done():
						return
					}
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
			for m := range ready {
				batch := []ProvisionMessage{m}
			fill:
				for len(batch) < maxBatch {
					select {
					case m, ok := <-ready:
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
				if err := p.d.Queue.Enqueue(ctx, batch); err != nil {
					fail(fmt.Errorf("queue %d provisioning messages: %w", len(batch), err))
					continue
				}
				mu.Lock()
				nQueued += len(batch)
				mu.Unlock()
			}
		}()
	}

feed:
	for _, r := range records {
		select {
		case work <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	writers.Wait()
	close(ready)
	senders.Wait()
	if err := context.Cause(ctx); err != nil {
		return nQueued, nRefused, fmt.Errorf("import %s: %w", name, err)
	}
	log.Debug("seeds stored and messages queued", slog.Int("queued", nQueued), slog.Int("refused", nRefused))
	return nQueued, nRefused, nil
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
