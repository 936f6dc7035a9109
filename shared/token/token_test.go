package token

import (
	"bytes"
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
		{errors.New("plain"), KindInternal, false, 0, ""},
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
