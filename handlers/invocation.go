// Package handlers is the Functions custom handler: it decodes the host's invocation payloads,
// calls the pipeline, and encodes the {"Outputs","Logs","ReturnValue"} answer. One file per
// function; the payload decoding lives here, in one place.
package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// maxInvocationBytes bounds an invocation body. No seed file travels in a payload any more
// (ImportSeeds reads the blob from storage); queue messages are at most 64 KiB and HTTP bodies
// are bounded again by the HTTP handlers.
const maxInvocationBytes = 64 << 20

// Invocation is the host's request to a function: {"Data": {...}, "Metadata": {...}}.
type Invocation struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// DecodeInvocation reads an invocation from the request body.
func DecodeInvocation(r *http.Request) (*Invocation, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxInvocationBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read invocation: %w", err)
	}
	if len(body) > maxInvocationBytes {
		return nil, fmt.Errorf("invocation larger than %d bytes: %w", maxInvocationBytes, errTooLarge)
	}
	var in Invocation
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("decode invocation: %w", err)
	}
	return &in, nil
}

// primitive decodes a value that the host may send plain ("acme.csv", 1) or JSON-encoded a
// second time ("\"acme.csv\"", "1"). It returns the innermost string form.
func primitive(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	if raw[0] != '"' {
		// A plain number or boolean.
		return string(raw), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	// Encoded twice: the string itself is a JSON string literal.
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		var inner string
		if err := json.Unmarshal([]byte(s), &inner); err == nil {
			return inner, true
		}
	}
	return s, true
}

// object decodes a value that may be a JSON object or a string holding one.
func object(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		raw = []byte(s)
	}
	return json.Unmarshal(raw, v)
}

// DataString returns Data[key] as a string (message text), accepting both encodings.
func (in *Invocation) DataString(key string) (string, bool) { return primitive(in.Data[key]) }

// Meta returns Metadata[key] as a string, accepting both encodings.
func (in *Invocation) Meta(key string) string {
	s, _ := primitive(in.Metadata[key])
	return s
}

// MetaInt returns Metadata[key] as an integer, or 0.
func (in *Invocation) MetaInt(key string) int {
	n, _ := strconv.Atoi(in.Meta(key))
	return n
}

// HTTPRequest is an HTTP trigger's Data.<name>.
type HTTPRequest struct {
	URL        string              `json:"Url"`
	Method     string              `json:"Method"`
	Query      map[string]string   `json:"-"`
	Headers    map[string][]string `json:"Headers"`
	Params     map[string]string   `json:"Params"`
	Identities json.RawMessage     `json:"Identities"`
	Body       string              `json:"-"`
}

// Header returns the first value of header name, matched case-insensitively.
func (r *HTTPRequest) Header(name string) string {
	for k, v := range r.Headers {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// DataHTTPRequest decodes Data[key] as an HTTP trigger request. Query may be an object or (hosts
// before 2020) a string holding one; Body may be a string, base64 text or a JSON value.
func (in *Invocation) DataHTTPRequest(key string) (*HTTPRequest, error) {
	raw, ok := in.Data[key]
	if !ok {
		return nil, fmt.Errorf("invocation has no Data.%s", key)
	}
	var wire struct {
		HTTPRequest
		Query json.RawMessage `json:"Query"`
		Body  json.RawMessage `json:"Body"`
	}
	if err := object(raw, &wire); err != nil {
		return nil, fmt.Errorf("decode Data.%s: %w", key, err)
	}
	req := wire.HTTPRequest
	req.Query = map[string]string{}
	if len(bytes.TrimSpace(wire.Query)) > 0 && string(bytes.TrimSpace(wire.Query)) != "null" {
		var q map[string]json.RawMessage
		if err := object(wire.Query, &q); err != nil {
			return nil, fmt.Errorf("decode Data.%s.Query: %w", key, err)
		}
		for k, v := range q {
			s, _ := primitive(v)
			req.Query[k] = s
		}
	}
	if req.Params == nil {
		req.Params = map[string]string{}
	}
	// Params may arrive double-encoded too.
	for k, v := range req.Params {
		if s, ok := primitive(json.RawMessage(strconv.Quote(v))); ok {
			req.Params[k] = s
		}
	}
	body := bytes.TrimSpace(wire.Body)
	switch {
	case len(body) == 0 || string(body) == "null":
	case body[0] == '"':
		var s string
		if err := json.Unmarshal(body, &s); err != nil {
			return nil, fmt.Errorf("decode Data.%s.Body: %w", key, err)
		}
		req.Body = s
	default:
		// The host parsed a JSON body into a value; keep its JSON text.
		req.Body = string(body)
	}
	return &req, nil
}

// Response is the handler's answer to the host.
type Response struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// HTTPResponse is an http output binding's value.
type HTTPResponse struct {
	StatusCode int               `json:"statusCode"`
	Body       string            `json:"body"`
	Headers    map[string]string `json:"headers"`
}

// writeResponse answers the host. status is the invocation's outcome: 200 for success or a
// permanent, recorded failure; 500 for a failure worth retrying.
func writeResponse(w http.ResponseWriter, status int, resp Response) {
	if resp.Outputs == nil {
		resp.Outputs = map[string]any{}
	}
	if resp.Logs == nil {
		resp.Logs = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

// errTooLarge marks an invocation or body over its size limit.
var errTooLarge = errors.New("too large")

func isTooLarge(err error) bool { return errors.Is(err, errTooLarge) }
