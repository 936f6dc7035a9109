package graphstandin

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"encoding/base32"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultToken is the bearer token the stand-in accepts unless Options.Token says otherwise.
const DefaultToken = "oathpipe-local-token"

// Options configures a stand-in.
type Options struct {
	Users   []User        // the directory (see LoadUsers)
	Latency time.Duration // added to every request before it is handled

	// Writes (POST, PATCH, DELETE; each item of a bulk request counts) are limited by a token
	// bucket refilled at WriteRate per WritePer, holding at most WriteBurst. Defaults: Graph's
	// documented 3,000 writes per 150 s per app and tenant, and a bucket of one second's worth.
	// A negative WriteRate turns throttling off.
	WriteRate  int
	WritePer   time.Duration
	WriteBurst int
	// TimeScale speeds the write limit up for tests: 10 allows ten times the writes per real
	// second (3,000 per 15 s). Activation codes always use real time (Now). Default 1.
	TimeScale float64

	PageSize int // default page size of list answers; default 100 ($top overrides)
	// SparsePages cuts device listings into pages before $filter applies, as some directory
	// queries do: a filtered answer can then span several pages, some of them empty.
	SparsePages bool
	// AllowReactivation lets an already activated method be activated again. By default the
	// stand-in refuses it (400, "already activated"), as Entra may: its behaviour is undocumented,
	// and a client that resends an activation whose answer was lost must not count on either.
	AllowReactivation bool
	Token             string           // accepted bearer token; default DefaultToken
	Now               func() time.Time // default time.Now
}

// Stats counts what the stand-in has seen.
type Stats struct {
	Requests   int64 // every request
	Writes     int64 // writes admitted by the throttle (bulk items counted one by one)
	Throttled  int64 // 429 answers
	NoAuth     int64 // requests that arrived without an Authorization header
	BadAuth    int64 // requests with a wrong bearer token
	Activation int64 // successful activations
	Gzipped    int64 // requests whose body came gzipped
}

// Fault is an injected failure. It matches requests by method and path substring (empty
// matches any) and answers Status, with Graph's error body, Count times. With AfterApply the
// request is carried out first and its answer replaced: the client cannot tell whether it worked.
type Fault struct {
	Method       string
	PathContains string
	Status       int
	AfterApply   bool
	Count        int
	// RetryAfter is the Retry-After (seconds) of an injected 429, 503 or 504; 0 = 1.
	RetryAfter int
}

