package token

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies a failure so callers can decide what to do: retry, record, or tell the user.
type Kind string

// The kinds of failure. Transient and Throttled are worth retrying; every other kind is
// permanent and is recorded once.
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

func (e *Error) Error() string {
	s := e.Message
	if e.Op != "" {
		s = e.Op + ": " + s
	}
	if e.RequestID != "" {
		s += " (request-id " + e.RequestID + ")"
	}
	if e.Err != nil && e.Message == "" {
		s += e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind k with a formatted message.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of the first *Error in err's chain, KindInternal when there is none,
// and "" for a nil error.
func KindOf(err error) Kind {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// IsTransient reports whether err is worth retrying (throttling, 5xx, timeouts).
func IsTransient(err error) bool {
	k := KindOf(err)
	return k == KindTransient || k == KindThrottled
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
