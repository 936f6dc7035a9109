package pipeline

import (
	"bytes"
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
// steps a repeated delivery can skip.
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

	if stageBefore(imp.Stage, StageVaulted) {
		if imp, err = p.vaultFile(ctx, log, imp, f); err != nil {
			return nil, err
		}
	}
	rows, err := p.d.Ledger.ListTokens(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("import %s: list token rows: %w", f.Name, err)
	}
	disposition := DispositionDeleted
	if len(imp.Problems) > 0 || imp.Rows == 0 {
		disposition = DispositionRejected
	}
	var queue []ProvisionMessage
	failed := 0
	for _, r := range rows {
		switch r.Status {
		case StatusRejected:
			disposition = DispositionRejected
		case StatusFailed:
			if r.Reason != "" && strings.HasPrefix(r.Reason, vaultFailurePrefix) {
				failed++
				disposition = DispositionRejected
			}
		case StatusVaulted:
			queue = append(queue, ProvisionMessage{
				ImportID: id, FileName: f.Name, Line: r.Line, SerialNumber: r.Serial,
				Manufacturer: r.Manufacturer, UserPrincipalName: r.UserPrincipalName,
			})
		}
	}
	imp.Disposition = disposition

	if stageBefore(imp.Stage, StageEnqueued) {
		// The report goes out before the messages, so no worker can settle the import's last
		// token (and write the final report) before this one is written.
		if err := p.writeReport(ctx, imp.ImportID, disposition); err != nil {
			return nil, err
		}
		if len(queue) > 0 {
			if err := p.d.Queue.Enqueue(ctx, queue); err != nil {
				return nil, fmt.Errorf("import %s: queue %d provisioning messages: %w", f.Name, len(queue), err)
			}
		}
		if err := p.d.Ledger.SetImportStage(ctx, id, StageEnqueued, disposition); err != nil {
			return nil, fmt.Errorf("import %s: record stage: %w", f.Name, err)
		}
		log.Info("provisioning messages queued", slog.Int("queued", len(queue)))
		// A repeated delivery may find messages of an earlier attempt already handled: when
		// the import settled meanwhile, make sure the report on disk is the final one.
		if !created {
			if cur, err := p.d.Ledger.GetImport(ctx, id); err == nil && cur.Pending == 0 {
				if err := p.writeReport(ctx, id, disposition); err != nil {
					return nil, err
				}
			}
		}
	}

	if stageBefore(imp.Stage, StageDone) {
		// Every valid seed is confirmed in the vault (StageVaulted): the source may leave the inbox.
		if disposition == DispositionRejected {
			target := RejectedName(id, f.Name)
			if err := p.d.Blobs.Reject(ctx, f.Name, f.ETag, f.Content, target); err != nil {
				return nil, fmt.Errorf("import %s: move to seed-rejected/%s: %w", f.Name, target, err)
			}
			log.Warn("file moved to seed-rejected: some rows failed", slog.String("target", target))
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
		Invalid: imp.Invalid, Queued: len(queue), Failed: failed, Disposition: disposition,
		Repeat: !created, Problems: imp.Problems,
	}
	if !created && !stageBefore(imp.Stage, StageEnqueued) {
		res.Queued = 0 // sent by an earlier delivery
	}
	log.Info("import done", slog.Int("rows", res.Rows), slog.Int("valid", res.Valid),
		slog.Int("invalid", res.Invalid), slog.Int("queued", res.Queued), slog.Int("vaultFailed", failed),
		slog.String("disposition", disposition), slog.Bool("repeat", res.Repeat))
	return res, nil
}

// vaultFailurePrefix starts the reason of a valid row the vault refused, so a repeated delivery
// can tell those rows from tokens that failed later, in provisioning.
const vaultFailurePrefix = "not stored in the vault: "

// vaultFile reads f, stores every valid seed in the vault and writes the ledger rows. It returns
// the import record as written (StageVaulted).
func (p *Pipeline) vaultFile(ctx context.Context, log *slog.Logger, imp ImportRecord, f InboxFile) (ImportRecord, error) {
	records, problems, sum, err := p.readFile(f)
	if err != nil {
		return imp, err
	}
	imp.Format, imp.Rows, imp.Valid, imp.Invalid = string(sum.Format), sum.Rows, sum.Valid, sum.Invalid

	byLine := map[int][]seedfile.Problem{}
	for _, pr := range problems {
		if pr.Line <= 0 {
			imp.Problems = append(imp.Problems, pr)
			continue
		}
		byLine[pr.Line] = append(byLine[pr.Line], pr)
	}

	outcomes, err := p.putSeeds(ctx, imp.ImportID, records)
	if err != nil {
		return imp, fmt.Errorf("import %s: store seeds: %w", f.Name, err)
	}

	rows := make([]TokenRecord, 0, len(records)+len(byLine))
	pending := 0
	for i, r := range records {
		row := TokenRecord{
			ImportID: imp.ImportID, Line: r.Line, Serial: r.Token.Serial, Manufacturer: r.Token.Manufacturer,
			Model: r.Token.Model, UserPrincipalName: r.UserPrincipalName, Status: StatusVaulted,
			SeedFingerprint: r.Seed.Fingerprint(), Updated: p.now(),
		}
		if outcomes[i] != nil {
			row.Status, row.Reason = StatusFailed, vaultFailurePrefix+reasonOf(outcomes[i])
		} else {
			pending++
		}
		rows = append(rows, row)
	}
	for line, prs := range byLine {
		row := TokenRecord{ImportID: imp.ImportID, Line: line, Status: StatusRejected, Problems: prs, Updated: p.now()}
		msgs := make([]string, len(prs))
		for i, pr := range prs {
			msgs[i] = pr.Field + ": " + pr.Message
		}
		row.Reason = strings.Join(msgs, "; ")
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Line < rows[j].Line })
	imp.Pending = pending
	if err := p.d.Ledger.PutTokens(ctx, imp, rows); err != nil {
		return imp, fmt.Errorf("import %s: write %d ledger rows: %w", f.Name, len(rows), err)
	}
	imp.Stage = StageVaulted
	log.Info("seeds stored in the vault", slog.String("format", imp.Format), slog.Int("rows", imp.Rows),
		slog.Int("vaulted", pending), slog.Int("invalid", imp.Invalid), slog.Int("fileProblems", len(imp.Problems)))
	return imp, nil
}

