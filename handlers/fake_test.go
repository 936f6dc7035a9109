package handlers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// fakePipeline records what the handlers asked for and answers with canned results. The
// handlers' job is decoding and encoding, so the pipeline itself is out of scope here (its flows
// run end to end against Azurite and the stand-ins in shared/pipeline and cmd/oathpipe-dev).
type fakePipeline struct {
	mu sync.Mutex

	imported    []pipeline.ImportRequest
	parked      map[string][]byte // token-parked blobs by name
	parkErr     error
	provisioned []pipeline.ProvisionMessage
	dequeue     []int
	poisoned    []pipeline.ProvisionMessage
	reasons     []string
	assigns     []pipeline.AssignRequest
	unassigns   []string // serial + " by " + caller
	states      []string
	statuses    []string
	importIDs   []string

	err       error // returned by every method but RecordPoisoned when set
	recordErr error // returned by RecordPoisoned
	outcome   *pipeline.TokenOutcome
	panicky   bool
}

func (f *fakePipeline) ImportFromInbox(_ context.Context, r pipeline.ImportRequest) (*pipeline.ImportResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panicky {
		panic("boom JBSWY3DPEHPK3PXP")
	}
	f.imported = append(f.imported, r)
	if f.err != nil {
		return nil, f.err
	}
	return &pipeline.ImportResult{ImportID: pipeline.ImportID(r.Name, r.ETag), FileName: r.Name, Format: "entra-csv",
		Rows: 1, Valid: 1, Queued: 1, Disposition: "deleted"}, nil
}

// Park implements Parker.
func (f *fakePipeline) Park(_ context.Context, name string, content []byte, _ ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.parkErr != nil {
		return f.parkErr
	}
	if f.parked == nil {
		f.parked = map[string][]byte{}
	}
	f.parked[name] = append([]byte(nil), content...)
	return nil
}

func (f *fakePipeline) Provision(_ context.Context, m pipeline.ProvisionMessage, n int) (*pipeline.TokenOutcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.provisioned = append(f.provisioned, m)
	f.dequeue = append(f.dequeue, n)
	if f.err != nil {
		return nil, f.err
	}
	if f.outcome != nil {
		return f.outcome, nil
	}
	return &pipeline.TokenOutcome{ImportID: m.ImportID, Line: m.Line, SerialNumber: m.SerialNumber,
		UserPrincipalName: m.UserPrincipalName, Status: pipeline.StatusActivated}, nil
}

func (f *fakePipeline) RecordPoisoned(_ context.Context, m pipeline.ProvisionMessage, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.poisoned = append(f.poisoned, m)
	f.reasons = append(f.reasons, reason)
	return f.recordErr
}

func (f *fakePipeline) AssignToken(_ context.Context, r pipeline.AssignRequest) (*pipeline.Assignment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.assigns = append(f.assigns, r)
	if f.err != nil {
		return nil, f.err
	}
	with := ""
	if r.Activate {
		with = "seed"
		if r.VerificationCode != "" {
			with = "verificationCode"
		}
	}
	status := pipeline.StatusAssigned
	if with != "" {
		status = pipeline.StatusActivated
	}
	return &pipeline.Assignment{SerialNumber: r.Serial, UserPrincipalName: r.UserPrincipalName, Status: status,
		PreviousUserPrincipalName: "ada@contoso.com", Changed: true, ActivatedWith: with}, nil
}

func (f *fakePipeline) UnassignToken(_ context.Context, serial, caller string) (*pipeline.Assignment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unassigns = append(f.unassigns, serial+" by "+caller)
	if f.err != nil {
		return nil, f.err
	}
	return &pipeline.Assignment{SerialNumber: serial, Status: pipeline.StatusAvailable,
		PreviousUserPrincipalName: "ada@contoso.com", Changed: true}, nil
}

func (f *fakePipeline) TokenState(_ context.Context, serial string) (*pipeline.Assignment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = append(f.states, serial)
	if f.err != nil {
		return nil, f.err
	}
	yes := true
	return &pipeline.Assignment{SerialNumber: serial, UserPrincipalName: "ada@contoso.com", Status: pipeline.StatusActivated,
		Manufacturer: "Token2", Model: "c202", SeedInVault: &yes}, nil
}

