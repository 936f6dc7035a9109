package pipeline_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
)

// deliver runs one delivery of the next waiting message the way the host does: a fresh message
// (a re-queued one is a new message) starts at dequeue count 1, a failed delivery is put back
// with its count raised. It returns the outcome, the error and the dequeue count it ran with.
func deliver(t *testing.T, ctx context.Context, p *pipeline.Pipeline, q *pipelinetest.MemQueue, counts map[string]int) (*pipeline.TokenOutcome, error, int) {
	t.Helper()
	text, ok := q.Take()
	if !ok {
		t.Fatal("no message waiting")
	}
	counts[text]++
	m := pipelinetest.DecodeMessage(t, text)
	// Each delivery gets a deadline shorter than Graph's Retry-After, as a function invocation
	// under a long throttle would: the 429 comes back instead of being waited out.
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	out, err := p.Provision(dctx, m, counts[text])
	if err != nil {
		q.Msgs = append(q.Msgs, text) // the host releases it for another delivery
	}
	return out, err, counts[text]
}

// TestThrottledTokenRequeued: a create still throttled after the SDK's retries (Retry-After 30 s
// outlasts the delivery's deadline) re-queues the token with a delay from Retry-After, answers
// success (the dequeue count is not spent: every delivery of the token runs at count 1), and
// the token ends activated once Graph lets the write through. The re-queued message carries the
// time of the first 429 and nothing of the host's.
func TestThrottledTokenRequeued(t *testing.T) {
	ctx := context.Background()
	s := testkit.NewStack(t, testkit.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, func(d *pipeline.Deps) { d.Requeue = q })
	ss := &testkit.SeedSet{}
	if _, err := p.Import(ctx, b.Upload("t.csv", testkit.EntraCSV([]testkit.Row{ss.Row("TH-1", ada)}))); err != nil {
		t.Fatal(err)
	}
	const throttles = 3
	s.Graph.Server.AddFault(graphstandin.Fault{Method: "POST", PathContains: "hardwareOathDevices", Status: http.StatusTooManyRequests, Count: throttles, RetryAfter: 30})

	counts := map[string]int{}
	var since time.Time
	for i := 0; i < throttles; i++ {
		out, err, dq := deliver(t, ctx, p, q, counts)
		if err != nil || !out.Requeued || out.Status != "" {
			t.Fatalf("throttled delivery %d: %+v %v (want re-queued, success)", i+1, out, err)
		}
		if dq != 1 {
			t.Errorf("throttled delivery %d ran at dequeue count %d, want 1", i+1, dq)
		}
		if out.RetryAfter < 30*time.Second || out.RetryAfter > 45*time.Second {
			t.Errorf("re-queued with delay %s, want Retry-After 30 s plus at most half of it", out.RetryAfter)
		}
		m := pipelinetest.DecodeMessage(t, q.Msgs[len(q.Msgs)-1])
		if m.Throttles != i+1 || m.ThrottledSince.IsZero() || (i > 0 && !m.ThrottledSince.Equal(since)) {
			t.Errorf("re-queued message %d: throttles %d, since %v (first %v)", i+1, m.Throttles, m.ThrottledSince, since)
		}
		since = m.ThrottledSince
	}
	if len(q.Delays) != throttles {
		t.Fatalf("%d delayed sends, want %d", len(q.Delays), throttles)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(q.Msgs[0]), &fields); err != nil {
		t.Fatal(err)
	}
	for f := range fields {
		for _, h := range []string{"Id", "DequeueCount", "PopReceipt", "sys", "InsertionTime", "NextVisibleTime"} {
			if strings.EqualFold(f, h) {
				t.Errorf("re-queued message field %q collides with the host's metadata", f)
			}
		}
	}
	out, err, _ := deliver(t, ctx, p, q, counts)
	if err != nil || out.Status != pipeline.StatusActivated {
		t.Fatalf("after the throttle: %+v %v", out, err)
	}
	d, ok := s.Graph.Server.DeviceBySerial("TH-1")
	if !ok || d.Status != "activated" || d.Activations != 1 || len(s.Graph.Server.Devices()) != 1 {
		t.Fatalf("device: %+v (of %d)", d, len(s.Graph.Server.Devices()))
	}
	if st := s.Graph.Server.Stats(); st.Writes != 2 {
		t.Errorf("%d writes, want 2 (create with assignTo, activate)", st.Writes)
	}
	if len(q.Msgs) != 0 {
		t.Errorf("%d messages left", len(q.Msgs))
	}
}

