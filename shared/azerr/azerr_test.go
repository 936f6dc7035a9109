package azerr

import (
	"context"
	"errors"
	"fmt"
	"io"
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
		// A 400 is decided here for every service: the request as sent is refused, so
		// sending it again cannot help (issue 16; Key Vault's adapter said so alone before).
		{"bad request", response(400, "InvalidInput", nil), token.KindInvalid, 0, "answered 400 InvalidInput"},
		{"method not allowed", response(405, "", nil), token.KindInternal, 0, "answered 405"},
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

// TestRefineAndAnswer: a service's Refine sees the answer as parsed from an Azure REST error
// body ({"error":{"code","message","innererror"}}) and the shared classification, and may
// change it; without a JSON error body the header's code stands.
func TestRefineAndAnswer(t *testing.T) {
	withBody := func(status int, body string) error {
		h := http.Header{"X-Ms-Request-Id": {"req-2"}, "Retry-After": {"3"}}
		return &azcore.ResponseError{StatusCode: status, ErrorCode: "HeaderCode",
			RawResponse: &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body))}}
	}
	var seen Answer
	svc := Service{Name: "Key Vault", Role: "Key Vault Secrets Officer", Refine: func(a Answer, e *token.Error) {
		seen = a
		if a.Is("ObjectIsBeingDeleted") {
			e.Kind = token.KindTransient
		}
	}}
	err := Classify("store", svc, withBody(409, `{"error":{"code":"Conflict","message":"being deleted","innererror":{"code":"ObjectIsBeingDeleted"}}}`))
	want := Answer{Status: 409, Code: "Conflict", Inner: "ObjectIsBeingDeleted", Message: "being deleted", RequestID: "req-2", RetryAfter: 3 * time.Second}
	if seen != want {
		t.Errorf("answer = %+v, want %+v", seen, want)
	}
	if token.KindOf(err) != token.KindTransient || token.RequestIDOf(err) != "req-2" {
		t.Errorf("refined: %v (%s)", err, token.KindOf(err))
	}
	err = Classify("store", svc, withBody(409, `<xml/>`))
	if seen.Code != "HeaderCode" || seen.Message != "" || token.KindOf(err) != token.KindConflict {
		t.Errorf("non-JSON body: answer %+v, %v", seen, err)
	}
	if _, ok := AnswerOf(errors.New("plain")); ok {
		t.Error("AnswerOf found an answer in a plain error")
	}
}

// FuzzClassify: any answer (status, header code, body) gets a kind and a message, never
// panics, and the shared rules hold: 429 throttled, 408 and 5xx transient, 400 invalid.
func FuzzClassify(f *testing.F) {
	f.Add(400, "InvalidInput", `{"error":{"code":"BadParameter","message":"bad"}}`)
	f.Add(409, "", `{"error":{"innererror":{"code":"ObjectIsBeingDeleted"}}}`)
	f.Add(429, "", "")
	f.Add(503, "ServerBusy", "<xml/>")
	f.Add(200, "", `{"error":null}`)
	f.Fuzz(func(t *testing.T, status int, code, body string) {
		status = 100 + (status%500+500)%500
		h := http.Header{"X-Ms-Request-Id": {"req-f"}}
		err := Classify("op", Service{Name: "svc", Role: "Role"}, &azcore.ResponseError{StatusCode: status, ErrorCode: code,
			RawResponse: &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body))}})
		var te *token.Error
		if !errors.As(err, &te) || te.Kind == "" || te.Message == "" {
			t.Fatalf("status %d: %#v", status, err)
		}
		want := map[int]token.Kind{429: token.KindThrottled, 408: token.KindTransient, 400: token.KindInvalid}[status]
		if status >= 500 {
			want = token.KindTransient
		}
		if want != "" && te.Kind != want {
			t.Fatalf("status %d: kind %s, want %s", status, te.Kind, want)
		}
	})
}
