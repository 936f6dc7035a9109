package ledger

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/seedfile"
)

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

// summaryEntity is an import's summary row.
type summaryEntity struct {
	PartitionKey string
	RowKey       string
	Kind         string // "import"
	ImportID     string
	FileName     string
	BlobETag     string
	Stage        pipeline.Stage
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
	Status            pipeline.RowStatus
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
