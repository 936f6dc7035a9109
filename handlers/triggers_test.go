package handlers

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// fixtureSecret is the (test) seed inside the blob fixtures: it must never come back out.
const fixtureSecret = "JBSWY3DPEHPK3PXP"

func newTestServer(p Pipeline, role string) (*Server, *bytes.Buffer) {
	var logs bytes.Buffer
	return New(Options{Pipeline: p, RequiredRole: role, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}), &logs
}

func TestReadinessPing(t *testing.T) {
	s, _ := newTestServer(&fakePipeline{}, "")
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(m, "/", nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s / = %d, want 200", m, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/NoSuchFunction", strings.NewReader("{}")))
	if rec.Code != http.StatusNotFound {
		t.Errorf("POST /NoSuchFunction = %d, want 404", rec.Code)
	}
}

func TestImportSeedsFixtures(t *testing.T) {
	for _, tc := range []struct {
		fixture, name, etag string
		metadata            map[string]string
	}{
		{"blob-plain.json", "token2-2026-11.csv", `"0x8DD0F1E2A3B4C5D"`, map[string]string{"format": "entra-csv", "uploadedBy": "vendor-portal"}},
		{"blob-double-encoded.json", "batch 7/token2.csv", `"0x8DD0F1E2A3B4C5E"`, map[string]string{}},
		{"blob-uri-only.json", "azurite.csv", `"0x8DD0F1E2A3B4C5F"`, nil},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			fp := &fakePipeline{}
			s, logs := newTestServer(fp, "")
			a := invoke(t, s, FuncImportSeeds, fixture(t, tc.fixture))
			if a.Status != http.StatusOK || a.ContentType != "application/json" {
				t.Fatalf("answer %d %q, want 200 application/json: %s", a.Status, a.ContentType, a.Raw)
			}
			if len(fp.imported) != 1 {
				t.Fatalf("Import called %d times", len(fp.imported))
			}
			f := fp.imported[0]
			if f.Name != tc.name || f.ETag != tc.etag {
				t.Errorf("InboxFile name %q etag %q, want %q %q", f.Name, f.ETag, tc.name, tc.etag)
			}
			if !bytes.Contains(f.Content, []byte("serial number")) {
				t.Errorf("content not decoded from base64: %q", f.Content)
			}
			if len(f.Metadata) != len(tc.metadata) {
				t.Errorf("metadata %v, want %v", f.Metadata, tc.metadata)
			}
			for k, v := range tc.metadata {
				if f.Metadata[k] != v {
					t.Errorf("metadata[%s] = %q, want %q", k, f.Metadata[k], v)
				}
			}
			if len(a.Logs) == 0 || !strings.Contains(a.Logs[0], tc.name) {
				t.Errorf("Logs %q do not name the file", a.Logs)
			}
			noSecret(t, a.Raw, logs.String())
		})
	}
}

func TestImportSeedsRetryVersusDone(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
		err     error
		panicky bool
		want    int
	}{
		{"imported", fixture(t, "blob-plain.json"), nil, false, 200},
		{"transient failure retried", fixture(t, "blob-plain.json"), &token.Error{Kind: token.KindTransient, Message: "vault unavailable"}, false, 500},
		{"throttled retried", fixture(t, "blob-plain.json"), &token.Error{Kind: token.KindThrottled, Message: "429"}, false, 500},
		{"panic answered 500 without leaking", fixture(t, "blob-plain.json"), nil, true, 500},
		{"no content", []byte(`{"Data":{},"Metadata":{"name":"a.csv"}}`), nil, false, 500},
		{"content not base64", []byte(`{"Data":{"seedFile":"%%%"},"Metadata":{"name":"a.csv"}}`), nil, false, 500},
		{"no name anywhere", []byte(`{"Data":{"seedFile":"YQ=="},"Metadata":{}}`), nil, false, 500},
		{"not JSON", []byte(`<xml/>`), nil, false, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := newTestServer(&fakePipeline{err: tc.err, panicky: tc.panicky}, "")
			a := invoke(t, s, FuncImportSeeds, tc.payload)
			if a.Status != tc.want || a.ContentType != "application/json" {
				t.Errorf("answer %d %q, want %d application/json: %s", a.Status, a.ContentType, tc.want, a.Raw)
			}
			noSecret(t, a.Raw, logs.String())
		})
	}
}

func TestProvisionTokenFixtures(t *testing.T) {
	want := pipeline.ProvisionMessage{ImportID: "imp-0123456789abcdef01234567", FileName: "token2-2026-11.csv", Line: 2,
		SerialNumber: "1000001", Manufacturer: "Token2", UserPrincipalName: "ada@contoso.com"}
	for _, tc := range []struct {
		fixture string
		dq      int
	}{{"queue-plain.json", 1}, {"queue-double-encoded.json", 3}} {
		t.Run(tc.fixture, func(t *testing.T) {
			fp := &fakePipeline{}
			s, _ := newTestServer(fp, "")
			a := invoke(t, s, FuncProvisionToken, fixture(t, tc.fixture))
			if a.Status != http.StatusOK || a.ContentType != "application/json" {
				t.Fatalf("answer %d %q: %s", a.Status, a.ContentType, a.Raw)
			}
			if len(fp.provisioned) != 1 || fp.provisioned[0] != want || fp.dequeue[0] != tc.dq {
				t.Errorf("Provision got %+v dequeue %v, want %+v %d", fp.provisioned, fp.dequeue, want, tc.dq)
			}
		})
	}
}

