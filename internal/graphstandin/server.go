package graphstandin

import (
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

	if !s.delay(r) {
		return
	}
	if aerr := s.authenticate(r); aerr != nil {
		writeError(w, reqID, aerr)
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
	ans, aerr := s.handle(r, body)
	if aerr != nil {
		writeError(w, reqID, aerr)
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

// delay holds the request for Options.Latency; false when the client gave up meanwhile.
func (s *Server) delay(r *http.Request) bool {
	if s.opts.Latency <= 0 {
		return true
	}
	t := time.NewTimer(s.opts.Latency)
	defer t.Stop()
	select {
	case <-r.Context().Done():
		return false
	case <-t.C:
		return true
	}
}

// authenticate refuses a request without the accepted bearer token, counting it.
func (s *Server) authenticate(r *http.Request) *apiError {
	authz := r.Header.Get("Authorization")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case authz == "":
		s.stats.NoAuth++
		return errf(401, "InvalidAuthenticationToken", "Access token is empty.")
	case authz != "Bearer "+s.opts.Token:
		s.stats.BadAuth++
		return errf(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
	}
	return nil
}

// handle answers an authenticated request, with s.mu held: an injected fault (before or after
// the request is carried out), then a write's admission (admitWrite), then its route.
func (s *Server) handle(r *http.Request, body []byte) (answer, *apiError) {
	fault := s.takeFault(r)
	if fault != nil && !fault.AfterApply {
		return answer{}, faultError(fault)
	}
	if isWrite(r.Method) {
		if aerr := s.admitWrite(r, body); aerr != nil {
			return answer{}, aerr
		}
	}
	ans, aerr := s.route(r, body)
	if fault != nil {
		return answer{}, faultError(fault)
	}
	if aerr != nil {
		return answer{}, s.word(aerr)
	}
	return ans, nil
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
