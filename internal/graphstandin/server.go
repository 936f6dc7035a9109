package graphstandin

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultToken is the bearer token the stand-in accepts unless Options.Token says otherwise.
const DefaultToken = "oathpipe-local-token"

// Server is the stand-in; it is an http.Handler serving /v1.0/... and /beta/....
type Server struct {
	opts Options
	now  func() time.Time

	mu      sync.Mutex
	users   map[string]*User  // by id
	byUPN   map[string]string // lower-case UPN → id
	devices map[string]*device
	order   []string          // device ids in creation order
	serials map[string]string // serialKey(serial) → device id
	methods map[string]string // method id → device id
	faults  []*Fault
	stats   Stats
	// throttled counts the 429s each distinct write has had (ThrottleEachWrite).
	throttled map[string]int

	rate, burst, tokens float64
	last                time.Time
}

// New returns a stand-in holding opts.Users and an empty token inventory.
func New(opts Options) *Server {
	if opts.Token == "" {
		opts.Token = DefaultToken
	}
	if opts.WriteRate == 0 {
		opts.WriteRate = 3000
	}
	if opts.WritePer <= 0 {
		opts.WritePer = 150 * time.Second
	}
	if opts.TimeScale <= 0 {
		opts.TimeScale = 1
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 100
	}
	s := &Server{
		opts:      opts,
		now:       opts.Now,
		users:     map[string]*User{},
		byUPN:     map[string]string{},
		devices:   map[string]*device{},
		serials:   map[string]string{},
		methods:   map[string]string{},
		throttled: map[string]int{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.WriteRate > 0 {
		s.rate = float64(opts.WriteRate) / opts.WritePer.Seconds() * opts.TimeScale
		s.burst = float64(opts.WriteBurst)
		if s.burst <= 0 {
			s.burst = math.Max(1, math.Floor(s.rate))
		}
		s.tokens = s.burst
	}
	for i := range opts.Users {
		u := opts.Users[i]
		s.users[u.ID] = &u
		s.byUPN[strings.ToLower(u.UserPrincipalName)] = u.ID
	}
	return s
}

// Running is a stand-in served over HTTPS on 127.0.0.1.
type Running struct {
	URL    string // the Graph root, e.g. https://127.0.0.1:40123 (no version)
	CAPEM  []byte // the server certificate, PEM: trust it (OATHPIPE_CA_FILE)
	Server *Server
	HTTP   *httptest.Server
}

// StartTLS serves a new stand-in over HTTPS on a free loopback port.
func StartTLS(opts Options) (*Running, error) {
	s := New(opts)
	h := httptest.NewUnstartedServer(s)
	h.EnableHTTP2 = opts.HTTP2
	h.StartTLS()
	cert := h.Certificate()
	if cert == nil {
		h.Close()
		return nil, fmt.Errorf("graph stand-in: no TLS certificate")
	}
	return &Running{
		URL:    h.URL,
		CAPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		Server: s,
		HTTP:   h,
	}, nil
}

// HTTPClient returns a client that trusts the stand-in's certificate and keeps enough idle
// connections for concurrent provisioning.
func (r *Running) HTTPClient() *http.Client {
	tr := r.HTTP.Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}
}

// Close stops the server.
func (r *Running) Close() { r.HTTP.Close() }

// Devices returns every device in creation order.
func (s *Server) Devices() []DeviceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceState, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.devices[id].DeviceState)
	}
	return out
}

// DeviceBySerial returns the device with serial.
func (s *Server) DeviceBySerial(serial string) (DeviceState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.serials[s.serialKey(serial)]
	if !ok {
		return DeviceState{}, false
	}
	return s.devices[id].DeviceState, true
}

