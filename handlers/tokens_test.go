package handlers

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// fakeLifecycle records what the handlers asked and answers err, or a fixed answer.
type fakeLifecycle struct {
	err    error
	filter pipeline.TokenFilter
	limit  int
	cont   string
	user   string
	serial string
	caller string
}

func (f *fakeLifecycle) ListTokens(_ context.Context, fl pipeline.TokenFilter, limit int, cont string) (*pipeline.TokenPage, error) {
	f.filter, f.limit, f.cont = fl, limit, cont
	if f.err != nil {
		return nil, f.err
	}
	return &pipeline.TokenPage{Tokens: []pipeline.InventoryToken{{SerialNumber: "T-1", Status: "available", SeedInVault: true}}, Continuation: "next"}, nil
}

func (f *fakeLifecycle) UserTokens(_ context.Context, upn string) (*pipeline.UserTokens, error) {
	f.user = upn
	if f.err != nil {
		return nil, f.err
	}
	return &pipeline.UserTokens{UserPrincipalName: upn, UserID: "id-1", Tokens: []pipeline.InventoryToken{}}, nil
}

func (f *fakeLifecycle) RetireToken(_ context.Context, serial, caller string) (*pipeline.Retirement, error) {
	f.serial, f.caller = serial, caller
	if f.err != nil {
		return nil, f.err
	}
	return &pipeline.Retirement{SerialNumber: serial, Status: pipeline.StatusRetired, Changed: true, DeviceDeleted: true, SeedDeleted: true}, nil
}

func lifecycleServer(l Lifecycle) *Server {
	return New(Options{Pipeline: &fakePipeline{}, Lifecycle: l, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
}

// queryPayload is httpPayload with a query string as the host passes it (an object).
func queryPayload(method, url string, params, query map[string]string) []byte {
	req := map[string]any{"Url": url, "Method": method, "Query": query, "Headers": map[string][]string{}, "Params": params}
	b, _ := json.Marshal(map[string]any{"Data": map[string]any{"req": req}, "Metadata": map[string]any{}})
	return b
}

func TestTokenViewsAndRetireErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		function string
		method   string
		params   map[string]string
		query    map[string]string
		err      error
		want     int
		code     string
	}{
		{"list ok", FuncTokens, "GET", nil, map[string]string{"status": "Activated", "limit": "5", "continuation": "abc", "code": "key"}, nil, 200, ""},
		{"list bad status", FuncTokens, "GET", nil, map[string]string{"status": "lost"}, nil, 400, "invalid-request"},
		{"list bad limit", FuncTokens, "GET", nil, map[string]string{"limit": "0"}, nil, 400, "invalid-request"},
		{"list huge limit", FuncTokens, "GET", nil, map[string]string{"limit": "501"}, nil, 400, "invalid-request"},
		{"list unknown parameter", FuncTokens, "GET", nil, map[string]string{"serial": "x"}, nil, 400, "invalid-request"},
		{"list empty filter", FuncTokens, "GET", nil, map[string]string{"model": " "}, nil, 400, "invalid-request"},
		{"list bad upn", FuncTokens, "GET", nil, map[string]string{"userPrincipalName": "a b"}, nil, 400, "invalid-upn"},
		{"list unknown user", FuncTokens, "GET", nil, map[string]string{"userPrincipalName": "x@contoso.example"}, token.Errorf(token.KindNotFound, "no user"), 404, "not-found"},
		{"list forged continuation", FuncTokens, "GET", nil, map[string]string{"continuation": "zz"}, token.Errorf(token.KindInvalid, "continuation"), 400, "invalid-request"},
		{"list graph down", FuncTokens, "GET", nil, nil, token.Errorf(token.KindTransient, "graph 503"), 503, "upstream-unavailable"},
		{"list method", FuncTokens, "POST", nil, nil, nil, 405, "method-not-allowed"},
		{"user ok", FuncUserTokens, "GET", map[string]string{"upn": "ada@contoso.example"}, nil, nil, 200, ""},
		{"user bad", FuncUserTokens, "GET", map[string]string{"upn": " ada"}, nil, nil, 400, "invalid-upn"},
		{"user unknown", FuncUserTokens, "GET", map[string]string{"upn": "x@contoso.example"}, nil, token.Errorf(token.KindNotFound, "no user"), 404, "not-found"},
		{"user method", FuncUserTokens, "DELETE", map[string]string{"upn": "x@contoso.example"}, nil, nil, 405, "method-not-allowed"},
		{"retire ok", FuncRetireToken, "DELETE", map[string]string{"serial": "a%2Fb"}, nil, nil, 200, ""},
		{"retire bad serial", FuncRetireToken, "DELETE", map[string]string{"serial": " x"}, nil, nil, 400, "invalid-serial"},
		{"retire unknown", FuncRetireToken, "DELETE", map[string]string{"serial": "x"}, nil, token.Errorf(token.KindNotFound, "no token"), 404, "not-found"},
		{"retire conflict", FuncRetireToken, "DELETE", map[string]string{"serial": "x"}, nil, token.Errorf(token.KindConflict, "two devices"), 409, "conflict"},
		{"retire method", FuncRetireToken, "GET", map[string]string{"serial": "x"}, nil, nil, 405, "method-not-allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &fakeLifecycle{err: tc.err}
			a := invoke(t, lifecycleServer(l), tc.function, queryPayload(tc.method, "https://x/api/whatever", tc.params, tc.query))
			res := a.res(t)
			var p Problem
			_ = json.Unmarshal([]byte(res.Body), &p)
			if a.Status != 200 || res.StatusCode != tc.want || p.Code != tc.code {
				t.Errorf("host %d res %d code %q, want %d %q: %s", a.Status, res.StatusCode, p.Code, tc.want, tc.code, res.Body)
			}
		})
	}
}

