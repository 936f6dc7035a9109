package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/oathpipe/oathpipe/shared/token"
)

// ProblemTypeBase prefixes every problem's type: the anchor in docs/api.md that explains the code.
const ProblemTypeBase = "https://github.com/oathpipe/oathpipe/blob/main/docs/api.md#"

// Problem is an RFC 9457 problem detail, the body of every HTTP API error. Code is stable and
// is what callers should branch on; Detail is a sentence for people and never holds a seed.
type Problem struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Status     int    `json:"status"`
	Detail     string `json:"detail,omitempty"`
	Instance   string `json:"instance,omitempty"`
	Code       string `json:"code"`
	RequestID  string `json:"requestId,omitempty"`  // upstream (Graph / Key Vault) request id, for support cases
	RetryAfter int    `json:"retryAfter,omitempty"` // seconds, mirrors the Retry-After header
	// HeldBy and TokenStatus say, on a failed PUT or DELETE of an assignment, who holds the
	// token now ("" = nobody, in the inventory) and its Entra status, read back after the failure.
	HeldBy      *string `json:"heldBy,omitempty"`
	TokenStatus string  `json:"tokenStatus,omitempty"`
}

// problemCode is one stable error code of the HTTP API with its status and title.
type problemCode struct {
	Code   string
	Status int
	Title  string
}

// Problem codes. docs/api.md and docs/openapi.yaml list the same set; a test keeps them in step.
var (
	codeMalformedBody        = problemCode{"malformed-body", http.StatusBadRequest, "The request body is not valid JSON of the expected shape"}
	codeUnknownField         = problemCode{"unknown-field", http.StatusBadRequest, "The request body has a field this API does not know"}
	codeInvalidUPN           = problemCode{"invalid-upn", http.StatusBadRequest, "userPrincipalName is missing or malformed"}
	codeInvalidSerial        = problemCode{"invalid-serial", http.StatusBadRequest, "The serial number in the path is malformed"}
	codeInvalidCode          = problemCode{"invalid-verification-code", http.StatusBadRequest, "verificationCode must be 6 digits"}
	codeInvalidName          = problemCode{"invalid-import-name", http.StatusBadRequest, "The import (file) name in the path is malformed"}
	codeInvalidRequest       = problemCode{"invalid-request", http.StatusBadRequest, "The request is not valid"}
	codeNoPrincipal          = problemCode{"caller-unauthenticated", http.StatusForbidden, "The caller carries no App Service authentication principal"}
	codeRoleMissing          = problemCode{"role-missing", http.StatusForbidden, "The caller lacks the app role this API requires"}
	codeNotFound             = problemCode{"not-found", http.StatusNotFound, "The token, user or import does not exist"}
	codeMethodNotAllowed     = problemCode{"method-not-allowed", http.StatusMethodNotAllowed, "The method is not allowed on this route"}
	codeBodyTooLarge         = problemCode{"body-too-large", http.StatusRequestEntityTooLarge, "The request body is too large"}
	codeLengthRequired       = problemCode{"length-required", http.StatusLengthRequired, "The request body must be sent with a Content-Length"}
	codeUnsupportedMediaType = problemCode{"unsupported-media-type", http.StatusUnsupportedMediaType, "The request body must be application/json"}
	codeGuest                = problemCode{"guest-user", http.StatusConflict, "Tokens cannot be assigned to guest users"}
	codeDisabled             = problemCode{"disabled-user", http.StatusConflict, "The user account is disabled"}
	codeTooManyMethods       = problemCode{"too-many-methods", http.StatusConflict, "The user already holds five OATH methods"}
	codeBadCode              = problemCode{"code-rejected", http.StatusConflict, "Entra ID rejected the verification code"}
	codeAssignedElsewhere    = problemCode{"assigned-elsewhere", http.StatusConflict, "The token is assigned to another user"}
	codeConflict             = problemCode{"conflict", http.StatusConflict, "The request conflicts with the token's current state"}
	codeThrottled            = problemCode{"throttled", http.StatusTooManyRequests, "Microsoft Graph is throttling; retry after the given time"}
	codeUpstreamForbidden    = problemCode{"upstream-forbidden", http.StatusBadGateway, "oathpipe lacks a permission in Entra ID or Key Vault"}
	codeUpstreamUnavailable  = problemCode{"upstream-unavailable", http.StatusServiceUnavailable, "Microsoft Graph or Key Vault failed or did not answer in time"}
	codeInternal             = problemCode{"internal", http.StatusInternalServerError, "oathpipe failed unexpectedly"}
)

