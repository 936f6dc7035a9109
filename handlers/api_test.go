package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

const assignURL = "https://func-oathpipe.azurewebsites.net/api/tokens/1000001/assignment"

func TestHTTPFixtures(t *testing.T) {
	for _, tc := range []struct {
		fixture, function string
		check             func(t *testing.T, fp *fakePipeline, body map[string]any)
	}{
		{"http-put.json", FuncTokenAssignment, func(t *testing.T, fp *fakePipeline, body map[string]any) {
			want := pipeline.AssignRequest{Serial: "1000001", UserPrincipalName: "grace@contoso.com", Activate: true, Caller: FunctionKeyCaller}
			if len(fp.assigns) != 1 || fp.assigns[0] != want {
				t.Errorf("AssignToken got %+v, want %+v", fp.assigns, want)
			}
			if body["activatedWith"] != "seed" || body["changed"] != true {
				t.Errorf("answer %v", body)
			}
		}},
		{"lenient-http-put-parsed-body.json", FuncTokenAssignment, func(t *testing.T, fp *fakePipeline, body map[string]any) {
			want := pipeline.AssignRequest{Serial: "1000001", UserPrincipalName: "grace@contoso.com", VerificationCode: "012345", Activate: true, Caller: FunctionKeyCaller}
			if len(fp.assigns) != 1 || fp.assigns[0] != want {
				t.Errorf("AssignToken got %+v, want %+v", fp.assigns, want)
			}
			if body["activatedWith"] != "verificationCode" {
				t.Errorf("answer %v", body)
			}
		}},
		{"http-get.json", FuncTokenAssignment, func(t *testing.T, fp *fakePipeline, body map[string]any) {
			if len(fp.states) != 1 || fp.states[0] != "1000001" {
				t.Errorf("TokenState got %v", fp.states)
			}
			if body["seedInVault"] != true || body["manufacturer"] != "Token2" {
				t.Errorf("answer %v", body)
			}
		}},
		{"http-delete.json", FuncTokenAssignment, func(t *testing.T, fp *fakePipeline, body map[string]any) {
			if len(fp.unassigns) != 1 || fp.unassigns[0] != "1000001 by hr-sync@contoso.com" {
				t.Errorf("UnassignToken got %v", fp.unassigns)
			}
			if body["previousUserPrincipalName"] != "ada@contoso.com" {
				t.Errorf("answer %v", body)
			}
		}},
		{"http-import-status.json", FuncImportStatus, func(t *testing.T, fp *fakePipeline, body map[string]any) {
			if len(fp.statuses) != 1 || fp.statuses[0] != "token2-2026-11.csv" {
				t.Errorf("ImportStatus got %v", fp.statuses)
			}
			if body["importId"] == nil || body["tokens"] == nil {
				t.Errorf("answer %v", body)
			}
		}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			fp := &fakePipeline{}
			s, _ := newTestServer(fp, "")
			a := invoke(t, s, tc.function, fixture(t, tc.fixture))
			if a.Status != http.StatusOK || a.ContentType != "application/json" {
				t.Fatalf("host answer %d %q: %s", a.Status, a.ContentType, a.Raw)
			}
			res := a.res(t)
			if res.StatusCode != http.StatusOK || res.Headers["Content-Type"] != "application/json" {
				t.Fatalf("res %d %v: %s", res.StatusCode, res.Headers, res.Body)
			}
			var body map[string]any
			if err := json.Unmarshal([]byte(res.Body), &body); err != nil {
				t.Fatalf("res body: %v", err)
			}
			tc.check(t, fp, body)
		})
	}
}

