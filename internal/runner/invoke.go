package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

// Payload is an invocation request as the host sends it: POST /<Function> with
// {"Data": {...}, "Metadata": {...}}.
type Payload struct {
	Data     map[string]any `json:"Data"`
	Metadata map[string]any `json:"Metadata"`
}

// Result is the handler's answer: {"Outputs", "Logs", "ReturnValue"}.
type Result struct {
	Outputs     map[string]json.RawMessage `json:"Outputs"`
	Logs        []string                   `json:"Logs"`
	ReturnValue json.RawMessage            `json:"ReturnValue"`
}

// InvokeError is a failed invocation: the handler could not be reached, or it answered with a
// non-2xx status (which the host treats as a failure worth retrying).
type InvokeError struct {
	Function string
	Status   int    // 0 when the handler was not reached
	Body     string // the start of the handler's answer
	Err      error
}

// Error says which function failed and how.
func (e *InvokeError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("invoke %s: %v", e.Function, e.Err)
	}
	if e.Err != nil {
		return fmt.Sprintf("invoke %s: handler answered %d: %v: %s", e.Function, e.Status, e.Err, e.Body)
	}
	return fmt.Sprintf("invoke %s: handler answered %d: %s", e.Function, e.Status, e.Body)
}

// Unwrap returns the transport or decoding error, if any.
func (e *InvokeError) Unwrap() error { return e.Err }

// hostVersion is sent in X-Azure-Functions-HostVersion so logs show who called.
const hostVersion = "4.0.0-oathpipe-dev"

// Invoke posts p to the handler at /<fn> and decodes its answer. It logs the handler's Logs lines.
func (r *Runner) Invoke(ctx context.Context, fn string, p Payload) (*Result, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, &InvokeError{Function: fn, Err: fmt.Errorf("encode payload: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(r.handlerURL, "/")+"/"+fn, bytes.NewReader(body))
	if err != nil {
		return nil, &InvokeError{Function: fn, Err: err}
	}
	invocationID := newGUID()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", invocationID)
	req.Header.Set("X-Azure-Functions-HostVersion", hostVersion)
	req.Header.Set("User-Agent", "Azure-Functions-Custom-Handler/"+hostVersion)
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, &InvokeError{Function: fn, Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, &InvokeError{Function: fn, Status: resp.StatusCode, Err: fmt.Errorf("read answer: %w", err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &InvokeError{Function: fn, Status: resp.StatusCode, Body: clip(string(raw), 300)}
	}
	// DefaultHttpWorkerService.cs reads the answer as JSON: another content type, an empty
	// body or unreadable JSON fails the invocation (an empty 200 would leave the real host
	// waiting until functionTimeout; the runner fails it at once).
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil, &InvokeError{Function: fn, Status: resp.StatusCode, Body: clip(string(raw), 300),
			Err: fmt.Errorf("answer has content type %q, not application/json", resp.Header.Get("Content-Type"))}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, &InvokeError{Function: fn, Status: resp.StatusCode, Err: errors.New("empty answer")}
	}
	var res Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, &InvokeError{Function: fn, Status: resp.StatusCode, Body: clip(string(raw), 300),
			Err: fmt.Errorf("decode answer: %w", err)}
	}
	for _, line := range res.Logs {
		r.log.Info("function log", logctx.Function, fn, logctx.InvocationID, invocationID, logctx.Line, line)
	}
	return &res, nil
}

// hostString is a primitive value as the host serialises it into Data and Metadata: JSON-encoded
// a second time (JsonConvert.SerializeObject), so the handler receives "\"acme.csv\"".
func hostString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// hostTime is a DateTimeOffset value as the host serialises it.
func hostTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.0000000+00:00") }

// sysData is the host's Metadata.sys object.
func sysData(fn string, now time.Time) map[string]any {
	return map[string]any{"MethodName": fn, "UtcNow": hostTime(now), "RandGuid": newGUID()}
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
