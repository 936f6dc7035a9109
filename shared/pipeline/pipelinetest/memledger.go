package pipelinetest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// MemLedger is an in-memory pipeline.Ledger that counts and settles rows as the Table storage
// ledger (package ledger) does; both pass the contract suite in internal/ledgertest. For
// flow tests that run without Azurite.
type MemLedger struct {
	mu      sync.Mutex
	imports map[string]*pipeline.ImportRecord
	rows    map[string]map[int]*pipeline.TokenRecord
	// statuses replaces rows in a ledger made by NewStatusOnlyLedger: a status code (an index
	// into rowStatuses) by line.
	statuses map[string][]byte
	byName   map[string]memIndex // the latest import of a file name
	serials  map[string]memIndex // the latest non-rejected row of a serial
	notified map[string]string   // ClaimNotification's key per import
	Audits   []pipeline.AuditRecord
	now      func() time.Time
}

// memIndex points a file name or a serial at an import (and a line), like the Table ledger's
// index entities.
type memIndex struct {
	importID string
	line     int
	created  time.Time
}

// NewMemLedger returns an empty ledger.
func NewMemLedger() *MemLedger {
	return &MemLedger{
		imports: map[string]*pipeline.ImportRecord{}, rows: map[string]map[int]*pipeline.TokenRecord{},
		byName: map[string]memIndex{}, serials: map[string]memIndex{}, notified: map[string]string{}, now: time.Now,
	}
}

// NewStatusOnlyLedger returns an empty MemLedger that keeps of each row its status only, one
// byte a row: the ledger of memory benchmarks of big imports, where a full record a row would
// outweigh what the pipeline itself holds. It counts and settles like any MemLedger, but its
// rows read back with ImportID, Line and Status only, and TokenBySerial finds nothing.
func NewStatusOnlyLedger() *MemLedger {
	l := NewMemLedger()
	l.rows, l.statuses = nil, map[string][]byte{}
	return l
}

// rowStatuses are the codes of a status-only ledger's rows (0: no row).
var rowStatuses = [...]pipeline.RowStatus{"", pipeline.StatusRejected, pipeline.StatusVaulted, pipeline.StatusQueued,
	pipeline.StatusAvailable, pipeline.StatusAssigned, pipeline.StatusActivated, pipeline.StatusFailed, pipeline.StatusRetired}

func statusCode(s pipeline.RowStatus) (byte, error) {
	for i, x := range rowStatuses {
		if x == s && i > 0 {
			return byte(i), nil
		}
	}
	return 0, token.Errorf(token.KindInvalid, "status-only ledger: unknown status %q", s)
}

// row returns line of import id. The caller holds l.mu.
func (l *MemLedger) row(id string, line int) (pipeline.TokenRecord, bool) {
	if l.statuses == nil {
		r, ok := l.rows[id][line]
		if !ok {
			return pipeline.TokenRecord{}, false
		}
		return *r, true
	}
	st := l.statuses[id]
	if line < 0 || line >= len(st) || st[line] == 0 {
		return pipeline.TokenRecord{}, false
	}
	return pipeline.TokenRecord{ImportID: id, Line: line, Status: rowStatuses[st[line]]}, true
}

// setRow stores r as line r.Line of import r.ImportID. The caller holds l.mu.
func (l *MemLedger) setRow(r pipeline.TokenRecord) error {
	if l.statuses == nil {
		m := l.rows[r.ImportID]
		if m == nil {
			m = map[int]*pipeline.TokenRecord{}
			l.rows[r.ImportID] = m
		}
		m[r.Line] = &r
		return nil
	}
	c, err := statusCode(r.Status)
	if err != nil {
		return err
	}
	st := l.statuses[r.ImportID]
	for len(st) <= r.Line {
		st = append(st, 0)
	}
	st[r.Line] = c
	l.statuses[r.ImportID] = st
	return nil
}

func notFound(what string) error { return token.Errorf(token.KindNotFound, "%s not found", what) }

// point moves idx[name] to want unless it points at another import created later.
func point(idx map[string]memIndex, name string, want memIndex) {
	if cur, ok := idx[name]; ok && cur.importID != want.importID && cur.created.After(want.created) {
		return
	}
	idx[name] = want
}