// TestAssignmentErrors runs every documented error through the handler with the host's HTTP
// payload shape and checks the status, the problem code, and that the host itself got 200.
func TestAssignmentErrors(t *testing.T) {
	params := map[string]string{"serial": "1000001"}
	noHeaders := map[string][]string{}
	okBody := `{"userPrincipalName":"grace@contoso.com"}`
	throttled := &token.Error{Kind: token.KindThrottled, Message: "Graph throttled the request", RetryAfter: 1500 * time.Millisecond, RequestID: "graph-rq-9"}
	for _, tc := range []struct {
		name       string
		role       string
		method     string
		params     map[string]string
		headers    map[string][]string
		body       any
		err        error
		wantStatus int
		wantCode   string
		check      func(t *testing.T, res HTTPResponse, p Problem)
	}{
		{name: "malformed body", method: "PUT", body: `{"userPrincipalName":`, wantStatus: 400, wantCode: "malformed-body"},
		{name: "body not an object", method: "PUT", body: `["grace@contoso.com"]`, wantStatus: 400, wantCode: "malformed-body"},
		{name: "two objects", method: "PUT", body: okBody + okBody, wantStatus: 400, wantCode: "malformed-body"},
		{name: "wrong type", method: "PUT", body: `{"userPrincipalName":"grace@contoso.com","activate":"yes"}`, wantStatus: 400, wantCode: "malformed-body"},
		{name: "empty body", method: "PUT", body: "", headers: map[string][]string{"Content-Length": {"0"}, "Content-Type": {"application/json"}}, wantStatus: 400, wantCode: "malformed-body"},
		{name: "unknown field", method: "PUT", body: `{"userPrincipalName":"grace@contoso.com","secretKey":"X"}`, wantStatus: 400, wantCode: "unknown-field",
			check: func(t *testing.T, _ HTTPResponse, p Problem) {
				if !strings.Contains(p.Detail, "secretKey") {
					t.Errorf("detail %q does not name the field", p.Detail)
				}
			}},
		{name: "bad UPN", method: "PUT", body: `{"userPrincipalName":"grace at contoso"}`, wantStatus: 400, wantCode: "invalid-upn"},
		{name: "missing UPN", method: "PUT", body: `{"activate":true}`, wantStatus: 400, wantCode: "invalid-upn"},
		{name: "bad code", method: "PUT", body: `{"userPrincipalName":"grace@contoso.com","verificationCode":"12345"}`, wantStatus: 400, wantCode: "invalid-verification-code"},
		{name: "code with activate false", method: "PUT", body: `{"userPrincipalName":"grace@contoso.com","verificationCode":"123456","activate":false}`, wantStatus: 400, wantCode: "invalid-request"},
		{name: "bad serial", method: "GET", params: map[string]string{"serial": "1000\x0001"}, wantStatus: 400, wantCode: "invalid-serial"},
		{name: "oversized serial", method: "GET", params: map[string]string{"serial": strings.Repeat("9", 129)}, wantStatus: 400, wantCode: "invalid-serial"},
		{name: "oversized body", method: "PUT", body: `{"userPrincipalName":"` + strings.Repeat("a", 9000) + `@contoso.com"}`, wantStatus: 413, wantCode: "body-too-large"},
		{name: "method not allowed", method: "POST", body: okBody, wantStatus: 405, wantCode: "method-not-allowed",
			check: func(t *testing.T, res HTTPResponse, _ Problem) {
				if res.Headers["Allow"] != "GET, PUT, DELETE" {
					t.Errorf("Allow = %q", res.Headers["Allow"])
				}
			}},
		{name: "failed move says who holds the token now", method: "PUT", body: okBody,
			err: &pipeline.StateError{Err: throttled, HeldBy: "ada@contoso.com", TokenStatus: "activated"}, wantStatus: 429, wantCode: "throttled",
			check: func(t *testing.T, res HTTPResponse, p Problem) {
				if p.HeldBy == nil || *p.HeldBy != "ada@contoso.com" || p.TokenStatus != "activated" || !strings.Contains(res.Body, `"heldBy":"ada@contoso.com"`) {
					t.Errorf("heldBy/tokenStatus missing: %s", res.Body)
				}
			}},
		{name: "failed move leaving nobody says so", method: "PUT", body: okBody,
			err: &pipeline.StateError{Err: throttled, HeldBy: "", TokenStatus: "available"}, wantStatus: 429, wantCode: "throttled",
			check: func(t *testing.T, res HTTPResponse, _ Problem) {
				if !strings.Contains(res.Body, `"heldBy":""`) || !strings.Contains(res.Body, `"tokenStatus":"available"`) {
					t.Errorf("an empty holder must be answered: %s", res.Body)
				}
			}},
		{name: "unknown serial", method: "GET", err: &token.Error{Kind: token.KindNotFound, Message: "no token with serial 1000001"}, wantStatus: 404, wantCode: "not-found"},
		{name: "unknown user", method: "PUT", body: okBody, err: &token.Error{Kind: token.KindNotFound, Message: "no user grace@contoso.com", RequestID: "graph-rq-1"}, wantStatus: 404, wantCode: "not-found",
			check: func(t *testing.T, _ HTTPResponse, p Problem) {
				if p.RequestID != "graph-rq-1" {
					t.Errorf("requestId = %q", p.RequestID)
				}
			}},
		{name: "guest", method: "PUT", body: okBody, err: token.Errorf(token.KindGuest, "guest"), wantStatus: 409, wantCode: "guest-user"},
		{name: "disabled", method: "PUT", body: okBody, err: token.Errorf(token.KindDisabled, "disabled"), wantStatus: 409, wantCode: "disabled-user"},
		{name: "five methods", method: "PUT", body: okBody, err: token.Errorf(token.KindTooManyMethods, "5 methods"), wantStatus: 409, wantCode: "too-many-methods"},
		{name: "code rejected", method: "PUT", body: `{"userPrincipalName":"grace@contoso.com","verificationCode":"123456"}`, err: token.Errorf(token.KindBadCode, "rejected"), wantStatus: 409, wantCode: "code-rejected"},
		{name: "assigned elsewhere", method: "PUT", body: okBody, err: token.Errorf(token.KindAssignedElsewhere, "held by ada"), wantStatus: 409, wantCode: "assigned-elsewhere"},
		{name: "conflict", method: "DELETE", err: token.Errorf(token.KindConflict, "state"), wantStatus: 409, wantCode: "conflict"},
		{name: "pipeline invalid", method: "PUT", body: okBody, err: token.Errorf(token.KindInvalid, "bad"), wantStatus: 400, wantCode: "invalid-request"},
		{name: "throttled beyond budget", method: "PUT", body: okBody, err: throttled, wantStatus: 429, wantCode: "throttled",
			check: func(t *testing.T, res HTTPResponse, p Problem) {
				if res.Headers["Retry-After"] != "2" || p.RetryAfter != 2 || p.RequestID != "graph-rq-9" {
					t.Errorf("Retry-After %q, problem %+v", res.Headers["Retry-After"], p)
				}
			}},
		{name: "upstream permission", method: "PUT", body: okBody, err: &token.Error{Kind: token.KindForbidden, Message: "needs Policy.ReadWrite.AuthenticationMethod", RequestID: "graph-rq-2"}, wantStatus: 502, wantCode: "upstream-forbidden"},
		{name: "upstream unavailable", method: "GET", err: &token.Error{Kind: token.KindTransient, Message: "graph 503", RequestID: "graph-rq-3"}, wantStatus: 503, wantCode: "upstream-unavailable"},
		{name: "deadline", method: "GET", err: fmt.Errorf("read token: %w", context.DeadlineExceeded), wantStatus: 503, wantCode: "upstream-unavailable"},
		{name: "internal hides detail", method: "GET", err: errPlain("db password=hunter2"), wantStatus: 500, wantCode: "internal",
			check: func(t *testing.T, res HTTPResponse, _ Problem) {
				if strings.Contains(res.Body, "hunter2") {
					t.Errorf("internal detail leaked: %s", res.Body)
				}
			}},
		{name: "role required, no principal", role: "Tokens.Assign", method: "PUT", body: okBody, wantStatus: 403, wantCode: "caller-unauthenticated"},
		{name: "role required, wrong role", role: "Tokens.Assign", method: "PUT", body: okBody,
			headers: map[string][]string{"X-MS-CLIENT-PRINCIPAL": {principal("hr@contoso.com", "Tokens.Read")}}, wantStatus: 403, wantCode: "role-missing"},
		{name: "role required, garbage principal", role: "Tokens.Assign", method: "GET",
			headers: map[string][]string{"X-MS-CLIENT-PRINCIPAL": {"!!!"}}, wantStatus: 403, wantCode: "caller-unauthenticated"},
		{name: "role present", role: "Tokens.Assign", method: "PUT", body: okBody,
			headers: map[string][]string{"x-ms-client-principal": {principal("hr@contoso.com", "Tokens.Read", "Tokens.Assign")}}, wantStatus: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := &fakePipeline{err: tc.err}
			s, _ := newTestServer(fp, tc.role)
			if tc.params == nil {
				tc.params = params
			}
			if tc.headers == nil {
				tc.headers = noHeaders
			}
			a := invoke(t, s, FuncTokenAssignment, httpPayload(tc.method, assignURL, tc.params, tc.headers, tc.body))
			if a.Status != http.StatusOK || a.ContentType != "application/json" {
				t.Fatalf("host answer %d %q, want 200 application/json", a.Status, a.ContentType)
			}
			res := a.res(t)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.wantStatus, res.Body)
			}
			if tc.wantStatus == 200 {
				return
			}
			if ct := res.Headers["Content-Type"]; ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			var p Problem
			if err := json.Unmarshal([]byte(res.Body), &p); err != nil {
				t.Fatal(err)
			}
			if p.Code != tc.wantCode || p.Status != tc.wantStatus || p.Type != ProblemTypeBase+tc.wantCode || p.Title == "" ||
				p.Instance != "urn:uuid:00000000-0000-0000-0000-000000000001" {
				t.Errorf("problem %+v, want code %s", p, tc.wantCode)
			}
			if tc.check != nil {
				tc.check(t, res, p)
			}
		})
	}
}

