package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"time"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/envelope"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/seedfile"
)

// Deps is what a Pipeline works with. Vault, Directory, Ledger, Queue and Blobs are required.
type Deps struct {
	Vault     SeedVault
	Directory Directory
	Ledger    Ledger
	Queue     Queue
	Blobs     Blobs
	Inbox     Inbox       // ImportFromInbox reads the file here (required by ImportFromInbox)
	Imports   ImportQueue // continuations of long imports; without it an import never hands itself on

	// ImportBudget is how long one import invocation works before it records its checkpoint,
	// queues a continuation on Imports and returns (0: no budget, the import runs to its end).
	// Keep it well inside host.json's functionTimeout.
	ImportBudget time.Duration
	// RetryWait is the first wait after a transient vault failure during an import; waits
	// double up to MaxRetryWait (defaults 1 s and 15 s).
	RetryWait    time.Duration
	MaxRetryWait time.Duration
	// OutageWindow is how long an import without a budget keeps retrying a transient vault
	// failure before it fails the invocation (default 2 minutes). With a budget, it backs off
	// until the budget ends and hands itself on.
	OutageWindow time.Duration

	// Requeue puts a throttled token back on the token-provisioning queue, invisible for a
	// while (package storage). Without it a throttled token fails its delivery as before.
	Requeue Requeue
	// ThrottleMaxWait is how long a token may stay throttled before it is recorded failed
	// (OATHPIPE_THROTTLE_MAX_WAIT, default 24 h).
	ThrottleMaxWait time.Duration

	Activation       string           // config.ActivationAuto (default) or config.ActivationNone
	VaultConcurrency int              // seeds written to the vault at once (default 16)
	ReadOptions      seedfile.Options // PSKC key/password from settings
	Envelope         EnvelopeKeys     // PGP keys and zip passwords for delivered files; nil: none
	EnvelopeLimits   envelope.Limits  // caps on what a delivered file expands to; zero: the defaults
	Notifier         Notifier         // OATHPIPE_NOTIFY_URL: summaries of imports that settle with failures; nil: off
	ReportsURL       string           // the seed-reports container's URL, for links in notifications ("": container paths)
	Logger           *slog.Logger     // default: discard
	Now              func() time.Time // default: time.Now
}

// Pipeline runs oathpipe's flows. It is safe for concurrent use.
type Pipeline struct {
	d           Deps
	locks       serialLocks     // HTTP API changes, by serial
	importLocks serialLocks     // ledger settlements, by import id
	activations activationTimes // when this process last activated each token (assign_steps.go)
	log         *slog.Logger
	now         func() time.Time
	onChunk     func(n int) // tests: called with the size of each chunk an import holds
}

// chunkHook tells a test how many rows an import is about to hold at once.
func (p *Pipeline) chunkHook(n int) {
	if p.onChunk != nil {
		p.onChunk(n)
	}
}

// WithDefaults returns d with every unset tunable at its default.
func (d Deps) WithDefaults() Deps {
	if d.Activation == "" {
		d.Activation = config.ActivationAuto
	}
	if d.VaultConcurrency < 1 {
		d.VaultConcurrency = 16
	}
	if d.RetryWait <= 0 {
		d.RetryWait = time.Second
	}
	if d.MaxRetryWait <= 0 {
		d.MaxRetryWait = 15 * time.Second
	}
	if d.ThrottleMaxWait <= 0 {
		d.ThrottleMaxWait = 24 * time.Hour
	}
	if d.OutageWindow <= 0 {
		d.OutageWindow = 2 * time.Minute
	}
	return d
}

// New returns a Pipeline over d, filling in defaults.
func New(d Deps) *Pipeline {
	d = d.WithDefaults()
	p := &Pipeline{d: d, log: d.Logger, now: d.Now}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// The import id and serial travel in the context (logctx); its handler logs them.
	p.log = slog.New(logctx.NewHandler(p.log.Handler()))
	if p.now == nil {
		p.now = time.Now
	}
	return p
}

// ImportID derives the import id of one upload from the blob name and its ETag, so a repeated
// delivery of the same upload is the same import and a new upload under the same name is not.
func ImportID(name, etag string) string {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(etag))
	return "imp-" + hex.EncodeToString(h.Sum(nil))[:24]
}

