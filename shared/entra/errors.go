package entra

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/oathpipe/oathpipe/shared/token"
)

// area says which Graph permission an operation needs, so a 403 can name it.
type area int

const (
	areaUsers     area = iota // reading users
	areaInventory             // the tenant's hardware OATH token inventory
	areaMethods               // a user's authentication methods
	areaActivate              // activation (a 400 means a bad code)
)

// Permission names the application permission an area of Graph needs.
func (a area) permission() string {
	switch a {
	case areaUsers:
		return "User.Read.All"
	case areaInventory:
		return "Policy.ReadWrite.AuthenticationMethod"
	default:
		return "UserAuthenticationMethod.ReadWrite.All (or the narrower UserAuthMethod-HardwareOATH.ReadWrite.All)"
	}
}

// graphFailure is what a failed Graph call told us.
type graphFailure struct {
	status     int
	code       string
	message    string
	requestID  string
	retryAfter time.Duration
}

// inspect pulls status, Graph's error code and message, request-id and Retry-After out of an
// adapter error. ok is false for errors that never reached Graph (network, context).
func inspect(err error) (f graphFailure, ok bool) {
	var od *odataerrors.ODataError
	var api *abs.ApiError
	var headers *abs.ResponseHeaders
	switch {
	case errors.As(err, &od):
		f.status = od.ResponseStatusCode
		headers = od.GetResponseHeaders()
		if me := od.GetErrorEscaped(); me != nil {
			if p := me.GetCode(); p != nil {
				f.code = *p
			}
			if p := me.GetMessage(); p != nil {
				f.message = *p
			}
			if ie := me.GetInnerError(); ie != nil && ie.GetRequestId() != nil {
				f.requestID = *ie.GetRequestId()
			}
		}
	case errors.As(err, &api):
		f.status = api.ResponseStatusCode
		headers = api.GetResponseHeaders()
	default:
		return f, false
	}
	if headers != nil {
		if f.requestID == "" {
			if v := headers.Get("request-id"); len(v) > 0 {
				f.requestID = v[0]
			}
		}
		if v := headers.Get("Retry-After"); len(v) > 0 {
			f.retryAfter = parseRetryAfter(v[0])
		}
	}
	return f, f.status != 0
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 && n < 86400 {
		return time.Duration(n * float64(time.Second))
	}
	if t, err := time.Parse(time.RFC1123, v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// classify turns a failed Graph call into a *token.Error an admin can act on, and logs it with
// Graph's request-id. op says what was being done ("assign 123 to ada@contoso.com").
func (c *Client) classify(ctx context.Context, a area, op string, err error) error {
	if err == nil {
		return nil
	}
	var te *token.Error
	if errors.As(err, &te) {
		return err
	}
	f, ok := inspect(err)
	if !ok {
		msg := "Microsoft Graph could not be reached: " + err.Error()
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			msg = "the call to Microsoft Graph was cut short: " + err.Error()
		}
		e := &token.Error{Kind: token.KindTransient, Op: op, Message: msg, Err: err}
		c.log.WarnContext(ctx, "graph call failed", "op", op, "kind", e.Kind, "err", err)
		return e
	}
	e := &token.Error{Op: op, RequestID: f.requestID, Err: err}
	e.Kind, e.Message = kindOf(a, f)
	if e.Kind == token.KindThrottled {
		e.RetryAfter = f.retryAfter
		if e.RetryAfter <= 0 {
			e.RetryAfter = 5 * time.Second
		}
	}
	c.log.WarnContext(ctx, "graph call failed", "op", op, "kind", e.Kind, "status", f.status,
		"code", f.code, "graph_message", f.message, "request_id", f.requestID)
	return e
}

// kindOf decides the kind of a Graph failure and words it. Graph documents no error codes for
// the hardware OATH endpoints, so 400s are told apart by their message (see docs/graph.md).
func kindOf(a area, f graphFailure) (token.Kind, string) {
	msg := strings.ToLower(f.message)
	graphSays := ""
	if f.message != "" {
		graphSays = " Graph says: " + strings.TrimSuffix(f.message, ".") + "."
	}
	switch {
	case f.status == 401:
		return token.KindForbidden, "Microsoft Graph refused the app's access token; check the managed identity (OATHPIPE_MANAGED_IDENTITY_CLIENT_ID) and that OATHPIPE_GRAPH_URL is the Graph root of the tenant's cloud." + graphSays
	case f.status == 403:
		return token.KindForbidden, "the app is missing the Microsoft Graph permission " + a.permission() +
			"; grant it to the managed identity (admin consent) and retry." + graphSays
	case f.status == 429:
		return token.KindThrottled, "Microsoft Graph is throttling the app; the call will be retried later."
	case f.status == 408 || f.status >= 500:
		return token.KindTransient, fmt.Sprintf("Microsoft Graph answered %d; the call will be retried.%s", f.status, graphSays)
	case f.status == 404:
		switch a {
		case areaUsers:
			return token.KindNotFound, "no such user in Entra ID." + graphSays
		case areaInventory:
			return token.KindNotFound, "no such hardware token in the Entra ID inventory." + graphSays
		default:
			return token.KindNotFound, "the user or the user's hardware token method does not exist." + graphSays
		}
	case strings.Contains(msg, "guest"):
		return token.KindGuest, "hardware tokens cannot be assigned to guest users; assign the token to a member account." + graphSays
	case strings.Contains(msg, "maximum") || strings.Contains(msg, "too many") || (strings.Contains(msg, "limit") && strings.Contains(msg, "method")):
		return token.KindTooManyMethods, "the user already holds 5 OATH methods (hardware tokens and authenticator apps together); remove one before assigning another." + graphSays
	case strings.Contains(msg, "another user") || strings.Contains(msg, "assigned to a different"):
		return token.KindAssignedElsewhere, "the token is assigned to another user; unassign it there first (or use the reassignment API)." + graphSays
	case a == areaActivate && f.status == 400:
		return token.KindBadCode, "Entra ID rejected the verification code (wrong or expired); activate again with a fresh code, or check the token's clock." + graphSays
	case f.status == 409:
		return token.KindConflict, "it already exists." + graphSays
	case strings.Contains(msg, "unassign it") || strings.Contains(msg, "is assigned"):
		return token.KindConflict, "the token is assigned to a user; unassign it first." + graphSays
	case f.status == 400:
		return token.KindInvalid, "Microsoft Graph refused the request as invalid." + graphSays
	}
	return token.KindInternal, fmt.Sprintf("Microsoft Graph answered %d (%s).%s", f.status, f.code, graphSays)
}
