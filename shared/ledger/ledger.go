// Package ledger implements pipeline.Ledger on Azure Table storage: what happened to each seed
// file and each token. One partition per import holds one entity per row of the file and one
// summary entity; two small index partitions find the latest import of a file name and the
// latest row of a serial; a separate table holds an audit record for every change made through
// the HTTP API. It never stores a seed: entities carry serials, user names, statuses and plain
// reasons only. docs/ledger.md shows the entity shapes and key encoding.
//
// The summary's Pending count changes in the same entity group transaction as the token row
// that settles, conditional on both ETags, and the loser of a race re-reads and tries again —
// so concurrent workers never lose a count, and exactly one of them learns that it settled the
// import's last token (and rewrites the report).
package ledger

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Options configures New. Give either ConnectionString (Azurite, local runs) or ServiceURL and
// Credential (identity-based access in Azure).
type Options struct {
	ConnectionString string
	ServiceURL       string // the account's table endpoint, e.g. https://st.table.core.windows.net/
	Credential       azcore.TokenCredential
	HTTPClient       *http.Client // optional transport (extra CA, test proxies)
	Logger           *slog.Logger
	Now              func() time.Time // optional clock for tests
	LedgerTable      string           // default config.LedgerTable
	AuditTable       string           // default config.AuditTable
}

// Ledger reads and writes the ledger and audit tables.
type Ledger struct {
	service *aztables.ServiceClient
	table   *aztables.Client
	audit   *aztables.Client
	names   [2]string
	log     *slog.Logger
	now     func() time.Time
}