// UserMethods returns the devices assigned to the user (by UPN or id).
func (s *Server) UserMethods(upnOrID string) []DeviceState {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUser(upnOrID)
	if u == nil {
		return nil
	}
	var out []DeviceState
	for _, id := range s.order {
		if d := s.devices[id]; d.AssignedUserID == u.ID {
			out = append(out, d.DeviceState)
		}
	}
	return out
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// FailNext makes the next n requests fail with status (429 answers carry Retry-After: 1).
func (s *Server) FailNext(n int, status int) { s.AddFault(Fault{Status: status, Count: n}) }

// AddFault injects a failure.
func (s *Server) AddFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes the injected failures that have not fired.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// apiError is a Graph error answer.
type apiError struct {
	status     int
	code       string
	msg        string
	retryAfter int // seconds, for 429
}

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func notFound(what string) *apiError {
	return errf(404, "Request_ResourceNotFound", "Resource '%s' does not exist or one of its queried reference-property objects are not present.", what)
}

// answer is a handler's result.
type answer struct {
	status int
	body   any
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newID()
	w.Header().Set("request-id", reqID)
	if c := r.Header.Get("client-request-id"); c != "" {
		w.Header().Set("client-request-id", c)
	}
	s.mu.Lock()
	s.stats.Requests++
	s.mu.Unlock()

	if s.opts.Latency > 0 {
		t := time.NewTimer(s.opts.Latency)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}

	authz := r.Header.Get("Authorization")
	if authz == "" {
		s.mu.Lock()
		s.stats.NoAuth++
		s.mu.Unlock()
		writeError(w, reqID, errf(401, "InvalidAuthenticationToken", "Access token is empty."))
		return
	}
	if authz != "Bearer "+s.opts.Token {
		s.mu.Lock()
		s.stats.BadAuth++
		s.mu.Unlock()
		writeError(w, reqID, errf(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."))
		return
	}

	body, err := readBody(r)
	if err != nil {
		writeError(w, reqID, errf(400, "BadRequest", "Unable to read the request body: %v", err))
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		s.stats.Gzipped++
	}

	fault := s.takeFault(r)
	if fault != nil && !fault.AfterApply {
		writeError(w, reqID, faultError(fault))
		return
	}

	if isWrite(r.Method) {
		if aerr := s.checkWriteBody(r, body); aerr != nil {
			writeError(w, reqID, s.word(aerr))
			return
		}
		if n := s.opts.ThrottleEachWrite; n > 0 {
			key := r.Method + " " + strings.ToLower(r.URL.Path) + " " + string(body)
			if s.throttled[key] < n {
				s.throttled[key]++
				s.stats.Throttled++
				secs := max(1, s.opts.ThrottleRetryAfter)
				e := errf(429, "TooManyRequests", "Too many requests. Retry after %d seconds.", secs)
				e.retryAfter = secs
				writeError(w, reqID, e)
				return
			}
		}
		cost := writeCost(body)
		if wait, ok := s.take(cost); s.rate > 0 && !ok {
			s.stats.Throttled++
			secs := max(1, int(math.Ceil(wait.Seconds())))
			e := errf(429, "TooManyRequests", "Too many requests. Retry after %d seconds.", secs)
			e.retryAfter = secs
			writeError(w, reqID, e)
			return
		}
		s.stats.Writes += int64(cost)
	}

	ans, aerr := s.route(r, body)
	if fault != nil {
		writeError(w, reqID, faultError(fault))
		return
	}
	if aerr != nil {
		writeError(w, reqID, s.word(aerr))
		return
	}
	if ans.body == nil {
		w.WriteHeader(ans.status)
		return
	}
	b, _ := json.Marshal(ans.body)
	w.Header().Set("Content-Type", "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8")
	w.WriteHeader(ans.status)
	_, _ = w.Write(b)
}

func isWrite(method string) bool {
	return method == http.MethodPost || method == http.MethodPatch || method == http.MethodDelete || method == http.MethodPut
}

// writeCost counts the items of a bulk (#$delta) request; any other write costs 1.
func writeCost(body []byte) int {
	if len(body) == 0 || !bytes.Contains(body, []byte("$delta")) {
		return 1
	}
	var b struct {
		Value []json.RawMessage `json:"value"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.Value) == 0 {
		return 1
	}
	return len(b.Value)
}

// take spends cost writes from the bucket, or says how long until it could.
func (s *Server) take(cost int) (time.Duration, bool) {
	if s.rate <= 0 {
		return 0, true
	}
	now := s.now()
	if !s.last.IsZero() {
		s.tokens = math.Min(s.burst, s.tokens+now.Sub(s.last).Seconds()*s.rate)
	}
	s.last = now
	need := math.Min(float64(cost), s.burst)
	if s.tokens >= need {
		s.tokens -= float64(cost)
		return 0, true
	}
	return time.Duration((need - s.tokens) / s.rate * float64(time.Second)), false
}

func (s *Server) takeFault(r *http.Request) *Fault {
	for i, f := range s.faults {
		if (f.Method == "" || strings.EqualFold(f.Method, r.Method)) && strings.Contains(r.URL.Path, f.PathContains) {
			f.Count--
			if f.Count <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

func faultError(f *Fault) *apiError {
	ra := f.RetryAfter
	if ra <= 0 {
		ra = 1
	}
	switch f.Status {
	case 403:
		return errf(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
	case 429:
		e := errf(429, "TooManyRequests", "Too many requests. Retry after %d seconds.", ra)
		e.retryAfter = ra
		return e
	case 404:
		return notFound("injected")
	case 503:
		return &apiError{status: 503, code: "serviceNotAvailable", msg: "The service is temporarily unavailable.", retryAfter: ra}
	case 504:
		return &apiError{status: 504, code: "gatewayTimeout", msg: "The gateway timed out.", retryAfter: ra}
	default:
		return errf(f.Status, "generalException", "An injected failure.")
	}
}

func writeError(w http.ResponseWriter, reqID string, e *apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"code":    e.code,
		"message": e.msg,
		"innerError": map[string]any{
			"date":              time.Now().UTC().Format("2006-01-02T15:04:05"),
			"request-id":        reqID,
			"client-request-id": w.Header().Get("client-request-id"),
		},
	}})
	_, _ = w.Write(b)
}

// readBody reads the request body, inflating it when the client gzipped it (msgraph-sdk-go does).
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	var rd io.Reader = io.LimitReader(r.Body, 4<<20)
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		z, err := gzip.NewReader(rd)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer z.Close()
		rd = io.LimitReader(z, 4<<20)
	}
	return io.ReadAll(rd)
}

// checkWriteBody refuses a write whose body is missing where its endpoint needs one (counted:
// a client that lost its body on a resend) or, unless Lenient.AnyContentType, whose body is
// not labelled Content-Type: application/json.
func (s *Server) checkWriteBody(r *http.Request, body []byte) *apiError {
	if needsBody(r) && len(bytes.TrimSpace(body)) == 0 {
		s.stats.EmptyBodies++
		return errf(400, "BadRequest", "Empty Payload. JSON content expected.")
	}
	if len(body) == 0 || s.opts.Lenient.AnyContentType {
		return nil
	}
	ct := strings.ToLower(strings.TrimSpace(strings.SplitN(r.Header.Get("Content-Type"), ";", 2)[0]))
	if ct != "application/json" {
		return errf(415, "UnsupportedMediaType", "Content-Type must be application/json.")
	}
	return nil
}

// needsBody says whether a write's endpoint takes a JSON body: every POST and PATCH except
// deactivate.
func needsBody(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPatch, http.MethodPut:
		return !strings.HasSuffix(strings.ToLower(r.URL.Path), "/deactivate")
	}
	return false
}

// word applies OpaqueMessages: every 400 says only "Invalid request.".
func (s *Server) word(e *apiError) *apiError {
	if s.opts.OpaqueMessages && e.status == 400 {
		return &apiError{status: 400, code: "invalidRequest", msg: "Invalid request."}
	}
	return e
}

// serialKey is the key serials are compared by: case-insensitive unless Lenient.ExactSerials.
func (s *Server) serialKey(serial string) string {
	if s.opts.Lenient.ExactSerials {
		return serial
	}
	return strings.ToUpper(serial)
}
