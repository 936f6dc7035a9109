package ledger

import (
	"context"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// SetTokenOutcome records o on the row (line) of an import: o.Status, o.Reason, o.Cause,
// o.UserPrincipalName and o.UserID replace the row's (an unassigned token has neither user);
// o.DeviceID is kept when empty (the device outlives assignments); o.Warnings join the row's
// problems, each once by code.
//
// Pending counts the import's unsettled rows: once the import is sealed (past StageStarted), a
// row that settles decrements it and one that stops being settled increments it, in one entity
// group transaction with the row, conditional on both ETags and retried on conflict, so
// concurrent workers never lose a count; it never goes below zero. lastSettled is true exactly
// for a call that settled a row and left Pending at zero. Writing the same outcome again writes
// nothing and returns false.
func (l *Ledger) SetTokenOutcome(ctx context.Context, importID string, line int, o pipeline.Outcome) (bool, error) {
	op := fmt.Sprintf("ledger: record %s on line %d of import %s", o.Status, line, importID)
	if o.Status == "" {
		return false, &token.Error{Kind: token.KindInvalid, Op: op, Message: "empty status"}
	}
	var last bool
	err := l.retryRace(ctx, op, func() (err error) {
		last, err = l.recordOutcome(ctx, op, importID, line, o)
		return err
	})
	if err != nil {
		return false, classify(op, err)
	}
	if last {
		l.log.InfoContext(ctx, "ledger: import settled", logctx.ImportID, importID, logctx.Line, line)
	}
	return last, nil
}

// recordOutcome is one try of SetTokenOutcome: it reads the row (and, when the count moves, the
// summary) and writes them back conditional on their ETags.
func (l *Ledger) recordOutcome(ctx context.Context, op, importID string, line int, o pipeline.Outcome) (last bool, err error) {
	pk := keyFor(importID)
	var row rowEntity
	rowTag, err := get(ctx, l.table, pk, lineRowKey(line), &row)
	if err != nil {
		if isNotFound(err) {
			return false, notFound(op, "no such row", err)
		}
		return false, err
	}
	next := withOutcome(row, o)
	if next == row {
		return false, nil
	}
	next.Updated = formatTime(l.now())
	delta := row.Status.PendingDelta(next.Status)
	var sum summaryEntity
	var sumTag azcore.ETag
	if delta != 0 {
		if sumTag, err = get(ctx, l.table, pk, summaryRow, &sum); err != nil {
			return false, err
		}
		if sum.Stage == pipeline.StageStarted {
			delta = 0 // not sealed yet: SealImport sets Pending (no message is queued before it)
		}
	}
	if delta == 0 {
		_, err = l.table.UpdateEntity(ctx, mustJSON(next), &aztables.UpdateEntityOptions{IfMatch: &rowTag, UpdateMode: aztables.UpdateModeReplace})
		return false, err
	}
	sum.Pending += delta
	if sum.Pending < 0 {
		l.log.WarnContext(ctx, "ledger: pending count would go below zero; kept at zero", logctx.ImportID, importID, logctx.Line, line)
		sum.Pending = 0
	}
	sum.Updated = next.Updated
	_, err = l.table.SubmitTransaction(ctx, []aztables.TransactionAction{
		{ActionType: aztables.TransactionTypeUpdateReplace, Entity: mustJSON(next), IfMatch: &rowTag},
		{ActionType: aztables.TransactionTypeUpdateReplace, Entity: mustJSON(sum), IfMatch: &sumTag},
	}, nil)
	return err == nil && delta < 0 && sum.Pending == 0, err
}

// withOutcome is row with o recorded on it.
func withOutcome(row rowEntity, o pipeline.Outcome) rowEntity {
	next := row
	next.Status, next.Reason, next.UserPrincipalName, next.UserID = o.Status, clip(o.Reason), o.UserPrincipalName, o.UserID
	next.Cause = string(o.Cause)
	if len(o.Warnings) > 0 {
		next.Problems = encodeProblems(o.WithWarnings(decodeProblems(row.Problems)))
	}
	if o.DeviceID != "" {
		next.DeviceID = o.DeviceID
	}
	return next
}