func TestProvisionTokenRetryVersusPermanent(t *testing.T) {
	msg := `{"importId":"imp-1","serialNumber":"S1","line":3}`
	payload := func(data string) []byte {
		b, _ := json.Marshal(map[string]any{"Data": map[string]any{"job": data}, "Metadata": map[string]any{"DequeueCount": "2", "Id": "m1"}})
		return b
	}
	for _, tc := range []struct {
		name    string
		payload []byte
		p       *fakePipeline
		want    int
		calls   int
	}{
		{"activated", payload(msg), &fakePipeline{}, 200, 1},
		{"permanent failure recorded", payload(msg), &fakePipeline{outcome: &pipeline.TokenOutcome{SerialNumber: "S1", Status: pipeline.StatusFailed, Reason: "guest user"}}, 200, 1},
		{"transient failure retried", payload(msg), &fakePipeline{err: &token.Error{Kind: token.KindTransient, Message: "graph 503", RequestID: "rq-1"}}, 500, 1},
		{"throttled retried", payload(msg), &fakePipeline{err: &token.Error{Kind: token.KindThrottled, Message: "graph 429"}}, 500, 1},
		{"base64 message accepted", payload("eyJpbXBvcnRJZCI6ImltcC0xIiwic2VyaWFsTnVtYmVyIjoiUzEifQ=="), &fakePipeline{}, 200, 1},
		{"message as JSON object accepted", []byte(`{"Data":{"job":` + msg + `},"Metadata":{}}`), &fakePipeline{}, 200, 1},
		{"undecodable message dropped", payload("not json"), &fakePipeline{}, 200, 0},
		{"message without serial dropped", payload(`{"importId":"imp-1"}`), &fakePipeline{}, 200, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(tc.p, "")
			a := invoke(t, s, FuncProvisionToken, tc.payload)
			if a.Status != tc.want || a.ContentType != "application/json" {
				t.Errorf("answer %d %q, want %d: %s", a.Status, a.ContentType, tc.want, a.Raw)
			}
			if len(tc.p.provisioned) != tc.calls {
				t.Errorf("Provision called %d times, want %d", len(tc.p.provisioned), tc.calls)
			}
		})
	}
}

// TestProvisionTokenLastDelivery: on the host's last delivery a retryable failure is recorded
// with its error (the poison queue would lose it) and answered 200; if recording fails too, 500
// lets the host move the message to the poison queue.
func TestProvisionTokenLastDelivery(t *testing.T) {
	graph503 := &token.Error{Kind: token.KindTransient, Message: "graph answered 503", RequestID: "rq-7"}
	payload := func(dq int) []byte {
		b, _ := json.Marshal(map[string]any{"Data": map[string]any{"job": `{"importId":"imp-1","serialNumber":"S1","line":3}`},
			"Metadata": map[string]any{"DequeueCount": dq}})
		return b
	}
	for _, tc := range []struct {
		name      string
		dq        int
		recordErr error
		want      int
		recorded  bool
	}{
		{"not yet the last delivery", DefaultMaxDequeue - 1, nil, 500, false},
		{"last delivery recorded", DefaultMaxDequeue, nil, 200, true},
		{"last delivery, recording fails", DefaultMaxDequeue, token.Errorf(token.KindTransient, "table down"), 500, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := &fakePipeline{err: graph503, recordErr: tc.recordErr}
			s, _ := newTestServer(fp, "")
			a := invoke(t, s, FuncProvisionToken, payload(tc.dq))
			if a.Status != tc.want {
				t.Errorf("answer %d, want %d: %s", a.Status, tc.want, a.Raw)
			}
			if got := len(fp.poisoned) == 1; got != tc.recorded {
				t.Fatalf("RecordPoisoned called: %v, want %v", got, tc.recorded)
			}
			if tc.recorded && !strings.Contains(fp.reasons[0], "graph answered 503") {
				t.Errorf("reason %q lacks the last error", fp.reasons[0])
			}
		})
	}
}

func TestProvisionFailedFixtures(t *testing.T) {
	for _, f := range []string{"poison-plain.json", "poison-double-encoded.json"} {
		t.Run(f, func(t *testing.T) {
			fp := &fakePipeline{}
			s, _ := newTestServer(fp, "")
			a := invoke(t, s, FuncProvisionFailed, fixture(t, f))
			if a.Status != http.StatusOK {
				t.Fatalf("answer %d: %s", a.Status, a.Raw)
			}
			if len(fp.poisoned) != 1 || fp.poisoned[0].SerialNumber != "1000001" || fp.poisoned[0].Line != 2 {
				t.Fatalf("RecordPoisoned got %+v", fp.poisoned)
			}
			if !strings.Contains(fp.reasons[0], "5 deliveries") {
				t.Errorf("reason %q does not say why", fp.reasons[0])
			}
		})
	}
	t.Run("recording fails: retried", func(t *testing.T) {
		s, _ := newTestServer(&fakePipeline{recordErr: &token.Error{Kind: token.KindTransient, Message: "table unavailable"}}, "")
		if a := invoke(t, s, FuncProvisionFailed, fixture(t, "poison-plain.json")); a.Status != 500 {
			t.Errorf("answer %d, want 500", a.Status)
		}
	})
}

// noSecret fails when the fixture's seed shows up in an answer or a log.
func noSecret(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, fixtureSecret) {
			t.Errorf("a seed leaked: %s", s)
		}
	}
}