// BeginImport implements pipeline.Ledger. Like the Table ledger it stores the file facts of rec,
// not its counts: Pending, Checkpoint and Refused start at zero.
func (l *MemLedger) BeginImport(_ context.Context, rec pipeline.ImportRecord) (pipeline.ImportRecord, bool, error) {
	if rec.ImportID == "" {
		return pipeline.ImportRecord{}, false, token.Errorf(token.KindInvalid, "begin import of %s: empty import id", rec.FileName)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.imports[rec.ImportID]; ok {
		return *cur, false, nil
	}
	now := l.now()
	if rec.Created.IsZero() {
		rec.Created = now
	}
	rec.Stage, rec.Updated = pipeline.StageStarted, now
	rec.Pending, rec.Checkpoint, rec.Refused = 0, 0, 0
	l.imports[rec.ImportID] = &rec
	point(l.byName, rec.FileName, memIndex{importID: rec.ImportID, created: rec.Created})
	return rec, true, nil
}

// AddTokens implements pipeline.Ledger.
func (l *MemLedger) AddTokens(_ context.Context, imp pipeline.ImportRecord, rows []pipeline.TokenRecord) error {
	if len(rows) == 0 {
		return nil
	}
	for _, r := range rows {
		if r.Line < 0 || r.Status == "" {
			return token.Errorf(token.KindInvalid, "write rows of import %s: row with line %d and status %q", imp.ImportID, r.Line, r.Status)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.imports[imp.ImportID]
	if !ok {
		return notFound("import " + imp.ImportID)
	}
	indexed := map[string]bool{}
	for _, r := range rows {
		if _, ok := l.row(imp.ImportID, r.Line); !ok {
			r.ImportID = imp.ImportID
			if r.Updated.IsZero() {
				r.Updated = l.now()
			}
			if err := l.setRow(r); err != nil {
				return err
			}
		}
		if l.statuses == nil && r.Status != pipeline.StatusRejected && r.Serial != "" && !indexed[r.Serial] {
			indexed[r.Serial] = true
			point(l.serials, r.Serial, memIndex{importID: imp.ImportID, line: r.Line, created: cur.Created})
		}
	}
	return nil
}

// SealImport implements pipeline.Ledger.
func (l *MemLedger) SealImport(_ context.Context, imp pipeline.ImportRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.imports[imp.ImportID]
	if !ok {
		return notFound("import " + imp.ImportID)
	}
	cur.Format, cur.Rows, cur.Valid, cur.Invalid, cur.Problems = imp.Format, imp.Rows, imp.Valid, imp.Invalid, imp.Problems
	if imp.Disposition != "" {
		cur.Disposition = imp.Disposition
	}
	if cur.Stage == pipeline.StageStarted {
		cur.Pending = max(imp.Pending, 0)
		cur.Stage = pipeline.StageVaulted
	}
	cur.Updated = l.now()
	return nil
}

// EachToken implements pipeline.Ledger. fn runs without the ledger's lock held, so it may call
// the ledger.
func (l *MemLedger) EachToken(_ context.Context, id string, from, to int, fn func(pipeline.TokenRecord) error) error {
	if l.statuses != nil {
		return l.eachStatus(id, from, to, fn)
	}
	l.mu.Lock()
	var out []pipeline.TokenRecord
	for _, r := range l.rows[id] {
		if r.Line >= from && (to <= 0 || r.Line <= to) {
			out = append(out, *r)
		}
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	for _, r := range out {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// eachStatus is EachToken of a status-only ledger: row by row, holding nothing of the import.
func (l *MemLedger) eachStatus(id string, from, to int, fn func(pipeline.TokenRecord) error) error {
	for line := max(from, 0); to <= 0 || line <= to; line++ {
		l.mu.Lock()
		n := len(l.statuses[id])
		r, ok := l.row(id, line)
		l.mu.Unlock()
		if line >= n {
			return nil
		}
		if !ok {
			continue
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// SetImportStage implements pipeline.Ledger.
func (l *MemLedger) SetImportStage(_ context.Context, id string, stage pipeline.Stage, disposition string) error {
	if !stage.Known() {
		return token.Errorf(token.KindInvalid, "import %s to stage %q: unknown stage", id, stage)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.imports[id]
	if !ok {
		return notFound("import " + id)
	}
	changed := false
	if cur.Stage.Before(stage) {
		cur.Stage, changed = stage, true
	}
	if disposition != "" && disposition != cur.Disposition {
		cur.Disposition, changed = disposition, true
	}
	if changed {
		cur.Updated = l.now()
	}
	return nil
}

// SetImportCheckpoint implements pipeline.Ledger.
func (l *MemLedger) SetImportCheckpoint(_ context.Context, id string, line, refused int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.imports[id]
	if !ok {
		return notFound("import " + id)
	}
	if line > cur.Checkpoint {
		cur.Checkpoint = line
		cur.Refused += refused
		cur.Updated = l.now()
	}
	return nil
}

// GetImport implements pipeline.Ledger.
func (l *MemLedger) GetImport(_ context.Context, id string) (pipeline.ImportRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.imports[id]; ok {
		return *cur, nil
	}
	return pipeline.ImportRecord{}, notFound("import " + id)
}

// ImportByName implements pipeline.Ledger.
func (l *MemLedger) ImportByName(_ context.Context, name string) (pipeline.ImportRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if idx, ok := l.byName[name]; ok {
		return *l.imports[idx.importID], nil
	}
	return pipeline.ImportRecord{}, notFound("import of " + name)
}

// ListTokens implements pipeline.Ledger.
func (l *MemLedger) ListTokens(ctx context.Context, id string) ([]pipeline.TokenRecord, error) {
	var out []pipeline.TokenRecord
	err := l.EachToken(ctx, id, 0, 0, func(r pipeline.TokenRecord) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// GetToken implements pipeline.Ledger.
func (l *MemLedger) GetToken(_ context.Context, id string, line int) (pipeline.TokenRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.row(id, line); ok {
		return r, nil
	}
	return pipeline.TokenRecord{}, notFound(fmt.Sprintf("line %d of %s", line, id))
}

// TokenBySerial implements pipeline.Ledger.
func (l *MemLedger) TokenBySerial(_ context.Context, serial string) (pipeline.TokenRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if idx, ok := l.serials[serial]; ok {
		if r, ok := l.row(idx.importID, idx.line); ok {
			return r, nil
		}
	}
	return pipeline.TokenRecord{}, notFound("token " + serial)
}

// SetTokenOutcome implements pipeline.Ledger. As in the Table ledger, a row that settles counts
// down its import's Pending and one that stops being settled counts it up again, both only
// once the import is past StageStarted (SealImport counts Pending then); Pending never goes
// below zero, and the same outcome again changes nothing.
func (l *MemLedger) SetTokenOutcome(_ context.Context, id string, line int, o pipeline.Outcome) (bool, error) {
	if o.Status == "" {
		return false, token.Errorf(token.KindInvalid, "record an outcome on line %d of import %s: empty status", line, id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.row(id, line)
	if !ok {
		return false, notFound(fmt.Sprintf("line %d of %s", line, id))
	}
	next := r
	next.Status, next.Reason, next.UserPrincipalName, next.UserID = o.Status, o.Reason, o.UserPrincipalName, o.UserID
	next.Cause = o.Cause
	if o.DeviceID != "" {
		next.DeviceID = o.DeviceID
	}
	next.Problems = o.WithWarnings(r.Problems)
	if l.statuses != nil {
		next = pipeline.TokenRecord{ImportID: id, Line: line, Status: o.Status}
	}
	if reflect.DeepEqual(next, r) {
		return false, nil
	}
	next.Updated = l.now()
	if err := l.setRow(next); err != nil {
		return false, err
	}
	delta := r.Status.PendingDelta(next.Status)
	imp := l.imports[id]
	if imp == nil || imp.Stage == pipeline.StageStarted || delta == 0 {
		return false, nil
	}
	imp.Pending = max(imp.Pending+delta, 0)
	return delta < 0 && imp.Pending == 0, nil
}

// ClaimNotification implements pipeline.Ledger.
func (l *MemLedger) ClaimNotification(_ context.Context, id, key string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.imports[id]; !ok {
		return false, notFound("import " + id)
	}
	if l.notified[id] == key {
		return false, nil
	}
	l.notified[id] = key
	return true, nil
}

// Audit implements pipeline.Ledger.
func (l *MemLedger) Audit(_ context.Context, a pipeline.AuditRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a.Time.IsZero() {
		a.Time = l.now()
	}
	l.Audits = append(l.Audits, a)
	return nil
}

// AuditLog returns the audit records written so far.
func (l *MemLedger) AuditLog() []pipeline.AuditRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]pipeline.AuditRecord(nil), l.Audits...)
}

// Dump is everything the ledger holds, as JSON, for the leak scan.
func (l *MemLedger) Dump() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, _ := json.Marshal([]any{l.imports, l.rows, l.statuses, l.Audits})
	return b
}
