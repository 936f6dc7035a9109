package entra

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Benchmark settings: 600 tokens, 40 ms latency, Graph's 3,000 writes per 150 s sped up 10×
// (200 writes/s). Each token costs 3 writes (create, assign, activate), so the write limit sets
// a floor of 600 × 3 ÷ 200 = 9 s.
const (
	benchTokens    = 600
	benchLatency   = 40 * time.Millisecond
	benchTimeScale = 10
	writesPerToken = 3
)

func benchUsers(n int) []graphstandin.User {
	users := make([]graphstandin.User, n)
	for i := range users {
		users[i] = graphstandin.User{
			ID:                fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			UserPrincipalName: fmt.Sprintf("user%04d@contoso.example", i),
			DisplayName:       fmt.Sprintf("User %d", i),
			UserType:          "Member",
			AccountEnabled:    true,
		}
	}
	return users
}

// provisionOne does what ProvisionToken does for token i, retrying transient failures the way
// the queue would redeliver the message. It returns how many times it had to start over.
func provisionOne(ctx context.Context, c *Client, i int) (int, error) {
	serial := fmt.Sprintf("B%06d", i)
	upn := fmt.Sprintf("user%04d@contoso.example", i)
	seed := seedFor(serial, 30, token.SHA1)
	for redeliveries := 0; ; redeliveries++ {
		err := func() error {
			u, err := c.ResolveUser(ctx, upn)
			if err != nil {
				return err
			}
			d, _, err := c.EnsureDevice(ctx, tok(serial), seed)
			if err != nil {
				return err
			}
			mid, err := c.Assign(ctx, u.ID, d.ID)
			if err != nil {
				return err
			}
			return activate(c, ctx, u.ID, mid, seed)
		}()
		if err == nil || !token.IsTransient(err) || redeliveries >= 10 {
			return redeliveries, err
		}
		time.Sleep(max(token.RetryAfterOf(err), time.Second))
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkProvision provisions (create + assign + activate) tokens against the stand-in with
// 40 ms latency and a 200 writes/s limit: "concurrent" runs 600 tokens with
// OATHPIPE_BENCH_WORKERS in flight (default 48); "one-at-a-time" does what the vendor scripts
// do, on OATHPIPE_BENCH_SEQUENTIAL tokens (default 60; set 600 for the full run).
func BenchmarkProvision(b *testing.B) {
	b.Run("concurrent", func(b *testing.B) {
		benchProvision(b, benchTokens, envInt("OATHPIPE_BENCH_WORKERS", 48))
	})
	b.Run("one-at-a-time", func(b *testing.B) {
		benchProvision(b, envInt("OATHPIPE_BENCH_SEQUENTIAL", 60), 1)
	})
}

func benchProvision(b *testing.B, n, workers int) {
	for range b.N {
		b.StopTimer()
		e := start(b, graphstandin.Options{
			Users:     benchUsers(n),
			Latency:   benchLatency,
			TimeScale: benchTimeScale, // default 3,000 per 150 s → 200 writes/s
		}, Options{})
		ctx := context.Background()
		var next, redeliveries atomic.Int64
		var failed []error
		var mu sync.Mutex
		b.StartTimer()
		began := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					r, err := provisionOne(ctx, e.c, i)
					redeliveries.Add(int64(r))
					if err != nil {
						mu.Lock()
						failed = append(failed, err)
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		wall := time.Since(began)
		b.StopTimer()

		if len(failed) > 0 {
			b.Fatalf("%d tokens failed, first: %v", len(failed), failed[0])
		}
		// Zero lost, zero duplicated: n devices, each activated and held by its own user only.
		devs := e.gs.Devices()
		if len(devs) != n {
			b.Fatalf("%d devices, want %d", len(devs), n)
		}
		for _, d := range devs {
			var i int
			if _, err := fmt.Sscanf(d.Serial, "B%06d", &i); err != nil || d.Status != "activated" ||
				d.AssignedUPN != fmt.Sprintf("user%04d@contoso.example", i) || d.Activations != 1 {
				b.Fatalf("device %+v", d)
			}
			if ms := e.gs.UserMethods(d.AssignedUPN); len(ms) != 1 {
				b.Fatalf("%s holds %d tokens", d.AssignedUPN, len(ms))
			}
		}
		st := e.gs.Stats()
		rate := 3000.0 / 150 * benchTimeScale
		floor := time.Duration(float64(n*writesPerToken) / rate * float64(time.Second))
		b.ReportMetric(wall.Seconds(), "wall-s")
		b.ReportMetric(floor.Seconds(), "floor-s")
		b.ReportMetric(wall.Seconds()/floor.Seconds(), "x-floor")
		b.ReportMetric(float64(n)/wall.Seconds(), "tokens/s")
		b.ReportMetric(float64(st.Throttled), "429s")
		b.ReportMetric(float64(redeliveries.Load()), "redeliveries")
		if workers == 1 {
			b.ReportMetric(wall.Seconds()/float64(n)*benchTokens, "s-per-600")
		}
		b.Logf("%d tokens, %d workers: %v (floor %v, %.2f×), %d writes, %d 429s, %d requests, %d redeliveries",
			n, workers, wall.Round(time.Millisecond), floor, wall.Seconds()/floor.Seconds(), st.Writes, st.Throttled, st.Requests, redeliveries.Load())
	}
}
