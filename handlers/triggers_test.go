package handlers

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// fixtureSecret is the (test) seed inside the blob fixtures: it must never come back out.
const fixtureSecret = "JBSWY3DPEHPK3PXP"

func newTestServer(p Pipeline, role string) (*Server, *bytes.Buffer) {
	var logs bytes.Buffer
	o := Options{Pipeline: p, RequiredRole: role, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	if pk, ok := p.(Parker); ok {
		o.Parker = pk
	}
	return New(o), &logs
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
		fixture string
		want    pipeline.ImportRequest
	}{
		{"queue-eventgrid-blobcreated.json", pipeline.ImportRequest{Name: "batch 7/token2.csv", ETag: `"0x8DD0F1E2A3B4C5E"`}},
		{"queue-cloudevent-blobcreated.json", pipeline.ImportRequest{Name: "acme.csv", ETag: `"0x8DD0F1E2A3B4C5F"`}},
		{"queue-import-continuation.json", pipeline.ImportRequest{Name: "big/token2-1m.csv", ETag: `"0x8DD0F1E2A3B4C60"`,
			Continuation: true, ImportID: "imp-0123456789abcdef01234567", Part: 2}},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			fp := &fakePipeline{}
			s, logs := newTestServer(fp, "")
			a := invoke(t, s, FuncImportSeeds, fixture(t, tc.fixture))
			if a.Status != http.StatusOK || a.ContentType != "application/json" {
				t.Fatalf("answer %d %q, want 200 application/json: %s", a.Status, a.ContentType, a.Raw)
			}
			if len(fp.imported) != 1 || fp.imported[0] != tc.want {
				t.Fatalf("ImportFromInbox got %+v, want %+v", fp.imported, tc.want)
			}
			if len(a.Logs) == 0 || !strings.Contains(a.Logs[0], tc.want.Name) {
				t.Errorf("Logs %q do not name the file", a.Logs)
			}
			noSecret(t, a.Raw, logs.String())
		})
	}
}

// seedImports wraps a seed-imports message text as the host delivers it (Data.event encoded twice).
func seedImports(text string) []byte {
	enc, _ := json.Marshal(text)
	b, _ := json.Marshal(map[string]any{"Data": map[string]any{"event": string(enc)}, "Metadata": map[string]any{"DequeueCount": "1"}})
	return b
}

func TestImportSeedsEvents(t *testing.T) {
	grid := func(typ, subject, url string) string {
		b, _ := json.Marshal(map[string]any{"id": "e1", "eventType": typ, "subject": subject,
			"data": map[string]any{"url": url, "eTag": "0x1"}, "dataVersion": "", "metadataVersion": "1"})
		return string(b)
	}
	created := grid(BlobCreatedEvent, "/blobServices/default/containers/seed-inbox/blobs/dir/a.csv", "")
	for _, tc := range []struct {
		name  string
		text  string
		want  []string // blob names imported
		code  int
		inLog string
	}{
		{"blob created", created, []string{"dir/a.csv"}, 200, "dir/a.csv"},
		{"Base64-encoded message (lenient)", base64.StdEncoding.EncodeToString([]byte(created)), []string{"dir/a.csv"}, 200, ""},
		{"an array of events (lenient)", "[" + created + "," + grid(BlobCreatedEvent, "/blobServices/default/containers/seed-inbox/blobs/b.csv", "") + "]", []string{"dir/a.csv", "b.csv"}, 200, ""},
		{"name from the URL when the subject has none", grid(BlobCreatedEvent, "", "http://127.0.0.1:10000/devstoreaccount1/seed-inbox/x%20y.csv"), []string{"x y.csv"}, 200, ""},
		{"another event type is ignored", grid("Microsoft.Storage.BlobDeleted", "/blobServices/default/containers/seed-inbox/blobs/a.csv", ""), nil, 200, "BlobDeleted"},
		{"another container is ignored", grid(BlobCreatedEvent, "/blobServices/default/containers/seed-reports/blobs/a.csv.json", ""), nil, 200, "outside"},
		{"not an event", `{"hello":"world"}`, nil, 500, ""},
		{"not JSON", "%%%", nil, 500, ""},
		{"continuation without its ETag", `{"oathpipe":"import-continuation","blobName":"a.csv"}`, nil, 500, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := &fakePipeline{}
			s, _ := newTestServer(fp, "")
			a := invoke(t, s, FuncImportSeeds, seedImports(tc.text))
			if a.Status != tc.code {
				t.Fatalf("answer %d, want %d: %s", a.Status, tc.code, a.Raw)
			}
			var got []string
			for _, r := range fp.imported {
				got = append(got, r.Name)
				if r.ETag != `"0x1"` {
					t.Errorf("ETag %q, want the event's, quoted", r.ETag)
				}
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("imported %q, want %q", got, tc.want)
			}
			if tc.inLog != "" && !strings.Contains(strings.Join(a.Logs, "\n"), tc.inLog) {
				t.Errorf("Logs %q lack %q", a.Logs, tc.inLog)
			}
		})
	}
}