// problemCodes lists every code the HTTP API answers with.
var problemCodes = []problemCode{
	codeMalformedBody, codeUnknownField, codeInvalidUPN, codeInvalidSerial, codeInvalidCode,
	codeInvalidName, codeInvalidRequest, codeNoPrincipal, codeRoleMissing, codeNotFound,
	codeMethodNotAllowed, codeBodyTooLarge, codeLengthRequired, codeUnsupportedMediaType, codeGuest, codeDisabled, codeTooManyMethods,
	codeBadCode, codeAssignedElsewhere, codeConflict, codeThrottled, codeUpstreamForbidden,
	codeUpstreamUnavailable, codeInternal,
}

// newProblem builds the problem for c with a detail sentence.
func newProblem(c problemCode, detail string) *Problem {
	return &Problem{Type: ProblemTypeBase + c.Code, Title: c.Title, Status: c.Status, Detail: detail, Code: c.Code}
}

// kindCodes maps the pipeline's error kinds to API problem codes.
var kindCodes = map[token.Kind]problemCode{
	token.KindInvalid:           codeInvalidRequest,
	token.KindNotFound:          codeNotFound,
	token.KindConflict:          codeConflict,
	token.KindGuest:             codeGuest,
	token.KindDisabled:          codeDisabled,
	token.KindTooManyMethods:    codeTooManyMethods,
	token.KindAssignedElsewhere: codeAssignedElsewhere,
	token.KindBadCode:           codeBadCode,
	token.KindForbidden:         codeUpstreamForbidden,
	token.KindThrottled:         codeThrottled,
	token.KindTransient:         codeUpstreamUnavailable,
	token.KindInternal:          codeInternal,
}

// problemFor turns a pipeline error into the caller's problem by its kind (token.KindOf, which
// also counts an unclassified call cut short by its context as transient). Internal failures
// get a generic detail (the log has the rest); every other kind carries the error's own
// message, which the pipeline keeps free of seeds.
func problemFor(err error) *Problem {
	kind := token.KindOf(err)
	c, ok := kindCodes[kind]
	if !ok {
		c = codeInternal
	}
	detail := "See the function's log for this invocation."
	var te *token.Error
	if c != codeInternal && errors.As(err, &te) {
		detail = te.Message
		if te.Op != "" {
			detail = te.Op + ": " + te.Message
		}
	} else if c == codeUpstreamUnavailable && errors.Is(err, context.DeadlineExceeded) {
		detail = "The request did not finish within its time budget (OATHPIPE_HTTP_BUDGET)."
	}
	p := newProblem(c, detail)
	p.RequestID = token.RequestIDOf(err)
	if kind == token.KindThrottled {
		p.RetryAfter = retryAfterSeconds(token.RetryAfterOf(err))
	}
	return p
}

// retryAfterSeconds rounds d up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// problemResponse is the http output binding's value for p.
func problemResponse(p *Problem) HTTPResponse {
	body, _ := json.Marshal(p)
	h := map[string]string{"Content-Type": "application/problem+json", "Cache-Control": "no-store"}
	if p.RetryAfter > 0 {
		h["Retry-After"] = strconv.Itoa(p.RetryAfter)
	}
	return HTTPResponse{StatusCode: p.Status, Body: string(body), Headers: h}
}

// jsonResponse is the http output binding's value for a successful answer.
func jsonResponse(status int, v any) HTTPResponse {
	body, err := json.Marshal(v)
	if err != nil {
		return problemResponse(newProblem(codeInternal, "The answer could not be encoded."))
	}
	return HTTPResponse{StatusCode: status, Body: string(body), Headers: map[string]string{
		"Content-Type": "application/json", "Cache-Control": "no-store",
	}}
}
