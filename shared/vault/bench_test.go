package vault_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/shared/token"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// BenchmarkPut2000 stores 2,000 new seeds through the real azsecrets client against the
// stand-in with 20 ms latency and Key Vault's default limit (4,000 transactions per 10 s), with
// a bounded number of workers, and compares the wall time with the floor those limits set:
//
//	latency floor: each worker does ceil(2000/workers) puts of two round trips (GET, then SET),
//	               plus one round trip for the auth challenge;
//	rate floor:    (transactions - tokens in the bucket at the start) / 400 per second.
//
// "fresh" starts with a full bucket (an idle vault) and 16 workers (OATHPIPE_VAULT_CONCURRENCY's
// default), so latency sets the floor; "drained" starts with an empty bucket (the vault's
// allowance just used up by other work) and 64 workers, so the rate limit sets it and
// 429 + Retry-After is exercised at scale. The benchmark fails when the wall time exceeds 1.2x
// the floor. The client and stand-in spend about 0.2 ms of CPU per round trip, so on a busy
// machine many more workers than 16 make the fresh case CPU-bound rather than latency-bound.
func BenchmarkPut2000(b *testing.B) {
	const (
		n       = 2000
		latency = 20 * time.Millisecond
		rate    = 4000.0 / 10 // per second
	)
	cases := []struct {
		name    string
		workers int
		drained bool
	}{
		{"fresh/workers=16", 16, false},
		{"drained/workers=64", 64, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var wall, floor time.Duration
			var st kvstandin.Stats
			for range b.N {
				b.StopTimer()
				e := newEnv(b, envOptions{standin: kvstandin.Options{Latency: latency}})
				e.vault = quietVault(b, e)
				toks := make([]token.Token, n)
				seeds := make([]token.Seed, n)
				for i := range n {
					toks[i] = token.Token{Serial: fmt.Sprintf("86596120%05d", i), Manufacturer: "Token2", Model: "C202"}
					seeds[i] = seedOf(fmt.Sprintf("bench-seed-%09d", i))
				}
				startTokens := 4000.0
				if c.drained {
					e.kv.Server.DrainRate()
					startTokens = 0
				}
				b.StartTimer()
				start := time.Now()
				var wg sync.WaitGroup
				next := make(chan int)
				errs := make(chan error, c.workers)
				for range c.workers {
					wg.Go(func() {
						for i := range next {
							if o, err := e.vault.Put(ctx, toks[i], seeds[i], vault.PutOptions{ImportID: "bench"}); err != nil || o != vault.Created {
								errs <- fmt.Errorf("put %d: %v %v", i, o, err)
								return
							}
						}
					})
				}
				for i := range n {
					next <- i
				}
				close(next)
				wg.Wait()
				wall = time.Since(start)
				b.StopTimer()
				select {
				case err := <-errs:
					b.Fatal(err)
				default:
				}
				st = e.kv.Server.Stats()
				rounds := (n+c.workers-1)/c.workers*2 + 1
				latencyFloor := time.Duration(rounds) * latency
				rateFloor := time.Duration(max(0, float64(st.Transactions)-startTokens) / rate * float64(time.Second))
				floor = max(latencyFloor, rateFloor)
				e.kv.Close()
			}
			ratio := float64(wall) / float64(floor)
			b.ReportMetric(wall.Seconds(), "wall-s")
			b.ReportMetric(floor.Seconds(), "floor-s")
			b.ReportMetric(ratio, "x-floor")
			b.ReportMetric(float64(st.Transactions), "transactions")
			b.ReportMetric(float64(st.Throttled), "429s")
			b.ReportMetric(0, "ns/op")
			if ratio > 1.2 {
				b.Errorf("2,000 seeds took %v, %.2fx the floor of %v (limit 1.2x)", wall, ratio, floor)
			}
		})
	}
}

// quietVault is the env's vault without the per-seed log lines (2,000 of them per run).
func quietVault(tb testing.TB, e *env) *vault.Vault {
	tb.Helper()
	hc, err := azauthHTTPClient(e.caFile)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := vault.New(vault.Options{VaultURL: e.kv.URL, Credential: staticToken(), HTTPClient: hc, Logger: discardLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}
