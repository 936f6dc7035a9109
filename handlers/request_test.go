package handlers

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// problemOf decodes res as a problem (zero Problem for a success).
func problemOf(t *testing.T, res HTTPResponse) Problem {
	t.Helper()
	var p Problem
	if res.StatusCode >= 400 {
		if err := json.Unmarshal([]byte(res.Body), &p); err != nil {
			t.Fatalf("problem body: %v: %s", err, res.Body)
		}
	}
	return p
}

// TestSlashInRouteValues: the host leaves %2F encoded in Params (Kestrel decodes every escape
// but that one); a serial or import name with "/" works through GET, PUT and DELETE and
// ImportStatus, and a "%" that is the caller's own is left alone.
func TestSlashInRouteValues(t *testing.T) {
	body := `{"userPrincipalName":"grace@contoso.com"}`
	for _, tc := range []struct{ param, want string }{
		{"a%2Fb", "a/b"}, {"a%2fb%2Fc", "a/b/c"}, {"50%off", "50%off"}, {"a/b", "a/b"},
	} {
		fp := &fakePipeline{}
		s, _ := newTestServer(fp, "")
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			var b any
			if m == "PUT" {
				b = body
			}
			res := invoke(t, s, FuncTokenAssignment, httpPayload(m, assignURL, map[string]string{"serial": tc.param}, nil, b)).res(t)
			if res.StatusCode != 200 {
				t.Errorf("%s serial %q: %d %s", m, tc.param, res.StatusCode, res.Body)
			}
		}
		if len(fp.states) != 1 || fp.states[0] != tc.want || len(fp.assigns) != 1 || fp.assigns[0].Serial != tc.want ||
			len(fp.unassigns) != 1 || !strings.HasPrefix(fp.unassigns[0], tc.want+" by ") {
			t.Errorf("Params %q: GET %q PUT %+v DELETE %q, want %q", tc.param, fp.states, fp.assigns, fp.unassigns, tc.want)
		}
	}
	// ImportStatus: the catch-all route value holds "/" as sent, or %2F.
	for _, tc := range []struct {
		params map[string]string
		url    string
	}{
		{map[string]string{"name": "e2e%2Fmixed #1.csv"}, "https://x/api/imports/e2e%2Fmixed%20%231.csv"},
		{map[string]string{"name": "e2e/mixed #1.csv"}, "https://x/api/imports/e2e/mixed%20%231.csv"},
		{nil, "https://x/api/imports/e2e/mixed%20%231.csv?code=k"},
		{nil, "https://x/api/imports/e2e%2Fmixed%20%231.csv"},
	} {
		fp := &fakePipeline{}
		s, _ := newTestServer(fp, "")
		res := invoke(t, s, FuncImportStatus, httpPayload("GET", tc.url, tc.params, nil, nil)).res(t)
		if res.StatusCode != 200 || len(fp.statuses) != 1 || fp.statuses[0] != "e2e/mixed #1.csv" {
			t.Errorf("%v %s: %d, ImportStatus %q", tc.params, tc.url, res.StatusCode, fp.statuses)
		}
	}
}

// TestPathValuesAreNeverTrimmed: white space at either end, control characters and text that
// was not UTF-8 (U+FFFD) are refused, and nothing is looked up.
func TestPathValuesAreNeverTrimmed(t *testing.T) {
	for _, v := range []string{" 1000001", "1000001 ", "1000001\t", "\u00a01000001", "10\u000101", "10\x7f01", "10\ufffd01", "10\u008501", ""} {
		fp := &fakePipeline{}
		s, _ := newTestServer(fp, "")
		res := invoke(t, s, FuncTokenAssignment, httpPayload("GET", assignURL, map[string]string{"serial": v}, nil, nil)).res(t)
		if p := problemOf(t, res); res.StatusCode != 400 || p.Code != "invalid-serial" || len(fp.states) != 0 {
			t.Errorf("serial %q: %d %q, looked up %q", v, res.StatusCode, p.Code, fp.states)
		}
		name := strings.Replace(v, "1000001", "a.csv", 1)
		res = invoke(t, s, FuncImportStatus, httpPayload("GET", "https://x/api/imports/x", map[string]string{"name": name}, nil, nil)).res(t)
		if p := problemOf(t, res); res.StatusCode != 400 || p.Code != "invalid-import-name" || len(fp.statuses) != 0 {
			t.Errorf("name %q: %d %q, looked up %q", name, res.StatusCode, p.Code, fp.statuses)
		}
	}
}