func TestCallerIdentityReachesAudit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers map[string][]string
		want    string
	}{
		{"function key only", map[string][]string{}, FunctionKeyCaller},
		{"principal name header", map[string][]string{"X-MS-CLIENT-PRINCIPAL-NAME": {"hr-sync@contoso.com"}}, "hr-sync@contoso.com"},
		{"principal claims", map[string][]string{"X-MS-CLIENT-PRINCIPAL": {principal("app-hr@contoso.com", "Tokens.Assign")}}, "app-hr@contoso.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := &fakePipeline{}
			s, _ := newTestServer(fp, "")
			invoke(t, s, FuncTokenAssignment, httpPayload("PUT", assignURL, map[string]string{"serial": "1000001"}, tc.headers, `{"userPrincipalName":"grace@contoso.com"}`))
			if len(fp.assigns) != 1 || fp.assigns[0].Caller != tc.want {
				t.Errorf("caller %+v, want %q", fp.assigns, tc.want)
			}
		})
	}
}

// TestAwkwardSerials: serials the seed file reader accepts are served too.
func TestAwkwardSerials(t *testing.T) {
	for _, serial := range []string{`O'Brien-1`, `Q"uote'd`, "Ωmega-Ünïcødé-7", "a/b#c?d", "AB 12"} {
		fp := &fakePipeline{}
		s, _ := newTestServer(fp, "")
		a := invoke(t, s, FuncTokenAssignment, httpPayload("GET", assignURL, map[string]string{"serial": serial}, nil, nil))
		if res := a.res(t); res.StatusCode != 200 || len(fp.states) != 1 || fp.states[0] != serial {
			t.Errorf("%q: res %d, TokenState %q", serial, res.StatusCode, fp.states)
		}
	}
	// Without Params, the serial comes from the URL path, percent-decoded.
	fp := &fakePipeline{}
	s, _ := newTestServer(fp, "")
	a := invoke(t, s, FuncTokenAssignment, httpPayload("GET", "https://x/api/tokens/a%2Fb%23c%3Fd/assignment", nil, nil, nil))
	if res := a.res(t); res.StatusCode != 200 || len(fp.states) != 1 || fp.states[0] != "a/b#c?d" {
		t.Errorf("encoded path: res %d, TokenState %q", res.StatusCode, fp.states)
	}
}