// InboxFile is a seed file dropped in seed-inbox, as read from storage (Inbox.ReadInbox): its
// name, ETag, size and metadata, and a Blob that reads its content on demand, every read pinned
// to the ETag. Tests and the CLI may give the whole content in Content instead of a Blob.
type InboxFile struct {
	Name     string // blob name inside seed-inbox
	ETag     string
	Size     int64             // content length in bytes (len(Content) when Content is set)
	Content  []byte            // the whole file, when it is held in memory (tests, CLI); nil when Blob reads it
	Blob     BlobReader        // reads the stored blob (nil when Content holds it)
	Metadata map[string]string // user metadata (may carry format hints: see docs/pipeline.md)

	part      *seedPart // what Import read from the file (set by importDelivered)
	delivered bool      // the blob is an envelope (PGP, zip): rejected, it is kept as delivered
	outer     string    // for a file inside an archive: the archive's blob name
}

// BlobReader reads the content of one stored blob. Every request is conditional on the ETag it
// was opened at (If-Match): a blob replaced since is never read, the read fails instead.
type BlobReader interface {
	// Open streams the content from its start.
	Open(ctx context.Context) (io.ReadCloser, error)
	// ReadAt reads len(b) bytes at off with one ranged read, with io.ReaderAt's contract.
	ReadAt(ctx context.Context, b []byte, off int64) (int, error)
}

// Open streams f's content from its start: Content when set, else a download of the blob
// (If-Match its ETag).
func (f InboxFile) Open(ctx context.Context) (io.ReadCloser, error) {
	if f.Blob == nil {
		return io.NopCloser(bytes.NewReader(f.Content)), nil
	}
	return f.Blob.Open(ctx)
}

// ReaderAt gives random access to f's content (f.Size bytes, see ContentSize) without holding
// it: each ReadAt is one ranged read of the blob, If-Match its ETag (a zip archive's central
// directory, then its entries). With Content set it reads Content.
func (f InboxFile) ReaderAt(ctx context.Context) io.ReaderAt {
	if f.Blob == nil {
		return bytes.NewReader(f.Content)
	}
	return blobReaderAt{ctx: ctx, b: f.Blob}
}

// ContentSize is the size of f's content in bytes.
func (f InboxFile) ContentSize() int64 {
	if f.Blob == nil && f.Size == 0 {
		return int64(len(f.Content))
	}
	return f.Size
}

type blobReaderAt struct {
	ctx context.Context
	b   BlobReader
}

func (r blobReaderAt) ReadAt(b []byte, off int64) (int, error) { return r.b.ReadAt(r.ctx, b, off) }

// ProvisionMessage is one token's provisioning job on the token-provisioning queue. It never
// holds a seed: the worker reads the seed from the vault.
type ProvisionMessage struct {
	ImportID          string `json:"importId"`
	FileName          string `json:"fileName"`
	Line              int    `json:"line"`
	SerialNumber      string `json:"serialNumber"`
	Manufacturer      string `json:"manufacturer"`
	UserPrincipalName string `json:"userPrincipalName"`
	// ThrottledSince is when this token was first throttled (Graph or Key Vault 429) on its way
	// through the queue; a re-queued message carries it so the total wait is bounded
	// (Deps.ThrottleMaxWait). Throttles counts the re-queues, for the backoff when a 429 has no
	// Retry-After. Both names differ from every Metadata key the host sets (Id, DequeueCount,
	// PopReceipt, sys, ...): the host copies a message's top-level fields over them.
	ThrottledSince time.Time `json:"throttledSince,omitzero"`
	Throttles      int       `json:"throttles,omitempty"`
	// RetiredBefore is when the serial was retired, when the vault found it had been (the
	// import of a retired serial is a new token): the token's row then carries the warning
	// CodeRetiredBefore.
	RetiredBefore time.Time `json:"retiredBefore,omitzero"`
}

// ImportRequest asks ImportFromInbox to import seed-inbox/{Name}: from a BlobCreated event
// (ETag is the event's, for the log only: the import takes whatever the blob holds when read),
// or from a continuation (Continuation set: the import must still find the same ETag).
type ImportRequest struct {
	Name         string
	ETag         string
	Continuation bool
	ImportID     string // a continuation's import, for the log
	Part         int    // a continuation's part (2, 3, ...); 1 or 0 for the event
}

// ContinuationKind marks a continuation message on the seed-imports queue (field "oathpipe").
const ContinuationKind = "import-continuation"