func TestTokenViewsPassTheRequestOn(t *testing.T) {
	l := &fakeLifecycle{}
	s := lifecycleServer(l)
	res := invoke(t, s, FuncTokens, queryPayload("GET", "https://x/api/tokens", nil,
		map[string]string{"Status": "failedactivation", "manufacturer": "Token2", "MODEL": "C202", "limit": "7", "continuation": "c1"})).res(t)
	if res.StatusCode != 200 || l.filter != (pipeline.TokenFilter{Status: "failedActivation", Manufacturer: "Token2", Model: "C202"}) || l.limit != 7 || l.cont != "c1" {
		t.Errorf("GET /api/tokens: %d %+v %d %q", res.StatusCode, l.filter, l.limit, l.cont)
	}
	var page pipeline.TokenPage
	if err := json.Unmarshal([]byte(res.Body), &page); err != nil || page.Continuation != "next" || len(page.Tokens) != 1 || !page.Tokens[0].SeedInVault {
		t.Errorf("body %s: %v", res.Body, err)
	}
	invoke(t, s, FuncRetireToken, queryPayload("DELETE", "https://x/api/tokens/a%2Fb", map[string]string{"serial": "a%2Fb"}, nil))
	if l.serial != "a/b" || l.caller != "function-key" {
		t.Errorf("retire got serial %q caller %q", l.serial, l.caller)
	}
	invoke(t, s, FuncUserTokens, queryPayload("GET", "https://x/api/users/ada@contoso.example/tokens", nil, nil))
	if l.user != "ada@contoso.example" {
		t.Errorf("user tokens got %q (from the URL path)", l.user)
	}
	// Without a Lifecycle the routes answer a problem, never a panic.
	res = invoke(t, New(Options{Pipeline: &fakePipeline{}}), FuncTokens, queryPayload("GET", "https://x/api/tokens", nil, nil)).res(t)
	if res.StatusCode != 500 {
		t.Errorf("no lifecycle: %d", res.StatusCode)
	}
}
