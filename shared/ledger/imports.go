package ledger

import (
	"context"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// BeginImport stores rec (Stage StageStarted) if no import with rec.ImportID exists and
// returns it with created=true; otherwise it returns the stored record, unchanged. A new import
// becomes its file name's latest (ImportByName) unless a newer one already is.
func (l *Ledger) BeginImport(ctx context.Context, rec pipeline.ImportRecord) (pipeline.ImportRecord, bool, error) {
	op := "ledger: begin import " + rec.ImportID + " of " + rec.FileName
	if rec.ImportID == "" {
		return pipeline.ImportRecord{}, false, &token.Error{Kind: token.KindInvalid, Op: op, Message: "empty import id"}
	}
	now := l.now()
	if rec.Created.IsZero() {
		rec.Created = now
	}
	e := summaryEntity{
		PartitionKey: keyFor(rec.ImportID), RowKey: summaryRow, Kind: "import",
		ImportID: rec.ImportID, FileName: rec.FileName, BlobETag: rec.ETag, Stage: pipeline.StageStarted,
		Format: rec.Format, Rows: rec.Rows, Valid: rec.Valid, Invalid: rec.Invalid,
		Problems: encodeProblems(rec.Problems), Disposition: rec.Disposition,
		Created: formatTime(rec.Created), Updated: formatTime(now),
	}
	if _, err := l.table.AddEntity(ctx, mustJSON(e), nil); err != nil {
		if !isExists(err) {
			return pipeline.ImportRecord{}, false, classify(op, err)
		}
		cur, err := l.GetImport(ctx, rec.ImportID)
		if err == nil {
			// A crash between the two writes left the index behind: catch up.
			err = l.pointIndex(ctx, fileIndexPart, rec.FileName, cur.ImportID, 0, cur.Created)
		}
		return cur, false, err
	}
	if err := l.pointIndex(ctx, fileIndexPart, rec.FileName, rec.ImportID, 0, rec.Created); err != nil {
		return pipeline.ImportRecord{}, false, err
	}
	l.log.InfoContext(ctx, "ledger: import recorded", logctx.ImportID, rec.ImportID, logctx.File, rec.FileName)
	return e.record(), true, nil
}

// GetImport returns one import (KindNotFound when absent).
func (l *Ledger) GetImport(ctx context.Context, importID string) (pipeline.ImportRecord, error) {
	op := "ledger: read import " + importID
	var e summaryEntity
	if _, err := get(ctx, l.table, keyFor(importID), summaryRow, &e); err != nil {
		if isNotFound(err) {
			return pipeline.ImportRecord{}, notFound(op, "no such import", err)
		}
		return pipeline.ImportRecord{}, classify(op, err)
	}
	return e.record(), nil
}

// updateSummary applies change to the import's summary and writes it back, conditional on its
// ETag and retried on conflict, when change reports that it changed something. A missing
// import is KindNotFound.
func (l *Ledger) updateSummary(ctx context.Context, op, importID string, change func(*summaryEntity) bool) error {
	err := l.retryRace(ctx, op, func() error {
		var e summaryEntity
		etag, err := get(ctx, l.table, keyFor(importID), summaryRow, &e)
		if err != nil {
			if isNotFound(err) {
				return notFound(op, "no such import (BeginImport first)", err)
			}
			return err
		}
		if !change(&e) {
			return nil
		}
		_, err = l.table.UpdateEntity(ctx, mustJSON(e), &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		return err
	})
	return classify(op, err)
}

// SetImportStage moves the import to stage (never back) and records disposition when not
// empty. It leaves Pending alone (a conditional update, retried on conflict).
func (l *Ledger) SetImportStage(ctx context.Context, importID string, stage pipeline.Stage, disposition string) error {
	op := "ledger: import " + importID + " to stage " + string(stage)
	if !stage.Known() {
		return &token.Error{Kind: token.KindInvalid, Op: op, Message: "unknown stage"}
	}
	return l.updateSummary(ctx, op, importID, func(e *summaryEntity) bool {
		changed := false
		if e.Stage.Before(stage) {
			e.Stage, changed = stage, true
		}
		if disposition != "" && disposition != e.Disposition {
			e.Disposition, changed = disposition, true
		}
		if changed {
			e.Updated = formatTime(l.now())
		}
		return changed
	})
}

// ClaimNotification implements pipeline.Ledger: a conditional update of the import's Notified,
// retried on conflict, so one caller across instances wins each key. It leaves Updated alone:
// a claim is not a change of the import.
func (l *Ledger) ClaimNotification(ctx context.Context, importID, key string) (bool, error) {
	op := "ledger: claim the notification of import " + importID
	first := false
	err := l.updateSummary(ctx, op, importID, func(e *summaryEntity) bool {
		first = e.Notified != key // per attempt: the last one, which wrote, decides
		e.Notified = key
		return first
	})
	return first && err == nil, err
}

// SetImportCheckpoint records that every row of the import up to line is stored in the vault
// and queued, so a continuation resumes after it, and adds refused (the rows the vault refused
// since the last checkpoint) to the import's Refused count in the same update. The checkpoint
// never moves back, and a line not past it changes nothing, so a repeated chunk is never
// counted twice (a conditional update, retried on conflict).
func (l *Ledger) SetImportCheckpoint(ctx context.Context, importID string, line, refused int) error {
	op := fmt.Sprintf("ledger: checkpoint import %s at line %d", importID, line)
	return l.updateSummary(ctx, op, importID, func(e *summaryEntity) bool {
		if line <= e.Checkpoint {
			return false
		}
		e.Checkpoint = line
		e.Refused += refused
		e.Updated = formatTime(l.now())
		return true
	})
}

// SealImport records imp's file facts (Format, Rows, Valid, Invalid, Problems, and Disposition
// when set) on its summary and — only while the import is still at StageStarted — sets Pending
// to imp.Pending and moves it to StageVaulted. The pipeline writes every row with AddTokens
// first and queues no message before this, so no row can have settled yet and imp.Pending (the
// valid rows) is the count; a repeat after the stage moved changes no count.
func (l *Ledger) SealImport(ctx context.Context, imp pipeline.ImportRecord) error {
	op := "ledger: record the facts of import " + imp.ImportID
	return l.updateSummary(ctx, op, imp.ImportID, func(e *summaryEntity) bool {
		e.Format, e.Rows, e.Valid, e.Invalid = imp.Format, imp.Rows, imp.Valid, imp.Invalid
		e.Problems = encodeProblems(imp.Problems)
		if imp.Disposition != "" {
			e.Disposition = imp.Disposition
		}
		if e.Stage == pipeline.StageStarted {
			e.Pending = max(imp.Pending, 0)
			e.Stage = pipeline.StageVaulted
		}
		e.Updated = formatTime(l.now())
		return true
	})
}