// TestStrictJSONBody: one body, one reading.
func TestStrictJSONBody(t *testing.T) {
	jsonCT := map[string][]string{"Content-Type": {"application/json"}}
	for _, tc := range []struct {
		name    string
		headers map[string][]string
		body    any
		status  int
		code    string
		detail  []string // words the detail must hold
	}{
		{"duplicate key", nil, `{"userPrincipalName":"ada@contoso.com","userPrincipalName":"grace@contoso.com"}`, 400, "malformed-body", []string{"userPrincipalName", "twice"}},
		{"duplicate activate", nil, `{"userPrincipalName":"ada@contoso.com","activate":false,"activate":true}`, 400, "malformed-body", []string{"activate", "twice"}},
		{"wrong case", nil, `{"UserPrincipalName":"ada@contoso.com"}`, 400, "malformed-body", []string{"case-sensitive", "userPrincipalName"}},
		{"wrong case among right", nil, `{"userPrincipalName":"ada@contoso.com","Activate":false}`, 400, "malformed-body", []string{"activate"}},
		{"null body", nil, `null`, 400, "malformed-body", []string{"JSON object", "null"}},
		{"string body", nil, `"ada@contoso.com"`, 400, "malformed-body", []string{"JSON object", "a string"}},
		{"null field", nil, `{"userPrincipalName":"ada@contoso.com","verificationCode":null}`, 400, "malformed-body", []string{"verificationCode", "6 digits", "null"}},
		{"activate as string", nil, `{"userPrincipalName":"ada@contoso.com","activate":"false"}`, 400, "malformed-body", []string{"activate", "true or false", "a string"}},
		{"code as number", nil, `{"userPrincipalName":"ada@contoso.com","verificationCode":123456}`, 400, "malformed-body", []string{"verificationCode", "string", "a number"}},
		{"upn as object", nil, `{"userPrincipalName":{"upn":"ada@contoso.com"}}`, 400, "malformed-body", []string{"userPrincipalName", "an object"}},
		{"unknown field", nil, `{"userPrincipalName":"ada@contoso.com","seed":"x"}`, 400, "unknown-field", []string{"seed"}},
		{"text/plain", map[string][]string{"Content-Type": {"text/plain"}}, `{"userPrincipalName":"ada@contoso.com"}`, 415, "unsupported-media-type", []string{"application/json"}},
		{"form", map[string][]string{"Content-Type": {"application/x-www-form-urlencoded"}}, `{"userPrincipalName":"ada@contoso.com"}`, 415, "unsupported-media-type", nil},
		{"latin-1", map[string][]string{"Content-Type": {"application/json; charset=iso-8859-1"}}, `{"userPrincipalName":"ada@contoso.com"}`, 415, "unsupported-media-type", nil},
		{"no content type", map[string][]string{"Content-Type": {""}}, `{"userPrincipalName":"ada@contoso.com"}`, 415, "unsupported-media-type", []string{"none"}},
		{"json with charset", map[string][]string{"Content-Type": {"application/json; charset=UTF-8"}}, `{"userPrincipalName":"ada@contoso.com"}`, 200, "", nil},
		{"chunked: no body arrives", map[string][]string{"Transfer-Encoding": {"chunked"}, "Content-Type": {"application/json"}}, nil, 411, "length-required", []string{"Content-Length", "chunked"}},
		{"no content length", jsonCT, nil, 411, "length-required", []string{"Content-Length"}},
		{"plus in the upn (one UPN rule with the file reader)", nil, `{"userPrincipalName":"a+b@contoso.com"}`, 400, "invalid-upn", nil},
		{"object id", nil, `{"userPrincipalName":"3f2504e0-4f89-11d3-9a0c-0305e82c3301"}`, 200, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := &fakePipeline{}
			s, _ := newTestServer(fp, "")
			payload := httpPayload("PUT", assignURL, map[string]string{"serial": "1000001"}, tc.headers, tc.body)
			res := invoke(t, s, FuncTokenAssignment, payload).res(t)
			p := problemOf(t, res)
			if res.StatusCode != tc.status || p.Code != tc.code {
				t.Fatalf("%d %q, want %d %q: %s", res.StatusCode, p.Code, tc.status, tc.code, res.Body)
			}
			for _, w := range tc.detail {
				if !strings.Contains(p.Detail, w) {
					t.Errorf("detail %q lacks %q", p.Detail, w)
				}
			}
			if tc.status != 200 && len(fp.assigns) != 0 {
				t.Errorf("a refused body reached the pipeline: %+v", fp.assigns)
			}
		})
	}
}

// TestEveryMethodGets405WithAllow: function.json lists every method, so the handler sees each
// and answers one its route does not serve with 405 and Allow (never the host's plain 404).
func TestEveryMethodGets405WithAllow(t *testing.T) {
	for fn, allowed := range map[string][]string{FuncTokenAssignment: tokenAssignmentMethods, FuncImportStatus: importStatusMethods} {
		for _, m := range hostRoutedMethods {
			if slices.Contains(allowed, m) {
				continue
			}
			s, _ := newTestServer(&fakePipeline{}, "")
			res := invoke(t, s, fn, httpPayload(m, "https://x/api/imports/a.csv", map[string]string{"serial": "1", "name": "a.csv"}, nil, nil)).res(t)
			if p := problemOf(t, res); res.StatusCode != http.StatusMethodNotAllowed || p.Code != "method-not-allowed" || res.Headers["Allow"] != strings.Join(allowed, ", ") {
				t.Errorf("%s %s: %d %q Allow %q", m, fn, res.StatusCode, p.Code, res.Headers["Allow"])
			}
		}
	}
}

// TestImportStatusByImportID: ?importId= reaches an earlier import of the name.
func TestImportStatusByImportID(t *testing.T) {
	fp := &fakePipeline{}
	s, _ := newTestServer(fp, "")
	payload := func(q map[string]string) []byte {
		var m map[string]any
		_ = json.Unmarshal(httpPayload("GET", "https://x/api/imports/a.csv", map[string]string{"name": "a.csv"}, nil, nil), &m)
		m["Data"].(map[string]any)["req"].(map[string]any)["Query"] = q
		b, _ := json.Marshal(m)
		return b
	}
	res := invoke(t, s, FuncImportStatus, payload(map[string]string{"importId": "imp-111111111111111111111111", "code": "k"})).res(t)
	var st struct{ ImportID string }
	_ = json.Unmarshal([]byte(res.Body), &st)
	if res.StatusCode != 200 || st.ImportID != "imp-111111111111111111111111" || len(fp.importIDs) != 1 {
		t.Errorf("by id: %d %s, calls %q", res.StatusCode, res.Body, fp.importIDs)
	}
	res = invoke(t, s, FuncImportStatus, payload(map[string]string{"importid": " imp-1"})).res(t)
	if p := problemOf(t, res); res.StatusCode != 400 || p.Code != "invalid-request" {
		t.Errorf("bad id: %d %q", res.StatusCode, p.Code)
	}
}
