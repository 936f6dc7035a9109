package token

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestSeedNeverPrintsSecret(t *testing.T) {
	s := Seed{Secret: []byte("12345678901234567890"), Hash: SHA1, Digits: 6, Period: 30}
	forms := []string{
		string(s.Secret),
		s.Base32(),
		hex.EncodeToString(s.Secret),
		fmt.Sprint(s.Secret),
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("seed", "seed", s, "ptr", &s)
	outputs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %x %q", s, s, s, s, s, s),
		fmt.Sprintf("%v", &s), fmt.Sprintf("%+v", struct{ S Seed }{s}),
		fmt.Errorf("wrap %v", s).Error(), logs.String(),
	}
	for _, out := range outputs {
		for _, f := range forms {
			if strings.Contains(out, f) {
				t.Fatalf("output %q contains the secret in form %q", out, f)
			}
		}
	}
	if !strings.Contains(outputs[0], s.Fingerprint()) {
		t.Errorf("String() = %q, want it to carry the fingerprint", outputs[0])
	}
}

func TestBase32AndFingerprint(t *testing.T) {
	s := Seed{Secret: []byte("12345678901234567890")}
	if got, want := s.Base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; got != want {
		t.Errorf("Base32 = %s, want %s", got, want)
	}
	if got := s.Fingerprint(); len(got) != 16 || strings.Trim(got, "0123456789abcdef") != "" {
		t.Errorf("Fingerprint = %q, want 16 lower-case hex characters", got)
	}
	if s.Bits() != 160 {
		t.Errorf("Bits = %d", s.Bits())
	}
}

func TestErrorKinds(t *testing.T) {
	base := &Error{Kind: KindThrottled, Op: "create device 1", Message: "Graph is throttling", RequestID: "r-1", RetryAfter: 3 * time.Second}
	wrapped := fmt.Errorf("provision: %w", base)
	tests := []struct {
		err       error
		kind      Kind
		transient bool
		retry     time.Duration
		reqID     string
	}{
		{nil, "", false, 0, ""},
		// Nothing classified it: not known to be permanent, so worth another try.
		{errors.New("plain"), KindInternal, true, 0, ""},
		{wrapped, KindThrottled, true, 3 * time.Second, "r-1"},
		{&Error{Kind: KindTransient, Err: base}, KindTransient, true, 0, "r-1"},
		{Errorf(KindGuest, "%s is a guest", "x"), KindGuest, false, 0, ""},
	}
	for i, tt := range tests {
		if got := KindOf(tt.err); got != tt.kind {
			t.Errorf("%d: KindOf = %q, want %q", i, got, tt.kind)
		}
		if got := IsTransient(tt.err); got != tt.transient {
			t.Errorf("%d: IsTransient = %v", i, got)
		}
		if got := RetryAfterOf(tt.err); got != tt.retry {
			t.Errorf("%d: RetryAfterOf = %v", i, got)
		}
		if got := RequestIDOf(tt.err); got != tt.reqID {
			t.Errorf("%d: RequestIDOf = %q, want %q", i, got, tt.reqID)
		}
	}
	if got, want := base.Error(), "create device 1: Graph is throttling (request-id r-1)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestIsTransient is the one retry rule (issue 16): what used to be decided by
// token.IsTransient, the pipeline's retryable and the HTTP problem mapping's deadline case.
func TestIsTransient(t *testing.T) {
	deadline := fmt.Errorf("read token: %w", context.DeadlineExceeded)
	tests := []struct {
		name      string
		err       error
		kind      Kind
		transient bool
	}{
		{"nil", nil, "", false},
		{"throttled", &Error{Kind: KindThrottled}, KindThrottled, true},
		{"transient", fmt.Errorf("x: %w", &Error{Kind: KindTransient}), KindTransient, true},
		{"internal", &Error{Kind: KindInternal, Message: "Graph's answer could not be read."}, KindInternal, true},
		{"unclassified", errors.New("boom"), KindInternal, true},
		{"deadline, unclassified", deadline, KindTransient, true},
		{"cancelled, unclassified", fmt.Errorf("x: %w", context.Canceled), KindTransient, true},
		{"deadline inside an internal error", &Error{Kind: KindInternal, Err: deadline}, KindTransient, true},
		{"deadline inside a classified error", &Error{Kind: KindNotFound, Err: deadline}, KindNotFound, true},
		{"not found", &Error{Kind: KindNotFound}, KindNotFound, false},
		{"conflict", fmt.Errorf("put: %w", &Error{Kind: KindConflict}), KindConflict, false},
		{"invalid", &Error{Kind: KindInvalid}, KindInvalid, false},
		{"forbidden", &Error{Kind: KindForbidden}, KindForbidden, false},
		{"guest", &Error{Kind: KindGuest}, KindGuest, false},
		{"disabled", &Error{Kind: KindDisabled}, KindDisabled, false},
		{"too many methods", &Error{Kind: KindTooManyMethods}, KindTooManyMethods, false},
		{"assigned elsewhere", &Error{Kind: KindAssignedElsewhere}, KindAssignedElsewhere, false},
		{"bad code", &Error{Kind: KindBadCode}, KindBadCode, false},
		{"first kind wins", fmt.Errorf("a: %w", &Error{Kind: KindGuest, Err: &Error{Kind: KindTransient}}), KindGuest, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KindOf(tt.err); got != tt.kind {
				t.Errorf("KindOf = %q, want %q", got, tt.kind)
			}
			if got := IsTransient(tt.err); got != tt.transient {
				t.Errorf("IsTransient = %v, want %v", got, tt.transient)
			}
		})
	}
}

// TestErrorReadsWell: Error() is one sentence whatever is left empty.
func TestErrorReadsWell(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Kind: KindThrottled, Op: "create device 1", Message: "Graph is throttling", RequestID: "r-1"}, "create device 1: Graph is throttling (request-id r-1)"},
		{&Error{Kind: KindInternal, Op: "create device", Err: errors.New("boom")}, "create device: boom"},
		{&Error{Kind: KindInternal, Op: "create device", Err: errors.New("boom"), RequestID: "r-2"}, "create device: boom (request-id r-2)"},
		{&Error{Kind: KindNotFound, Op: "find token 7", RequestID: "r-3"}, "find token 7: not found (request-id r-3)"},
		{&Error{Kind: KindAssignedElsewhere, Op: "assign 7"}, "assign 7: assigned elsewhere"},
		{&Error{Kind: KindConflict}, "conflict"},
		{&Error{}, "failed"},
		{&Error{Kind: KindGuest, Message: "pat is a guest", Err: errors.New("graph said so")}, "pat is a guest"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", *tt.err, got, tt.want)
		}
	}
}
