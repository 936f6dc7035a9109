// Package vault stores oathpipe's seeds in Azure Key Vault through the azsecrets client: one
// secret per token, named by SecretName, holding a small JSON document (content type
// ContentType) with the seed and its code parameters, and tagged with the token's non-secret
// facts so operators can find a token in the portal without reading a secret.
//
// Every failure is a *token.Error (see classify) wrapping the SDK's error, with Key Vault's
// x-ms-request-id. Nothing here logs, formats or returns a seed except GetSeed's result.
package vault

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/loopback"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Tag names on every seed secret. Key Vault allows 15 tags of at most 256 characters.
const (
	TagApp          = "oathpipe"     // always "seed-v1": marks the secrets this package owns
	TagSerial       = "serial"       // the serial, as imported
	TagManufacturer = "manufacturer" // the manufacturer, as imported
	TagModel        = "model"        // the model, as imported (cut to 256 characters)
	TagImportID     = "importId"     // the import that first stored (or last replaced) the seed
	TagFingerprint  = "fingerprint"  // token.Fingerprint of the secret: tells seeds apart, reveals nothing
	TagHash         = "hash"
	TagDigits       = "digits"
	TagPeriod       = "period"
	TagRetired      = "retired" // set (to the time, RFC 3339) on the version a retire soft-deleted
	// TagRetiredBefore is set (to the retire's time, RFC 3339) on the version a re-import of a
	// retired serial wrote: a repeated import finds it and still says the serial was retired.
	TagRetiredBefore = "retiredBefore"
	tagAppValue      = "seed-v1"
	maxTagValue      = 256
)

// DefaultRetry is the retry policy used when Options.Retry is nil: the SDK retries 408, 429,
// 500, 502, 503 and 504, honouring Retry-After (up to MaxRetryDelay) and backing off
// exponentially otherwise.
var DefaultRetry = policy.RetryOptions{
	MaxRetries:    8,
	TryTimeout:    30 * time.Second,
	RetryDelay:    500 * time.Millisecond,
	MaxRetryDelay: 60 * time.Second,
}

// Options configures New.
type Options struct {
	// VaultURL is the vault, e.g. https://kv-oathpipe.vault.azure.net/ (https only).
	VaultURL string
	// Credential authenticates to Key Vault (azauth.Credential); required.
	Credential azcore.TokenCredential
	// HTTPClient is the transport (azauth.HTTPClient trusts the stand-in's CA); nil = default.
	HTTPClient *http.Client
	// Logger receives one line per stored, recovered or conflicting seed; nil = slog.Default().
	Logger *slog.Logger
	// Retry overrides DefaultRetry.
	Retry *policy.RetryOptions
	// RecoveryWait bounds how long Put waits for a recovered secret to become readable
	// (Key Vault recovers asynchronously, usually within seconds); 0 means 30 s.
	RecoveryWait time.Duration
}

// Vault is the seed store on Key Vault. It is safe for concurrent use.
type Vault struct {
	client       *azsecrets.Client
	log          *slog.Logger
	recoveryWait time.Duration
}

// New returns a Vault for opts.VaultURL. Challenge-resource verification (the check that the
// vault's auth challenge names a *.vault.azure.net-like resource matching the host) is turned
// off only when the vault host is loopback: the local stand-in.
func New(opts Options) (*Vault, error) {
	u, err := url.Parse(opts.VaultURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("key vault URL %q: must be an https URL such as https://kv-oathpipe.vault.azure.net/", opts.VaultURL)
	}
	if opts.Credential == nil {
		return nil, fmt.Errorf("key vault %s: no credential", opts.VaultURL)
	}
	co := &azsecrets.ClientOptions{DisableChallengeResourceVerification: loopback.Host(u.Hostname())}
	co.Retry = DefaultRetry
	if opts.Retry != nil {
		co.Retry = *opts.Retry
	}
	co.Telemetry.ApplicationID = "oathpipe"
	if opts.HTTPClient != nil {
		co.Transport = opts.HTTPClient
	}
	client, err := azsecrets.NewClient(strings.TrimRight(opts.VaultURL, "/"), opts.Credential, co)
	if err != nil {
		return nil, fmt.Errorf("key vault client for %s: %w", opts.VaultURL, err)
	}
	v := &Vault{client: client, log: opts.Logger, recoveryWait: opts.RecoveryWait}
	if v.log == nil {
		v.log = slog.Default()
	}
	if v.recoveryWait <= 0 {
		v.recoveryWait = 30 * time.Second
	}
	return v, nil
}

