// Package pipeline holds oathpipe's flows — import a seed file, provision a token, (re)assign a
// token — written against small interfaces (the seed vault, the directory, the ledger, the
// queue, the blob store) so they run the same in a function, in the CLI and in tests. It
// imports no Azure SDK package: main.go wires the implementations in.
package pipeline

import (
	"context"
	"io"
	"slices"
	"time"

	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

// SeedVault stores seeds at rest (Key Vault in production: package vault).
type SeedVault interface {
	// PutSeed stores seed for t. The same seed again is a no-op (created=false); a different seed
	// under the same token is a *token.Error of KindConflict naming the serial, and nothing is
	// overwritten. importID is recorded as a tag. retiredBefore is when the serial was retired,
	// when it was (this seed is then a new token's: the serial imported again after a retire,
	// also on a repeated import); zero otherwise.
	PutSeed(ctx context.Context, t token.Token, seed token.Seed, importID string) (retiredBefore time.Time, err error)
	// GetSeed returns the seed stored for the token (KindNotFound when there is none).
	GetSeed(ctx context.Context, manufacturer, serial string) (token.Seed, error)
}

// Directory is Entra ID through Microsoft Graph (package entra).
type Directory interface {
	// ResolveUser finds a user by UPN or object id; guests are KindGuest, disabled accounts KindDisabled.
	ResolveUser(ctx context.Context, upnOrID string) (token.User, error)
	// FindDevice finds a device in the inventory by serial (KindNotFound when absent).
	FindDevice(ctx context.Context, serial string) (token.Device, error)
	// EnsureDevice finds the device by serial, else creates it from t and seed: assigned to
	// t.AssignTo when set (one write for create + assign), else unassigned. A found device is
	// returned as it is.
	EnsureDevice(ctx context.Context, t token.Token, seed token.Seed) (d token.Device, created bool, err error)
	// Assign assigns the device to the user and returns the user's method id for it.
	// Assigning a device the user already holds returns its existing method id.
	Assign(ctx context.Context, userID, deviceID string) (methodID string, err error)
	// Activate activates the user's method with a code computed from seed right before sending
	// (waiting for the next step when fewer than ~3 s remain; a retry uses a fresh code), from a
	// time step later than after's: after is the time of the token's last successful activation
	// (zero when none is known), whose step's code must not be sent again (RFC 6238 §5.2). It
	// returns the time the accepted code was computed for.
	Activate(ctx context.Context, userID, methodID string, seed token.Seed, after time.Time) (time.Time, error)
	// CountOathMethods counts the user's OATH methods as Entra's limit of five counts them
	// (hardware tokens and authenticator apps together).
	CountOathMethods(ctx context.Context, userID string) (int, error)
	// ActivateWithCode activates with a code read from the device, sent as is.
	ActivateWithCode(ctx context.Context, userID, methodID, code string) error
	// Unassign removes the user's method; the device returns to available.
	Unassign(ctx context.Context, userID, methodID string) error
	// ListUserMethods lists the user's hardware OATH methods.
	ListUserMethods(ctx context.Context, userID string) ([]token.Method, error)
}

// ImportRecord is one import (one upload of one file) in the ledger.
type ImportRecord struct {
	ImportID string // derived from the blob name and ETag: see ImportID
	FileName string // the blob name in seed-inbox
	ETag     string
	Stage    Stage
	Format   string
	Rows     int
	Valid    int
	Invalid  int
	// Pending counts the tokens queued and not yet settled. The ledger sets it once, when the
	// import reaches StageVaulted, and SetTokenOutcome decrements it.
	Pending int
	// Checkpoint is the line up to which every row's seed is stored and its message queued
	// (0: none yet). A continuation of the import resumes after it.
	Checkpoint int
	// Refused counts the valid rows the vault refused (their rows failed), up to Checkpoint.
	Refused     int
	Problems    []seedfile.Problem // file-level problems (Line 0)
	Disposition string             // where the source blob went: "deleted" or "rejected"
	Created     time.Time
	Updated     time.Time
}

// TokenRecord is one row of an import's file in the ledger (valid or not). Rows are keyed by
// (ImportID, Line): a file can repeat a serial on a rejected line.
type TokenRecord struct {
	ImportID          string
	Line              int
	Serial            string // may be empty on a rejected row
	Manufacturer      string
	Model             string
	UserPrincipalName string
	Status            RowStatus
	Reason            string // plain reason for failed/rejected; never a seed
	Problems          []seedfile.Problem
	SeedFingerprint   string // token.Fingerprint of the seed: tells seeds apart, recovers nothing
	DeviceID          string // Entra device id, once known
	UserID            string // Entra user object id, once assigned
	Updated           time.Time
	// Cause says, on a failed row, which step failed it, for code to branch on (Reason is the
	// sentence for people, and is never parsed).
	Cause FailureCause
}

// A FailureCause names the step that failed a token row. The empty cause is any other step
// (provisioning, a change through the HTTP API).
type FailureCause string

// CauseVaultRefused: the vault refused the row's seed (a different seed under the serial, ...),
// so nothing of the token was queued. A repeated delivery counts these rows in Refused.
const CauseVaultRefused FailureCause = "vault-refused"

// Outcome is what SetTokenOutcome records on a token row.
type Outcome struct {
	Status            RowStatus
	Reason            string
	UserPrincipalName string // the user the token is now assigned to ("" when unassigned)
	DeviceID          string
	UserID            string
	// Warnings are added to the row's Problems (kept for a row that passed validation as its
	// warnings), each once by Code: what the report should say beside the outcome.
	Warnings []seedfile.Problem
	Cause    FailureCause // which step failed the token, with StatusFailed ("" otherwise)
}

// WithWarnings returns problems with o's Warnings added, each one whose Code problems does not
// hold yet: recording the same outcome twice adds nothing. problems is not modified.
func (o Outcome) WithWarnings(problems []seedfile.Problem) []seedfile.Problem {
	out := problems
	for _, w := range o.Warnings {
		if !slices.ContainsFunc(out, func(p seedfile.Problem) bool { return p.Code == w.Code }) {
			out = append(slices.Clip(out), w)
		}
	}
	return out
}

// AuditRecord is one change made through the HTTP API (table oathpipeaudit).
type AuditRecord struct {
	Time     time.Time
	Caller   string // who asked (the client principal, or "function-key")
	Action   string // "assign", "unassign", "retire" or "take-back"
	Serial   string
	FromUser string // UPN the token was assigned to before ("" when none)
	ToUser   string // UPN it is assigned to after ("" when none); for an object-id request, the UPN it resolved to
	ToUserID string // the object id of ToUser, once resolved ("" when the user was not found)
	// HeldBy and TokenStatus say who holds the token after the request and in what Entra
	// status, read back from Entra on a failed change ("" HeldBy: nobody, in the inventory).
	HeldBy      string
	TokenStatus string
	Outcome     string // "changed", "unchanged", or the failure kind
	Reason      string // plain reason on failure
}

// Ledger records what happened to each import and token (Azure Table storage: package ledger).
// Every method is safe to call concurrently from many workers and instances. The contract
// suite in internal/ledgertest holds every implementation to what is written here.
type Ledger interface {
	// BeginImport stores rec (Stage StageStarted, Created stamped when zero, no counts: Pending,
	// Checkpoint and Refused start at zero) if no import with rec.ImportID exists and returns it
	// with created=true; otherwise it returns the stored record, unchanged. An empty import id is
	// KindInvalid. A new import becomes its file name's latest (ImportByName) unless one created
	// later already is.
	BeginImport(ctx context.Context, rec ImportRecord) (stored ImportRecord, created bool, err error)
	// AddTokens writes a chunk of rows of imp's file (rows already stored are left as they are)
	// and points the serial index at its non-rejected rows (TokenBySerial), unless a newer
	// import holds the serial, without touching the import's summary. A big file is recorded in
	// chunks; SealImport ends it, so a repeated import never moves a token back or counts it
	// twice. Rows of an import BeginImport did not store are KindNotFound; a row with a
	// negative line or no status is KindInvalid.
	AddTokens(ctx context.Context, imp ImportRecord, rows []TokenRecord) error
	// SealImport records imp's file facts (Format, Rows, Valid, Invalid, Problems, Disposition)
	// and — only while the import is still at StageStarted — sets Pending to imp.Pending (zero
	// when negative) and moves it to StageVaulted, after every row was written with AddTokens.
	SealImport(ctx context.Context, imp ImportRecord) error
	// EachToken calls fn with the import's rows whose line is in [from, to] (to <= 0: to the
	// end), in line order, a page at a time: memory stays flat in the import's size. An error
	// from fn stops the listing and is returned.
	EachToken(ctx context.Context, importID string, from, to int, fn func(TokenRecord) error) error
	// SetImportStage moves the import to stage (never back) and records disposition when not
	// empty. It must not touch Pending. A stage that is not Known is KindInvalid.
	SetImportStage(ctx context.Context, importID string, stage Stage, disposition string) error
	// SetImportCheckpoint moves the import's Checkpoint forward to line (never back) and, in the
	// same update, adds refused to its Refused count; when line is not past the checkpoint,
	// nothing changes (so a repeated chunk is never counted twice).
	SetImportCheckpoint(ctx context.Context, importID string, line, refused int) error
	// GetImport returns one import (KindNotFound when absent).
	GetImport(ctx context.Context, importID string) (ImportRecord, error)
	// ImportByName returns the latest import (by Created) of a file name (KindNotFound when none).
	ImportByName(ctx context.Context, fileName string) (ImportRecord, error)
	// ListTokens returns an import's rows, ordered by line.
	ListTokens(ctx context.Context, importID string) ([]TokenRecord, error)
	// GetToken returns one row (KindNotFound when absent).
	GetToken(ctx context.Context, importID string, line int) (TokenRecord, error)
	// TokenBySerial returns the row of the latest import that holds serial on a non-rejected
	// line (KindNotFound when none). Serials may contain quotes, slashes and any unicode.
	TokenBySerial(ctx context.Context, serial string) (TokenRecord, error)
	// SetTokenOutcome records o on the row (o.Warnings join its Problems, each once by code;
	// an empty o.Status is KindInvalid). Once the import is past StageStarted, a row that
	// settles (RowStatus.Settled) decrements the import's Pending and one that stops being
	// settled increments it, with a conditional update (retrying on conflict, so concurrent
	// workers never lose a count); Pending never goes below zero. lastSettled is true exactly
	// when this call settled a row and left Pending at zero. The same outcome again changes
	// nothing and returns false.
	SetTokenOutcome(ctx context.Context, importID string, line int, o Outcome) (lastSettled bool, err error)
	// Audit appends one audit record.
	Audit(ctx context.Context, a AuditRecord) error
	// ClaimNotification records key (an import's outcome) as notified on the import and
	// answers first=true for exactly one caller per import and key across every instance (a
	// conditional update); a later different key is a new claim.
	ClaimNotification(ctx context.Context, importID, key string) (first bool, err error)
}

// Queue sends provisioning messages to the token-provisioning queue as plain JSON text (the
// host reads them with messageEncoding "none"). Messages never hold a seed.
type Queue interface {
	Enqueue(ctx context.Context, msgs []ProvisionMessage) error
}

// Requeue sends one provisioning message that becomes visible after delay (a throttled token's
// next try). Like Queue, it never holds a seed.
type Requeue interface {
	EnqueueAfter(ctx context.Context, m ProvisionMessage, delay time.Duration) error
}

// Inbox reads a seed file from seed-inbox (package storage).
type Inbox interface {
	// ReadInbox reads seed-inbox/{name}: its ETag, size and user metadata, with a Blob that
	// streams its content pinned to that ETag (KindNotFound when the blob is gone). Metadata keys
	// come back lower-cased.
	ReadInbox(ctx context.Context, name string) (InboxFile, error)
}

// ImportQueue hands a long import on to its next invocation: a continuation message on the
// seed-imports queue, beside the Event Grid events (package storage).
type ImportQueue interface {
	EnqueueContinuation(ctx context.Context, c ImportContinuation) error
}

// Blobs writes reports and removes a source file from the inbox.
type Blobs interface {
	// PutReport writes seed-reports/{name}.json and, when failuresCSV is not nil,
	// seed-reports/{name}.failures.csv from what failuresCSV streams (to its end; it may be
	// long); with failuresCSV nil it deletes any earlier {name}.failures.csv. Both are
	// overwritten on every call.
	PutReport(ctx context.Context, name string, reportJSON []byte, failuresCSV io.Reader) error
	// Reject stores the bytes read from content (to its end) as seed-rejected/{target}, checks
	// the stored copy against them, then deletes seed-inbox/{name} if its ETag is still etag.
	// Memory stays flat in the file's size. Safe to repeat: a copy with the same content is
	// accepted as done, and an inbox blob that is already gone is fine.
	Reject(ctx context.Context, name, etag string, content io.Reader, target string) error
	// DeleteInbox deletes seed-inbox/{name} if its ETag is still etag. A blob that is already
	// gone, or that was replaced by a new upload (another ETag: a new import), is left alone
	// and is not an error.
	DeleteInbox(ctx context.Context, name, etag string) error
}