func (f *fakePipeline) ImportStatus(_ context.Context, name string) (*pipeline.ImportStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses = append(f.statuses, name)
	if f.err != nil {
		return nil, f.err
	}
	return &pipeline.ImportStatus{ImportID: "imp-0123456789abcdef01234567", FileName: name, Stage: pipeline.StageDone,
		Format: "entra-csv", Rows: 1, Valid: 1, Settled: true, Counts: map[pipeline.RowStatus]int{pipeline.StatusActivated: 1},
		Disposition: "deleted", Tokens: []pipeline.TokenLine{{Line: 2, SerialNumber: "1000001", Status: pipeline.StatusActivated}}}, nil
}

func (f *fakePipeline) ImportStatusByID(ctx context.Context, name, id string) (*pipeline.ImportStatus, error) {
	st, err := f.ImportStatus(ctx, name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.importIDs = append(f.importIDs, id)
	f.mu.Unlock()
	st.ImportID = id
	return st, nil
}

// hostAnswer is the handler's answer to the host, decoded strictly enough to check the shape.
type hostAnswer struct {
	Status      int
	ContentType string
	Raw         string
	Outputs     map[string]json.RawMessage
	Logs        []string
	ReturnValue json.RawMessage
}

// invoke POSTs payload to /<function> the way the host does and decodes the answer.
func invoke(t testing.TB, h http.Handler, function string, payload []byte) hostAnswer {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/"+function, bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", "00000000-0000-0000-0000-000000000001")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := hostAnswer{Status: rec.Code, ContentType: rec.Header().Get("Content-Type"), Raw: rec.Body.String()}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s: answer is not JSON: %v\n%s", function, err, rec.Body.String())
	}
	for _, k := range []string{"Outputs", "Logs", "ReturnValue"} {
		if _, ok := body[k]; !ok {
			t.Errorf("%s: answer lacks %q: %s", function, k, rec.Body.String())
		}
	}
	if err := json.Unmarshal(body["Outputs"], &a.Outputs); err != nil || a.Outputs == nil {
		t.Errorf("%s: Outputs is not an object: %s", function, body["Outputs"])
	}
	if err := json.Unmarshal(body["Logs"], &a.Logs); err != nil || a.Logs == nil {
		t.Errorf("%s: Logs is not an array: %s", function, body["Logs"])
	}
	a.ReturnValue = body["ReturnValue"]
	return a
}

// res decodes Outputs.res of an HTTP function's answer.
func (a hostAnswer) res(t testing.TB) HTTPResponse {
	t.Helper()
	var r HTTPResponse
	if err := json.Unmarshal(a.Outputs["res"], &r); err != nil {
		t.Fatalf("Outputs.res: %v: %s", err, a.Raw)
	}
	return r
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "invocations", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// httpPayload builds an HTTP trigger invocation like the host's.
func httpPayload(method, url string, params map[string]string, headers map[string][]string, body any) []byte {
	if text, ok := body.(string); ok && text != "" {
		// What the host passes for a body a client sent with Content-Length (curl -d does):
		// the request's headers, and Body only when Content-Length > 0.
		h := map[string][]string{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(text))}}
		for k, v := range headers {
			h[k] = v
		}
		headers = h
	}
	req := map[string]any{"Url": url, "Method": method, "Query": map[string]string{}, "Headers": headers, "Params": params}
	if body != nil {
		req["Body"] = body
	}
	b, _ := json.Marshal(map[string]any{"Data": map[string]any{"req": req}, "Metadata": map[string]any{}})
	return b
}

// principal encodes an X-MS-CLIENT-PRINCIPAL header with the given name and roles.
func principal(name string, roles ...string) string {
	p := ClientPrincipal{AuthType: "aad", NameType: "preferred_username", RoleType: "roles"}
	p.Claims = append(p.Claims, Claim{Type: "preferred_username", Value: name})
	for _, r := range roles {
		p.Claims = append(p.Claims, Claim{Type: "roles", Value: r})
	}
	b, _ := json.Marshal(p)
	return base64.StdEncoding.EncodeToString(b)
}
