// Package pipelinetest helps test code that runs the pipeline: in-memory Ledger, Queue and Blobs
// with the contract's semantics, a stack of the Key Vault and Graph stand-ins with the real
// vault and entra clients, seed-file builders, and a scan for leaked seeds. For tests only.
package pipelinetest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// MemLedger is an in-memory pipeline.Ledger with the contract's semantics, for flow tests that
// run without Azurite.
type MemLedger struct {
	mu      sync.Mutex
	imports map[string]*pipeline.ImportRecord
	rows    map[string]map[int]*pipeline.TokenRecord
	Audits  []pipeline.AuditRecord

	notified map[string]string // ClaimNotification's key per import
}

// NewMemLedger returns an empty ledger.
func NewMemLedger() *MemLedger {
	return &MemLedger{imports: map[string]*pipeline.ImportRecord{}, rows: map[string]map[int]*pipeline.TokenRecord{}}
}

func notFound(what string) error { return token.Errorf(token.KindNotFound, "%s not found", what) }

// BeginImport implements pipeline.Ledger.
func (l *MemLedger) BeginImport(_ context.Context, rec pipeline.ImportRecord) (pipeline.ImportRecord, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.imports[rec.ImportID]; ok {
		return *cur, false, nil
	}
	rec.Stage = pipeline.StageStarted
	l.imports[rec.ImportID] = &rec
	return rec, true, nil
}

// PutTokens implements pipeline.Ledger.
func (l *MemLedger) PutTokens(_ context.Context, imp pipeline.ImportRecord, rows []pipeline.TokenRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, ok := l.imports[imp.ImportID]
	if !ok {
		return notFound("import " + imp.ImportID)
	}
	m := l.rows[imp.ImportID]
	if m == nil {
		m = map[int]*pipeline.TokenRecord{}
		l.rows[imp.ImportID] = m
	}
	for _, r := range rows {
		if _, ok := m[r.Line]; !ok {
			r := r
			m[r.Line] = &r
		}
	}
	cur.Format, cur.Rows, cur.Valid, cur.Invalid, cur.Problems = imp.Format, imp.Rows, imp.Valid, imp.Invalid, imp.Problems
	if cur.Stage == pipeline.StageStarted {
		cur.Pending = imp.Pending
		cur.Stage = pipeline.StageVaulted
	}
	return nil
}

// AddTokens implements pipeline.Ledger.
func (l *MemLedger) AddTokens(_ context.Context, imp pipeline.ImportRecord, rows []pipeline.TokenRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.imports[imp.ImportID]; !ok {
		return notFound("import " + imp.ImportID)
	}
	m := l.rows[imp.ImportID]
	if m == nil {
		m = map[int]*pipeline.TokenRecord{}
		l.rows[imp.ImportID] = m
	}
	for _, r := range rows {
		if _, ok := m[r.Line]; !ok {
			r := r
			r.ImportID = imp.ImportID
			m[r.Line] = &r
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
		cur.Pending = imp.Pending
		cur.Stage = pipeline.StageVaulted
	}
	return nil
}

// EachToken implements pipeline.Ledger.
func (l *MemLedger) EachToken(_ context.Context, id string, from, to int, fn func(pipeline.TokenRecord) error) error {
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

// SetImportStage implements pipeline.Ledger.
func (l *MemLedger) SetImportStage(_ context.Context, id, stage, disposition string) error {
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
	var best *pipeline.ImportRecord
	for _, r := range l.imports {
		if r.FileName == name && (best == nil || !r.Created.Before(best.Created)) {
			best = r
		}
	}
	if best == nil {
		return pipeline.ImportRecord{}, notFound("import of " + name)
	}
	return *best, nil
}

// ListTokens implements pipeline.Ledger.
func (l *MemLedger) ListTokens(_ context.Context, id string) ([]pipeline.TokenRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []pipeline.TokenRecord
	for _, r := range l.rows[id] {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out, nil
}

// GetToken implements pipeline.Ledger.
func (l *MemLedger) GetToken(_ context.Context, id string, line int) (pipeline.TokenRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.rows[id][line]; ok {
		return *r, nil
	}
	return pipeline.TokenRecord{}, notFound(fmt.Sprintf("line %d of %s", line, id))
}

// TokenBySerial implements pipeline.Ledger.
func (l *MemLedger) TokenBySerial(_ context.Context, serial string) (pipeline.TokenRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *pipeline.TokenRecord
	for id, m := range l.rows {
		for _, r := range m {
			if r.Serial == serial && r.Status != pipeline.StatusRejected &&
				(best == nil || l.imports[id].Created.After(l.imports[best.ImportID].Created)) {
				best = r
			}
		}
	}
	if best == nil {
		return pipeline.TokenRecord{}, notFound("token " + serial)
	}
	return *best, nil
}

// SetTokenOutcome implements pipeline.Ledger.
func (l *MemLedger) SetTokenOutcome(_ context.Context, id string, line int, o pipeline.Outcome) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.rows[id][line]
	if !ok {
		return false, notFound(fmt.Sprintf("line %d of %s", line, id))
	}
	was := pipeline.Settled(r.Status)
	r.Status, r.Reason, r.UserPrincipalName, r.Cause = o.Status, o.Reason, o.UserPrincipalName, o.Cause
	if o.DeviceID != "" {
		r.DeviceID = o.DeviceID
	}
	r.UserID = o.UserID
	r.Problems = o.WithWarnings(r.Problems)
	if !was && pipeline.Settled(o.Status) {
		imp := l.imports[id]
		imp.Pending--
		return imp.Pending == 0, nil
	}
	return false, nil
}

// ClaimNotification implements pipeline.Ledger.
func (l *MemLedger) ClaimNotification(_ context.Context, id, key string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.imports[id]; !ok {
		return false, notFound("import " + id)
	}
	if l.notified == nil {
		l.notified = map[string]string{}
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
	b, _ := json.Marshal([]any{l.imports, l.rows, l.Audits})
	return b
}

// MemQueue is an in-memory queue holding the message texts as the SDK would send them.
type MemQueue struct {
	mu   sync.Mutex
	Msgs []string // waiting messages, oldest first
	Sent []string // every text ever sent, for the leak scan
	// Delays are the delays EnqueueAfter was given, in order.
	Delays []time.Duration
}

// Enqueue implements pipeline.Queue.
func (q *MemQueue) Enqueue(_ context.Context, msgs []pipeline.ProvisionMessage) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		q.Msgs = append(q.Msgs, string(b))
		q.Sent = append(q.Sent, string(b))
	}
	return nil
}

// EnqueueAfter implements pipeline.Requeue: the message waits at the end of the queue, its
// delay recorded in Delays (the fake has no clock).
func (q *MemQueue) EnqueueAfter(ctx context.Context, m pipeline.ProvisionMessage, delay time.Duration) error {
	if err := q.Enqueue(ctx, []pipeline.ProvisionMessage{m}); err != nil {
		return err
	}
	q.mu.Lock()
	q.Delays = append(q.Delays, delay)
	q.mu.Unlock()
	return nil
}

// Take removes and returns the oldest waiting message.
func (q *MemQueue) Take() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.Msgs) == 0 {
		return "", false
	}
	m := q.Msgs[0]
	q.Msgs = q.Msgs[1:]
	return m, true
}

