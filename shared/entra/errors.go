package entra

import (
	"context"
	"errors"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/oathpipe/oathpipe/shared/entra/internal/graphwire"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

// inspect pulls status, Graph's error code and message, request-id and Retry-After out of an
// adapter error. ok is false for errors that never reached Graph (network, context).
func inspect(err error) (f graphwire.Failure, ok bool) {
	var od *odataerrors.ODataError
	var api *abs.ApiError
	var headers *abs.ResponseHeaders
	switch {
	case errors.As(err, &od):
		f.Status = od.ResponseStatusCode
		headers = od.GetResponseHeaders()
		if me := od.GetErrorEscaped(); me != nil {
			if p := me.GetCode(); p != nil {
				f.Code = *p
			}
			if p := me.GetMessage(); p != nil {
				f.Message = *p
			}
			if ie := me.GetInnerError(); ie != nil && ie.GetRequestId() != nil {
				f.RequestID = *ie.GetRequestId()
			}
		}
	case errors.As(err, &api):
		f.Status = api.ResponseStatusCode
		headers = api.GetResponseHeaders()
	default:
		return f, false
	}
	if headers != nil {
		if f.RequestID == "" {
			if v := headers.Get("request-id"); len(v) > 0 {
				f.RequestID = v[0]
			}
		}
		if v := headers.Get("Retry-After"); len(v) > 0 {
			f.RetryAfter = graphwire.ParseRetryAfter(v[0])
		}
	}
	return f, f.Status != 0
}

// classify turns a failed Graph call into a *token.Error an admin can act on, and logs it with
// Graph's request-id. op says what was being done ("assign 123 to ada@contoso.com").
func (c *Client) classify(ctx context.Context, a graphwire.Area, op string, err error) error {
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
		c.log.WarnContext(ctx, "graph call failed", logctx.Op, op, logctx.Kind, e.Kind, logctx.Error, err)
		return e
	}
	e := &token.Error{Op: op, RequestID: f.RequestID, Err: err}
	e.Kind, e.Message = graphwire.Classify(a, f)
	if e.Kind == token.KindThrottled {
		e.RetryAfter = f.RetryAfter
		if e.RetryAfter <= 0 {
			e.RetryAfter = 5 * time.Second
		}
	}
	c.log.WarnContext(ctx, "graph call failed", logctx.Op, op, logctx.Kind, e.Kind, logctx.Status, f.Status,
		"code", f.Code, "graphMessage", f.Message, logctx.RequestID, f.RequestID)
	return e
}