// Outcome says what Put did.
type Outcome string

// The outcomes of Put.
const (
	Created   Outcome = "created"   // a new secret was written
	Unchanged Outcome = "unchanged" // the same seed was already stored: nothing written
	Recovered Outcome = "recovered" // the soft-deleted secret held the same seed and was recovered
	Replaced  Outcome = "replaced"  // PutOptions.Replace wrote a new version over a different seed
	Reissued  Outcome = "reissued"  // the serial was retired before: its new seed is a new version, a new token
)

// PutOptions are Put's optional settings.
type PutOptions struct {
	ImportID string // recorded in the importId tag
	// Replace writes a new version when a different seed is stored under the serial, instead
	// of answering KindConflict. Older versions stay in Key Vault's history. Reassignment never
	// needs it: only a deliberate re-seed does.
	Replace bool

	// retiredBefore, when set, receives the time the serial was retired before (PutSeed).
	retiredBefore *time.Time
	// retiredAt is the retired version's TagRetired value, for the version a reissue writes.
	retiredAt string
}

// PutSeed implements pipeline.SeedVault: Put without Replace. retiredBefore is when the serial
// was retired, when it was (Put answered Reissued, or the stored seed is the version such a
// re-import wrote); zero otherwise.
func (v *Vault) PutSeed(ctx context.Context, t token.Token, seed token.Seed, importID string) (retiredBefore time.Time, err error) {
	opts := PutOptions{ImportID: importID, retiredBefore: &retiredBefore}
	_, err = v.Put(ctx, t, seed, opts)
	return retiredBefore, err
}

// Put stores seed for t, idempotently: the same seed again is Unchanged; a different seed under
// the serial is a KindConflict naming the serial (nothing is overwritten unless opts.Replace);
// a soft-deleted secret is recovered first, then compared the same way, never re-created.
//
// Key Vault has no conditional write, so two writers racing on a serial that is not yet stored
// can both write; the later becomes the current version and the earlier stays in the history.
func (v *Vault) Put(ctx context.Context, t token.Token, seed token.Seed, opts PutOptions) (Outcome, error) {
	t.Manufacturer, t.Serial = strings.TrimSpace(t.Manufacturer), NormalizeSerial(t.Serial)
	op := fmt.Sprintf("store the seed of %s serial %s", t.Manufacturer, t.Serial)
	if err := checkToken(t); err != nil {
		return "", &token.Error{Kind: token.KindInvalid, Op: op, Message: err.Error()}
	}
	if err := checkSeed(seed); err != nil {
		return "", &token.Error{Kind: token.KindInvalid, Op: op, Message: err.Error()}
	}
	name := SecretName(t.Manufacturer, t.Serial)
	log := v.log.With(logctx.Serial, t.Serial, logctx.Manufacturer, t.Manufacturer, logctx.Secret, name,
		logctx.ImportID, opts.ImportID, logctx.Fingerprint, seed.Fingerprint())

	stored, reqID, err := v.read(ctx, name)
	switch {
	case err == nil:
		return v.compare(ctx, log, op, t, seed, opts, stored, reqID, Unchanged)
	case token.KindOf(err) == token.KindNotFound:
		// Not stored (or soft-deleted): write it below.
	case token.KindOf(err) == token.KindConflict && opts.Replace:
		// A disabled secret: replacing writes a new, enabled version.
		return v.write(ctx, log, op, t, seed, opts, Replaced)
	default:
		return "", wrapOp(op, err)
	}

	o, err := v.write(ctx, log, op, t, seed, opts, Created)
	if answerIs(err, http.StatusConflict, codeDeletedButRecoverable) {
		return v.recoverAndCompare(ctx, log, op, t, seed, opts, name)
	}
	return o, err
}

