// Package kvstandin is a local stand-in for Azure Key Vault's secrets REST API, close enough
// that the real azsecrets client works against it unchanged: challenge authentication,
// set/get/versions/update/delete/recover/purge, soft-delete states, Key Vault's limits and error
// bodies, optional latency and a token-bucket rate limit answering 429 with Retry-After.
// Tests run it with StartTLS; the demo runs it in-process or as cmd/kvstandin.
//
// It never logs or echoes a secret value.
package kvstandin

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Key Vault's documented limits that the stand-in enforces.
const (
	MaxNameLen        = 127
	MaxValueBytes     = 25 * 1024
	MaxContentTypeLen = 255
	MaxTags           = 15
	MaxTagNameLen     = 512
	MaxTagValueLen    = 256
	pageSize          = 25
	retentionDays     = 90
)

// DefaultToken is the bearer token the stand-in accepts when Options.Token is empty.
const DefaultToken = "oathpipe-local-token"

// DefaultTenant is the tenant named in the challenge when Options.Tenant is empty.
const DefaultTenant = "00000000-0000-0000-0000-000000000000"

// Options configures a Server.
type Options struct {
	// Latency is added to every answer, like a network round trip to the vault.
	Latency time.Duration
	// Rate transactions are allowed per Per (a token bucket holding Rate, refilled evenly over
	// Per). Zero values mean Key Vault's secrets limit: 4,000 per 10 s. A negative Rate
	// disables the limit.
	Rate int
	Per  time.Duration
	// Tenant is the tenant id in the WWW-Authenticate challenge.
	Tenant string
	// Token is the only bearer token accepted (default DefaultToken).
	Token string
	// VersionsInOrder lists a secret's versions oldest first. Key Vault documents no order for
	// "Get Secret Versions", so by default the stand-in lists them by version id (random hex):
	// a client must not rely on the order.
	VersionsInOrder bool
}

// Stats counts what the server has seen.
type Stats struct {
	Requests        int64 // every request, including challenges and refused ones
	Transactions    int64 // authenticated requests that passed the rate limit
	Throttled       int64 // answered 429 by the rate limit or by FailNext
	Unauthenticated int64 // answered 401 (challenges and bad tokens)
	Injected        int64 // answered with a failure set by FailNext
}

// Record is one answered request, kept for tests (never with a body).
type Record struct {
	Time   time.Time
	Method string
	Path   string
	Status int
}

// SecretInfo is what the test hooks reveal about a stored secret: never its value.
type SecretInfo struct {
	Name        string
	ContentType string
	Tags        map[string]string
	Versions    int
	Enabled     bool // the latest version is enabled
	Deleted     bool // soft-deleted, recoverable
}

type version struct {
	id          string
	value       string
	contentType string
	tags        map[string]string
	enabled     bool
	created     time.Time
	updated     time.Time
}

type secret struct {
	name      string // as first created
	versions  []*version
	deletedAt time.Time // zero unless soft-deleted
}

func (s *secret) latest() *version { return s.versions[len(s.versions)-1] }

func (s *secret) find(id string) *version {
	if id == "" {
		return s.latest()
	}
	for _, v := range s.versions {
		if strings.EqualFold(v.id, id) {
			return v
		}
	}
	return nil
}

type failure struct {
	n      int
	status int
	until  time.Time // an outage: every request fails with status until then
}

// Server is the stand-in; it is an http.Handler.
type Server struct {
	opts Options
	rate *bucket

	mu      sync.Mutex
	active  map[string]*secret // key: lower-case name
	deleted map[string]*secret
	fail    failure
	records []Record

	requests, transactions, throttled, unauthenticated, injected atomic.Int64
}

// New returns a Server with opts' defaults filled in.
func New(opts Options) *Server {
	if opts.Rate == 0 {
		opts.Rate = 4000
	}
	if opts.Per <= 0 {
		opts.Per = 10 * time.Second
	}
	if opts.Tenant == "" {
		opts.Tenant = DefaultTenant
	}
	if opts.Token == "" {
		opts.Token = DefaultToken
	}
	s := &Server{opts: opts, active: map[string]*secret{}, deleted: map[string]*secret{}}
	if opts.Rate > 0 {
		s.rate = newBucket(opts.Rate, opts.Per)
	}
	return s
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:        s.requests.Load(),
		Transactions:    s.transactions.Load(),
		Throttled:       s.throttled.Load(),
		Unauthenticated: s.unauthenticated.Load(),
		Injected:        s.injected.Load(),
	}
}