// MemBlobs is an in-memory blob store: the inbox, reports and the rejected container.
type MemBlobs struct {
	mu       sync.Mutex
	Inbox    map[string]InboxBlob // seed-inbox by name
	Reports  map[string][]byte    // seed-reports by name
	Rejected map[string][]byte    // seed-rejected by name
}

// InboxBlob is a file waiting in the in-memory inbox.
type InboxBlob struct {
	ETag    string
	Content []byte
}

// NewMemBlobs returns empty containers.
func NewMemBlobs() *MemBlobs {
	return &MemBlobs{Inbox: map[string]InboxBlob{}, Reports: map[string][]byte{}, Rejected: map[string][]byte{}}
}

// uploads counts MemBlobs uploads, for their ETags.
var uploads atomic.Int64

// Upload drops a file in the inbox with a fresh ETag and returns it as the blob trigger would.
func (b *MemBlobs) Upload(name string, content []byte) pipeline.InboxFile {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Every upload gets a new ETag, as in Azure (two files of one size under one name too).
	etag := fmt.Sprintf("\"0x%X\"", uploads.Add(1)*1_000_003+int64(len(content)))
	b.Inbox[name] = InboxBlob{ETag: etag, Content: content}
	return pipeline.InboxFile{Name: name, ETag: etag, Content: content}
}

// PutReport implements pipeline.Blobs.
func (b *MemBlobs) PutReport(_ context.Context, name string, js []byte, csv io.Reader) error {
	var fails []byte
	if csv != nil {
		var err error
		if fails, err = io.ReadAll(csv); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Reports[name+".json"] = append([]byte(nil), js...)
	if csv != nil {
		b.Reports[name+".failures.csv"] = fails
	} else {
		delete(b.Reports, name+".failures.csv")
	}
	return nil
}

// Reject implements pipeline.Blobs.
func (b *MemBlobs) Reject(_ context.Context, name, etag string, content io.Reader, target string) error {
	data, err := io.ReadAll(content)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.Rejected[target]; ok && string(cur) != string(data) {
		return token.Errorf(token.KindConflict, "a different file is already stored as seed-rejected/%s", target)
	}
	b.Rejected[target] = data
	if cur, ok := b.Inbox[name]; ok && cur.ETag == etag {
		delete(b.Inbox, name)
	}
	return nil
}

// DeleteInbox implements pipeline.Blobs.
func (b *MemBlobs) DeleteInbox(_ context.Context, name, etag string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.Inbox[name]; ok && cur.ETag == etag {
		delete(b.Inbox, name)
	}
	return nil
}

// Report returns seed-reports/{name}.
func (b *MemBlobs) Report(name string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.Reports[name]
	return r, ok
}

// All concatenates every report, for the leak scan.
func (b *MemBlobs) All() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sb strings.Builder
	for k, v := range b.Reports {
		sb.WriteString(k + "\n" + string(v) + "\n")
	}
	return sb.String()
}

func stageBefore(a, b string) bool { return stageRank(a) < stageRank(b) }

func stageRank(s string) int {
	switch s {
	case pipeline.StageVaulted:
		return 1
	case pipeline.StageEnqueued:
		return 2
	case pipeline.StageDone:
		return 3
	}
	return 0
}
