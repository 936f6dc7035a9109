package token

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind classifies a failure so callers can decide what to do: retry, record, or tell the user.
type Kind string

// The kinds of failure. Transient, Throttled and Internal are worth another try (IsTransient);
// every other kind is permanent and is recorded once.
const (
	KindInvalid           Kind = "invalid"            // bad input (UPN, serial, seed, code format)
	KindNotFound          Kind = "not_found"          // user, device or seed does not exist
	KindConflict          Kind = "conflict"           // e.g. a different seed already stored under the serial
	KindGuest             Kind = "guest_user"         // tokens cannot be assigned to guests
	KindDisabled          Kind = "disabled_user"      // the account is disabled
	KindTooManyMethods    Kind = "too_many_methods"   // the user already holds 5 OATH methods
	KindAssignedElsewhere Kind = "assigned_elsewhere" // the token is assigned to another user
	KindBadCode           Kind = "bad_code"           // Entra rejected the verification code
	KindForbidden         Kind = "forbidden"          // the app lacks a permission (the message names it)
	KindThrottled         Kind = "throttled"          // 429: retry after RetryAfter
	KindTransient         Kind = "transient"          // 5xx, timeouts, connection failures
	KindInternal          Kind = "internal"           // a bug or an unclassified failure
)

// Error is a classified failure. Message is a sentence an admin can act on; it never holds a seed.
type Error struct {
	Kind       Kind
	Op         string        // what was being done, e.g. "assign 8659612000001 to ada@contoso.com"
	Message    string        // plain reason
	RequestID  string        // the upstream request id (Graph's request-id, Key Vault's x-ms-request-id)
	RetryAfter time.Duration // for KindThrottled, when known
	Err        error         // the underlying error, if any
}

// Error reads "op: message (request-id id)". Without a Message it says what the underlying
// error says, and without either it names the kind, so it never ends in a dangling colon.
func (e *Error) Error() string {
	what := e.Message
	if what == "" && e.Err != nil {
		what = e.Err.Error()
	}
	if what == "" {
		what = e.Kind.words()
	}
	s := what
	if e.Op != "" {
		s = e.Op + ": " + what
	}
	if e.RequestID != "" {
		s += " (request-id " + e.RequestID + ")"
	}
	return s
}

// words is the kind as words for a sentence ("not found"), or "failed" when there is none.
func (k Kind) words() string {
	if k == "" {
		return "failed"
	}
	return strings.ReplaceAll(string(k), "_", " ")
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind k with a formatted message.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of the first *Error in err's chain, and "" for a nil error. An error
// nothing classified (no *Error, or one of KindInternal) is KindInternal, except when a
// cancelled or expired context cut the call short: that says nothing about the request and is
// KindTransient.
func KindOf(err error) Kind {
	if err == nil {
		return ""
	}
	k := KindInternal
	var e *Error
	if errors.As(err, &e) {
		k = e.Kind
	}
	if k == KindInternal && cutShort(err) {
		return KindTransient
	}
	return k
}

// cutShort reports whether a cancelled or expired context is in err's chain.
func cutShort(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// IsTransient is the one rule for whether a failure is worth another try (a retried call, a
// redelivered message, a request answered "retry"), rather than a permanent outcome to record:
// throttling and transient upstream failures; a call cut short by a cancelled or expired
// context, whatever its kind; and a failure nothing classified (KindInternal: a bug or an
// answer no adapter knows), since nothing says it is permanent. Every other kind is permanent.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	switch KindOf(err) {
	case KindTransient, KindThrottled, KindInternal:
		return true
	}
	return cutShort(err)
}

// RetryAfterOf returns the RetryAfter of the first *Error in err's chain, or 0.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// RequestIDOf returns the upstream request id of the first *Error in err's chain that has one.
func RequestIDOf(err error) string {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return ""
		}
		if e.RequestID != "" {
			return e.RequestID
		}
		err = e.Err
	}
	return ""
}