// Records returns the last answered requests (at most 10,000), oldest first.
func (s *Server) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.records...)
}

// FailNext makes the next n authenticated requests fail with status (429 and 503 carry
// Retry-After: 1), before they touch any state.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = failure{n: n, status: status}
}

// Outage makes every authenticated request fail with 503 (Retry-After: 1) for d from now, as
// a Key Vault outage does, before it touches any state.
func (s *Server) Outage(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = failure{status: http.StatusServiceUnavailable, until: time.Now().Add(d)}
}

// DrainRate empties the rate limiter's bucket, as if other clients had just used the vault's
// whole allowance.
func (s *Server) DrainRate() {
	if s.rate != nil {
		s.rate.drain(time.Now())
	}
}

// Secrets lists every stored secret, active and soft-deleted, by name: never a value.
func (s *Server) Secrets() []SecretInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SecretInfo
	for _, m := range []map[string]*secret{s.active, s.deleted} {
		for _, sec := range m {
			l := sec.latest()
			tags := map[string]string{}
			for k, v := range l.tags {
				tags[k] = v
			}
			out = append(out, SecretInfo{Name: sec.name, ContentType: l.contentType, Tags: tags,
				Versions: len(sec.versions), Enabled: l.enabled, Deleted: !sec.deletedAt.IsZero()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	if s.opts.Latency > 0 {
		t := time.NewTimer(s.opts.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	reqID := newID()
	rec.Header().Set("x-ms-request-id", reqID)
	rec.Header().Set("x-ms-keyvault-service-version", "1.9.2914.1")
	rec.Header().Set("x-ms-keyvault-region", "local")
	s.serve(rec, r)
	s.mu.Lock()
	if len(s.records) >= 10000 {
		s.records = append(s.records[:0], s.records[5000:]...)
	}
	s.records = append(s.records, Record{Time: time.Now(), Method: r.Method, Path: r.URL.Path, Status: rec.status})
	s.mu.Unlock()
}

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	// Challenge authentication: a request without the right bearer token gets the 401 that
	// tells the SDK which tenant and resource to ask a token for.
	auth := r.Header.Get("Authorization")
	if auth != "Bearer "+s.opts.Token {
		s.unauthenticated.Add(1)
		// Drain the body so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(
			`Bearer authorization="https://login.microsoftonline.com/%s", resource="https://vault.azure.net"`, s.opts.Tenant))
		msg := "AKV10000: Request is missing a Bearer or PoP token."
		if auth != "" {
			msg = "AKV10032: Invalid issuer or token."
		}
		writeError(w, http.StatusUnauthorized, "Unauthorized", msg, "")
		return
	}

	s.mu.Lock()
	inject := 0
	if s.fail.n > 0 {
		s.fail.n--
		inject = s.fail.status
	} else if time.Now().Before(s.fail.until) {
		inject = s.fail.status
	}
	s.mu.Unlock()
	if inject != 0 {
		s.injected.Add(1)
		if inject == http.StatusTooManyRequests || inject == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		if inject == http.StatusTooManyRequests {
			s.throttled.Add(1)
			writeError(w, inject, "Throttled", "Request was not processed because too many requests were received. Reason: A1", "")
			return
		}
		writeError(w, inject, http.StatusText(inject), "Injected failure.", "")
		return
	}

	if s.rate != nil {
		if wait, ok := s.rate.take(time.Now()); !ok {
			s.throttled.Add(1)
			secs := int((wait + time.Second - 1) / time.Second)
			if secs < 1 {
				secs = 1
			}
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeError(w, http.StatusTooManyRequests, "Throttled",
				"Request was not processed because too many requests were received. Reason: A1", "")
			return
		}
	}
	s.transactions.Add(1)

	if r.URL.Query().Get("api-version") == "" {
		writeError(w, http.StatusBadRequest, "BadParameter", "The request URI contains an invalid api-version.", "")
		return
	}
	s.route(w, r)
}

// validName reports whether n is a valid Key Vault object name: 1–127 of [0-9a-zA-Z-].
func validName(n string) bool {
	if len(n) < 1 || len(n) > MaxNameLen {
		return false
	}
	for i := range len(n) {
		c := n[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	// "/secrets/name/" (an empty version, as the SDK sends for "latest") splits like "/secrets/name".
	if len(parts) > 1 && !validName(parts[1]) {
		writeError(w, http.StatusBadRequest, "BadParameter",
			fmt.Sprintf("The request URI contains an invalid name: %s", parts[1]), "")
		return
	}
	base := "https://" + r.Host
	switch {
	case parts[0] == "secrets" && len(parts) == 1 && r.Method == http.MethodGet:
		s.listSecrets(w, r, base)
	case parts[0] == "secrets" && len(parts) == 2 && r.Method == http.MethodPut:
		s.setSecret(w, r, base, parts[1])
	case parts[0] == "secrets" && len(parts) == 2 && r.Method == http.MethodDelete:
		s.deleteSecret(w, base, parts[1])
	case parts[0] == "secrets" && len(parts) == 3 && parts[2] == "versions" && r.Method == http.MethodGet:
		s.listVersions(w, r, base, parts[1])
	case parts[0] == "secrets" && (len(parts) == 2 || len(parts) == 3) && r.Method == http.MethodGet:
		s.getSecret(w, base, parts[1], at(parts, 2))
	case parts[0] == "secrets" && (len(parts) == 2 || len(parts) == 3) && r.Method == http.MethodPatch:
		s.updateSecret(w, r, base, parts[1], at(parts, 2))
	case parts[0] == "deletedsecrets" && len(parts) == 1 && r.Method == http.MethodGet:
		s.listDeleted(w, r, base)
	case parts[0] == "deletedsecrets" && len(parts) == 2 && r.Method == http.MethodGet:
		s.getDeleted(w, base, parts[1])
	case parts[0] == "deletedsecrets" && len(parts) == 2 && r.Method == http.MethodDelete:
		s.purge(w, parts[1])
	case parts[0] == "deletedsecrets" && len(parts) == 3 && parts[2] == "recover" && r.Method == http.MethodPost:
		s.recoverSecret(w, base, parts[1])
	default:
		writeError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s %s is not supported by the stand-in.", r.Method, r.URL.Path), "")
	}
}

func at(parts []string, i int) string {
	if i < len(parts) {
		return parts[i]
	}
	return ""
}

// wire types: the JSON Key Vault sends (times are Unix seconds).

type attributes struct {
	Enabled         *bool  `json:"enabled,omitempty"`
	NotBefore       *int64 `json:"nbf,omitempty"`
	Expires         *int64 `json:"exp,omitempty"`
	Created         int64  `json:"created,omitempty"`
	Updated         int64  `json:"updated,omitempty"`
	RecoveryLevel   string `json:"recoveryLevel,omitempty"`
	RecoverableDays int    `json:"recoverableDays,omitempty"`
}

type bundle struct {
	Value              *string           `json:"value,omitempty"`
	ContentType        string            `json:"contentType,omitempty"`
	ID                 string            `json:"id"`
	Attributes         attributes        `json:"attributes"`
	Tags               map[string]string `json:"tags,omitempty"`
	RecoveryID         string            `json:"recoveryId,omitempty"`
	DeletedDate        int64             `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64             `json:"scheduledPurgeDate,omitempty"`
}

type setParams struct {
	Value       *string           `json:"value"`
	ContentType *string           `json:"contentType"`
	Attributes  *attributes       `json:"attributes"`
	Tags        map[string]string `json:"tags"`
}

type listResult struct {
	Value    []bundle `json:"value"`
	NextLink *string  `json:"nextLink"`
}

func (s *Server) bundleOf(base string, sec *secret, v *version, withValue, withVersion bool) bundle {
	b := bundle{
		ContentType: v.contentType,
		ID:          base + "/secrets/" + sec.name,
		Attributes: attributes{Enabled: ptr(v.enabled), Created: v.created.Unix(), Updated: v.updated.Unix(),
			RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: retentionDays},
	}
	if len(v.tags) > 0 {
		b.Tags = v.tags
	}
	if withVersion {
		b.ID += "/" + v.id
	}
	if withValue {
		val := v.value
		b.Value = &val
	}
	if !sec.deletedAt.IsZero() {
		b.RecoveryID = base + "/deletedsecrets/" + sec.name
		b.DeletedDate = sec.deletedAt.Unix()
		b.ScheduledPurgeDate = sec.deletedAt.Add(retentionDays * 24 * time.Hour).Unix()
	}
	return b
}

func ptr[T any](v T) *T { return &v }

func checkTags(tags map[string]string) string {
	if len(tags) > MaxTags {
		return fmt.Sprintf("The number of tags (%d) exceeds the limit of %d.", len(tags), MaxTags)
	}
	for k, v := range tags {
		if len(k) > MaxTagNameLen {
			return fmt.Sprintf("A tag name exceeds the limit of %d characters.", MaxTagNameLen)
		}
		if len(v) > MaxTagValueLen {
			return fmt.Sprintf("The value of tag %q exceeds the limit of %d characters.", k, MaxTagValueLen)
		}
	}
	return ""
}

func readJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return err
	}
	// Never echo the body: it holds the secret value.
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("the request body is not a valid JSON document")
	}
	return nil
}

func (s *Server) setSecret(w http.ResponseWriter, r *http.Request, base, name string) {
	var p setParams
	if err := readJSON(r, &p); err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", err.Error(), "")
		return
	}
	switch {
	case p.Value == nil:
		writeError(w, http.StatusBadRequest, "BadParameter", "Property value is required.", "")
		return
	case len(*p.Value) > MaxValueBytes:
		writeError(w, http.StatusBadRequest, "BadParameter",
			fmt.Sprintf("The secret value exceeds the limit of %d bytes.", MaxValueBytes), "")
		return
	case p.ContentType != nil && len(*p.ContentType) > MaxContentTypeLen:
		writeError(w, http.StatusBadRequest, "BadParameter",
			fmt.Sprintf("The content type exceeds the limit of %d characters.", MaxContentTypeLen), "")
		return
	}
	if msg := checkTags(p.Tags); msg != "" {
		writeError(w, http.StatusBadRequest, "BadParameter", msg, "")
		return
	}
	key := strings.ToLower(name)
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.deleted[key]; ok {
		writeError(w, http.StatusConflict, "Conflict", fmt.Sprintf(
			"Secret %s is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.", name),
			"ObjectIsDeletedButRecoverable")
		return
	}
	sec := s.active[key]
	if sec == nil {
		sec = &secret{name: name}
		s.active[key] = sec
	}
	v := &version{id: newID(), value: *p.Value, enabled: true, created: now, updated: now, tags: copyTags(p.Tags)}
	if p.ContentType != nil {
		v.contentType = *p.ContentType
	}
	if p.Attributes != nil && p.Attributes.Enabled != nil {
		v.enabled = *p.Attributes.Enabled
	}
	sec.versions = append(sec.versions, v)
	writeJSON(w, http.StatusOK, s.bundleOf(base, sec, v, true, true))
}

func copyTags(t map[string]string) map[string]string {
	if len(t) == 0 {
		return nil
	}
	out := make(map[string]string, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}

func notFound(w http.ResponseWriter, name string) {
	writeError(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf(
		"A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", name), "")
}

// lookup finds version ver ("" for the current one) of the active secret name, answering 404
// itself when either is missing. The caller holds s.mu.
func (s *Server) lookup(w http.ResponseWriter, name, ver string) (*secret, *version) {
	sec := s.active[strings.ToLower(name)]
	if sec == nil {
		notFound(w, name)
		return nil, nil
	}
	v := sec.find(ver)
	if v == nil {
		notFound(w, name+"/"+ver)
		return nil, nil
	}
	return sec, v
}

func (s *Server) getSecret(w http.ResponseWriter, base, name, ver string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, v := s.lookup(w, name, ver)
	if v == nil {
		return
	}
	if !v.enabled {
		writeError(w, http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
		return
	}
	writeJSON(w, http.StatusOK, s.bundleOf(base, sec, v, true, true))
}

func (s *Server) updateSecret(w http.ResponseWriter, r *http.Request, base, name, ver string) {
	var p setParams
	if err := readJSON(r, &p); err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", err.Error(), "")
		return
	}
	if p.Value != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "The value of a secret cannot be updated; set a new version.", "")
		return
	}
	if p.Tags != nil {
		if msg := checkTags(p.Tags); msg != "" {
			writeError(w, http.StatusBadRequest, "BadParameter", msg, "")
			return
		}
	}
	if p.ContentType != nil && len(*p.ContentType) > MaxContentTypeLen {
		writeError(w, http.StatusBadRequest, "BadParameter",
			fmt.Sprintf("The content type exceeds the limit of %d characters.", MaxContentTypeLen), "")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, v := s.lookup(w, name, ver)
	if v == nil {
		return
	}
	if p.Tags != nil {
		v.tags = copyTags(p.Tags)
	}
	if p.ContentType != nil {
		v.contentType = *p.ContentType
	}
	if p.Attributes != nil && p.Attributes.Enabled != nil {
		v.enabled = *p.Attributes.Enabled
	}
	v.updated = time.Now().UTC()
	writeJSON(w, http.StatusOK, s.bundleOf(base, sec, v, false, true))
}

func (s *Server) deleteSecret(w http.ResponseWriter, base, name string) {
	key := strings.ToLower(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.active[key]
	if sec == nil {
		notFound(w, name)
		return
	}
	delete(s.active, key)
	sec.deletedAt = time.Now().UTC()
	s.deleted[key] = sec
	writeJSON(w, http.StatusOK, s.bundleOf(base, sec, sec.latest(), false, true))
}

func (s *Server) getDeleted(w http.ResponseWriter, base, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.deleted[strings.ToLower(name)]
	if sec == nil {
		writeError(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("Deleted Secret not found: %s", name), "")
		return
	}
	writeJSON(w, http.StatusOK, s.bundleOf(base, sec, sec.latest(), false, true))
}

func (s *Server) recoverSecret(w http.ResponseWriter, base, name string) {
	key := strings.ToLower(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.deleted[key]
	if sec == nil {
		writeError(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("Deleted Secret not found: %s", name), "")
		return
	}
	delete(s.deleted, key)
	sec.deletedAt = time.Time{}
	s.active[key] = sec
	writeJSON(w, http.StatusOK, s.bundleOf(base, sec, sec.latest(), false, true))
}

func (s *Server) purge(w http.ResponseWriter, name string) {
	key := strings.ToLower(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deleted[key] == nil {
		writeError(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("Deleted Secret not found: %s", name), "")
		return
	}
	delete(s.deleted, key)
	w.WriteHeader(http.StatusNoContent)
}

// page answers one page of a list, with a nextLink carrying the api-version like Key Vault's.
func page(w http.ResponseWriter, r *http.Request, base string, items []bundle) {
	q := r.URL.Query()
	size := pageSize
	if m, err := strconv.Atoi(q.Get("maxresults")); err == nil {
		if m < 1 || m > pageSize {
			writeError(w, http.StatusBadRequest, "BadParameter", fmt.Sprintf("maxresults must be between 1 and %d.", pageSize), "")
			return
		}
		size = m
	}
	skip, _ := strconv.Atoi(q.Get("$skiptoken"))
	if skip < 0 || skip > len(items) {
		skip = len(items)
	}
	end := min(skip+size, len(items))
	res := listResult{Value: items[skip:end]}
	if res.Value == nil {
		res.Value = []bundle{}
	}
	if end < len(items) {
		nq := url.Values{}
		nq.Set("api-version", q.Get("api-version"))
		nq.Set("maxresults", strconv.Itoa(size))
		nq.Set("$skiptoken", strconv.Itoa(end))
		next := base + r.URL.Path + "?" + nq.Encode()
		res.NextLink = &next
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) sorted(m map[string]*secret) []*secret {
	out := make([]*secret, 0, len(m))
	for _, sec := range m {
		out = append(out, sec)
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i].name) < strings.ToLower(out[j].name) })
	return out
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request, base string) {
	s.mu.Lock()
	var items []bundle
	for _, sec := range s.sorted(s.active) {
		items = append(items, s.bundleOf(base, sec, sec.latest(), false, false))
	}
	s.mu.Unlock()
	page(w, r, base, items)
}

func (s *Server) listVersions(w http.ResponseWriter, r *http.Request, base, name string) {
	s.mu.Lock()
	sec := s.active[strings.ToLower(name)]
	var items []bundle
	if sec != nil {
		for _, v := range sec.versions {
			items = append(items, s.bundleOf(base, sec, v, false, true))
		}
		if !s.opts.VersionsInOrder {
			sort.Slice(items, func(i, j int) bool { return items[i].ID < items[j].ID })
		}
	}
	s.mu.Unlock()
	if sec == nil {
		notFound(w, name)
		return
	}
	page(w, r, base, items)
}

func (s *Server) listDeleted(w http.ResponseWriter, r *http.Request, base string) {
	s.mu.Lock()
	var items []bundle
	for _, sec := range s.sorted(s.deleted) {
		b := s.bundleOf(base, sec, sec.latest(), false, false)
		items = append(items, b)
	}
	s.mu.Unlock()
	page(w, r, base, items)
}

type errorBody struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror,omitempty"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, message, inner string) {
	var b errorBody
	b.Error.Code = code
	b.Error.Message = message
	if inner != "" {
		b.Error.InnerError = &struct {
			Code string `json:"code"`
		}{inner}
	}
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
