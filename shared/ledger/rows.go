package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// AddTokens writes one chunk of the rows of imp's file (in transactions of up to 100 rows)
// and points the serial index at its non-rejected rows; it leaves the summary alone (SealImport
// ends the recording). An import BeginImport did not store is KindNotFound. Rows already stored are left as they are: a transaction that meets one
// (a repeat after a crash part way) reads back the lines of its own range, one query, and
// writes only the missing rows. Nothing is read of the rest of the import, so recording a big
// file in chunks costs the same per chunk from its first line to its last.
func (l *Ledger) AddTokens(ctx context.Context, imp pipeline.ImportRecord, rows []pipeline.TokenRecord) error {
	op := fmt.Sprintf("ledger: write %d rows of import %s", len(rows), imp.ImportID)
	if len(rows) == 0 {
		return nil
	}
	fresh, err := l.freshRows(op, imp.ImportID, rows)
	if err != nil {
		return err
	}
	// The stored import, not the caller's copy: rows belong to an import BeginImport stored, and
	// the serial index compares the Created it stored (one read a chunk).
	cur, err := l.GetImport(ctx, imp.ImportID)
	if err != nil {
		return err
	}
	pk := keyFor(imp.ImportID)
	for _, part := range batches(fresh, func(r pipeline.TokenRecord) int { return len(mustJSON(newRowEntity(pk, r))) }) {
		if err := l.retryRace(ctx, op, func() error { return l.insertRows(ctx, imp.ImportID, &part) }); err != nil {
			return classify(op, err)
		}
	}
	if err := l.indexSerials(ctx, imp.ImportID, cur.Created, rows); err != nil {
		return err
	}
	l.log.DebugContext(ctx, "ledger: rows written", logctx.ImportID, imp.ImportID, "rows", len(rows))
	return nil
}

// freshRows checks rows and returns them ready to store: the first of each line only, each
// with importID and an Updated time.
func (l *Ledger) freshRows(op, importID string, rows []pipeline.TokenRecord) ([]pipeline.TokenRecord, error) {
	fresh := make([]pipeline.TokenRecord, 0, len(rows))
	seen := make(map[int]bool, len(rows))
	for _, r := range rows {
		if r.Line < 0 || r.Status == "" {
			return nil, &token.Error{Kind: token.KindInvalid, Op: op, Message: fmt.Sprintf("row with line %d and status %q", r.Line, r.Status)}
		}
		if seen[r.Line] {
			continue
		}
		seen[r.Line] = true
		r.ImportID = importID
		if r.Updated.IsZero() {
			r.Updated = l.now()
		}
		fresh = append(fresh, r)
	}
	return fresh, nil
}

// insertRows adds the rows of *part in one entity group transaction. When some of them are
// stored already (a repeat after a crash part way, or a concurrent delivery of the import), it
// keeps only the missing rows in *part and returns the lost race, so that retryRace tries again.
func (l *Ledger) insertRows(ctx context.Context, importID string, part *[]pipeline.TokenRecord) error {
	if len(*part) == 0 {
		return nil
	}
	pk := keyFor(importID)
	acts := make([]aztables.TransactionAction, 0, len(*part))
	for _, r := range *part {
		acts = append(acts, aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: mustJSON(newRowEntity(pk, r))})
	}
	_, err := l.table.SubmitTransaction(ctx, acts, nil)
	if err == nil || !isLostRace(err) {
		return err
	}
	missing, rerr := l.missingRows(ctx, importID, *part)
	if rerr != nil {
		return rerr
	}
	if *part = missing; len(missing) == 0 {
		return nil
	}
	return err
}

// missingRows returns the rows of part not stored yet, reading back the lines of part's range
// only (one query).
func (l *Ledger) missingRows(ctx context.Context, importID string, part []pipeline.TokenRecord) ([]pipeline.TokenRecord, error) {
	lo, hi := part[0].Line, part[0].Line
	for _, r := range part {
		lo, hi = min(lo, r.Line), max(hi, r.Line)
	}
	have := map[int]bool{}
	if err := l.eachRow(ctx, importID, lo, max(hi, 1), func(r pipeline.TokenRecord) error {
		have[r.Line] = true
		return nil
	}); err != nil {
		return nil, err
	}
	var missing []pipeline.TokenRecord
	for _, r := range part {
		if !have[r.Line] {
			missing = append(missing, r)
		}
	}
	return missing, nil
}

// EachToken calls fn with the import's rows whose line is in [from, to] (to <= 0: to the end),
// in line order, one page of the Table service (up to 1,000 entities) at a time.
func (l *Ledger) EachToken(ctx context.Context, importID string, from, to int, fn func(pipeline.TokenRecord) error) error {
	err := l.eachRow(ctx, importID, from, to, fn)
	var te *token.Error
	if err != nil && !errors.As(err, &te) {
		return classify("ledger: list rows of import "+importID, err)
	}
	return err
}

// eachRow lists the row entities of an import with a line in [from, to] (to <= 0: all), in
// line order (the row keys sort by line).
func (l *Ledger) eachRow(ctx context.Context, importID string, from, to int, fn func(pipeline.TokenRecord) error) error {
	lo := odataString(lineRowPrefix)
	if from > 0 {
		lo = odataString(lineRowKey(from))
	}
	filter := "PartitionKey eq " + odataString(keyFor(importID)) + " and RowKey ge " + lo
	if to > 0 {
		filter += " and RowKey le " + odataString(lineRowKey(to))
	} else {
		filter += " and RowKey lt " + odataString(lineRowPrefix[:len(lineRowPrefix)-1]+string(lineRowPrefix[len(lineRowPrefix)-1]+1))
	}
	pager := l.table.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, raw := range page.Entities {
			var e rowEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("decode row entity: %w", err)
			}
			if err := fn(e.record()); err != nil {
				return err
			}
		}
	}
	return nil
}

// ListTokens returns an import's rows, ordered by line.
func (l *Ledger) ListTokens(ctx context.Context, importID string) ([]pipeline.TokenRecord, error) {
	var out []pipeline.TokenRecord
	if err := l.eachRow(ctx, importID, 0, 0, func(r pipeline.TokenRecord) error {
		out = append(out, r)
		return nil
	}); err != nil {
		return nil, classify("ledger: list rows of import "+importID, err)
	}
	return out, nil
}

// GetToken returns one row (KindNotFound when absent).
func (l *Ledger) GetToken(ctx context.Context, importID string, line int) (pipeline.TokenRecord, error) {
	op := fmt.Sprintf("ledger: read line %d of import %s", line, importID)
	var e rowEntity
	if _, err := get(ctx, l.table, keyFor(importID), lineRowKey(line), &e); err != nil {
		if isNotFound(err) {
			return pipeline.TokenRecord{}, notFound(op, "no such row", err)
		}
		return pipeline.TokenRecord{}, classify(op, err)
	}
	return e.record(), nil
}