// readFile reads and validates the whole file. A file-level failure (not a seed file, wrong
// PSKC key, ...) becomes a Line 0 problem: it is the file's outcome, not a reason to retry.
func (p *Pipeline) readFile(f InboxFile) ([]seedfile.Record, []seedfile.Problem, seedfile.Summary, error) {
	opts := optionsFor(p.d.ReadOptions, f.Metadata)
	var records []seedfile.Record
	var problems []seedfile.Problem
	sum, err := seedfile.Read(bytes.NewReader(f.Content), opts,
		func(r seedfile.Record) error { records = append(records, r); return nil },
		func(pr seedfile.Problem) { problems = append(problems, pr) })
	if err != nil {
		var fe *seedfile.FileError
		if errors.As(err, &fe) {
			problems = append(problems, fe.Problem)
		} else {
			problems = append(problems, seedfile.Problem{Field: "file", Code: "file.unreadable", Message: err.Error()})
		}
	}
	return records, problems, sum, nil
}

// optionsFor applies per-file hints from the blob's user metadata (format, secretencoding, hash)
// over the configured options, so a vendor's hex CSV can be dropped with x-ms-meta-secretencoding=hex.
func optionsFor(base seedfile.Options, md map[string]string) seedfile.Options {
	for k, v := range md {
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "format":
			base.Format = seedfile.Format(strings.ToLower(v))
		case "secretencoding":
			base.SecretEncoding = strings.ToLower(v)
		case "hash":
			base.Hash = token.Hash(strings.ToLower(v))
		}
	}
	return base
}

// putSeeds stores every record's seed with bounded concurrency. It returns one entry per record:
// nil when stored (or already stored), the permanent error otherwise. A transient failure of any
// record is returned as err: the whole import is retried, and storing is idempotent.
func (p *Pipeline) putSeeds(ctx context.Context, importID string, records []seedfile.Record) ([]error, error) {
	outcomes := make([]error, len(records))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		retryErr error
		sem      = make(chan struct{}, p.d.VaultConcurrency)
	)
	for i := range records {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			r := records[i]
			_, err := p.d.Vault.PutSeed(ctx, r.Token, r.Seed, importID)
			if err == nil {
				return
			}
			if retryable(err) {
				mu.Lock()
				if retryErr == nil {
					retryErr = fmt.Errorf("store seed of %s (line %d): %w", r.Token.Serial, r.Line, err)
				}
				mu.Unlock()
				cancel()
				return
			}
			outcomes[i] = err
			p.log.Warn("seed refused by the vault", slog.String("importId", importID),
				slog.String("serial", r.Token.Serial), slog.Int("line", r.Line), slog.String("kind", string(token.KindOf(err))),
				slog.String("requestId", token.RequestIDOf(err)), slog.String("reason", reasonOf(err)))
		}(i)
	}
	wg.Wait()
	if retryErr == nil && ctx.Err() != nil {
		retryErr = ctx.Err()
	}
	return outcomes, retryErr
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
		return te.Error()
	}
	return err.Error()
}