// recoverAndCompare recovers a soft-deleted secret and treats it as the stored seed.
func (v *Vault) recoverAndCompare(ctx context.Context, log *slog.Logger, op string, t token.Token, seed token.Seed, opts PutOptions, name string) (Outcome, error) {
	if _, err := v.client.RecoverDeletedSecret(ctx, name, nil); err != nil {
		// Someone else recovered it (or is recovering it) first: carry on and read it.
		if answerStatus(err) != http.StatusNotFound && !answerIs(err, http.StatusConflict, codeBeingRecovered) {
			return "", classify(op+": recover the soft-deleted secret", err)
		}
	}
	log.InfoContext(ctx, "recovered soft-deleted seed secret")
	deadline := time.Now().Add(v.recoveryWait)
	delay := 250 * time.Millisecond
	for {
		stored, reqID, err := v.read(ctx, name)
		if err == nil {
			return v.compare(ctx, log, op, t, seed, opts, stored, reqID, Recovered)
		}
		if token.KindOf(err) != token.KindNotFound || time.Now().Add(delay).After(deadline) {
			return "", wrapOp(op+": read the recovered secret", err)
		}
		select {
		case <-ctx.Done():
			return "", classify(op, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 4*time.Second)
	}
}

type storedSeed struct {
	doc     document
	seed    token.Seed
	ok      bool // false when the value is not a seed document
	retired bool // the version carries TagRetired: the token was retired (Retire)
	value   string
	tags    map[string]*string
}

// read gets and decodes the current version of a secret.
func (v *Vault) read(ctx context.Context, name string) (storedSeed, string, error) {
	var raw *http.Response
	resp, err := v.client.GetSecret(runtime.WithCaptureResponse(ctx, &raw), name, "", nil)
	if err != nil {
		return storedSeed{}, "", classify("read secret "+name, err)
	}
	reqID := ""
	if raw != nil {
		reqID = raw.Header.Get("x-ms-request-id")
	}
	var st storedSeed
	if resp.Value != nil && resp.ContentType != nil && *resp.ContentType == ContentType {
		if d, s, err := decodeDocument(*resp.Value); err == nil {
			st = storedSeed{doc: d, seed: s, ok: true, value: *resp.Value}
		}
	}
	st.tags = resp.Tags
	_, st.retired = resp.Tags[TagRetired]
	return st, reqID, nil
}

func (v *Vault) compare(ctx context.Context, log *slog.Logger, op string, t token.Token, seed token.Seed, opts PutOptions, stored storedSeed, reqID string, same Outcome) (Outcome, error) {
	if stored.ok && stored.retired {
		// A retired token's serial imported again is a new token: its seed (even the same one,
		// a token found again) becomes a new version without the mark; the retired one stays
		// in the history.
		log.InfoContext(ctx, "serial was retired before; its new seed is stored as a new token")
		opts.retiredAt = tagValue(stored.tags, TagRetired)
		opts.noteRetired(opts.retiredAt)
		return v.write(ctx, log, op, t, seed, opts, Reissued)
	}
	if stored.ok && stored.doc.Serial == t.Serial && NormalizeManufacturer(stored.doc.Manufacturer) == NormalizeManufacturer(t.Manufacturer) &&
		sameSeed(stored.seed, seed) {
		opts.noteRetired(tagValue(stored.tags, TagRetiredBefore))
		if same == Recovered {
			log.InfoContext(ctx, "seed already stored (recovered)")
		} else {
			log.DebugContext(ctx, "seed already stored")
		}
		return same, nil
	}
	if opts.Replace {
		return v.write(ctx, log, op, t, seed, opts, Replaced)
	}
	msg := fmt.Sprintf("a different seed is already stored for serial %s", t.Serial)
	if stored.ok {
		msg += fmt.Sprintf(" (stored fingerprint %s, new %s)", stored.seed.Fingerprint(), seed.Fingerprint())
	} else {
		msg = fmt.Sprintf("the Key Vault secret for serial %s holds something that is not an oathpipe seed", t.Serial)
	}
	log.WarnContext(ctx, "seed conflict", logctx.StoredFingerprint, stored.seed.Fingerprint())
	return "", &token.Error{Kind: token.KindConflict, Op: op, Message: msg, RequestID: reqID}
}

func (v *Vault) write(ctx context.Context, log *slog.Logger, op string, t token.Token, seed token.Seed, opts PutOptions, o Outcome) (Outcome, error) {
	value, err := encodeDocument(t, seed)
	if err != nil {
		return "", &token.Error{Kind: token.KindInternal, Op: op, Message: err.Error()}
	}
	name := SecretName(t.Manufacturer, t.Serial)
	resp, err := v.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{
		Value:            &value,
		ContentType:      ptr(ContentType),
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: ptr(true)},
		Tags:             tags(t, seed, opts),
	}, nil)
	if err != nil {
		return "", classify(op, err) // Put recovers ObjectIsDeletedButRecoverable

	}
	version := ""
	if resp.ID != nil {
		version = resp.ID.Version()
	}
	log.InfoContext(ctx, "seed stored", logctx.Outcome, string(o), logctx.Version, version)
	return o, nil
}

