package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
)

// BenchmarkReconcile reconciles a tenant of OATHPIPE_BENCH_RECONCILE_TOKENS hardware tokens
// (default 5,000; docs/benchmarks.md has 50,000) against the Graph and Key Vault stand-ins with
// 20 ms latency per request: the inventory is read in pages of 999, half the tokens are held,
// each by a user of its own (the worst case for holder look-ups), one holder in 100 is disabled.
// It reports the time and the Graph reads per token. The ledger is in memory, to measure the
// Graph side (Azurite's table latency is not Azure's).
func BenchmarkReconcile(b *testing.B) {
	n := 5000
	if v := os.Getenv("OATHPIPE_BENCH_RECONCILE_TOKENS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("OATHPIPE_BENCH_RECONCILE_TOKENS=%q", v)
		}
	}
	ctx := context.Background()
	s := testkit.NewStack(b, testkit.Options{Latency: 20 * time.Millisecond, Quiet: true})
	var users []graphstandin.User
	devs := make([]graphstandin.DeviceState, n)
	for i := range devs {
		devs[i] = graphstandin.DeviceState{Serial: fmt.Sprintf("BR-%06d", i), Manufacturer: "Token2", Model: "C202"}
		if i%2 == 0 {
			u := graphstandin.User{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), UserPrincipalName: fmt.Sprintf("user%06d@contoso.example", i),
				DisplayName: "User", UserType: "Member", AccountEnabled: i%200 != 0}
			users = append(users, u)
			devs[i].AssignedUserID, devs[i].Status = u.ID, "activated"
		}
	}
	s.Graph.Server.AddUsers(users)
	s.Graph.Server.Preload(devs)
	p := s.Pipeline(pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs(), nil)
	l := pipeline.NewLifecycle(p, pipeline.LifecycleDeps{Inventory: s.Dir, Seeds: s.Vault, Concurrency: 16})
	b.ResetTimer()
	for range b.N {
		before := s.Graph.Server.Stats().Requests
		start := time.Now()
		rep, err := l.Reconcile(ctx, vaultCatalog{s.Vault}, pipeline.ReconcileOptions{Concurrency: 16})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Devices != n || rep.Counts[pipeline.FindingHeldByDisabled] != (n+199)/200 {
			b.Fatalf("report: %d devices, counts %v", rep.Devices, rep.Counts)
		}
		reads := s.Graph.Server.Stats().Requests - before
		b.ReportMetric(float64(reads)/float64(n), "graphReads/token")
		b.ReportMetric(time.Since(start).Seconds(), "s/reconcile")
	}
}