// Server is the stand-in; it is an http.Handler serving /v1.0/... and /beta/....
type Server struct {
	opts Options
	now  func() time.Time

	mu      sync.Mutex
	users   map[string]*User  // by id
	byUPN   map[string]string // lower-case UPN → id
	devices map[string]*device
	order   []string          // device ids in creation order
	serials map[string]string // serial → device id
	methods map[string]string // method id → device id
	faults  []*Fault
	stats   Stats

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
		opts:    opts,
		now:     opts.Now,
		users:   map[string]*User{},
		byUPN:   map[string]string{},
		devices: map[string]*device{},
		serials: map[string]string{},
		methods: map[string]string{},
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
	id, ok := s.serials[serial]
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

// route dispatches a request; s.mu is held.
func (s *Server) route(r *http.Request, body []byte) (answer, *apiError) {
	segs := splitPath(r.URL.EscapedPath())
	if len(segs) < 2 || (segs[0] != "v1.0" && segs[0] != "beta") {
		return answer{}, errf(400, "BadRequest", "Invalid version: %q.", strings.Join(segs, "/"))
	}
	beta := segs[0] == "beta"
	p := segs[1:]
	m := r.Method
	switch {
	case len(p) == 2 && p[0] == "users" && m == http.MethodGet:
		return s.getUser(p[1])
	case beta && len(p) == 4 && p[0] == "users" && p[2] == "authentication" && p[3] == "hardwareOathMethods":
		switch m {
		case http.MethodGet:
			return s.listMethods(r, p[1])
		case http.MethodPost:
			return s.assign(p[1], body)
		}
	case beta && len(p) == 5 && p[0] == "users" && p[2] == "authentication" && p[3] == "hardwareOathMethods":
		switch m {
		case http.MethodGet:
			return s.getMethod(p[1], p[4])
		case http.MethodDelete:
			return s.unassign(p[1], p[4])
		}
	case beta && len(p) == 6 && p[0] == "users" && p[2] == "authentication" && p[3] == "hardwareOathMethods" && m == http.MethodPost:
		switch p[5] {
		case "activate":
			return s.activate(p[1], p[4], body)
		case "deactivate":
			return s.deactivate(p[1], p[4])
		}
	case beta && len(p) == 3 && p[0] == "directory" && p[1] == "authenticationMethodDevices" && p[2] == "hardwareOathDevices":
		switch m {
		case http.MethodGet:
			return s.listDevices(r)
		case http.MethodPost:
			return s.createDevice(body)
		case http.MethodPatch:
			return s.bulkCreate(body)
		}
	case beta && len(p) == 4 && p[0] == "directory" && p[1] == "authenticationMethodDevices" && p[2] == "hardwareOathDevices":
		switch m {
		case http.MethodGet:
			d := s.devices[p[3]]
			if d == nil {
				return answer{}, notFound(p[3])
			}
			return answer{200, s.deviceJSON(d)}, nil
		case http.MethodPatch:
			return s.updateDevice(p[3], body)
		case http.MethodDelete:
			return s.deleteDevice(p[3])
		}
	}
	return answer{}, errf(400, "BadRequest", "Resource not found for the segment '%s'.", strings.Join(p, "/"))
}

func splitPath(escaped string) []string {
	var out []string
	for _, seg := range strings.Split(strings.Trim(escaped, "/"), "/") {
		if v, err := url.PathUnescape(seg); err == nil {
			seg = v
		}
		out = append(out, seg)
	}
	return out
}

func (s *Server) findUser(upnOrID string) *User {
	if u := s.users[upnOrID]; u != nil {
		return u
	}
	if id, ok := s.byUPN[strings.ToLower(upnOrID)]; ok {
		return s.users[id]
	}
	return nil
}

func (s *Server) getUser(key string) (answer, *apiError) {
	u := s.findUser(key)
	if u == nil {
		return answer{}, notFound(key)
	}
	return answer{200, map[string]any{
		"@odata.context":    "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
		"id":                u.ID,
		"userPrincipalName": u.UserPrincipalName,
		"displayName":       u.DisplayName,
		"mail":              u.Mail,
		"userType":          u.UserType,
		"accountEnabled":    u.AccountEnabled,
	}}, nil
}

func (s *Server) deviceJSON(d *device) map[string]any {
	m := map[string]any{
		"@odata.type":           "#microsoft.graph.hardwareOathTokenAuthenticationMethodDevice",
		"id":                    d.ID,
		"displayName":           nullable(d.DisplayName),
		"serialNumber":          d.Serial,
		"manufacturer":          d.Manufacturer,
		"model":                 d.Model,
		"secretKey":             nil,
		"timeIntervalInSeconds": d.Period,
		"hashFunction":          d.Hash,
		"status":                d.Status,
		"lastUsedDateTime":      nil,
		"assignedTo":            nil,
	}
	if d.AssignedUserID != "" {
		name := ""
		if u := s.users[d.AssignedUserID]; u != nil {
			name = u.DisplayName
		}
		m["assignedTo"] = map[string]any{"id": d.AssignedUserID, "displayName": name}
	}
	return m
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (s *Server) methodJSON(d *device) map[string]any {
	return map[string]any{
		"@odata.type": "#microsoft.graph.hardwareOathAuthenticationMethod",
		"id":          d.MethodID,
		"device":      s.deviceJSON(d),
	}
}

func (s *Server) listDevices(r *http.Request) (answer, *apiError) {
	q := r.URL.Query()
	var serial string
	filtered := false
	if f := q.Get("$filter"); f != "" {
		v, ok := ParseSerialFilter(f)
		if !ok {
			return answer{}, errf(400, "BadRequest", "Invalid filter clause: only serialNumber eq '...' is supported.")
		}
		serial, filtered = v, true
	}
	top := s.opts.PageSize
	if t := q.Get("$top"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 1 || n > 999 {
			return answer{}, errf(400, "BadRequest", "Invalid $top value %q.", t)
		}
		top = n
	}
	skip := 0
	if t := q.Get("$skiptoken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return answer{}, errf(400, "BadRequest", "Invalid $skiptoken.")
		}
		skip = n
	}
	match := func(d *device) bool { return !filtered || d.Serial == serial }
	var all []*device
	for _, id := range s.order {
		if d := s.devices[id]; s.opts.SparsePages || match(d) {
			all = append(all, d)
		}
	}
	res := map[string]any{"@odata.context": "https://graph.microsoft.com/beta/$metadata#directory/authenticationMethodDevices/hardwareOathDevices"}
	vals := []any{}
	end := min(skip+top, len(all))
	for i := skip; i < end; i++ {
		if match(all[i]) {
			vals = append(vals, s.deviceJSON(all[i]))
		}
	}
	res["value"] = vals
	if end < len(all) {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("$skiptoken", strconv.Itoa(end))
		nq.Set("$top", strconv.Itoa(top))
		res["@odata.nextLink"] = "https://" + r.Host + r.URL.Path + "?" + nq.Encode()
	}
	return answer{200, res}, nil
}

// deviceInput is a create or update body. The interval is accepted as a number or a string (the
// docs show both).
type deviceInput struct {
	ContentID    string          `json:"@contentId"`
	DisplayName  *string         `json:"displayName"`
	SerialNumber *string         `json:"serialNumber"`
	Manufacturer *string         `json:"manufacturer"`
	Model        *string         `json:"model"`
	SecretKey    *string         `json:"secretKey"`
	Interval     json.RawMessage `json:"timeIntervalInSeconds"`
	HashFunction *string         `json:"hashFunction"`
	AssignTo     *struct {
		ID string `json:"id"`
	} `json:"assignTo"`
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (s *Server) createDevice(body []byte) (answer, *apiError) {
	var in deviceInput
	if err := json.Unmarshal(body, &in); err != nil {
		return answer{}, errf(400, "BadRequest", "Invalid JSON body: %v.", err)
	}
	d, aerr := s.create(in)
	if aerr != nil {
		return answer{}, aerr
	}
	return answer{201, s.deviceJSON(d)}, nil
}

func (s *Server) create(in deviceInput) (*device, *apiError) {
	serial, man, model := strings.TrimSpace(str(in.SerialNumber)), str(in.Manufacturer), str(in.Model)
	switch {
	case serial == "":
		return nil, errf(400, "BadRequest", "The property 'serialNumber' is required.")
	case man == "":
		return nil, errf(400, "BadRequest", "The property 'manufacturer' is required.")
	case model == "":
		return nil, errf(400, "BadRequest", "The property 'model' is required.")
	case in.SecretKey == nil || *in.SecretKey == "":
		return nil, errf(400, "BadRequest", "The property 'secretKey' is required.")
	}
	key := strings.TrimRight(strings.ToUpper(strings.ReplaceAll(*in.SecretKey, " ", "")), "=")
	secret, err := b32.DecodeString(key)
	if err != nil || len(key) > 128 || len(secret) == 0 {
		return nil, errf(400, "BadRequest", "The secret key must be Base32 (A-Z, 2-7) of at most 128 characters.")
	}
	period := 30
	if len(in.Interval) > 0 && string(in.Interval) != "null" {
		v := strings.Trim(string(in.Interval), `"`)
		n, err := strconv.Atoi(v)
		if err != nil || (n != 30 && n != 60) {
			return nil, errf(400, "BadRequest", "timeIntervalInSeconds must be 30 or 60.")
		}
		period = n
	}
	h := "hmacsha1"
	if in.HashFunction != nil && *in.HashFunction != "" {
		h = *in.HashFunction
		if h != "hmacsha1" && h != "hmacsha256" {
			return nil, errf(400, "BadRequest", "hashFunction must be hmacsha1 or hmacsha256.")
		}
	}
	if _, dup := s.serials[serial]; dup {
		return nil, errf(409, "conflictingObjects", "A hardware OATH token with serial number '%s' already exists in the tenant.", serial)
	}
	var assignee *User
	if in.AssignTo != nil && in.AssignTo.ID != "" {
		assignee = s.findUser(in.AssignTo.ID)
		if assignee == nil {
			return nil, notFound(in.AssignTo.ID)
		}
		if aerr := s.canAssign(assignee); aerr != nil {
			return nil, aerr
		}
	}
	d := &device{DeviceState: DeviceState{
		ID: newID(), Serial: serial, Manufacturer: man, Model: model, DisplayName: str(in.DisplayName),
		Status: "available", Hash: h, Period: period,
	}, secret: secret}
	s.devices[d.ID] = d
	s.serials[serial] = d.ID
	s.order = append(s.order, d.ID)
	if assignee != nil {
		s.doAssign(assignee, d)
	}
	return d, nil
}

// bulkCreate handles PATCH on the collection with {"@context":"#$delta","value":[...]}.
// Results come back per item in "value", each with its @contentId and either the device or an error.
func (s *Server) bulkCreate(body []byte) (answer, *apiError) {
	var in struct {
		Context string        `json:"@context"`
		Value   []deviceInput `json:"value"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return answer{}, errf(400, "BadRequest", "Invalid JSON body: %v.", err)
	}
	if in.Context != "#$delta" {
		return answer{}, errf(400, "BadRequest", "A bulk request needs \"@context\": \"#$delta\".")
	}
	var out []any
	for _, item := range in.Value {
		d, aerr := s.create(item)
		if aerr != nil {
			out = append(out, map[string]any{"@contentId": item.ContentID, "error": map[string]any{"code": aerr.code, "message": aerr.msg}})
			continue
		}
		m := s.deviceJSON(d)
		m["@contentId"] = item.ContentID
		out = append(out, m)
	}
	return answer{201, map[string]any{"value": out}}, nil
}

func (s *Server) updateDevice(id string, body []byte) (answer, *apiError) {
	d := s.devices[id]
	if d == nil {
		return answer{}, notFound(id)
	}
	if d.Status != "available" {
		return answer{}, errf(400, "BadRequest", "The hardware OATH token is assigned to a user; unassign it before updating it.")
	}
	var in deviceInput
	if err := json.Unmarshal(body, &in); err != nil {
		return answer{}, errf(400, "BadRequest", "Invalid JSON body: %v.", err)
	}
	if in.SecretKey != nil {
		return answer{}, errf(400, "BadRequest", "The secret key of a hardware OATH token cannot be updated.")
	}
	if in.SerialNumber != nil && *in.SerialNumber != d.Serial {
		return answer{}, errf(400, "BadRequest", "The serial number of a hardware OATH token cannot be updated.")
	}
	if in.DisplayName != nil {
		d.DisplayName = *in.DisplayName
	}
	if in.Manufacturer != nil {
		d.Manufacturer = *in.Manufacturer
	}
	if in.Model != nil {
		d.Model = *in.Model
	}
	return answer{204, nil}, nil
}

func (s *Server) deleteDevice(id string) (answer, *apiError) {
	d := s.devices[id]
	if d == nil {
		return answer{}, notFound(id)
	}
	if d.Status != "available" {
		return answer{}, errf(400, "BadRequest", "The hardware OATH token is assigned to a user; unassign it before deleting it.")
	}
	delete(s.devices, id)
	delete(s.serials, d.Serial)
	for i, v := range s.order {
		if v == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	return answer{204, nil}, nil
}

func (s *Server) methodCount(u *User) int {
	n := u.ExistingOathMethods
	for _, d := range s.devices {
		if d.AssignedUserID == u.ID {
			n++
		}
	}
	return n
}

func (s *Server) canAssign(u *User) *apiError {
	if strings.EqualFold(u.UserType, "Guest") {
		return errf(400, "BadRequest", "Hardware OATH tokens cannot be assigned to guest users.")
	}
	if s.methodCount(u) >= MaxOathMethods {
		return errf(400, "BadRequest", "The user already has the maximum number of %d OATH authentication methods.", MaxOathMethods)
	}
	return nil
}

func (s *Server) doAssign(u *User, d *device) {
	d.AssignedUserID, d.AssignedUPN = u.ID, u.UserPrincipalName
	d.Status = "assigned"
	d.MethodID = newID()
	s.methods[d.MethodID] = d.ID
}

func (s *Server) listMethods(r *http.Request, userKey string) (answer, *apiError) {
	u := s.findUser(userKey)
	if u == nil {
		return answer{}, notFound(userKey)
	}
	ids := make([]string, 0)
	for _, id := range s.order {
		if s.devices[id].AssignedUserID == u.ID {
			ids = append(ids, s.devices[id].MethodID)
		}
	}
	sort.Strings(ids)
	skip := 0
	if t := r.URL.Query().Get("$skiptoken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return answer{}, errf(400, "BadRequest", "Invalid $skiptoken.")
		}
		skip = min(n, len(ids))
	}
	end := min(skip+s.opts.PageSize, len(ids))
	vals := []any{}
	for _, mid := range ids[skip:end] {
		vals = append(vals, s.methodJSON(s.devices[s.methods[mid]]))
	}
	res := map[string]any{"value": vals}
	if end < len(ids) {
		res["@odata.nextLink"] = "https://" + r.Host + r.URL.Path + "?$skiptoken=" + strconv.Itoa(end)
	}
	return answer{200, res}, nil
}

func (s *Server) userMethod(userKey, methodID string) (*User, *device, *apiError) {
	u := s.findUser(userKey)
	if u == nil {
		return nil, nil, notFound(userKey)
	}
	d := s.devices[s.methods[methodID]]
	if d == nil || d.AssignedUserID != u.ID || d.MethodID != methodID {
		return nil, nil, notFound(methodID)
	}
	return u, d, nil
}

func (s *Server) getMethod(userKey, methodID string) (answer, *apiError) {
	_, d, aerr := s.userMethod(userKey, methodID)
	if aerr != nil {
		return answer{}, aerr
	}
	return answer{200, s.methodJSON(d)}, nil
}

func (s *Server) assign(userKey string, body []byte) (answer, *apiError) {
	u := s.findUser(userKey)
	if u == nil {
		return answer{}, notFound(userKey)
	}
	var in struct {
		Device struct {
			ID string `json:"id"`
		} `json:"device"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.Device.ID == "" {
		return answer{}, errf(400, "BadRequest", "The request body needs device.id.")
	}
	d := s.devices[in.Device.ID]
	if d == nil {
		return answer{}, notFound(in.Device.ID)
	}
	if d.AssignedUserID == u.ID {
		return answer{}, errf(409, "conflictingObjects", "The hardware OATH token is already assigned to this user.")
	}
	if d.AssignedUserID != "" {
		return answer{}, errf(400, "BadRequest", "The hardware OATH token is already assigned to another user.")
	}
	if aerr := s.canAssign(u); aerr != nil {
		return answer{}, aerr
	}
	s.doAssign(u, d)
	return answer{201, s.methodJSON(d)}, nil
}

func (s *Server) activate(userKey, methodID string, body []byte) (answer, *apiError) {
	_, d, aerr := s.userMethod(userKey, methodID)
	if aerr != nil {
		return answer{}, aerr
	}
	var in struct {
		VerificationCode json.RawMessage `json:"verificationCode"`
		DisplayName      *string         `json:"displayName"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return answer{}, errf(400, "BadRequest", "Invalid JSON body: %v.", err)
	}
	var code string
	if err := json.Unmarshal(in.VerificationCode, &code); err != nil {
		return answer{}, errf(400, "BadRequest", "verificationCode must be a string of 6 digits.")
	}
	if d.Status == "activated" && !s.opts.AllowReactivation {
		return answer{}, errf(400, "badRequest", "The hardware OATH token is already activated.")
	}
	if !verifyCode(d, code, s.now()) {
		d.Status = "failedActivation"
		return answer{}, errf(400, "BadRequest", "The verification code is invalid or has expired.")
	}
	d.Status = "activated"
	d.Activations++
	s.stats.Activation++
	if in.DisplayName != nil {
		d.DisplayName = *in.DisplayName
	}
	return answer{204, nil}, nil
}

func (s *Server) deactivate(userKey, methodID string) (answer, *apiError) {
	_, d, aerr := s.userMethod(userKey, methodID)
	if aerr != nil {
		return answer{}, aerr
	}
	d.Status = "assigned"
	return answer{204, nil}, nil
}

func (s *Server) unassign(userKey, methodID string) (answer, *apiError) {
	_, d, aerr := s.userMethod(userKey, methodID)
	if aerr != nil {
		return answer{}, aerr
	}
	delete(s.methods, methodID)
	d.AssignedUserID, d.AssignedUPN, d.MethodID = "", "", ""
	d.Status = "available"
	return answer{204, nil}, nil
}
