package runner

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxHTTPBody bounds a request body the front accepts (the host's limit is 100 MB).
const maxHTTPBody = 32 << 20

type httpRoute struct {
	fn    Function
	trig  Binding
	route *Route
}

func (h httpRoute) allows(method string) bool {
	if len(h.trig.Methods) == 0 {
		return true
	}
	for _, m := range h.trig.Methods {
		if strings.EqualFold(m, method) {
			return true
		}
	}
	return false
}

// localIdentity is the identity the host attaches to a request that passed the function-key
// check. The runner does not check keys (the host does that in Azure), so every local caller
// gets it.
var localIdentity = []map[string]any{{
	"AuthenticationType": "WebJobsAuthLevel",
	"IsAuthenticated":    true,
	"Claims": []map[string]string{
		{"Type": "http://schemas.microsoft.com/2017/07/functions/claims/authlevel", "Value": "Function"},
		{"Type": "http://schemas.microsoft.com/2017/07/functions/claims/keyid", "Value": "oathpipe-dev"},
	},
}}

// ServeHTTP is the host's HTTP front: it maps /<routePrefix>/<route> to an HTTP-triggered
// function by route template and method, invokes it with Data.<req> built as the host builds
// it, and answers with the function's http output. Function keys are not checked.
func (r *Runner) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	prefix := "/"
	if r.host.RoutePrefix != "" {
		prefix = "/" + r.host.RoutePrefix + "/"
	}
	escaped := req.URL.EscapedPath()
	if !strings.HasPrefix(strings.ToLower(escaped), strings.ToLower(prefix)) {
		http.Error(w, "not found: functions are under "+prefix, http.StatusNotFound)
		return
	}
	rel := escaped[len(prefix):]
	var (
		match  *httpRoute
		params map[string]string
		found  bool
	)
	for i := range r.routes {
		p, ok := r.routes[i].route.Match(rel)
		if !ok {
			continue
		}
		found = true
		if r.routes[i].allows(req.Method) {
			match, params = &r.routes[i], p
			break
		}
	}
	if match == nil {
		// The host's router treats a method the function does not accept as no route.
		msg := "no function for " + req.Method + " " + escaped
		if found {
			msg += " (the route exists, but not for this method)"
		}
		http.Error(w, msg, http.StatusNotFound)
		return
	}

	body, err := io.ReadAll(io.LimitReader(req.Body, maxHTTPBody+1))
	if err != nil || len(body) > maxHTTPBody {
		http.Error(w, "request body unreadable or too large", http.StatusRequestEntityTooLarge)
		return
	}
	p := r.httpPayload(req, match, params, body)
	d := Delivery{Function: match.fn.Name, Trigger: HTTPTrigger, Key: req.Method + " " + escaped}
	res, err := r.Invoke(req.Context(), match.fn.Name, p)
	if err == nil {
		err = writeHTTPOutput(w, match, res)
	}
	if err != nil {
		d.Err = err
		// The host answers 500 when the invocation fails.
		http.Error(w, "function "+match.fn.Name+" failed: "+err.Error(), http.StatusInternalServerError)
	}
	d.Duration = time.Since(start)
	r.report(d)
}

// httpPayload builds the invocation of an HTTP-triggered function as the host does.
func (r *Runner) httpPayload(req *http.Request, h *httpRoute, params map[string]string, body []byte) Payload {
	query := map[string]string{}
	for k, v := range req.URL.Query() {
		query[k] = strings.Join(v, ",")
	}
	headers := map[string][]string{}
	flat := map[string]string{}
	for k, v := range req.Header {
		headers[k] = v
		flat[k] = strings.Join(v, ",")
	}
	headers["Host"] = []string{req.Host}
	flat["Host"] = req.Host
	if req.ContentLength > 0 {
		headers["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	data := map[string]any{
		"Url":        scheme + "://" + req.Host + req.URL.RequestURI(),
		"Method":     req.Method,
		"Query":      query,
		"Headers":    headers,
		"Params":     params,
		"Identities": localIdentity,
	}
	// GetRequestAsJObject sends Body only when ContentLength > 0: a chunked request (no
	// Content-Length) arrives without one, however much it sent.
	if req.ContentLength > 0 && len(body) > 0 {
		if octetOrMultipart(req.Header.Get("Content-Type")) {
			data["Body"] = base64.StdEncoding.EncodeToString(body)
		} else {
			data["Body"] = string(body)
		}
	}
	meta := map[string]any{"Query": query, "Headers": flat, "sys": sysData(h.fn.Name, time.Now())}
	for k, v := range params {
		meta[k] = hostString(v)
	}
	return Payload{Data: map[string]any{h.trig.Name: data}, Metadata: meta}
}

func octetOrMultipart(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/octet-stream" || strings.HasPrefix(mt, "multipart/")
}

// httpOutput is an http output binding's value as a handler writes it.
type httpOutput struct {
	StatusCode json.RawMessage `json:"statusCode"`
	Status     json.RawMessage `json:"status"`
	Body       json.RawMessage `json:"body"`
	Headers    map[string]any  `json:"headers"`
}

// writeHTTPOutput answers the caller with the function's http output binding (or $return).
func writeHTTPOutput(w http.ResponseWriter, h *httpRoute, res *Result) error {
	out, ok := h.fn.HTTPOutput()
	if !ok {
		return errors.New("function has no http output binding")
	}
	raw := res.Outputs[out.Name]
	if out.Name == "$return" {
		raw = res.ReturnValue
	}
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		// HttpScriptInvocationResultExtensions.cs: a missing http output becomes an empty
		// 200 response object, which the host answers as 200 with {}.
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "{}")
		return nil
	}
	var o httpOutput
	if err := json.Unmarshal(raw, &o); err != nil {
		return fmt.Errorf("Outputs.%s is not an http response object: %w", out.Name, err)
	}
	status := http.StatusOK
	for _, s := range []json.RawMessage{o.StatusCode, o.Status} {
		if len(s) == 0 {
			continue
		}
		v, ok := primitiveText(s)
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 100 || n > 999 {
			return fmt.Errorf("Outputs.%s.statusCode %s is not a status code", out.Name, s)
		}
		status = n
		break
	}
	var body []byte
	if b := bytes.TrimSpace(o.Body); len(b) > 0 && string(b) != "null" {
		if b[0] == '"' {
			var s string
			if err := json.Unmarshal(b, &s); err != nil {
				return fmt.Errorf("Outputs.%s.body: %w", out.Name, err)
			}
			body = []byte(s)
		} else {
			body = b // an object or array is serialised as JSON
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
		}
	}
	for k, v := range o.Headers {
		switch v := v.(type) {
		case string:
			w.Header().Set(k, v)
		case []any:
			w.Header().Del(k)
			for _, e := range v {
				w.Header().Add(k, fmt.Sprint(e))
			}
		default:
			w.Header().Set(k, fmt.Sprint(v))
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
	return nil
}

// primitiveText returns a JSON number's text or a JSON string's value.
func primitiveText(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false
		}
		return s, true
	}
	return string(raw), true
}
