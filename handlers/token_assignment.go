package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// TokenAssignmentRoute is the TokenAssignment function's route (under /api).
const TokenAssignmentRoute = "tokens/{serial}/assignment"

// tokenAssignmentMethods are the methods function.json allows on the route.
var tokenAssignmentMethods = []string{http.MethodGet, http.MethodPut, http.MethodDelete}

// AssignBody is the PUT body of tokens/{serial}/assignment.
type AssignBody struct {
	UserPrincipalName string  `json:"userPrincipalName"`
	VerificationCode  *string `json:"verificationCode,omitempty"` // 6 digits read from the device; optional
	Activate          *bool   `json:"activate,omitempty"`         // default true
}

// assignmentAPI answers GET/PUT/DELETE /api/tokens/{serial}/assignment (function TokenAssignment).
func (s *Server) assignmentAPI(ctx context.Context, c *apiCall) HTTPResponse {
	serial := strings.TrimSpace(c.req.param("serial", "tokens"))
	if !validSerial(serial) {
		return problemResponse(newProblem(codeInvalidSerial, "The serial number must be 1 to 128 bytes of printable UTF-8 (URL-encoded in the path)."))
	}
	c.log = c.log.With("serial", serial)
	switch c.method {
	case http.MethodGet:
		a, err := s.p.TokenState(ctx, serial)
		if err != nil {
			return c.fail(err)
		}
		return jsonResponse(http.StatusOK, a)
	case http.MethodDelete:
		a, err := s.p.UnassignToken(ctx, serial, c.caller)
		if err != nil {
			return c.fail(err)
		}
		c.log.Info("token unassigned", "previousUser", a.PreviousUserPrincipalName, "changed", a.Changed)
		return jsonResponse(http.StatusOK, a)
	default: // PUT
		r, p := decodeAssignBody(c.req.jsonBody())
		if p != nil {
			return problemResponse(p)
		}
		r.Serial, r.Caller = serial, c.caller
		a, err := s.p.AssignToken(ctx, r)
		if err != nil {
			return c.failWithState(err)
		}
		c.log.Info("token assigned", "user", a.UserPrincipalName, "previousUser", a.PreviousUserPrincipalName,
			"status", a.Status, "changed", a.Changed, "activatedWith", a.ActivatedWith)
		return jsonResponse(http.StatusOK, a)
	}
}

// decodeAssignBody strictly decodes and validates a PUT body.
func decodeAssignBody(body []byte) (pipeline.AssignRequest, *Problem) {
	var r pipeline.AssignRequest
	if len(body) == 0 {
		return r, newProblem(codeMalformedBody, `PUT needs a JSON body: {"userPrincipalName": "..."}.`)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var b AssignBody
	if err := dec.Decode(&b); err != nil {
		if f, ok := unknownField(err); ok {
			return r, newProblem(codeUnknownField, "Unknown field "+f+"; allowed: userPrincipalName, verificationCode, activate.")
		}
		return r, newProblem(codeMalformedBody, "The body must be a JSON object: "+jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return r, newProblem(codeMalformedBody, "The body must hold exactly one JSON object.")
	}
	upn := strings.TrimSpace(b.UserPrincipalName)
	if !validUser(upn) {
		return r, newProblem(codeInvalidUPN, "userPrincipalName must be a user principal name (name@domain) or a user object id.")
	}
	r.UserPrincipalName = upn
	r.Activate = b.Activate == nil || *b.Activate
	if b.VerificationCode != nil {
		code := strings.TrimSpace(*b.VerificationCode)
		if !codePattern.MatchString(code) {
			return r, newProblem(codeInvalidCode, "verificationCode must be the 6 digits shown on the token, as a string.")
		}
		if !r.Activate {
			return r, newProblem(codeInvalidRequest, "verificationCode activates the token; it cannot be combined with \"activate\": false.")
		}
		r.VerificationCode = code
	}
	return r, nil
}

// unknownField recognises encoding/json's DisallowUnknownFields error.
func unknownField(err error) (string, bool) {
	const prefix = "json: unknown field "
	if s := err.Error(); strings.HasPrefix(s, prefix) {
		return strings.TrimPrefix(s, prefix), true
	}
	return "", false
}

// jsonProblem describes a JSON decoding error without echoing the body.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return "syntax error at byte " + strconv.FormatInt(syn.Offset, 10) + "."
	case errors.As(err, &typ):
		return "field " + typ.Field + " must be a " + typ.Type.String() + "."
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the body ends too early."
	}
	return "not JSON."
}

// failWithState answers a failed change like fail, adding who holds the token now and its
// status (heldBy, tokenStatus) when the pipeline read them back (pipeline.StateError).
func (c *apiCall) failWithState(err error) HTTPResponse {
	var se *pipeline.StateError
	if !errors.As(err, &se) {
		return c.fail(err)
	}
	p := problemFor(err)
	holder := se.HeldBy
	p.HeldBy, p.TokenStatus = &holder, se.TokenStatus
	c.log.Info("request failed", "code", p.Code, "status", p.Status, "kind", string(token.KindOf(err)),
		"requestId", p.RequestID, "heldBy", holder, "tokenStatus", se.TokenStatus, "err", err)
	return problemResponse(p)
}