func TestSerialFromURLWhenParamsMissing(t *testing.T) {
	fp := &fakePipeline{}
	s, _ := newTestServer(fp, "")
	a := invoke(t, s, FuncTokenAssignment, httpPayload("GET", "https://x/api/tokens/AB-12.3/assignment?code=k", nil, nil, nil))
	if res := a.res(t); res.StatusCode != 200 || len(fp.states) != 1 || fp.states[0] != "AB-12.3" {
		t.Errorf("res %d, TokenState %v", res.StatusCode, fp.states)
	}
}

func TestImportStatusErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params map[string]string
		method string
		err    error
		want   int
		code   string
	}{
		{"unknown import", map[string]string{"name": "nope.csv"}, "GET", token.Errorf(token.KindNotFound, "no import of nope.csv"), 404, "not-found"},
		{"bad name", map[string]string{"name": "a\x00b"}, "GET", nil, 400, "invalid-import-name"},
		{"method", map[string]string{"name": "a.csv"}, "DELETE", nil, 405, "method-not-allowed"},
		{"ledger down", map[string]string{"name": "a.csv"}, "GET", token.Errorf(token.KindTransient, "table 503"), 503, "upstream-unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(&fakePipeline{err: tc.err}, "")
			a := invoke(t, s, FuncImportStatus, httpPayload(tc.method, "https://x/api/imports/a.csv", tc.params, nil, nil))
			res := a.res(t)
			var p Problem
			_ = json.Unmarshal([]byte(res.Body), &p)
			if a.Status != 200 || res.StatusCode != tc.want || p.Code != tc.code {
				t.Errorf("host %d res %d code %q, want %d %q", a.Status, res.StatusCode, p.Code, tc.want, tc.code)
			}
		})
	}
}

func TestUndecodableHTTPInvocation(t *testing.T) {
	s, _ := newTestServer(&fakePipeline{}, "")
	for _, payload := range []string{`not json`, `{"Data":{"req":42}}`, `{"Data":{}}`} {
		a := invoke(t, s, FuncTokenAssignment, []byte(payload))
		if res := a.res(t); a.Status != 200 || res.StatusCode != 400 {
			t.Errorf("%s: host %d res %d", payload, a.Status, res.StatusCode)
		}
	}
}

type errPlain string

func (e errPlain) Error() string { return string(e) }
