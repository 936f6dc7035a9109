package handlers

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzPrimitive checks that a value decodes the same whether the host sends it plain or
// JSON-encoded a second time (for values that are not themselves quoted strings).
func FuzzPrimitive(f *testing.F) {
	for _, s := range []string{"acme.csv", "1", "", "a\"b", `{"x":1}`, "ünïcode", "\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once, _ := json.Marshal(s)
		twice, _ := json.Marshal(string(once))
		got1, ok1 := primitive(once)
		got2, ok2 := primitive(twice)
		if !ok1 || !ok2 {
			t.Fatalf("primitive(%q) not ok", s)
		}
		if strings.HasPrefix(s, `"`) {
			return // a quoted string is indistinguishable from one encoded twice
		}
		if !isValidUTF8JSON(s) {
			return // json.Marshal replaced invalid bytes
		}
		if got1 != s || got2 != s {
			t.Errorf("primitive: plain %q, twice %q, want %q", got1, got2, s)
		}
	})
}

func isValidUTF8JSON(s string) bool {
	b, _ := json.Marshal(s)
	var back string
	return json.Unmarshal(b, &back) == nil && back == s
}

// FuzzInvocation feeds arbitrary payloads to every function: the handler never panics, always
// answers JSON of the documented shape, answers HTTP functions 200, and never leaks the seed.
func FuzzInvocation(f *testing.F) {
	for _, name := range []string{"queue-eventgrid-blobcreated.json", "queue-cloudevent-blobcreated.json", "queue-import-continuation.json", "lenient-queue-plain.json",
		"queue-double-encoded.json", "lenient-poison-plain.json", "poison-double-encoded.json", "http-put.json", "lenient-http-put-parsed-body.json", "http-get.json",
		"http-delete.json", "http-import-status.json"} {
		for fn := range 5 {
			f.Add(uint8(fn), fixture(f, name))
		}
	}
	f.Add(uint8(3), []byte(`{"Data":{"req":"{\"Method\":\"PUT\",\"Body\":\"e30=\"}"}}`))
	functions := []string{FuncImportSeeds, FuncProvisionToken, FuncProvisionFailed, FuncTokenAssignment, FuncImportStatus}
	s := New(Options{Pipeline: &fakePipeline{}, RequiredRole: ""})
	f.Fuzz(func(t *testing.T, fn uint8, payload []byte) {
		name := functions[int(fn)%len(functions)]
		req := httptest.NewRequest(http.MethodPost, "/"+name, bytes.NewReader(payload))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != 200 && rec.Code != 500 {
			t.Fatalf("%s: host status %d", name, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: Content-Type %q", name, ct)
		}
		var body struct {
			Outputs map[string]json.RawMessage
			Logs    []string
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Outputs == nil || body.Logs == nil {
			t.Fatalf("%s: answer shape: %v %s", name, err, rec.Body.String())
		}
		if name == FuncTokenAssignment || name == FuncImportStatus {
			if rec.Code != 200 {
				t.Fatalf("%s: HTTP function answered the host %d", name, rec.Code)
			}
			var res HTTPResponse
			if err := json.Unmarshal(body.Outputs["res"], &res); err != nil || res.StatusCode < 200 || res.StatusCode > 599 {
				t.Fatalf("%s: Outputs.res %s", name, body.Outputs["res"])
			}
		}
		if bytes.Contains(rec.Body.Bytes(), []byte(fixtureSecret)) && !bytes.Contains(payload, []byte(fixtureSecret)) {
			t.Fatalf("seed in answer")
		}
	})
}

// FuzzAssignBody checks the PUT body parser: no panics, and whatever it accepts is valid.
func FuzzAssignBody(f *testing.F) {
	for _, s := range []string{
		`{"userPrincipalName":"grace@contoso.com"}`,
		`{"userPrincipalName":"grace@contoso.com","verificationCode":"012345","activate":true}`,
		`{"userPrincipalName":"6f1e4b8e-1b1d-4e43-9a0c-2c8d1b2f4a10","activate":false}`,
		`{"userPrincipalName":"a@b.c","extra":1}`, `{}`, `[]`, `null`, `{"userPrincipalName":"a@b.c"} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, p := decodeAssignBody(body)
		if p != nil {
			if p.Status != 400 || p.Code == "" {
				t.Fatalf("problem %+v", p)
			}
			return
		}
		if !validUser(r.UserPrincipalName) {
			t.Fatalf("accepted user %q", r.UserPrincipalName)
		}
		if r.VerificationCode != "" && (!codePattern.MatchString(r.VerificationCode) || !r.Activate) {
			t.Fatalf("accepted code %q activate %v", r.VerificationCode, r.Activate)
		}
	})
}

// FuzzClientPrincipal checks the X-MS-CLIENT-PRINCIPAL parser and the role check never panic
// and never grant a role the claims do not carry.
func FuzzClientPrincipal(f *testing.F) {
	f.Add(principal("hr@contoso.com", "Tokens.Assign"), "Tokens.Assign")
	f.Add("e30=", "Tokens.Assign")
	f.Add("!!", "")
	f.Fuzz(func(t *testing.T, header, role string) {
		p, ok := ParseClientPrincipal(header)
		if !ok {
			return
		}
		_ = p.Name()
		if role != "" && p.HasRole(role) {
			found := false
			for _, c := range p.Claims {
				if c.Value == role {
					found = true
				}
			}
			if !found {
				t.Fatalf("role %q granted without a claim", role)
			}
		}
	})
}

// FuzzImportRequests: any seed-imports message text decodes to requests or an error, never a
// panic, and every request names a blob.
func FuzzImportRequests(f *testing.F) {
	for _, name := range []string{"queue-eventgrid-blobcreated.json", "queue-cloudevent-blobcreated.json", "queue-import-continuation.json"} {
		var in Invocation
		if err := json.Unmarshal(fixture(f, name), &in); err != nil {
			f.Fatal(err)
		}
		text, _ := in.DataString("event")
		f.Add(text)
	}
	f.Add(`[{"eventType":"Microsoft.Storage.BlobCreated","subject":"/blobServices/default/containers/seed-inbox/blobs/"}]`)
	f.Fuzz(func(t *testing.T, text string) {
		reqs, _, err := importRequests(text)
		if err != nil {
			return
		}
		for _, r := range reqs {
			if r.Name == "" {
				t.Fatalf("a request without a blob name from %q", text)
			}
		}
	})
}