// noteRetired hands a TagRetired/TagRetiredBefore value to PutSeed's caller (a value that is
// not a time still says the serial was retired: the Unix epoch stands for "when unknown").
func (o PutOptions) noteRetired(at string) {
	if o.retiredBefore == nil || at == "" {
		return
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		t = time.Unix(0, 0).UTC()
	}
	*o.retiredBefore = t
}

func tagValue(tags map[string]*string, key string) string {
	if v := tags[key]; v != nil {
		return *v
	}
	return ""
}

func tags(t token.Token, s token.Seed, opts PutOptions) map[string]*string {
	importID := opts.ImportID
	cut := func(v string) *string {
		if len(v) > maxTagValue {
			v = v[:maxTagValue]
		}
		return &v
	}
	m := map[string]*string{
		TagApp:          ptr(tagAppValue),
		TagSerial:       ptr(t.Serial),
		TagManufacturer: ptr(t.Manufacturer),
		TagFingerprint:  ptr(s.Fingerprint()),
		TagHash:         ptr(string(s.Hash)),
		TagDigits:       ptr(fmt.Sprint(s.Digits)),
		TagPeriod:       ptr(fmt.Sprint(s.Period)),
	}
	if t.Model != "" {
		m[TagModel] = cut(strings.TrimSpace(t.Model))
	}
	if importID != "" {
		m[TagImportID] = cut(importID)
	}
	if opts.retiredAt != "" {
		m[TagRetiredBefore] = cut(opts.retiredAt)
	}
	return m
}

