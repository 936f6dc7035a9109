package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

// maxHTTPBody bounds an HTTP API request body; the largest valid one is well under 1 KiB.
const maxHTTPBody = 8 << 10

// hostRoutedMethods are the methods each HTTP function's function.json lists: every method, so
// that the host hands every request to the handler (the host answers a method a function does
// not list with its own plain 404) and the handler answers one its route does not serve with
// 405 method-not-allowed and an Allow header.
var hostRoutedMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodTrace}

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
		withInstance(&res, logctx.InvocationFrom(ctx))
		c.log.InfoContext(ctx, "http request", "route", route, logctx.Status, res.StatusCode, "ms", time.Since(start).Milliseconds())
		return outcome{status: http.StatusOK, resp: Response{Outputs: map[string]any{"res": res}}}
	}
}

func (s *Server) serveAPI(ctx context.Context, c *apiCall, in *Invocation, route string, methods []string, h apiFunc) HTTPResponse {
	req, err := in.DataHTTPRequest("req")
	if err != nil {
		c.log.WarnContext(ctx, "undecodable http request", logctx.Error, err)
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
	c.log = c.log.With(logctx.Caller, c.caller)
	if p != nil {
		c.log.WarnContext(ctx, "caller refused", "code", p.Code)
		return problemResponse(p)
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
func (c *apiCall) fail(ctx context.Context, err error) HTTPResponse {
	p := problemFor(err)
	lvl := slog.LevelInfo
	if p.Status >= 500 {
		lvl = slog.LevelError
	}
	c.log.Log(ctx, lvl, "request failed", "code", p.Code, logctx.Status, p.Status, logctx.Kind, string(token.KindOf(err)), logctx.RequestID, p.RequestID, logctx.Error, err)
	return problemResponse(p)
}

// routeValue returns the route parameter name as the caller sent it. The host's route values
// come from ASP.NET Core routing, where Kestrel decodes every percent-escape except %2F
// (dotnet/aspnetcore#30655), so Params may hold "a%2Fb" for the serial "a/b": %2F (either case)
// is decoded here, and nothing else (a "%" in Params is already the caller's own). Without
// Params, the value comes from the URL path: the segment after the one named after (or, with
// rest, every segment after it), percent-decoded. Nothing is trimmed: validation refuses white
// space at either end instead of looking up something the caller did not send.
func (r *HTTPRequest) routeValue(name, after string, rest bool) string {
	for k, v := range r.Params {
		if strings.EqualFold(k, name) {
			return decodeSlash(v)
		}
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return ""
	}
	segs := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	for i, s := range segs {
		if s != after || i+1 >= len(segs) {
			continue
		}
		raw := segs[i+1]
		if rest {
			raw = strings.Join(segs[i+1:], "/")
		}
		v, err := url.PathUnescape(raw)
		if err != nil {
			return ""
		}
		return v
	}
	return ""
}

// decodeSlash turns the %2F escapes Kestrel leaves in route values into "/".
func decodeSlash(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	return strings.NewReplacer("%2F", "/", "%2f", "/").Replace(v)
}

// requestBody returns a PUT's JSON body, or the problem that refuses it: no body because the
// request had no Content-Length (the host passes Body only when Content-Length > 0, so a
// chunked body never arrives), a Content-Type other than application/json, an empty or
// oversized body, or text that is not UTF-8. The body is read one way only: as the text the
// host hands over (a JSON value the host parsed is kept as its JSON text).
func (r *HTTPRequest) requestBody() ([]byte, *Problem) {
	b := []byte(r.Body)
	if len(bytes.TrimSpace(b)) == 0 {
		cl := strings.TrimSpace(r.Header("Content-Length"))
		chunked := strings.Contains(strings.ToLower(r.Header("Transfer-Encoding")), "chunked")
		if len(b) == 0 && (cl == "" || chunked || cl != "0") {
			return nil, newProblem(codeLengthRequired, "PUT needs a JSON body sent with a Content-Length header; "+
				"the Functions host passes no body without one (a chunked body, Transfer-Encoding: chunked, arrives empty).")
		}
		return nil, newProblem(codeMalformedBody, `PUT needs a JSON body: {"userPrincipalName": "..."}.`)
	}
	if p := jsonContentType(r.Header("Content-Type")); p != nil {
		return nil, p
	}
	if len(b) > maxHTTPBody {
		return nil, newProblem(codeBodyTooLarge, "The request body must be at most 8 KiB.")
	}
	if !utf8.Valid(b) {
		return nil, newProblem(codeMalformedBody, "The request body is not UTF-8 text.")
	}
	return b, nil
}

// jsonContentType refuses a Content-Type that is not application/json (charset, when given,
// utf-8): a body is only ever read as the JSON its type says it is.
func jsonContentType(ct string) *Problem {
	const want = "The request's Content-Type must be application/json"
	if strings.TrimSpace(ct) == "" {
		return newProblem(codeUnsupportedMediaType, want+"; the request has none.")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return newProblem(codeUnsupportedMediaType, want+".")
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return newProblem(codeUnsupportedMediaType, want+" (with charset=utf-8 or no parameter).")
		}
	}
	return nil
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
	return len(s) <= maxSerialBytes && printablePathValue(s)
}

// printablePathValue reports whether s is a non-empty path value oathpipe looks up as sent:
// valid UTF-8 (no U+FFFD, which stands for bytes that were not), no control characters, and
// no white space at either end (never trimmed: " SN-1" is not "SN-1").
func printablePathValue(s string) bool {
	if s == "" || !utf8.ValidString(s) || strings.TrimSpace(s) != s {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// validUser reports whether s is a user principal name (token.ValidUPN, the rule the seed
// file reader applies too) or a user object id.
func validUser(s string) bool {
	return objectIDPattern.MatchString(s) || token.ValidUPN(s)
}

// validImportName reports whether s can be a blob name in the inbox.
func validImportName(s string) bool {
	return len(s) <= 1024 && printablePathValue(s)
}
