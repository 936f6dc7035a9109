package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// Benchmark conditions of issue 5: 20 ms latency on every Key Vault and Graph request, Graph
// writes limited to 200 per second, Key Vault at its default limit (4,000 per 10 s).
const (
	benchLatency   = 20 * time.Millisecond
	benchGraphRate = 200
)

// benchUsers makes n directory users (a user holds at most 5 tokens).
func benchUsers(n int) []graphstandin.User {
	users := make([]graphstandin.User, n)
	for i := range users {
		users[i] = graphstandin.User{
			ID:                fmt.Sprintf("%08x-0000-4000-8000-%012x", i+1, i+1),
			UserPrincipalName: fmt.Sprintf("user%04d@contoso.example", i+1),
			DisplayName:       fmt.Sprintf("User %d", i+1),
			UserType:          "Member", AccountEnabled: true,
		}
	}
	return users
}

// BenchmarkEndToEnd imports a file and provisions every token through the Azurite queue, the
// way the Functions host runs it: "parallel" with 64 queue workers (about three instances at
// the host's default 16+8 messages each) and 16 concurrent vault writes, "one-at-a-time" with
// one of each. It reports the wall time per import and its ratio to the floor set by Graph's
// write limit: (writes − the bucket's initial burst) / rate.
func BenchmarkEndToEnd(b *testing.B) {
	for _, c := range []struct {
		name                       string
		tokens, workers, vaultConc int
	}{
		{"parallel-1000", 1000, 64, 16},
		{"one-at-a-time-50", 50, 1, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			a := storageAccount(b)
			var wall time.Duration
			var writes, throttled int64
			for i := range b.N {
				s := testkit.NewStack(b, testkit.Options{Latency: benchLatency, GraphRate: benchGraphRate, Users: benchUsers(c.tokens/4 + 1)})
				p := s.Pipeline(a.Ledger, a.Provision, a.Blobs, func(d *pipeline.Deps) { d.VaultConcurrency = c.vaultConc })
				ss := &testkit.SeedSet{}
				rows := make([]testkit.Row, c.tokens)
				for j := range rows {
					rows[j] = ss.Row(fmt.Sprintf("B%s-%d-%06d", c.name[:1], i, j), fmt.Sprintf("user%04d@contoso.example", j/4+1))
				}
				name := fmt.Sprintf("bench/%s-%d-%d.csv", c.name, i, time.Now().UnixNano())
				etag, err := a.PutInbox(ctx, name, testkit.EntraCSV(rows), nil)
				if err != nil {
					b.Fatal(err)
				}
				f, err := a.Blobs.ReadInbox(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				id := pipeline.ImportID(name, etag)
				h := &host{p: p, q: a.ProvisionClient, workers: c.workers}

				start := time.Now()
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); h.drain(b, ctx, settled(ctx, a.Ledger, id)) }()
				res, err := p.Import(ctx, f)
				if err != nil {
					b.Fatalf("import: %v", err)
				}
				wg.Wait()
				wall += time.Since(start)

				st, err := p.ImportStatus(ctx, name)
				if err != nil || st.Counts[pipeline.StatusActivated] != c.tokens || res.Queued != c.tokens {
					b.Fatalf("not every token activated: %v %v", st.Counts, err)
				}
				gs := s.Graph.Server.Stats()
				writes += gs.Writes
				throttled += gs.Throttled
				if lk := ss.Leaks("logs", s.Logs.String()); len(lk) > 0 {
					b.Fatalf("seed leaked: %s", strings.Join(lk, "; "))
				}
			}
			n := float64(b.N)
			perImport := wall.Seconds() / n
			floor := (float64(writes)/n - benchGraphRate) / benchGraphRate
			b.ReportMetric(perImport, "s/import")
			b.ReportMetric(perImport/float64(c.tokens)*1000, "ms/token")
			b.ReportMetric(float64(writes)/n, "graph-writes/import")
			b.ReportMetric(float64(throttled)/n, "graph-429s/import")
			if c.workers > 1 {
				b.ReportMetric(floor, "floor-s")
				b.ReportMetric(perImport/floor, "x-floor")
			}
		})
	}
}