// TestThrottledPastTotalWait: a token throttled for longer than ThrottleMaxWait is recorded
// failed with that reason instead of being re-queued again.
func TestThrottledPastTotalWait(t *testing.T) {
	ctx := context.Background()
	s := testkit.NewStack(t, testkit.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, func(d *pipeline.Deps) { d.Requeue = q; d.ThrottleMaxWait = time.Hour })
	ss := &testkit.SeedSet{}
	imp, err := p.Import(ctx, b.Upload("t.csv", testkit.EntraCSV([]testkit.Row{ss.Row("TH-2", ada)})))
	if err != nil {
		t.Fatal(err)
	}
	s.Graph.Server.AddFault(graphstandin.Fault{Method: "POST", PathContains: "hardwareOathDevices", Status: http.StatusTooManyRequests, Count: 100, RetryAfter: 30})
	counts := map[string]int{}
	if out, err, _ := deliver(t, ctx, p, q, counts); err != nil || !out.Requeued {
		t.Fatalf("first throttle: %+v %v", out, err)
	}
	// The token has been throttled since 61 minutes ago (an hour's wait allowed).
	m := pipelinetest.DecodeMessage(t, q.Msgs[0])
	m.ThrottledSince = time.Now().Add(-61 * time.Minute)
	bm, _ := json.Marshal(m)
	q.Msgs[0] = string(bm)
	out, err, dq := deliver(t, ctx, p, q, counts)
	if err != nil || out.Requeued || out.Status != pipeline.StatusFailed || !strings.Contains(out.Reason, "still throttled after 1h0m0s") {
		t.Fatalf("past the total wait: %+v %v", out, err)
	}
	if dq != 1 {
		t.Errorf("dequeue count %d", dq)
	}
	row, err := l.GetToken(ctx, imp.ImportID, 2)
	if err != nil || row.Status != pipeline.StatusFailed || !strings.Contains(row.Reason, "OATHPIPE_THROTTLE_MAX_WAIT") {
		t.Fatalf("ledger row: %+v %v", row, err)
	}
	if len(q.Msgs) != 0 {
		t.Errorf("%d messages left", len(q.Msgs))
	}
}

// TestVaultThrottleRequeued: Key Vault's 429 on reading the seed (the vault client's own retries
// off) re-queues the token the same way; it ends activated.
func TestVaultThrottleRequeued(t *testing.T) {
	ctx := context.Background()
	s := testkit.NewStack(t, testkit.Options{VaultRetry: &policy.RetryOptions{MaxRetries: -1}})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	p := s.Pipeline(l, q, b, func(d *pipeline.Deps) { d.Requeue = q })
	ss := &testkit.SeedSet{}
	if _, err := p.Import(ctx, b.Upload("t.csv", testkit.EntraCSV([]testkit.Row{ss.Row("TH-3", ada)}))); err != nil {
		t.Fatal(err)
	}
	s.KV.Server.FailNext(2, http.StatusTooManyRequests)
	counts := map[string]int{}
	for i := 0; i < 2; i++ {
		if out, err, dq := deliver(t, ctx, p, q, counts); err != nil || !out.Requeued || dq != 1 || out.RetryAfter < time.Second {
			t.Fatalf("vault throttle %d: %+v %v (dequeue count %d)", i+1, out, err, dq)
		}
	}
	if out, err, _ := deliver(t, ctx, p, q, counts); err != nil || out.Status != pipeline.StatusActivated {
		t.Fatalf("after the vault throttle: %+v %v", out, err)
	}
}
