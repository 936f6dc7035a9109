package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/oathpipe/oathpipe/shared/token"
)

// memLedger is an in-memory Ledger with the contract's semantics, for flow tests that run
// before (and beside) the Table storage adapter.
type memLedger struct {
	mu      sync.Mutex
	imports map[string]*ImportRecord
	rows    map[string]map[int]*TokenRecord
	audits  []AuditRecord
}

func newMemLedger() *memLedger {
	return &memLedger{imports: map[string]*ImportRecord{}, rows: map[string]map[int]*TokenRecord{}}
}

func notFound(what string) error { return token.Errorf(token.KindNotFound, "%s not found", what) }

func (l *memLedger) BeginImport(_ context.Context, rec ImportRecord) (ImportRecord, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.imports[rec.ImportID]; ok {
		return *cur, false, nil
	}
	rec.Stage = StageStarted
	l.imports[rec.ImportID] = &rec
	return rec, true, nil
}

func (l *memLedger) PutTokens(_ context.Context, imp ImportRecord, rows []TokenRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.imports[imp.ImportID]
	if !ok {
		return notFound("import " + imp.ImportID)
	}
	m := l.rows[imp.ImportID]
	if m == nil {
		m = map[int]*TokenRecord{}
		l.rows[imp.ImportID] = m
	}
	for _, r := range rows {
		if _, ok := m[r.Line]; !ok {
			r := r
			m[r.Line] = &r
		}
	}
	cur.Format, cur.Rows, cur.Valid, cur.Invalid, cur.Problems = imp.Format, imp.Rows, imp.Valid, imp.Invalid, imp.Problems
	if cur.Stage == StageStarted {
		cur.Pending = imp.Pending
		cur.Stage = StageVaulted
	}
	return nil
}

func (l *memLedger) SetImportStage(_ context.Context, id, stage, disposition string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.imports[id]
	if !ok {
		return notFound("import " + id)
	}
	if stageBefore(cur.Stage, stage) {
		cur.Stage = stage
	}
	if disposition != "" {
		cur.Disposition = disposition
	}
	return nil
}

func (l *memLedger) GetImport(_ context.Context, id string) (ImportRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.imports[id]; ok {
		return *cur, nil
	}
	return ImportRecord{}, notFound("import " + id)
}

func (l *memLedger) ImportByName(_ context.Context, name string) (ImportRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *ImportRecord
	for _, r := range l.imports {
		if r.FileName == name && (best == nil || !r.Created.Before(best.Created)) {
			best = r
		}
	}
	if best == nil {
		return ImportRecord{}, notFound("import of " + name)
	}
	return *best, nil
}

func (l *memLedger) ListTokens(_ context.Context, id string) ([]TokenRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []TokenRecord
	for _, r := range l.rows[id] {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out, nil
}

func (l *memLedger) GetToken(_ context.Context, id string, line int) (TokenRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.rows[id][line]; ok {
		return *r, nil
	}
	return TokenRecord{}, notFound(fmt.Sprintf("line %d of %s", line, id))
}

func (l *memLedger) TokenBySerial(_ context.Context, serial string) (TokenRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *TokenRecord
	for id, m := range l.rows {
		for _, r := range m {
			if r.Serial == serial && r.Status != StatusRejected &&
				(best == nil || l.imports[id].Created.After(l.imports[best.ImportID].Created)) {
				best = r
			}
		}
	}
	if best == nil {
		return TokenRecord{}, notFound("token " + serial)
	}
	return *best, nil
}

func (l *memLedger) SetTokenOutcome(_ context.Context, id string, line int, o Outcome) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.rows[id][line]
	if !ok {
		return false, notFound(fmt.Sprintf("line %d of %s", line, id))
	}
	was := Settled(r.Status)
	r.Status, r.Reason, r.UserPrincipalName = o.Status, o.Reason, o.UserPrincipalName
	if o.DeviceID != "" {
		r.DeviceID = o.DeviceID
	}
	r.UserID = o.UserID
	if !was && Settled(o.Status) {
		imp := l.imports[id]
		imp.Pending--
		return imp.Pending == 0, nil
	}
	return false, nil
}

func (l *memLedger) Audit(_ context.Context, a AuditRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.audits = append(l.audits, a)
	return nil
}

func (l *memLedger) auditLog() []AuditRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]AuditRecord(nil), l.audits...)
}

// dump is everything the ledger holds, as JSON, for the leak scan.
func (l *memLedger) dump() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, _ := json.Marshal([]any{l.imports, l.rows, l.audits})
	return b
}

// memQueue is an in-memory queue holding the message texts as the SDK would send them.
type memQueue struct {
	mu   sync.Mutex
	msgs []string
	sent []string // every text ever sent, for the leak scan
}

func (q *memQueue) Enqueue(_ context.Context, msgs []ProvisionMessage) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		q.msgs = append(q.msgs, string(b))
		q.sent = append(q.sent, string(b))
	}
	return nil
}

func (q *memQueue) take() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.msgs) == 0 {
		return "", false
	}
	m := q.msgs[0]
	q.msgs = q.msgs[1:]
	return m, true
}

// memBlobs is an in-memory blob store with an inbox, reports and the rejected container.
type memBlobs struct {
	mu       sync.Mutex
	inbox    map[string]inboxBlob
	reports  map[string][]byte
	rejected map[string][]byte
}

type inboxBlob struct {
	etag    string
	content []byte
}

func newMemBlobs() *memBlobs {
	return &memBlobs{inbox: map[string]inboxBlob{}, reports: map[string][]byte{}, rejected: map[string][]byte{}}
}

func (b *memBlobs) upload(name string, content []byte) InboxFile {
	b.mu.Lock()
	defer b.mu.Unlock()
	etag := fmt.Sprintf("\"0x%X\"", len(b.inbox)+len(b.rejected)+len(content)*7919+len(name))
	b.inbox[name] = inboxBlob{etag: etag, content: content}
	return InboxFile{Name: name, ETag: etag, Content: content}
}

func (b *memBlobs) PutReport(_ context.Context, name string, js, csv []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reports[name+".json"] = append([]byte(nil), js...)
	if csv != nil {
		b.reports[name+".failures.csv"] = append([]byte(nil), csv...)
	} else {
		delete(b.reports, name+".failures.csv")
	}
	return nil
}

func (b *memBlobs) Reject(_ context.Context, name, etag string, content []byte, target string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rejected[target] = append([]byte(nil), content...)
	if cur, ok := b.inbox[name]; ok && cur.etag == etag {
		delete(b.inbox, name)
	}
	return nil
}

func (b *memBlobs) DeleteInbox(_ context.Context, name, etag string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.inbox[name]; ok && cur.etag == etag {
		delete(b.inbox, name)
	}
	return nil
}

func (b *memBlobs) report(name string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.reports[name]
	return r, ok
}

func (b *memBlobs) all() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sb strings.Builder
	for k, v := range b.reports {
		sb.WriteString(k + "\n" + string(v) + "\n")
	}
	return sb.String()
}
