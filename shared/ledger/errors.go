package ledger

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/token"
)

// classify turns a Table storage failure into a *token.Error the pipeline can act on: 429/5xx
// and network failures are worth retrying, 403 is a missing role assignment (not the
// caller's fault), 404 is not found, 409/412 a conflict.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var te *token.Error
	if errors.As(err, &te) {
		return err
	}
	e := &token.Error{Kind: token.KindTransient, Op: op, Err: err}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		e.Message = "table storage answered " + strconv.Itoa(re.StatusCode)
		if re.ErrorCode != "" {
			e.Message += " " + re.ErrorCode
		}
		if re.RawResponse != nil {
			e.RequestID = re.RawResponse.Header.Get("x-ms-request-id")
			if s, err := strconv.Atoi(re.RawResponse.Header.Get("Retry-After")); err == nil {
				e.RetryAfter = time.Duration(s) * time.Second
			}
		}
		switch {
		case re.StatusCode == http.StatusTooManyRequests:
			e.Kind = token.KindThrottled
		case re.StatusCode >= 500:
			e.Kind = token.KindTransient
		case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
			e.Kind = token.KindForbidden
			e.Message += " (the app's identity needs the Storage Table Data Contributor role on the account)"
		case re.StatusCode == http.StatusNotFound:
			e.Kind = token.KindNotFound
		case re.StatusCode == http.StatusConflict || re.StatusCode == http.StatusPreconditionFailed:
			e.Kind = token.KindConflict
		case re.StatusCode >= 400:
			e.Kind = token.KindInternal
		}
		return e
	}
	e.Message = err.Error()
	return e
}

// isNotFound reports whether err is Table storage's 404 (entity or table missing).
func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// isExists reports whether err is "entity/table already exists".
func isExists(err error) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	return re.StatusCode == http.StatusConflict &&
		(re.ErrorCode == string(aztables.EntityAlreadyExists) || re.ErrorCode == string(aztables.TableAlreadyExists) || re.ErrorCode == "")
}

// isLostRace reports whether err says another writer got there first: a 412 on a conditional
// update, or a 409 on an insert. For an entity group transaction the service answers 202 with
// the failed operation's status inside the multipart body, so the body is read too.
func isLostRace(err error) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	switch re.StatusCode {
	case http.StatusPreconditionFailed, http.StatusConflict:
		return true
	case http.StatusAccepted, http.StatusOK, http.StatusNoContent:
		if re.RawResponse == nil {
			return false
		}
		body, perr := runtime.Payload(re.RawResponse)
		if perr != nil {
			return false
		}
		s := string(body)
		return strings.Contains(s, "UpdateConditionNotSatisfied") || strings.Contains(s, "EntityAlreadyExists") ||
			strings.Contains(s, " 412 ") || strings.Contains(s, " 409 ")
	}
	return false
}
