package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/oathpipe/oathpipe/shared/azerr"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Key Vault's inner error codes that matter here.
const (
	codeDeletedButRecoverable = "ObjectIsDeletedButRecoverable"
	codeBeingDeleted          = "ObjectIsBeingDeleted"
	codeBeingRecovered        = "ObjectIsBeingRecovered"
	codeSecretDisabled        = "SecretDisabled"
)

// kvError is what a Key Vault error answer says.
type kvError struct {
	status    int
	code      string // error.code, e.g. SecretNotFound
	inner     string // error.innererror.code, e.g. ObjectIsDeletedButRecoverable
	message   string
	requestID string
	retry     time.Duration
}

// responseError extracts Key Vault's answer from err, if err is one.
func responseError(err error) (kvError, bool) {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return kvError{}, false
	}
	e := kvError{status: re.StatusCode, code: re.ErrorCode}
	if resp := re.RawResponse; resp != nil {
		e.requestID = resp.Header.Get("x-ms-request-id")
		e.retry = azerr.RetryAfter(resp.Header)
		if body, err := runtime.Payload(resp); err == nil {
			var b struct {
				Error struct {
					Code       string `json:"code"`
					Message    string `json:"message"`
					InnerError struct {
						Code string `json:"code"`
					} `json:"innererror"`
				} `json:"error"`
			}
			if json.Unmarshal(body, &b) == nil {
				if b.Error.Code != "" {
					e.code = b.Error.Code
				}
				e.inner = b.Error.InnerError.Code
				e.message = b.Error.Message
			}
		}
	}
	return e, true
}

func (e kvError) is(code string) bool { return e.code == code || e.inner == code }

// classify turns a failed Key Vault call into a *token.Error. op says what was being done
// ("store the seed of Token2 serial 123"). Messages come from Key Vault's error answers, which
// never hold a secret value.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var te *token.Error
	if errors.As(err, &te) {
		return err
	}
	out := &token.Error{Op: op, Err: err}
	if e, ok := responseError(err); ok {
		out.RequestID = e.requestID
		msg := e.message
		if msg == "" {
			msg = fmt.Sprintf("Key Vault answered %d %s", e.status, e.code)
		}
		out.Message = msg
		switch {
		case e.status == http.StatusNotFound:
			out.Kind = token.KindNotFound
		case e.status == http.StatusTooManyRequests:
			out.Kind, out.RetryAfter = token.KindThrottled, e.retry
			out.Message = "Key Vault is throttling requests: " + msg
		case e.status == http.StatusConflict && (e.is(codeBeingDeleted) || e.is(codeBeingRecovered)):
			out.Kind, out.RetryAfter = token.KindTransient, 2*time.Second
		case e.status == http.StatusConflict:
			out.Kind = token.KindConflict
		case e.status == http.StatusForbidden && e.is(codeSecretDisabled):
			out.Kind = token.KindConflict
			out.Message = "the secret is disabled in Key Vault (an operator disabled it)"
		case e.status == http.StatusUnauthorized || e.status == http.StatusForbidden:
			out.Kind = token.KindForbidden
			out.Message = "the app's identity may not use Key Vault secrets (needs the Key Vault Secrets Officer role on the vault): " + msg
		case e.status == http.StatusRequestTimeout || e.status >= 500:
			out.Kind, out.RetryAfter = token.KindTransient, e.retry
		case e.status == http.StatusBadRequest:
			out.Kind = token.KindInvalid
		default:
			out.Kind = token.KindInternal
		}
		return out
	}
	return azerr.Classify(op, keyVault, err)
}

var keyVault = azerr.Service{Name: "Key Vault", Role: "Key Vault Secrets Officer"}
