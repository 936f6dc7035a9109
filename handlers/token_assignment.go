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

	"github.com/oathpipe/oathpipe/shared/logctx"
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
	serial := c.req.routeValue("serial", "tokens", false)
	if !validSerial(serial) {
		return problemResponse(newProblem(codeInvalidSerial, "The serial number in the request path must be 1 to 128 bytes of printable UTF-8, "+
			"with no white space at either end (URL-encode it, \"/\" as %2F)."))
	}
	c.log = c.log.With(logctx.Serial, serial)
	switch c.method {
	case http.MethodGet:
		a, err := s.p.TokenState(ctx, serial)
		if err != nil {
			return c.fail(ctx, err)
		}
		return jsonResponse(http.StatusOK, a)
	case http.MethodDelete:
		a, err := s.p.UnassignToken(ctx, serial, c.caller)
		if err != nil {
			return c.fail(ctx, err)
		}
		c.log.InfoContext(ctx, "token unassigned", "previousUser", a.PreviousUserPrincipalName, "changed", a.Changed)
		return jsonResponse(http.StatusOK, a)
	default: // PUT
		body, p := c.req.requestBody()
		if p != nil {
			return problemResponse(p)
		}
		r, p := decodeAssignBody(body)
		if p != nil {
			return problemResponse(p)
		}
		r.Serial, r.Caller = serial, c.caller
		a, err := s.p.AssignToken(ctx, r)
		if err != nil {
			return c.failWithState(ctx, err)
		}
		c.log.InfoContext(ctx, "token assigned", logctx.User, a.UserPrincipalName, "previousUser", a.PreviousUserPrincipalName,
			logctx.Status, a.Status, "changed", a.Changed, "activatedWith", a.ActivatedWith)
		return jsonResponse(http.StatusOK, a)
	}
}

// assignFields are the PUT body's fields, spelled exactly so.
var assignFields = []string{"userPrincipalName", "verificationCode", "activate"}

// decodeAssignBody strictly decodes and validates a PUT body: one JSON object whose keys are
// exactly the documented names (case-sensitive, each at most once) with values of the documented
// JSON types. A proxy and oathpipe can never read one body two ways: a repeated key, a key in
// another case or a null is refused, never resolved by a rule of encoding/json.
func decodeAssignBody(body []byte) (pipeline.AssignRequest, *Problem) {
	var r pipeline.AssignRequest
	const shape = `{"userPrincipalName": "...", "verificationCode": "123456", "activate": true}`
	if len(bytes.TrimSpace(body)) == 0 {
		return r, newProblem(codeMalformedBody, "PUT needs a JSON body: "+shape+".")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	first, err := dec.Token()
	if err != nil {
		return r, newProblem(codeMalformedBody, "The request body must be a JSON object: "+jsonProblem(err))
	}
	if d, ok := first.(json.Delim); !ok || d != '{' {
		return r, newProblem(codeMalformedBody, "The request body must be a JSON object like "+shape+", not "+jsonKind(first)+".")
	}
	var b AssignBody
	seen := map[string]bool{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return r, newProblem(codeMalformedBody, "The request body must be a JSON object: "+jsonProblem(err))
		}
		key, _ := kt.(string)
		if seen[key] {
			return r, newProblem(codeMalformedBody, "The request body names "+strconv.Quote(key)+" twice; send each field once.")
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return r, newProblem(codeMalformedBody, "The request body must be a JSON object: "+jsonProblem(err))
		}
		switch key {
		case "userPrincipalName":
			if !json.Valid(raw) || raw[0] != '"' || json.Unmarshal(raw, &b.UserPrincipalName) != nil {
				return r, typeProblem(key, "a string: the user's principal name (name@domain) or object id", raw)
			}
		case "verificationCode":
			var code string
			if raw[0] != '"' || json.Unmarshal(raw, &code) != nil {
				return r, typeProblem(key, `a string of the 6 digits shown on the token, such as "012345"`, raw)
			}
			b.VerificationCode = &code
		case "activate":
			var on bool
			if (string(raw) != "true" && string(raw) != "false") || json.Unmarshal(raw, &on) != nil {
				return r, typeProblem(key, "true or false (a JSON boolean, without quotes)", raw)
			}
			b.Activate = &on
		default:
			for _, f := range assignFields {
				if strings.EqualFold(f, key) {
					return r, newProblem(codeMalformedBody, "Field names are case-sensitive: write "+f+", not "+strconv.Quote(key)+".")
				}
			}
			return r, newProblem(codeUnknownField, "Unknown field "+strconv.Quote(key)+"; allowed: userPrincipalName, verificationCode, activate.")
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return r, newProblem(codeMalformedBody, "The request body must be a JSON object: "+jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return r, newProblem(codeMalformedBody, "The request body must hold exactly one JSON object.")
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

// typeProblem refuses a field whose value has the wrong JSON type, naming the field and the
// expected shape in words (never quoting the value).
func typeProblem(field, want string, raw json.RawMessage) *Problem {
	return newProblem(codeMalformedBody, field+" must be "+want+", not "+rawKind(raw)+".")
}

// rawKind names the JSON type of a value in words.
func rawKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null (leave the field out instead)"
	}
	return "a number"
}

// jsonKind names the JSON type of a decoder token in words.
func jsonKind(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		if v == '[' {
			return "an array"
		}
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return "that"
}

// jsonProblem describes a JSON decoding error without echoing the body.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return "syntax error at byte " + strconv.FormatInt(syn.Offset, 10) + "."
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the body ends too early."
	}
	return "not JSON."
}

// failWithState answers a failed change like fail, adding who holds the token now and its
// status (heldBy, tokenStatus) when the pipeline read them back (pipeline.StateError).
func (c *apiCall) failWithState(ctx context.Context, err error) HTTPResponse {
	var se *pipeline.StateError
	if !errors.As(err, &se) {
		return c.fail(ctx, err)
	}
	p := problemFor(err)
	holder := se.HeldBy
	p.HeldBy, p.TokenStatus = &holder, se.TokenStatus
	c.log.InfoContext(ctx, "request failed", "code", p.Code, logctx.Status, p.Status, logctx.Kind, string(token.KindOf(err)),
		logctx.RequestID, p.RequestID, "heldBy", holder, "tokenStatus", se.TokenStatus, logctx.Error, err)
	return problemResponse(p)
}
