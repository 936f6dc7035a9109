// Package azerr classifies failed Azure SDK calls (azcore.ResponseError, identity and network
// failures) into *token.Error kinds, so every storage adapter tells its callers the same way
// whether a failure is worth retrying.
package azerr

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/oathpipe/oathpipe/shared/token"
)

// Service names the Azure service in messages and says which role its callers need.
type Service struct {
	Name string // e.g. "table storage"
	Role string // e.g. "Storage Table Data Contributor"
	// Refine, when set, words or reclassifies this service's own answers after the shared
	// rules have classified them (e.g. Key Vault's 409 ObjectIsBeingDeleted is transient). It
	// sees the answer and the error made of it, and may change the error's Kind, Message and
	// RetryAfter.
	Refine func(a Answer, e *token.Error)
}

// Answer is what a failed call's HTTP answer said.
type Answer struct {
	Status     int
	Code       string // the error code: error.code from the body, else the x-ms-error-code header
	Inner      string // error.innererror.code, when the body has one (Key Vault)
	Message    string // error.message from the body, when it has one
	RequestID  string // x-ms-request-id
	RetryAfter time.Duration
}

// Is reports whether the answer's code or inner code is code.
func (a Answer) Is(code string) bool { return a.Code == code || a.Inner == code }

// AnswerOf returns the HTTP answer of a failed Azure SDK call, when err carries one. It reads
// bodies of the Azure REST shape {"error":{"code","message","innererror":{"code"}}}; other
// bodies leave Message and Inner empty.
func AnswerOf(err error) (Answer, bool) {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return Answer{}, false
	}
	a := Answer{Status: re.StatusCode, Code: re.ErrorCode}
	resp := re.RawResponse
	if resp == nil {
		return a, true
	}
	a.RequestID = resp.Header.Get("x-ms-request-id")
	a.RetryAfter = RetryAfter(resp.Header)
	if body, err := runtime.Payload(resp); err == nil {
		var b struct {
			Error struct {
				Code       string `json:"code"`
				Message    string `json:"message"`
				InnerError struct {
					Code string `json:"code"`
				} `json:"innererror"`
			} `json:"error"`
		}
		if json.Unmarshal(body, &b) == nil {
			a.Code = cmp.Or(b.Error.Code, a.Code)
			a.Inner, a.Message = b.Error.InnerError.Code, b.Error.Message
		}
	}
	return a, true
}

// Classify turns err from a call to s into a *token.Error. It is the one place an Azure
// service's answer gets its kind: 429 is throttled (with Retry-After); 408, 5xx, timeouts and
// network failures are transient; 400 is invalid (the service refuses the request as sent:
// sending it again cannot help); 401/403 forbidden (naming the role the app's identity needs);
// 404 not found; 409/412 a conflict; any other answer internal. s.Refine then words or
// reclassifies what only that service says. An error that is already a *token.Error is
// returned as it is.
func Classify(op string, s Service, err error) error {
	if err == nil {
		return nil
	}
	var te *token.Error
	if errors.As(err, &te) {
		return err
	}
	e := &token.Error{Kind: token.KindInternal, Op: op, Err: err}
	var authErr *azidentity.AuthenticationFailedError
	var netErr net.Error
	if a, ok := AnswerOf(err); ok {
		classifyAnswer(e, s, a)
		if s.Refine != nil {
			s.Refine(a, e)
		}
		return e
	}
	switch {
	case errors.As(err, &authErr):
		if r := authErr.RawResponse; r != nil && r.StatusCode < 500 && r.StatusCode != http.StatusTooManyRequests {
			e.Kind, e.Message = token.KindForbidden, "could not get a token for "+s.Name
		} else {
			e.Kind, e.Message = token.KindTransient, "could not get a token for "+s.Name+" (identity endpoint failing)"
		}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		e.Kind, e.Message = token.KindTransient, "cancelled or out of time talking to "+s.Name
	case errors.As(err, &netErr):
		e.Kind, e.Message = token.KindTransient, "cannot reach "+s.Name+": "+err.Error()
	default:
		e.Kind, e.Message = token.KindTransient, err.Error()
	}
	return e
}

// classifyAnswer sets e's kind and message from the service's answer a.
func classifyAnswer(e *token.Error, s Service, a Answer) {
	e.Message = s.Name + " answered " + strconv.Itoa(a.Status)
	if a.Code != "" {
		e.Message += " " + a.Code
	}
	e.RequestID, e.RetryAfter = a.RequestID, a.RetryAfter
	switch c := a.Status; {
	case c == http.StatusTooManyRequests:
		e.Kind = token.KindThrottled
	case c == http.StatusRequestTimeout || c >= 500:
		e.Kind = token.KindTransient
	case c == http.StatusBadRequest:
		e.Kind = token.KindInvalid
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		e.Kind = token.KindForbidden
		e.Message += " (the app's identity needs the " + s.Role + " role)"
	case c == http.StatusNotFound:
		e.Kind = token.KindNotFound
	case c == http.StatusConflict || c == http.StatusPreconditionFailed:
		e.Kind = token.KindConflict
	}
}

// RetryAfter reads how long the service asked to wait: retry-after-ms, x-ms-retry-after-ms, or
// Retry-After in seconds or as an HTTP date. It returns 0 when none is given.
func RetryAfter(h http.Header) time.Duration {
	for _, name := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if ms, err := strconv.Atoi(h.Get(name)); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := h.Get("Retry-After")
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}