func checkToken(t token.Token) error {
	switch {
	case t.Serial == "":
		return errors.New("the serial is empty")
	case t.Manufacturer == "":
		return errors.New("the manufacturer is empty")
	case len(t.Serial) > maxTagValue:
		return fmt.Errorf("the serial is longer than %d characters", maxTagValue)
	case len(t.Manufacturer) > maxTagValue:
		return fmt.Errorf("the manufacturer is longer than %d characters", maxTagValue)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func wrapOp(op string, err error) error {
	var te *token.Error
	if errors.As(err, &te) {
		c := *te
		c.Op = op
		return &c
	}
	return classify(op, err)
}

// GetSeed returns the seed stored for the token: KindNotFound when there is none (or it is
// soft-deleted), KindConflict when the secret is disabled or is not an oathpipe seed document.
func (v *Vault) GetSeed(ctx context.Context, manufacturer, serial string) (token.Seed, error) {
	manufacturer, serial = strings.TrimSpace(manufacturer), NormalizeSerial(serial)
	op := fmt.Sprintf("read the seed of %s serial %s", manufacturer, serial)
	if err := checkToken(token.Token{Manufacturer: manufacturer, Serial: serial}); err != nil {
		return token.Seed{}, &token.Error{Kind: token.KindInvalid, Op: op, Message: err.Error()}
	}
	stored, _, err := v.read(ctx, SecretName(manufacturer, serial))
	if err != nil {
		if token.KindOf(err) == token.KindNotFound {
			return token.Seed{}, &token.Error{Kind: token.KindNotFound, Op: op,
				Message:   fmt.Sprintf("no seed in Key Vault for %s serial %s", manufacturer, serial),
				RequestID: token.RequestIDOf(err), Err: err}
		}
		return token.Seed{}, wrapOp(op, err)
	}
	if !stored.ok || stored.doc.Serial != serial || NormalizeManufacturer(stored.doc.Manufacturer) != NormalizeManufacturer(manufacturer) {
		return token.Seed{}, &token.Error{Kind: token.KindConflict, Op: op,
			Message: fmt.Sprintf("the Key Vault secret for serial %s is not this token's oathpipe seed", serial)}
	}
	return stored.seed, nil
}

// Has reports whether a seed secret exists (active, not soft-deleted) for the token, without
// reading its value.
func (v *Vault) Has(ctx context.Context, manufacturer, serial string) (bool, error) {
	name := SecretName(manufacturer, serial)
	pager := v.client.NewListSecretPropertiesVersionsPager(name, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			err = classify(fmt.Sprintf("look up the seed of %s serial %s", strings.TrimSpace(manufacturer), NormalizeSerial(serial)), err)
			if token.KindOf(err) == token.KindNotFound {
				return false, nil
			}
			return false, err
		}
		for _, p := range page.Value {
			if p.Attributes != nil && p.Attributes.Enabled != nil && *p.Attributes.Enabled {
				return true, nil
			}
		}
	}
	return false, nil
}

// Retire marks the token's seed as retired (a new version of the same value, tagged
// TagRetired) and soft-deletes it, so the seed is recoverable for the vault's retention period
// and the serial imported again later is a new token (Put answers Reissued) instead of a
// conflict with the retired seed. KindNotFound when there is no active secret. A retire cut
// short between the two steps finishes on the next call (the mark is not written twice).
func (v *Vault) Retire(ctx context.Context, manufacturer, serial string) error {
	manufacturer, serial = strings.TrimSpace(manufacturer), NormalizeSerial(serial)
	name := SecretName(manufacturer, serial)
	op := fmt.Sprintf("retire the seed of %s serial %s", manufacturer, serial)
	stored, _, err := v.read(ctx, name)
	if err != nil {
		return wrapOp(op, err)
	}
	if !stored.ok {
		return &token.Error{Kind: token.KindConflict, Op: op, Message: "the Key Vault secret holds something that is not an oathpipe seed"}
	}
	if !stored.retired {
		tags := map[string]*string{}
		for k, val := range stored.tags {
			tags[k] = val
		}
		tags[TagRetired] = ptr(time.Now().UTC().Format(time.RFC3339))
		if _, err := v.client.SetSecret(ctx, name, azsecrets.SetSecretParameters{
			Value: &stored.value, ContentType: ptr(ContentType),
			SecretAttributes: &azsecrets.SecretAttributes{Enabled: ptr(true)}, Tags: tags,
		}, nil); err != nil {
			return classify(op+": mark it retired", err)
		}
	}
	return v.Delete(ctx, manufacturer, serial)
}

// Delete soft-deletes the token's seed secret (recoverable for the vault's retention period).
// It is KindNotFound when there is no active secret.
func (v *Vault) Delete(ctx context.Context, manufacturer, serial string) error {
	manufacturer, serial = strings.TrimSpace(manufacturer), NormalizeSerial(serial)
	name := SecretName(manufacturer, serial)
	op := fmt.Sprintf("delete the seed of %s serial %s", manufacturer, serial)
	if _, err := v.client.DeleteSecret(ctx, name, nil); err != nil {
		return classify(op, err)
	}
	v.log.InfoContext(ctx, "seed secret soft-deleted", logctx.Serial, serial, logctx.Manufacturer, manufacturer, logctx.Secret, name)
	return nil
}

// Entry is one stored seed's metadata, read from tags: never the seed.
type Entry struct {
	Name         string // the secret name
	Serial       string
	Manufacturer string
	Model        string
	ImportID     string
	Fingerprint  string
	Enabled      bool
	Created      time.Time
	Updated      time.Time
}

// Entries iterates over the seed secrets oathpipe owns (those tagged oathpipe=seed-v1), reading
// only their properties and tags. Iteration stops at the first error, which is yielded.
func (v *Vault) Entries(ctx context.Context) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		pager := v.client.NewListSecretPropertiesPager(nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				yield(Entry{}, classify("list seed secrets", err))
				return
			}
			for _, p := range page.Value {
				if p.Tags[TagApp] == nil || *p.Tags[TagApp] != tagAppValue {
					continue
				}
				e := entryOf(p)
				if !yield(e, nil) {
					return
				}
			}
		}
	}
}

// entryOf reads a listed secret's name, tags and attributes.
func entryOf(p *azsecrets.SecretProperties) Entry {
	e := Entry{
		Serial: tag(p.Tags, TagSerial), Manufacturer: tag(p.Tags, TagManufacturer),
		Model: tag(p.Tags, TagModel), ImportID: tag(p.Tags, TagImportID), Fingerprint: tag(p.Tags, TagFingerprint),
	}
	if p.ID != nil {
		e.Name = p.ID.Name()
	}
	if a := p.Attributes; a != nil {
		e.Enabled = a.Enabled != nil && *a.Enabled
		if a.Created != nil {
			e.Created = *a.Created
		}
		if a.Updated != nil {
			e.Updated = *a.Updated
		}
	}
	return e
}

// List returns every seed secret's metadata (see Entries).
func (v *Vault) List(ctx context.Context) ([]Entry, error) {
	var out []Entry
	for e, err := range v.Entries(ctx) {
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
	return out, nil
}

func tag(m map[string]*string, k string) string {
	if p := m[k]; p != nil {
		return *p
	}
	return ""
}