// New builds a Ledger. It makes no request; call EnsureTables for local runs.
func New(o Options) (*Ledger, error) {
	co := &aztables.ClientOptions{}
	if o.HTTPClient != nil {
		co.Transport = o.HTTPClient
	}
	var (
		svc *aztables.ServiceClient
		err error
	)
	switch {
	case o.ConnectionString != "":
		svc, err = aztables.NewServiceClientFromConnectionString(o.ConnectionString, co)
	case o.ServiceURL != "" && o.Credential != nil:
		// The offline credential of the local stand-ins goes to Azurite over plain HTTP; never
		// allowed anywhere but loopback.
		co.InsecureAllowCredentialWithHTTP = strings.HasPrefix(o.ServiceURL, "http://") && config.IsLoopbackURL(o.ServiceURL)
		svc, err = aztables.NewServiceClient(o.ServiceURL, o.Credential, co)
	default:
		return nil, fmt.Errorf("ledger: need a connection string, or a table service URL and a credential")
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: table service client: %w", err)
	}
	l := &Ledger{service: svc, log: o.Logger, now: o.Now, names: [2]string{o.LedgerTable, o.AuditTable}}
	if l.names[0] == "" {
		l.names[0] = config.LedgerTable
	}
	if l.names[1] == "" {
		l.names[1] = config.AuditTable
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.table = svc.NewClient(l.names[0])
	l.audit = svc.NewClient(l.names[1])
	return l, nil
}

// EnsureTables creates the ledger and audit tables when they do not exist (local runs; in
// Azure, infra/ creates them).
func (l *Ledger) EnsureTables(ctx context.Context) error {
	for _, name := range l.names {
		if _, err := l.service.CreateTable(ctx, name, nil); err != nil && !isExists(err) {
			return classify("create table "+name, err)
		}
	}
	return nil
}

// Keys. Import partitions are keyFor(import id); the index partitions start with '~', which
// EncodeKey always escapes, so no import can collide with them.
const (
	summaryRow      = "summary"
	lineRowPrefix   = "line-" // + line number, 10 digits: key order is line order
	fileIndexPart   = "~file"
	serialIndexPart = "~serial"
	maxProblemsJSON = 30000   // bytes of problems JSON kept per entity (a property holds 64 KiB)
	maxReasonBytes  = 4000    // bytes of a reason kept per entity
	maxBatchBytes   = 2 << 20 // payload per transaction, well under the service's 4 MiB
)

func lineRowKey(line int) string { return fmt.Sprintf("%s%010d", lineRowPrefix, line) }

var stageOrder = map[string]int{
	pipeline.StageStarted: 1, pipeline.StageVaulted: 2, pipeline.StageEnqueued: 3, pipeline.StageDone: 4,
}

// summaryEntity is an import's summary row.
type summaryEntity struct {
	PartitionKey string
	RowKey       string
	Kind         string // "import"
	ImportID     string
	FileName     string
	BlobETag     string
	Stage        string
	Format       string
	Rows         int
	Valid        int
	Invalid      int
	Pending      int
	Checkpoint   int    // the import's resume point: every row up to this line is stored and queued
	Refused      int    // rows the vault refused, up to Checkpoint
	Problems     string // JSON []seedfile.Problem, file-level
	Disposition  string
	Notified     string // the outcome last notified (ClaimNotification)
	Created      string
	Updated      string
}

func (e *summaryEntity) record() pipeline.ImportRecord {
	return pipeline.ImportRecord{
		ImportID: e.ImportID, FileName: e.FileName, ETag: e.BlobETag, Stage: e.Stage, Format: e.Format,
		Rows: e.Rows, Valid: e.Valid, Invalid: e.Invalid, Pending: e.Pending, Checkpoint: e.Checkpoint, Refused: e.Refused,
		Problems: decodeProblems(e.Problems), Disposition: e.Disposition,
		Created: parseTime(e.Created), Updated: parseTime(e.Updated),
	}
}

// rowEntity is one row of an import's file (a token, or a rejected line).
type rowEntity struct {
	PartitionKey      string
	RowKey            string
	Kind              string // "row"
	ImportID          string
	Line              int
	Serial            string
	Manufacturer      string
	Model             string
	UserPrincipalName string
	Status            string
	Reason            string
	Problems          string // JSON []seedfile.Problem
	SeedFingerprint   string // 16 hex of SHA-256: tells seeds apart, recovers nothing
	DeviceID          string
	UserID            string
	Updated           string
	Cause             string // pipeline.FailureCause of a failed row ("" otherwise)
}

func (e *rowEntity) record() pipeline.TokenRecord {
	return pipeline.TokenRecord{
		ImportID: e.ImportID, Line: e.Line, Serial: e.Serial, Manufacturer: e.Manufacturer, Model: e.Model,
		UserPrincipalName: e.UserPrincipalName, Status: e.Status, Reason: e.Reason,
		Problems: decodeProblems(e.Problems), SeedFingerprint: e.SeedFingerprint,
		DeviceID: e.DeviceID, UserID: e.UserID, Updated: parseTime(e.Updated), Cause: pipeline.FailureCause(e.Cause),
	}
}

func newRowEntity(pk string, r pipeline.TokenRecord) rowEntity {
	return rowEntity{
		PartitionKey: pk, RowKey: lineRowKey(r.Line), Kind: "row",
		ImportID: r.ImportID, Line: r.Line, Serial: r.Serial, Manufacturer: r.Manufacturer, Model: r.Model,
		UserPrincipalName: r.UserPrincipalName, Status: r.Status, Reason: clip(r.Reason),
		Problems: encodeProblems(r.Problems), SeedFingerprint: r.SeedFingerprint,
		DeviceID: r.DeviceID, UserID: r.UserID, Updated: formatTime(r.Updated), Cause: string(r.Cause),
	}
}

// indexEntity points a file name or a serial at the latest import that holds it.
type indexEntity struct {
	PartitionKey string
	RowKey       string
	Kind         string // "file-index" | "serial-index"
	Name         string // the file name or serial itself (keys may be hashed: see keyFor)
	ImportID     string
	Line         int
	Created      string // the import's Created: the index moves to newer imports only
}

// clip keeps a free-text property well inside Table storage's 64 KiB per property (and a
// transaction's 4 MiB), cutting at a rune boundary.
func clip(s string) string {
	if len(s) <= maxReasonBytes {
		return s
	}
	cut := maxReasonBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func encodeProblems(ps []seedfile.Problem) string {
	if len(ps) == 0 {
		return ""
	}
	for n := len(ps); n > 0; n /= 2 {
		b, err := json.Marshal(ps[:n])
		if err == nil && len(b) <= maxProblemsJSON {
			return string(b)
		}
	}
	return ""
}

func decodeProblems(s string) []seedfile.Problem {
	if s == "" {
		return nil
	}
	var ps []seedfile.Problem
	if json.Unmarshal([]byte(s), &ps) != nil {
		return nil
	}
	return ps
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func odataString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// get reads one entity into v and returns its ETag.
func get(ctx context.Context, c *aztables.Client, pk, rk string, v any) (azcore.ETag, error) {
	resp, err := c.GetEntity(ctx, pk, rk, nil)
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(resp.Value, v); err != nil {
		return "", fmt.Errorf("decode entity %s/%s: %w", pk, rk, err)
	}
	return resp.ETag, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Entities hold plain strings, ints and bools only: cannot fail.
		panic(fmt.Sprintf("ledger: marshal entity: %v", err))
	}
	return b
}

func notFound(op, msg string, err error) error {
	return &token.Error{Kind: token.KindNotFound, Op: op, Message: msg, Err: err}
}

// retryRace runs attempt until it does not lose a race (412/409), with a short jittered pause
// between tries. Contention is per import, among the workers of that import only.
func (l *Ledger) retryRace(ctx context.Context, op string, attempt func() error) error {
	const maxTries = 200
	for i := 0; ; i++ {
		err := attempt()
		if err == nil || !isLostRace(err) {
			return err
		}
		if i+1 >= maxTries {
			return &token.Error{Kind: token.KindTransient, Op: op, Message: fmt.Sprintf("still contended after %d conditional updates", maxTries), Err: err}
		}
		l.log.DebugContext(ctx, "ledger: conditional update lost a race, retrying", logctx.Op, op, "try", i+1)
		pause := time.Duration(1+mrand.IntN(4*min(i+1, 10))) * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// ---- imports ----

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

// ImportByName returns the latest import (by Created) of a file name (KindNotFound when none).
func (l *Ledger) ImportByName(ctx context.Context, fileName string) (pipeline.ImportRecord, error) {
	op := "ledger: find import of " + fileName
	var idx indexEntity
	if _, err := get(ctx, l.table, fileIndexPart, keyFor(fileName), &idx); err != nil {
		if isNotFound(err) {
			return pipeline.ImportRecord{}, notFound(op, "no import of this file", err)
		}
		return pipeline.ImportRecord{}, classify(op, err)
	}
	if idx.Name != fileName { // only possible for a hashed key: checked anyway
		return pipeline.ImportRecord{}, notFound(op, "no import of this file", nil)
	}
	return l.GetImport(ctx, idx.ImportID)
}

// SetImportStage moves the import to stage (never back) and records disposition when not
// empty. It leaves Pending alone (a conditional update, retried on conflict).
func (l *Ledger) SetImportStage(ctx context.Context, importID, stage, disposition string) error {
	op := "ledger: import " + importID + " to stage " + stage
	if stageOrder[stage] == 0 {
		return &token.Error{Kind: token.KindInvalid, Op: op, Message: "unknown stage"}
	}
	err := l.retryRace(ctx, op, func() error {
		var e summaryEntity
		etag, err := get(ctx, l.table, keyFor(importID), summaryRow, &e)
		if err != nil {
			if isNotFound(err) {
				return notFound(op, "no such import", err)
			}
			return err
		}
		changed := false
		if stageOrder[stage] > stageOrder[e.Stage] {
			e.Stage, changed = stage, true
		}
		if disposition != "" && disposition != e.Disposition {
			e.Disposition, changed = disposition, true
		}
		if !changed {
			return nil
		}
		e.Updated = formatTime(l.now())
		_, err = l.table.UpdateEntity(ctx, mustJSON(e), &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		return err
	})
	return classify(op, err)
}

// ClaimNotification implements pipeline.Ledger: a conditional update of the import's Notified,
// retried on conflict, so one caller across instances wins each key.
func (l *Ledger) ClaimNotification(ctx context.Context, importID, key string) (bool, error) {
	op := "ledger: claim the notification of import " + importID
	first := false
	err := l.retryRace(ctx, op, func() error {
		first = false
		var e summaryEntity
		etag, err := get(ctx, l.table, keyFor(importID), summaryRow, &e)
		if err != nil {
			if isNotFound(err) {
				return notFound(op, "no such import", err)
			}
			return err
		}
		if e.Notified == key {
			return nil
		}
		e.Notified = key
		if _, err := l.table.UpdateEntity(ctx, mustJSON(e), &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace}); err != nil {
			return err
		}
		first = true
		return nil
	})
	return first, classify(op, err)
}

// SetImportCheckpoint records that every row of the import up to line is stored in the vault
// and queued, so a continuation resumes after it, and adds refused (the rows the vault refused
// since the last checkpoint) to the import's Refused count in the same update. The checkpoint
// never moves back, and a line not past it changes nothing, so a repeated chunk is never
// counted twice (a conditional update, retried on conflict).
func (l *Ledger) SetImportCheckpoint(ctx context.Context, importID string, line, refused int) error {
	op := fmt.Sprintf("ledger: checkpoint import %s at line %d", importID, line)
	err := l.retryRace(ctx, op, func() error {
		var e summaryEntity
		etag, err := get(ctx, l.table, keyFor(importID), summaryRow, &e)
		if err != nil {
			if isNotFound(err) {
				return notFound(op, "no such import", err)
			}
			return err
		}
		if line <= e.Checkpoint {
			return nil
		}
		e.Checkpoint = line
		e.Refused += refused
		e.Updated = formatTime(l.now())
		_, err = l.table.UpdateEntity(ctx, mustJSON(e), &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		return err
	})
	return classify(op, err)
}

// PutTokens writes the rows of imp's file (in transactions of up to 100 rows), records imp's
// file facts (Format, Rows, Valid, Invalid, Problems), and — only while the import is still at
// StageStarted — sets Pending and moves it to StageVaulted. Rows already stored are left as they
// are. Pending is counted from the stored rows (those not yet settled), not taken from
// imp.Pending, so it is right even after a crash half way through an earlier attempt. Non-rejected
// rows become their serial's latest row (TokenBySerial) unless a newer import holds the serial.
func (l *Ledger) PutTokens(ctx context.Context, imp pipeline.ImportRecord, rows []pipeline.TokenRecord) error {
	op := fmt.Sprintf("ledger: write %d rows of import %s", len(rows), imp.ImportID)
	pk := keyFor(imp.ImportID)
	for _, r := range rows {
		if r.Line < 0 || r.Status == "" {
			return &token.Error{Kind: token.KindInvalid, Op: op, Message: fmt.Sprintf("row with line %d and status %q", r.Line, r.Status)}
		}
	}
	stored, err := l.rows(ctx, imp.ImportID)
	if err != nil {
		return classify(op, err)
	}
	have := make(map[int]pipeline.TokenRecord, len(stored))
	for _, r := range stored {
		have[r.Line] = r
	}
	var fresh []pipeline.TokenRecord
	seen := map[int]bool{}
	for _, r := range rows {
		if _, ok := have[r.Line]; ok || seen[r.Line] {
			continue
		}
		seen[r.Line] = true
		r.ImportID = imp.ImportID
		if r.Updated.IsZero() {
			r.Updated = l.now()
		}
		fresh = append(fresh, r)
	}
	for _, part := range batches(fresh, func(r pipeline.TokenRecord) int { return len(mustJSON(newRowEntity(pk, r))) }) {
		err := l.retryRace(ctx, op, func() error {
			acts := make([]aztables.TransactionAction, 0, len(part))
			for _, r := range part {
				acts = append(acts, aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: mustJSON(newRowEntity(pk, r))})
			}
			_, err := l.table.SubmitTransaction(ctx, acts, nil)
			if err != nil && isLostRace(err) {
				// A concurrent delivery of the same import wrote some of these rows: keep
				// only the ones still missing and try again.
				var still []pipeline.TokenRecord
				for _, r := range part {
					var e rowEntity
					if _, gerr := get(ctx, l.table, pk, lineRowKey(r.Line), &e); isNotFound(gerr) {
						still = append(still, r)
					} else if gerr != nil {
						return gerr
					}
				}
				part = still
				if len(part) == 0 {
					return nil
				}
			}
			return err
		})
		if err != nil {
			return classify(op, err)
		}
	}

	var created time.Time
	err = l.retryRace(ctx, op, func() error {
		var e summaryEntity
		etag, err := get(ctx, l.table, pk, summaryRow, &e)
		if err != nil {
			if isNotFound(err) {
				return notFound(op, "no such import (BeginImport first)", err)
			}
			return err
		}
		created = parseTime(e.Created)
		e.Format, e.Rows, e.Valid, e.Invalid = imp.Format, imp.Rows, imp.Valid, imp.Invalid
		e.Problems = encodeProblems(imp.Problems)
		if e.Stage == pipeline.StageStarted {
			all, err := l.rows(ctx, imp.ImportID)
			if err != nil {
				return err
			}
			e.Pending = 0
			for _, r := range all {
				if !pipeline.Settled(r.Status) {
					e.Pending++
				}
			}
			e.Stage = pipeline.StageVaulted
		}
		e.Updated = formatTime(l.now())
		_, err = l.table.UpdateEntity(ctx, mustJSON(e), &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		return err
	})
	if err != nil {
		return classify(op, err)
	}

	if err := l.indexSerials(ctx, imp.ImportID, created, rows); err != nil {
		return err
	}
	l.log.DebugContext(ctx, "ledger: rows written", logctx.ImportID, imp.ImportID, "rows", len(rows), "new", len(fresh))
	return nil
}

// AddTokens writes one chunk of the rows of imp's file (in transactions of up to 100 rows)
// and points the serial index at its non-rejected rows; it leaves the summary alone (SealImport
// ends the recording). Rows already stored are left as they are: a transaction that meets one
// (a repeat after a crash part way) reads back the lines of its own range, one query, and
// writes only the missing rows. Nothing is read of the rest of the import, so recording a big
// file in chunks costs the same per chunk from its first line to its last.
func (l *Ledger) AddTokens(ctx context.Context, imp pipeline.ImportRecord, rows []pipeline.TokenRecord) error {
	op := fmt.Sprintf("ledger: write %d rows of import %s", len(rows), imp.ImportID)
	pk := keyFor(imp.ImportID)
	if len(rows) == 0 {
		return nil
	}
	fresh := make([]pipeline.TokenRecord, 0, len(rows))
	seen := make(map[int]bool, len(rows))
	for _, r := range rows {
		if r.Line < 0 || r.Status == "" {
			return &token.Error{Kind: token.KindInvalid, Op: op, Message: fmt.Sprintf("row with line %d and status %q", r.Line, r.Status)}
		}
		if seen[r.Line] {
			continue
		}
		seen[r.Line] = true
		r.ImportID = imp.ImportID
		if r.Updated.IsZero() {
			r.Updated = l.now()
		}
		fresh = append(fresh, r)
	}
	created := imp.Created
	if created.IsZero() {
		cur, err := l.GetImport(ctx, imp.ImportID)
		if err != nil {
			return err
		}
		created = cur.Created
	}
	for _, part := range batches(fresh, func(r pipeline.TokenRecord) int { return len(mustJSON(newRowEntity(pk, r))) }) {
		err := l.retryRace(ctx, op, func() error {
			acts := make([]aztables.TransactionAction, 0, len(part))
			for _, r := range part {
				acts = append(acts, aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: mustJSON(newRowEntity(pk, r))})
			}
			if len(acts) == 0 {
				return nil
			}
			_, err := l.table.SubmitTransaction(ctx, acts, nil)
			if err != nil && isLostRace(err) {
				// Some of these rows are stored already: keep only the missing ones and try again.
				have := map[int]bool{}
				if err := l.eachRow(ctx, imp.ImportID, part[0].Line, part[len(part)-1].Line, func(r pipeline.TokenRecord) error {
					have[r.Line] = true
					return nil
				}); err != nil {
					return err
				}
				var still []pipeline.TokenRecord
				for _, r := range part {
					if !have[r.Line] {
						still = append(still, r)
					}
				}
				part = still
				if len(part) == 0 {
					return nil
				}
			}
			return err
		})
		if err != nil {
			return classify(op, err)
		}
	}
	if err := l.indexSerials(ctx, imp.ImportID, created, rows); err != nil {
		return err
	}
	l.log.DebugContext(ctx, "ledger: rows written", logctx.ImportID, imp.ImportID, "rows", len(rows))
	return nil
}

// SealImport records imp's file facts (Format, Rows, Valid, Invalid, Problems, and Disposition
// when set) on its summary and — only while the import is still at StageStarted — sets Pending
// to imp.Pending and moves it to StageVaulted. The pipeline writes every row with AddTokens
// first and queues no message before this, so no row can have settled yet and imp.Pending (the
// valid rows) is the count; a repeat after the stage moved changes no count.
func (l *Ledger) SealImport(ctx context.Context, imp pipeline.ImportRecord) error {
	op := "ledger: record the facts of import " + imp.ImportID
	pk := keyFor(imp.ImportID)
	err := l.retryRace(ctx, op, func() error {
		var e summaryEntity
		etag, err := get(ctx, l.table, pk, summaryRow, &e)
		if err != nil {
			if isNotFound(err) {
				return notFound(op, "no such import (BeginImport first)", err)
			}
			return err
		}
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
		_, err = l.table.UpdateEntity(ctx, mustJSON(e), &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		return err
	})
	return classify(op, err)
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

// batches splits rows into entity group transactions: at most 100 operations and about
// maxBatchBytes of payload each.
func batches[T any](rows []T, size func(T) int) [][]T {
	var out [][]T
	start, bytes := 0, 0
	for i, r := range rows {
		n := size(r)
		if i > start && (i-start == 100 || bytes+n > maxBatchBytes) {
			out = append(out, rows[start:i])
			start, bytes = i, 0
		}
		bytes += n
	}
	if start < len(rows) {
		out = append(out, rows[start:])
	}
	return out
}

// rows lists every row entity of an import, ordered by line.
func (l *Ledger) rows(ctx context.Context, importID string) ([]pipeline.TokenRecord, error) {
	filter := "PartitionKey eq " + odataString(keyFor(importID)) + " and RowKey ge " + odataString(lineRowPrefix) +
		" and RowKey lt " + odataString(lineRowPrefix[:len(lineRowPrefix)-1]+string(lineRowPrefix[len(lineRowPrefix)-1]+1))
	pager := l.table.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	var out []pipeline.TokenRecord
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, raw := range page.Entities {
			var e rowEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, fmt.Errorf("decode row entity: %w", err)
			}
			out = append(out, e.record())
		}
	}
	return out, nil
}

// ListTokens returns an import's rows, ordered by line.
func (l *Ledger) ListTokens(ctx context.Context, importID string) ([]pipeline.TokenRecord, error) {
	rs, err := l.rows(ctx, importID)
	if err != nil {
		return nil, classify("ledger: list rows of import "+importID, err)
	}
	return rs, nil
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

// TokenBySerial returns the row of the latest import that holds serial on a non-rejected line
// (KindNotFound when none).
func (l *Ledger) TokenBySerial(ctx context.Context, serial string) (pipeline.TokenRecord, error) {
	op := "ledger: find token " + serial
	var idx indexEntity
	if _, err := get(ctx, l.table, serialIndexPart, keyFor(serial), &idx); err != nil {
		if isNotFound(err) {
			return pipeline.TokenRecord{}, notFound(op, "the ledger has no token with this serial", err)
		}
		return pipeline.TokenRecord{}, classify(op, err)
	}
	if idx.Name != serial {
		return pipeline.TokenRecord{}, notFound(op, "the ledger has no token with this serial", nil)
	}
	return l.GetToken(ctx, idx.ImportID, idx.Line)
}

// SetTokenOutcome records o on the row (line) of an import: o.Status, o.Reason, o.Cause,
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
		next.Cause = string(o.Cause)
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
		switch was, now := pipeline.Settled(row.Status), pipeline.Settled(next.Status); {
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
				delta = 0 // PutTokens has not counted Pending yet; it will count this row as it is
			}
		}
		if delta == 0 {
			_, err = l.table.UpdateEntity(ctx, mustJSON(next), &aztables.UpdateEntityOptions{IfMatch: &rowTag, UpdateMode: aztables.UpdateModeReplace})
			return err
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
		if err == nil {
			last = delta < 0 && sum.Pending == 0
		}
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

// ---- audit ----

type auditEntity struct {
	PartitionKey string
	RowKey       string
	Time         string
	Caller       string
	Action       string
	Serial       string
	FromUser     string
	ToUser       string
	ToUserID     string `json:",omitempty"`
	Outcome      string
	Reason       string
	HeldBy       string `json:",omitempty"` // after a failed change: who holds the token now
	TokenStatus  string `json:",omitempty"` // after a failed change: its Entra status now
}

// Audit appends one audit record to the audit table: partitioned by serial, newest first (the
// row key is an inverted timestamp plus a random suffix, so records never collide).
func (l *Ledger) Audit(ctx context.Context, a pipeline.AuditRecord) error {
	if a.Time.IsZero() {
		a.Time = l.now()
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	e := auditEntity{
		PartitionKey: keyFor(a.Serial),
		RowKey:       fmt.Sprintf("%019d-%s", math.MaxInt64-a.Time.UnixNano(), hex.EncodeToString(rnd[:])),
		Time:         formatTime(a.Time), Caller: a.Caller, Action: a.Action, Serial: a.Serial,
		FromUser: a.FromUser, ToUser: a.ToUser, ToUserID: a.ToUserID, Outcome: a.Outcome, Reason: clip(a.Reason),
		HeldBy: a.HeldBy, TokenStatus: a.TokenStatus,
	}
	if _, err := l.audit.AddEntity(ctx, mustJSON(e), nil); err != nil {
		return classify("ledger: audit "+a.Action+" of "+a.Serial, err)
	}
	return nil
}

// AuditTrail returns up to max audit records of a serial, newest first (max <= 0: all).
func (l *Ledger) AuditTrail(ctx context.Context, serial string, max int) ([]pipeline.AuditRecord, error) {
	op := "ledger: audit trail of " + serial
	filter := "PartitionKey eq " + odataString(keyFor(serial))
	pager := l.audit.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	var out []pipeline.AuditRecord
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, classify(op, err)
		}
		for _, raw := range page.Entities {
			var e auditEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, fmt.Errorf("%s: decode entity: %w", op, err)
			}
			if e.Serial != serial {
				continue
			}
			out = append(out, pipeline.AuditRecord{
				Time: parseTime(e.Time), Caller: e.Caller, Action: e.Action, Serial: e.Serial,
				FromUser: e.FromUser, ToUser: e.ToUser, ToUserID: e.ToUserID, Outcome: e.Outcome, Reason: e.Reason,
				HeldBy: e.HeldBy, TokenStatus: e.TokenStatus,
			})
			if max > 0 && len(out) == max {
				return out, nil
			}
		}
	}
	return out, nil
}