// ImportContinuation is the message an import leaves on the seed-imports queue when its time
// budget ends: the next invocation resumes from the ledger's checkpoint. Its field names never
// collide with the host's queue-trigger metadata (Id, DequeueCount, PopReceipt, sys, ...), as
// the host copies a message's top-level fields into Metadata.
type ImportContinuation struct {
	Kind       string `json:"oathpipe"` // ContinuationKind
	BlobName   string `json:"blobName"`
	BlobETag   string `json:"blobETag"`
	ImportID   string `json:"importId"`
	Checkpoint int    `json:"checkpoint"` // for the log; the ledger's checkpoint is the truth
	Part       int    `json:"part"`       // 2 for the first continuation, 3 for the next, ...
}

// ImportResult is what one Import call did.
type ImportResult struct {
	ImportID    string             `json:"importId"`
	FileName    string             `json:"fileName"`
	Format      string             `json:"format"`
	Rows        int                `json:"rows"`
	Valid       int                `json:"valid"`
	Invalid     int                `json:"invalid"`
	Queued      int                `json:"queued"`      // provisioning messages for this import
	Failed      int                `json:"failed"`      // valid rows refused by the vault (e.g. a different seed under the serial)
	Disposition string             `json:"disposition"` // "deleted" or "rejected" (moved to seed-rejected)
	Repeat      bool               `json:"repeat"`      // the import had been started before (a repeated delivery)
	Continued   bool               `json:"continued"`   // the time budget ended: a continuation is queued
	Checkpoint  int                `json:"checkpoint"`  // rows up to this line are stored and queued
	Gone        bool               `json:"gone"`        // the blob was no longer in the inbox: nothing to do
	Replaced    bool               `json:"replaced"`    // a continuation found another upload under the name
	Problems    []seedfile.Problem `json:"problems,omitempty"`
	// Parts are the imports of the files inside a zip archive, one per file (named
	// "archive.zip!inner.csv"); the counts above are their sums.
	Parts []ImportResult `json:"parts,omitempty"`
}

// TokenOutcome is what one Provision call left a token at.
type TokenOutcome struct {
	ImportID          string    `json:"importId"`
	Line              int       `json:"line"`
	SerialNumber      string    `json:"serialNumber"`
	UserPrincipalName string    `json:"userPrincipalName"`
	Status            RowStatus `json:"status"` // available, assigned, activated, failed
	Reason            string    `json:"reason,omitempty"`
	Repeat            bool      `json:"repeat"` // the token had already settled; nothing was done
	// Requeued says the token was throttled and put back on the queue to be tried again after
	// RetryAfter (Status is empty: nothing is settled). The delivery succeeded.
	Requeued   bool          `json:"requeued,omitempty"`
	RetryAfter time.Duration `json:"-"`
}

// AssignRequest asks for a token to be assigned (and by default activated) to a user.
type AssignRequest struct {
	Serial            string
	UserPrincipalName string
	VerificationCode  string // optional: 6 digits read from the device, sent as is
	Activate          bool
	Caller            string // for the audit record
}

// Assignment is a token's assignment, the JSON answer of the HTTP API.
type Assignment struct {
	SerialNumber              string    `json:"serialNumber"`
	UserPrincipalName         string    `json:"userPrincipalName"`
	Status                    RowStatus `json:"status"` // for a token the ledger does not hold, Entra's token.Status
	PreviousUserPrincipalName string    `json:"previousUserPrincipalName"`
	Changed                   bool      `json:"changed"`
	ActivatedWith             string    `json:"activatedWith"` // "seed", "verificationCode" or ""
	Manufacturer              string    `json:"manufacturer,omitempty"`
	Model                     string    `json:"model,omitempty"`
	SeedInVault               *bool     `json:"seedInVault,omitempty"` // GET only
}

// ImportStatus is an import's summary and per-token outcomes: the body of
// seed-reports/{name}.json and of the ImportStatus API. It never holds a seed.
type ImportStatus struct {
	ImportID    string             `json:"importId"`
	FileName    string             `json:"fileName"`
	Stage       Stage              `json:"stage"`
	Format      string             `json:"format"`
	Rows        int                `json:"rows"`
	Valid       int                `json:"valid"`
	Invalid     int                `json:"invalid"`
	Pending     int                `json:"pending"`
	Settled     bool               `json:"settled"` // every token has a final outcome
	Counts      map[RowStatus]int  `json:"counts"`  // tokens per status
	Disposition string             `json:"disposition,omitempty"`
	Problems    []seedfile.Problem `json:"problems,omitempty"` // file-level problems (at most MaxReportProblems)
	Tokens      []TokenLine        `json:"tokens"`             // in line order, at most MaxReportTokens
	// Only when the lists above were cut (a big file): how many tokens and file-level problems
	// were left out, and where the full lists are.
	TokensOmitted   int       `json:"tokensOmitted,omitempty"`
	ProblemsOmitted int       `json:"problemsOmitted,omitempty"`
	FullList        string    `json:"fullList,omitempty"`
	Updated         time.Time `json:"updated"`
}

