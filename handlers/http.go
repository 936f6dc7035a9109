package handlers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oathpipe/oathpipe/shared/token"
)

// maxHTTPBody bounds an HTTP API request body; the largest valid one is well under 1 KiB.
const maxHTTPBody = 8 << 10

// apiCall is one HTTP API request after decoding and the role check.
type apiCall struct {
	req    *HTTPRequest
	method string
	caller string
	log    *slog.Logger
}

// apiFunc answers one HTTP API call with the http output's value.
type apiFunc func(ctx context.Context, c *apiCall) HTTPResponse

// httpFunction adapts an apiFunc to an invocation: it decodes Data.req, checks the method and
// the caller's role, bounds the call by the HTTP budget, and always answers the host 200 with
// the caller's status in Outputs.res.
func (s *Server) httpFunction(route string, methods []string, h apiFunc) invocationFunc {
	return func(ctx context.Context, log *slog.Logger, in *Invocation) outcome {
		start := time.Now()
		c := &apiCall{log: log}
		res := s.serveAPI(ctx, c, in, route, methods, h)
		withInstance(&res, invocationIDFrom(ctx))
		c.log.Info("http request", "route", route, "status", res.StatusCode, "ms", time.Since(start).Milliseconds())
		return outcome{status: http.StatusOK, resp: Response{Outputs: map[string]any{"res": res}}}
	}
}

func (s *Server) serveAPI(ctx context.Context, c *apiCall, in *Invocation, route string, methods []string, h apiFunc) HTTPResponse {
	req, err := in.DataHTTPRequest("req")
	if err != nil {
		c.log.Warn("undecodable http request", "err", err)
		return problemResponse(newProblem(codeMalformedBody, "The request could not be read."))
	}
	c.req = req
	c.method = strings.ToUpper(strings.TrimSpace(req.Method))
	if len(c.method) > 16 {
		c.method = c.method[:16]
	}
	c.log = c.log.With("method", c.method)
	if !slices.Contains(methods, c.method) {
		res := problemResponse(newProblem(codeMethodNotAllowed, c.method+" is not allowed on "+route+"."))
		res.Headers["Allow"] = strings.Join(methods, ", ")
		return res
	}
	var p *Problem
	c.caller, p = authorize(req, s.role)
	c.log = c.log.With("caller", c.caller)
	if p != nil {
		c.log.Warn("caller refused", "code", p.Code)
		return problemResponse(p)
	}
	if c.method == http.MethodPut && len(req.Body) > maxHTTPBody {
		return problemResponse(newProblem(codeBodyTooLarge, "The body must be at most 8 KiB."))
	}
	ctx, cancel := context.WithTimeout(ctx, s.budget)
	defer cancel()
	return h(ctx, c)
}

// withInstance sets a problem's instance to the invocation id (urn:uuid:...), which the
// function's logs carry too, so a caller's support request finds the log lines.
func withInstance(res *HTTPResponse, invocationID string) {
	if invocationID == "" || res.StatusCode < 400 || res.Headers["Content-Type"] != "application/problem+json" {
		return
	}
	var p Problem
	if err := json.Unmarshal([]byte(res.Body), &p); err != nil {
		return
	}
	p.Instance = "urn:uuid:" + invocationID
	if b, err := json.Marshal(p); err == nil {
		res.Body = string(b)
	}
}

// fail answers err as a problem and logs it with its upstream request id.
func (c *apiCall) fail(err error) HTTPResponse {
	p := problemFor(err)
	lvl := slog.LevelInfo
	if p.Status >= 500 {
		lvl = slog.LevelError
	}
	c.log.Log(context.Background(), lvl, "request failed", "code", p.Code, "status", p.Status, "kind", string(token.KindOf(err)), "requestId", p.RequestID, "err", err)
	return problemResponse(p)
}

// param returns the route parameter name, from Params or, failing that, from the URL path
// segment that follows after in the route (tokens/{serial}/..., imports/{name}).
func (r *HTTPRequest) param(name, after string) string {
	for k, v := range r.Params {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return ""
	}
	segs := strings.Split(strings.Trim(u.EscapedPath(), "/"), "/")
	for i, s := range segs {
		if s == after && i+1 < len(segs) {
			v, err := url.PathUnescape(segs[i+1])
			if err != nil {
				return ""
			}
			return v
		}
	}
	return ""
}

// jsonBody returns the request body as JSON text: the host may hand over text, a JSON value,
// or base64 (for binary content types).
func (r *HTTPRequest) jsonBody() []byte {
	b := bytes.TrimSpace([]byte(r.Body))
	if len(b) == 0 || b[0] == '{' || b[0] == '[' {
		return b
	}
	if dec, err := base64.StdEncoding.DecodeString(string(b)); err == nil {
		if d := bytes.TrimSpace(dec); len(d) > 0 && d[0] == '{' {
			return d
		}
	}
	return b
}

// maxSerialBytes bounds a serial number in the path.
const maxSerialBytes = 128

var (
	// objectIDPattern: an Entra object id (GUID).
	objectIDPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// codePattern: a code read from the device.
	codePattern = regexp.MustCompile(`^[0-9]{6}$`)
)

// validSerial reports whether s can be a token serial number. Vendor files carry serials with
// quotes, slashes and any unicode, and the seed file reader accepts them, so the API does too:
// only empty, oversized, invalid UTF-8 and control characters are refused (URL-encode the rest).
func validSerial(s string) bool {
	if s == "" || len(s) > maxSerialBytes || !utf8.ValidString(s) || strings.TrimSpace(s) != s {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// validUser reports whether s is a user principal name (local@domain.tld) or an object id.
func validUser(s string) bool {
	if objectIDPattern.MatchString(s) {
		return true
	}
	if len(s) < 3 || len(s) > 256 || !utf8.ValidString(s) {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.Count(s, "@") != 1 {
		return false
	}
	domain := s[at+1:]
	if !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`"\<>()[],;:/`, r) {
			return false
		}
	}
	return true
}

// validImportName reports whether s can be a blob name in the inbox.
func validImportName(s string) bool {
	if s == "" || len(s) > 1024 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
