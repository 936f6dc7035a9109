package handlers

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// ctxPipeline records the ids the context of Provision carries.
type ctxPipeline struct {
	*fakePipeline
	ids string
}

func (c *ctxPipeline) Provision(ctx context.Context, m pipeline.ProvisionMessage, n int) (*pipeline.TokenOutcome, error) {
	c.ids = logctx.InvocationFrom(ctx) + " " + logctx.ImportFrom(ctx) + " " + logctx.SerialFrom(ctx)
	return c.fakePipeline.Provision(ctx, m, n)
}

// TestInvocationIDsInContextAndLog: the invocation id (from X-Azure-Functions-InvocationId),
// import id and serial reach the pipeline in the context, and every log line of the
// invocation carries each of them once.
func TestInvocationIDsInContextAndLog(t *testing.T) {
	p := &ctxPipeline{fakePipeline: &fakePipeline{}}
	s, logs := newTestServer(p, "")
	b, _ := json.Marshal(map[string]any{"Data": map[string]any{"job": `{"importId":"imp-1","serialNumber":"S1","line":3}`},
		"Metadata": map[string]any{"DequeueCount": "1", "Id": "m1"}})
	if a := invoke(t, s, FuncProvisionToken, b); a.Status != 200 {
		t.Fatalf("answer %d: %s", a.Status, a.Raw)
	}
	const inv = "00000000-0000-0000-0000-000000000001" // invoke's header
	if want := inv + " imp-1 S1"; p.ids != want {
		t.Errorf("Provision's context carries %q, want %q", p.ids, want)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatal("nothing logged")
	}
	for _, l := range lines {
		for k, v := range map[string]string{logctx.InvocationID: inv, logctx.ImportID: "imp-1", logctx.Serial: "S1"} {
			if n := strings.Count(l, `"`+k+`":"`+v+`"`); n != 1 {
				t.Errorf("%s appears %d times in %s", k, n, l)
			}
		}
	}
}