// TokenLine is one line's outcome in an ImportStatus.
type TokenLine struct {
	Line              int                `json:"line"`
	SerialNumber      string             `json:"serialNumber"`
	Manufacturer      string             `json:"manufacturer,omitempty"`
	Model             string             `json:"model,omitempty"`
	UserPrincipalName string             `json:"userPrincipalName,omitempty"`
	Status            RowStatus          `json:"status"`
	Reason            string             `json:"reason,omitempty"`
	Problems          []seedfile.Problem `json:"problems,omitempty"`
	Warnings          []seedfile.Problem `json:"warnings,omitempty"` // a valid row's warnings: model from a hint or the fallback, a key near its expiry
}

// Import reads and validates f, puts every valid seed in the vault, writes the ledger rows,
// queues one provisioning message per token, writes the report, and then removes f from the
// inbox (deleted when every row was imported, moved whole to seed-rejected otherwise). A non-nil
// error is worth retrying (the handler answers 500 and the host redelivers); a repeated delivery
// of the same upload does nothing twice.
func (p *Pipeline) Import(ctx context.Context, f InboxFile) (*ImportResult, error) {
	return p.importDelivered(ctx, f, 1)
}

// ImportFromInbox reads seed-inbox/{r.Name} from storage (ETag and metadata, the content
// streamed pinned to that ETag) and imports it like Import, within Deps.ImportBudget: when the budget ends it records
// its checkpoint, queues a continuation and returns with Continued set. A blob that is gone is
// answered with Gone (an earlier delivery imported it, or someone deleted it); a continuation
// that finds another ETag under the name answers Replaced (the new upload has its own event).
// A blob without an ETag is refused.
func (p *Pipeline) ImportFromInbox(ctx context.Context, r ImportRequest) (*ImportResult, error) {
	return p.importFromInbox(ctx, r)
}

// Provision takes one token from the vault to Entra: ensure the device, resolve the user,
// assign, activate, read back, record. A non-nil error is worth retrying; permanent failures are
// recorded in the ledger and answered with a nil error.
func (p *Pipeline) Provision(ctx context.Context, m ProvisionMessage, dequeueCount int) (*TokenOutcome, error) {
	return p.provision(ctx, m, dequeueCount)
}

// RecordPoisoned records a message the host gave up on (moved to the poison queue) as failed.
func (p *Pipeline) RecordPoisoned(ctx context.Context, m ProvisionMessage, reason string) error {
	return p.recordPoisoned(ctx, m, reason)
}

// AssignToken makes the token assigned (and, with r.Activate, activated) to r.UserPrincipalName,
// unassigning it from another user first. The same request again answers Changed=false.
func (p *Pipeline) AssignToken(ctx context.Context, r AssignRequest) (*Assignment, error) {
	return p.assignToken(ctx, r)
}

// UnassignToken takes the token back from its user (offboarding); it returns to the inventory.
func (p *Pipeline) UnassignToken(ctx context.Context, serial, caller string) (*Assignment, error) {
	return p.unassignToken(ctx, serial, caller)
}

// TokenState answers the token's status, assigned user, model, and whether its seed is in the vault.
func (p *Pipeline) TokenState(ctx context.Context, serial string) (*Assignment, error) {
	return p.tokenState(ctx, serial)
}

// ImportStatus returns the ledger's summary and per-token outcomes of the latest import of fileName.
func (p *Pipeline) ImportStatus(ctx context.Context, fileName string) (*ImportStatus, error) {
	return p.importStatus(ctx, fileName)
}

// ImportStatusByID is the live ImportStatus of one import of fileName, chosen by its import id:
// a later upload under the same name (a new import id) leaves an earlier import reachable. An id
// that is not an import of fileName is KindNotFound.
func (p *Pipeline) ImportStatusByID(ctx context.Context, fileName, importID string) (*ImportStatus, error) {
	return p.importStatusByID(ctx, fileName, importID)
}
