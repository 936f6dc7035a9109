package kvstandin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

var ctx = context.Background()

type staticToken string

func (t staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(t), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// start serves a stand-in and returns an HTTPS client trusting only its CAPEM.
func start(t *testing.T, o Options) (*Running, *http.Client) {
	t.Helper()
	run, err := StartTLS(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(run.Close)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(run.CAPEM) {
		t.Fatal("CAPEM holds no certificate")
	}
	return run, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func sdk(t *testing.T, run *Running, hc *http.Client) *azsecrets.Client {
	t.Helper()
	c, err := azsecrets.NewClient(run.URL, staticToken(DefaultToken), &azsecrets.ClientOptions{
		ClientOptions:                        policy.ClientOptions{Transport: hc, Retry: policy.RetryOptions{MaxRetries: -1}},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type wireError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

func do(t *testing.T, hc *http.Client, method, url, token, body string) (*http.Response, wireError) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var we wireError
	_ = json.Unmarshal(b, &we)
	return resp, we
}

func TestChallenge(t *testing.T) {
	run, hc := start(t, Options{Tenant: "11111111-2222-3333-4444-555555555555"})
	u := run.URL + "/secrets/abc?api-version=2025-07-01"
	tests := []struct {
		name, token string
		status      int
		code        string
	}{
		{"no token", "", 401, "Unauthorized"},
		{"wrong token", "nope", 401, "Unauthorized"},
		{"right token", DefaultToken, 404, "SecretNotFound"},
	}
	for _, tt := range tests {
		resp, we := do(t, hc, "GET", u, tt.token, "")
		if resp.StatusCode != tt.status || we.Error.Code != tt.code {
			t.Errorf("%s: %d %q, want %d %q", tt.name, resp.StatusCode, we.Error.Code, tt.status, tt.code)
		}
		if resp.Header.Get("x-ms-request-id") == "" {
			t.Errorf("%s: no x-ms-request-id", tt.name)
		}
		if tt.status == 401 {
			want := `Bearer authorization="https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555", resource="https://vault.azure.net"`
			if got := resp.Header.Get("WWW-Authenticate"); got != want {
				t.Errorf("%s: WWW-Authenticate %q", tt.name, got)
			}
		}
	}
	if st := run.Server.Stats(); st.Unauthenticated != 2 || st.Requests != 3 || st.Transactions != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestLifecycleThroughSDK(t *testing.T) {
	run, hc := start(t, Options{})
	c := sdk(t, run, hc)
	tags := map[string]*string{"serial": new("123")}
	set, err := c.SetSecret(ctx, "Seed-One", azsecrets.SetSecretParameters{Value: new("v1"), ContentType: new("text/plain"), Tags: tags}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1 := set.ID.Version()
	if set.ID.Name() != "Seed-One" || v1 == "" || *set.Value != "v1" || *set.Attributes.Enabled != true {
		t.Fatalf("set answered %+v", set)
	}
	if _, err := c.SetSecret(ctx, "seed-one", azsecrets.SetSecretParameters{Value: new("v2")}, nil); err != nil {
		t.Fatal(err)
	}
	// Names are case-insensitive; no version means the latest.
	got, err := c.GetSecret(ctx, "SEED-ONE", "", nil)
	if err != nil || *got.Value != "v2" {
		t.Fatalf("get latest: %v %v", got.Value, err)
	}
	old, err := c.GetSecret(ctx, "seed-one", v1, nil)
	if err != nil || *old.Value != "v1" || *old.ContentType != "text/plain" || *old.Tags["serial"] != "123" {
		t.Fatalf("get v1: %+v %v", old, err)
	}
	var versions int
	for p := c.NewListSecretPropertiesVersionsPager("seed-one", nil); p.More(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.Value {
			if v.Tags["value"] != nil {
				t.Error("a listing carries a value")
			}
			versions++
		}
	}
	if versions != 2 {
		t.Fatalf("%d versions, want 2", versions)
	}
	upd, err := c.UpdateSecretProperties(ctx, "seed-one", "", azsecrets.UpdateSecretPropertiesParameters{Tags: map[string]*string{"k": new("v")}}, nil)
	if err != nil || upd.Value != nil || *upd.Tags["k"] != "v" {
		t.Fatalf("update: %+v %v", upd, err)
	}

	del, err := c.DeleteSecret(ctx, "seed-one", nil)
	if err != nil || del.RecoveryID == nil || del.ScheduledPurgeDate == nil || del.DeletedDate == nil {
		t.Fatalf("delete: %+v %v", del, err)
	}
	if _, err := c.GetSecret(ctx, "seed-one", "", nil); status(err) != 404 {
		t.Fatalf("get deleted = %v", err)
	}
	_, err = c.SetSecret(ctx, "seed-one", azsecrets.SetSecretParameters{Value: new("v3")}, nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 409 || re.ErrorCode != "Conflict" {
		t.Fatalf("set over a deleted secret = %v", err)
	}
	if body, _ := io.ReadAll(re.RawResponse.Body); !strings.Contains(string(body), "ObjectIsDeletedButRecoverable") {
		t.Fatalf("409 body %s", body)
	}
	if _, err := c.GetDeletedSecret(ctx, "seed-one", nil); err != nil {
		t.Fatal(err)
	}
	var deleted int
	for p := c.NewListDeletedSecretPropertiesPager(nil); p.More(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deleted += len(page.Value)
	}
	if deleted != 1 {
		t.Fatalf("%d deleted secrets listed", deleted)
	}
	if _, err := c.RecoverDeletedSecret(ctx, "seed-one", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetSecret(ctx, "seed-one", "", nil); err != nil || *got.Value != "v2" {
		t.Fatalf("after recover: %v", err)
	}
	if _, err := c.RecoverDeletedSecret(ctx, "seed-one", nil); status(err) != 404 {
		t.Fatalf("recover twice = %v", err)
	}
	// Delete and purge: the name is free again.
	if _, err := c.DeleteSecret(ctx, "seed-one", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PurgeDeletedSecret(ctx, "seed-one", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSecret(ctx, "seed-one", azsecrets.SetSecretParameters{Value: new("fresh")}, nil); err != nil {
		t.Fatal(err)
	}
	if s := run.Server.Secrets(); len(s) != 1 || s[0].Versions != 1 || s[0].Deleted {
		t.Fatalf("secrets %+v", s)
	}
	// Disabled secrets cannot be read.
	if _, err := c.UpdateSecretProperties(ctx, "seed-one", "", azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: new(false)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSecret(ctx, "seed-one", "", nil); status(err) != 403 {
		t.Fatalf("get disabled = %v", err)
	}
}

func status(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func TestPaging(t *testing.T) {
	run, hc := start(t, Options{})
	c := sdk(t, run, hc)
	for i := range 60 {
		if _, err := c.SetSecret(ctx, fmt.Sprintf("s-%02d", i), azsecrets.SetSecretParameters{Value: new("x")}, nil); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	pages := 0
	for p := c.NewListSecretPropertiesPager(nil); p.More(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, s := range page.Value {
			seen[s.ID.Name()] = true
		}
	}
	if len(seen) != 60 || pages != 3 {
		t.Fatalf("%d secrets in %d pages; want 60 in 3", len(seen), pages)
	}
}

func TestLimits(t *testing.T) {
	run, hc := start(t, Options{})
	api := "?api-version=2025-07-01"
	manyTags := map[string]string{}
	for i := range 16 {
		manyTags[fmt.Sprint("t", i)] = "v"
	}
	body := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"underscore in name", "PUT", "/secrets/bad_name" + api, `{"value":"x"}`, 400, "BadParameter"},
		{"name too long", "PUT", "/secrets/" + strings.Repeat("a", 128) + api, `{"value":"x"}`, 400, "BadParameter"},
		{"longest name", "PUT", "/secrets/" + strings.Repeat("a", 127) + api, `{"value":"x"}`, 200, ""},
		{"value too large", "PUT", "/secrets/big" + api, body(map[string]string{"value": strings.Repeat("x", MaxValueBytes+1)}), 400, "BadParameter"},
		{"largest value", "PUT", "/secrets/big" + api, body(map[string]string{"value": strings.Repeat("x", MaxValueBytes)}), 200, ""},
		{"16 tags", "PUT", "/secrets/tags" + api, body(map[string]any{"value": "x", "tags": manyTags}), 400, "BadParameter"},
		{"tag value too long", "PUT", "/secrets/tags" + api, body(map[string]any{"value": "x", "tags": map[string]string{"a": strings.Repeat("v", 257)}}), 400, "BadParameter"},
		{"content type too long", "PUT", "/secrets/ct" + api, body(map[string]any{"value": "x", "contentType": strings.Repeat("c", 256)}), 400, "BadParameter"},
		{"no value", "PUT", "/secrets/nv" + api, `{}`, 400, "BadParameter"},
		{"not JSON", "PUT", "/secrets/nj" + api, `{"value":"SECRET`, 400, "BadParameter"},
		{"no api-version", "GET", "/secrets/x", "", 400, "BadParameter"},
		{"unknown route", "POST", "/keys/x" + api, "", 404, "NotFound"},
	}
	for _, tt := range tests {
		resp, we := do(t, hc, tt.method, run.URL+tt.path, DefaultToken, tt.body)
		if resp.StatusCode != tt.status || we.Error.Code != tt.code {
			t.Errorf("%s: %d %q, want %d %q", tt.name, resp.StatusCode, we.Error.Code, tt.status, tt.code)
		}
		if strings.Contains(we.Error.Message, "SECRET") {
			t.Errorf("%s: the error echoes the body", tt.name)
		}
	}
}

func TestRateLimitAndInjectedFailures(t *testing.T) {
	run, hc := start(t, Options{Rate: 5, Per: time.Second})
	u := run.URL + "/secrets?api-version=2025-07-01"
	for i := range 5 {
		if resp, _ := do(t, hc, "GET", u, DefaultToken, ""); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	resp, we := do(t, hc, "GET", u, DefaultToken, "")
	if resp.StatusCode != 429 || we.Error.Code != "Throttled" || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("6th request: %d %q Retry-After %q", resp.StatusCode, we.Error.Code, resp.Header.Get("Retry-After"))
	}
	// Unauthenticated requests do not spend the allowance.
	if resp, _ := do(t, hc, "GET", u, "", ""); resp.StatusCode != 401 {
		t.Fatalf("unauthenticated: %d", resp.StatusCode)
	}
	run2, hc2 := start(t, Options{})
	run2.Server.FailNext(2, 503)
	u2 := run2.URL + "/secrets?api-version=2025-07-01"
	for i, want := range []int{503, 503, 200} {
		resp, _ := do(t, hc2, "GET", u2, DefaultToken, "")
		if resp.StatusCode != want {
			t.Errorf("request %d: %d, want %d", i, resp.StatusCode, want)
		}
		if want == 503 && resp.Header.Get("Retry-After") == "" {
			t.Errorf("request %d: no Retry-After", i)
		}
	}
	if st := run.Server.Stats(); st.Throttled != 1 || st.Transactions != 5 || st.Unauthenticated != 1 {
		t.Errorf("stats %+v", st)
	}
	if st := run2.Server.Stats(); st.Injected != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestBucket(t *testing.T) {
	t0 := time.Now()
	b := newBucket(4000, 10*time.Second)
	b.last = t0
	for i := range 4000 {
		if _, ok := b.take(t0); !ok {
			t.Fatalf("take %d refused with a full bucket", i)
		}
	}
	wait, ok := b.take(t0)
	if ok || wait != 2500*time.Microsecond {
		t.Fatalf("empty bucket: ok=%v wait=%v, want refused, 2.5ms (400/s)", ok, wait)
	}
	if _, ok := b.take(t0.Add(2500 * time.Microsecond)); !ok {
		t.Fatal("not refilled after 2.5ms")
	}
	// Refill is capped at the capacity.
	n := 0
	for _, ok := b.take(t0.Add(time.Hour)); ok; _, ok = b.take(t0.Add(time.Hour)) {
		n++
	}
	if n != 4000 {
		t.Fatalf("%d tokens after an idle hour, want 4000", n)
	}
}

func TestLatency(t *testing.T) {
	srv := New(Options{Latency: 30 * time.Millisecond})
	start := time.Now()
	srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/secrets", nil))
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Fatalf("answered after %v, want at least the 30ms latency", el)
	}
}

// FuzzHandler sends arbitrary authenticated requests: the stand-in must not panic, must answer
// a Key Vault status with a JSON body, and must never echo a request body in an error.
func FuzzHandler(f *testing.F) {
	f.Add("PUT", "/secrets/a", `{"value":"CANARY","tags":{"a":"b"}}`)
	f.Add("PATCH", "/secrets/a/", `{"tags":{"x":"y"},"attributes":{"enabled":false}}`)
	f.Add("GET", "/secrets/a/versions", "")
	f.Add("POST", "/deletedsecrets/a/recover", "")
	f.Add("DELETE", "/deletedsecrets/a", "")
	f.Add("GET", "/secrets//", `{"value":`)
	f.Fuzz(func(t *testing.T, method, path, body string) {
		srv := New(Options{Rate: -1})
		req := httptest.NewRequest("PUT", "/secrets/a?api-version=1", strings.NewReader(`{"value":"x"}`))
		req.Header.Set("Authorization", "Bearer "+DefaultToken)
		srv.ServeHTTP(httptest.NewRecorder(), req)

		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?# \t\r\n") {
			return
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return
		}
		switch method {
		case "GET", "PUT", "PATCH", "POST", "DELETE":
		default:
			return
		}
		r := httptest.NewRequest(method, "https://kv.local"+path+"?api-version=1", strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+DefaultToken)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s: %d", method, path, w.Code)
		}
		if w.Code >= 400 {
			var we wireError
			if err := json.Unmarshal(w.Body.Bytes(), &we); err != nil || we.Error.Code == "" {
				t.Fatalf("%s %s: error body %q", method, path, w.Body)
			}
			// The error may name the path; a body that is also part of the path proves nothing.
			if len(body) > 8 && !strings.Contains(path, body) && strings.Contains(w.Body.String(), body) {
				t.Fatalf("%s %s: the error echoes the request body", method, path)
			}
		}
	})
}