func TestImportSeedsRetryVersusDone(t *testing.T) {
	ev := fixture(t, "queue-eventgrid-blobcreated.json")
	for _, tc := range []struct {
		name    string
		payload []byte
		err     error
		panicky bool
		want    int
	}{
		{"imported", ev, nil, false, 200},
		{"transient failure retried", ev, &token.Error{Kind: token.KindTransient, Message: "vault unavailable"}, false, 500},
		{"throttled retried", ev, &token.Error{Kind: token.KindThrottled, Message: "429"}, false, 500},
		{"no ETag refused and retried", ev, &token.Error{Kind: token.KindInvalid, Message: "no ETag"}, false, 500},
		{"panic answered 500 without leaking", ev, nil, true, 500},
		{"no message", []byte(`{"Data":{},"Metadata":{}}`), nil, false, 500},
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
	}{{"lenient-queue-plain.json", 1}, {"queue-double-encoded.json", 3}} {
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
		{"throttled token re-queued by the pipeline answers 200", payload(msg), &fakePipeline{outcome: &pipeline.TokenOutcome{SerialNumber: "S1", Requeued: true, RetryAfter: 30 * time.Second}}, 200, 1},
		{"base64 message accepted", payload("eyJpbXBvcnRJZCI6ImltcC0xIiwic2VyaWFsTnVtYmVyIjoiUzEifQ=="), &fakePipeline{}, 200, 1},
		{"message as JSON object accepted", []byte(`{"Data":{"job":` + msg + `},"Metadata":{}}`), &fakePipeline{}, 200, 1},
		{"undecodable message parked", payload("not json"), &fakePipeline{}, 200, 0},
		{"message without serial parked", payload(`{"importId":"imp-1"}`), &fakePipeline{}, 200, 0},
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
			// A message that cannot be provisioned is never dropped: it is parked for an operator.
			if wantParked := tc.calls == 0; (len(tc.p.parked) == 1) != wantParked {
				t.Errorf("parked %v, want parked=%v", tc.p.parked, wantParked)
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
	for _, f := range []string{"lenient-poison-plain.json", "poison-double-encoded.json"} {
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
			if len(fp.parked) != 0 {
				t.Errorf("parked %v although recording worked", fp.parked)
			}
		})
	}
}

// TestProvisionFailedParks: the host gives token-provisioning-poison no poison queue, so a
// message still unrecorded on its last delivery is parked in token-parked and answered 200.
func TestProvisionFailedParks(t *testing.T) {
	payload := func(dq int) []byte {
		b := fixture(t, "poison-double-encoded.json")
		var m map[string]map[string]any
		_ = json.Unmarshal(b, &m)
		m["Metadata"]["DequeueCount"] = strconv.Itoa(dq)
		out, _ := json.Marshal(m)
		return out
	}
	down := &token.Error{Kind: token.KindTransient, Message: "table unavailable"}
	for _, tc := range []struct {
		name    string
		dq      int
		parkErr error
		code    int
		parked  bool
	}{
		{"recording fails before the last delivery: retried", 4, nil, 500, false},
		{"recording fails on the last delivery: parked", 5, nil, 200, true},
		{"past the last delivery: parked", 6, nil, 200, true},
		{"parking fails too: retried", 5, down, 500, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := &fakePipeline{recordErr: down, parkErr: tc.parkErr}
			s, _ := newTestServer(fp, "")
			a := invoke(t, s, FuncProvisionFailed, payload(tc.dq))
			if a.Status != tc.code {
				t.Fatalf("answer %d, want %d: %s", a.Status, tc.code, a.Raw)
			}
			body, ok := fp.parked["imp-0123456789abcdef01234567/0000000002.json"]
			if ok != tc.parked {
				t.Fatalf("parked %v, want %v", fp.parked, tc.parked)
			}
			if ok && !strings.Contains(string(body), `"serialNumber"`) {
				t.Errorf("parked blob is not the message: %s", body)
			}
		})
	}
	t.Run("undecodable: parked at once", func(t *testing.T) {
		fp := &fakePipeline{}
		s, _ := newTestServer(fp, "")
		a := invoke(t, s, FuncProvisionFailed, []byte(`{"Data":{"job":"\"not json\""},"Metadata":{"DequeueCount":"1"}}`))
		if a.Status != 200 || len(fp.parked) != 1 {
			t.Fatalf("answer %d, parked %v", a.Status, fp.parked)
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

// TestMessageFieldsAvoidHostMetadata: the host copies a queue message's top-level fields into
// Metadata over its own keys (Utility.ApplyBindingData; compared without case here, the least
// convenient reading), so no message oathpipe writes may use a name the host sets.
func TestMessageFieldsAvoidHostMetadata(t *testing.T) {
	host := []string{"Id", "DequeueCount", "PopReceipt", "InsertionTime", "ExpirationTime", "NextVisibleTime", "QueueTrigger", "sys", "RetryContext"}
	// A re-queued throttled token's message carries its optional fields set (omitempty hides them in a zero value).
	requeued := pipeline.ProvisionMessage{ImportID: "i", Line: 2, SerialNumber: "s", ThrottledSince: time.Now(), Throttles: 1}
	for _, v := range []any{pipeline.ProvisionMessage{}, requeued, pipeline.ImportContinuation{}} {
		b, _ := json.Marshal(v)
		var fields map[string]any
		_ = json.Unmarshal(b, &fields)
		for f := range fields {
			for _, h := range host {
				if strings.EqualFold(f, h) {
					t.Errorf("%T field %q collides with the host's Metadata.%s", v, f, h)
				}
			}
		}
	}
}
