package ledger

import (
	"context"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// SetTokenOutcome records o on the row (line) of an import: o.Status, o.Reason,
// o.UserPrincipalName and o.UserID replace the row's (an unassigned token has neither user);
// o.DeviceID is kept when empty (the device outlives assignments).
//
// Pending counts the import's unsettled rows: a row that settles decrements it, in one entity
// group transaction with the row, conditional on both ETags and retried on conflict, so
// concurrent workers never lose a count. lastSettled is true exactly for the call that brought
// Pending to zero. Writing the same outcome again writes nothing and returns false.
func (l *Ledger) SetTokenOutcome(ctx context.Context, importID string, line int, o pipeline.Outcome) (bool, error) {
	op := fmt.Sprintf("ledger: record %s on line %d of import %s", o.Status, line, importID)
	if o.Status == "" {
		return false, &token.Error{Kind: token.KindInvalid, Op: op, Message: "empty status"}
	}
	pk, rk := keyFor(importID), lineRowKey(line)
	var last bool
	err := l.retryRace(ctx, op, func() error {
		last = false
		var row rowEntity
		rowTag, err := get(ctx, l.table, pk, rk, &row)
		if err != nil {
			if isNotFound(err) {
				return notFound(op, "no such row", err)
			}
			return err
		}
		next := row
		next.Status, next.Reason, next.UserPrincipalName, next.UserID = o.Status, clip(o.Reason), o.UserPrincipalName, o.UserID
		if len(o.Warnings) > 0 {
			next.Problems = encodeProblems(o.WithWarnings(decodeProblems(row.Problems)))
		}
		if o.DeviceID != "" {
			next.DeviceID = o.DeviceID
		}
		if next == row {
			return nil
		}
		next.Updated = formatTime(l.now())

		delta := 0
		switch was, now := row.Status.Settled(), next.Status.Settled(); {
		case !was && now:
			delta = -1
		case was && !now:
			delta = +1
		}
		var sum summaryEntity
		var sumTag azcore.ETag
		if delta != 0 {
			if sumTag, err = get(ctx, l.table, pk, summaryRow, &sum); err != nil {
				return err
			}
			if sum.Stage == pipeline.StageStarted {
				delta = 0 // not sealed yet: SealImport sets Pending (no message is queued before it)
			}
		}
		if delta == 0 {
			_, err = l.table.UpdateEntity(ctx, mustJSON(next), &aztables.UpdateEntityOptions{IfMatch: &rowTag, UpdateMode: aztables.UpdateModeReplace})
			return err
		}
		sum.Pending += delta
		if sum.Pending < 0 {
			l.log.WarnContext(ctx, "ledger: pending count would go below zero; kept at zero", "importId", importID, "line", line)
			sum.Pending = 0
		}
		sum.Updated = next.Updated
		_, err = l.table.SubmitTransaction(ctx, []aztables.TransactionAction{
			{ActionType: aztables.TransactionTypeUpdateReplace, Entity: mustJSON(next), IfMatch: &rowTag},
			{ActionType: aztables.TransactionTypeUpdateReplace, Entity: mustJSON(sum), IfMatch: &sumTag},
		}, nil)
		if err == nil {
			last = delta < 0 && sum.Pending == 0
		}
		return err
	})
	if err != nil {
		return false, classify(op, err)
	}
	if last {
		l.log.InfoContext(ctx, "ledger: import settled", "importId", importID, "line", line)
	}
	return last, nil
}
