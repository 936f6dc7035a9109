package azerr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/oathpipe/oathpipe/shared/token"
)

func response(status int, code string, h http.Header) error {
	if h == nil {
		h = http.Header{}
	}
	h.Set("x-ms-request-id", "req-1")
	return &azcore.ResponseError{StatusCode: status, ErrorCode: code, RawResponse: &http.Response{StatusCode: status, Header: h}}
}

func TestClassify(t *testing.T) {
	svc := Service{Name: "table storage", Role: "Storage Table Data Contributor"}
	already := &token.Error{Kind: token.KindConflict, Message: "mine"}
	tests := []struct {
		name  string
		err   error
		kind  token.Kind
		retry time.Duration
		want  string // in the message
	}{
		{"throttled", response(429, "", http.Header{"Retry-After": {"7"}}), token.KindThrottled, 7 * time.Second, "answered 429"},
		{"throttled ms", response(429, "", http.Header{"Retry-After-Ms": {"1500"}}), token.KindThrottled, 1500 * time.Millisecond, ""},
		{"server", response(503, "ServerBusy", nil), token.KindTransient, 0, "ServerBusy"},
		{"timeout answer", response(408, "", nil), token.KindTransient, 0, ""},
		{"forbidden names the role", response(403, "AuthorizationPermissionMismatch", nil), token.KindForbidden, 0, "Storage Table Data Contributor"},
		{"not found", response(404, "ResourceNotFound", nil), token.KindNotFound, 0, ""},
		{"conflict", response(409, "EntityAlreadyExists", nil), token.KindConflict, 0, ""},
		{"precondition", response(412, "UpdateConditionNotSatisfied", nil), token.KindConflict, 0, ""},
		{"bad request", response(400, "InvalidInput", nil), token.KindInternal, 0, ""},
		{"deadline", fmt.Errorf("send: %w", context.DeadlineExceeded), token.KindTransient, 0, "out of time"},
		{"network", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, token.KindTransient, 0, "cannot reach table storage"},
		{"already classified", already, token.KindConflict, 0, "mine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Classify("write row", svc, tt.err)
			if got := token.KindOf(err); got != tt.kind {
				t.Fatalf("kind = %s, want %s (%v)", got, tt.kind, err)
			}
			if got := token.RetryAfterOf(err); got != tt.retry {
				t.Errorf("retry after = %v, want %v", got, tt.retry)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("message %q lacks %q", err, tt.want)
			}
			var re *azcore.ResponseError
			if errors.As(tt.err, &re) && token.RequestIDOf(err) != "req-1" {
				t.Errorf("request id lost: %v", err)
			}
		})
	}
	if Classify("x", svc, nil) != nil {
		t.Error("nil error must stay nil")
	}
}
