package ledger

import (
	"cmp"
	"context"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// pointIndex makes the index row for name (a file name or a serial) point at importID/line,
// unless it already points at an import created later. Conditional, so two imports racing for
// the same name end with the newer one.
func (l *Ledger) pointIndex(ctx context.Context, part, name, importID string, line int, created time.Time) error {
	op := "ledger: index " + name
	kind := "file-index"
	if part == serialIndexPart {
		kind = "serial-index"
	}
	want := indexEntity{PartitionKey: part, RowKey: keyFor(name), Kind: kind, Name: name, ImportID: importID, Line: line, Created: formatTime(created)}
	err := l.retryRace(ctx, op, func() error {
		var cur indexEntity
		etag, err := get(ctx, l.table, part, want.RowKey, &cur)
		switch {
		case isNotFound(err):
			_, err = l.table.AddEntity(ctx, mustJSON(want), nil)
			return err
		case err != nil:
			return err
		}
		if cur == want || (cur.Name == name && cur.ImportID != importID && parseTime(cur.Created).After(created)) {
			return nil
		}
		_, err = l.table.UpdateEntity(ctx, mustJSON(want), &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		return err
	})
	return classify(op, err)
}

// indexSerials points the serial index at the non-rejected rows of an import. Most serials are
// new to the ledger, so rows are first inserted 100 to a transaction (the index is one
// partition); a batch that meets an existing serial falls back to the conditional, one at a
// time pointIndex for its rows, several at once.
func (l *Ledger) indexSerials(ctx context.Context, importID string, created time.Time, rows []pipeline.TokenRecord) error {
	var want []indexEntity
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Status == pipeline.StatusRejected || r.Serial == "" || seen[keyFor(r.Serial)] {
			continue
		}
		seen[keyFor(r.Serial)] = true
		want = append(want, indexEntity{PartitionKey: serialIndexPart, RowKey: keyFor(r.Serial), Kind: "serial-index",
			Name: r.Serial, ImportID: importID, Line: r.Line, Created: formatTime(created)})
	}
	const batch, workers = 100, 8
	for start := 0; start < len(want); start += batch {
		part := want[start:min(start+batch, len(want))]
		acts := make([]aztables.TransactionAction, len(part))
		for i, e := range part {
			acts[i] = aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: mustJSON(e)}
		}
		_, err := l.table.SubmitTransaction(ctx, acts, nil)
		if err == nil {
			continue
		}
		if !isLostRace(err) {
			return classify("ledger: index the serials of import "+importID, err)
		}
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			first error
			sem   = make(chan struct{}, workers)
		)
		for _, e := range part {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := l.pointIndex(ctx, serialIndexPart, e.Name, e.ImportID, e.Line, created); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if first != nil {
			return first
		}
	}
	return nil
}

// ImportByName returns the latest import (by Created) of a file name (KindNotFound when none).
func (l *Ledger) ImportByName(ctx context.Context, fileName string) (pipeline.ImportRecord, error) {
	idx, err := l.lookup(ctx, fileIndexPart, fileName, "ledger: find import of "+fileName, "no import of this file")
	if err != nil {
		return pipeline.ImportRecord{}, err
	}
	return l.GetImport(ctx, idx.ImportID)
}

// lookup reads the index entry of name in the index partition part: KindNotFound (missing)
// when there is none, or when the entry is another name's (only possible for a hashed key:
// checked anyway).
func (l *Ledger) lookup(ctx context.Context, part, name, op, missing string) (indexEntity, error) {
	var idx indexEntity
	if _, err := get(ctx, l.table, part, keyFor(name), &idx); err != nil {
		if isNotFound(err) {
			return indexEntity{}, notFound(op, missing, err)
		}
		return indexEntity{}, classify(op, err)
	}
	if idx.Name != name {
		return indexEntity{}, notFound(op, missing, nil)
	}
	return idx, nil
}

// TokenBySerial returns the row of the latest import that holds serial on a non-rejected line
// (KindNotFound when none).
func (l *Ledger) TokenBySerial(ctx context.Context, serial string) (pipeline.TokenRecord, error) {
	idx, err := l.lookup(ctx, serialIndexPart, serial, "ledger: find token "+serial, "the ledger has no token with this serial")
	if err != nil {
		return pipeline.TokenRecord{}, err
	}
	return l.GetToken(ctx, idx.ImportID, idx.Line)
}
