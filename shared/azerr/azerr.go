// Package azerr classifies failed Azure SDK calls (azcore.ResponseError, identity and network
// failures) into *token.Error kinds, so every storage adapter tells its callers the same way
// whether a failure is worth retrying.
package azerr

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/oathpipe/oathpipe/shared/token"
)

// Service names the Azure service in messages and says which role its callers need.
type Service struct {
	Name string // e.g. "table storage"
	Role string // e.g. "Storage Table Data Contributor"
}

// Classify turns err from a call to s into a *token.Error: 429 is throttled (with Retry-After),
// 408, 5xx, timeouts and network failures are transient, 401/403 forbidden (naming the role the
// app's identity needs), 404 not found, 409/412 a conflict, any other answer internal. An error
// that is already a *token.Error is returned as it is.
func Classify(op string, s Service, err error) error {
	if err == nil {
		return nil
	}
	var te *token.Error
	if errors.As(err, &te) {
		return err
	}
	e := &token.Error{Kind: token.KindInternal, Op: op, Err: err}
	var re *azcore.ResponseError
	var authErr *azidentity.AuthenticationFailedError
	var netErr net.Error
	switch {
	case errors.As(err, &re):
		e.Message = s.Name + " answered " + strconv.Itoa(re.StatusCode)
		if re.ErrorCode != "" {
			e.Message += " " + re.ErrorCode
		}
		if re.RawResponse != nil {
			e.RequestID = re.RawResponse.Header.Get("x-ms-request-id")
			e.RetryAfter = RetryAfter(re.RawResponse.Header)
		}
		switch c := re.StatusCode; {
		case c == http.StatusTooManyRequests:
			e.Kind = token.KindThrottled
		case c == http.StatusRequestTimeout || c >= 500:
			e.Kind = token.KindTransient
		case c == http.StatusUnauthorized || c == http.StatusForbidden:
			e.Kind = token.KindForbidden
			e.Message += " (the app's identity needs the " + s.Role + " role)"
		case c == http.StatusNotFound:
			e.Kind = token.KindNotFound
		case c == http.StatusConflict || c == http.StatusPreconditionFailed:
			e.Kind = token.KindConflict
		}
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
