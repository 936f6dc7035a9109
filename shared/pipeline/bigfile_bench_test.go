package pipeline_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/storage"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// countQueue counts provisioning messages and keeps none: the benchmark measures the import,
// not a million messages held in memory (the Azurite queue path is measured by EndToEnd).
type countQueue struct{ n atomic.Int64 }

func (q *countQueue) Enqueue(_ context.Context, msgs []pipeline.ProvisionMessage) error {
	q.n.Add(int64(len(msgs)))
	return nil
}

// BenchmarkImportBigFile imports one generated Entra CSV of OATHPIPE_BENCH_ROWS rows (default
// 20,000, so `make bench` stays short; 1000000 for the figure in docs/benchmarks.md, about
// 62 MB) through ImportFromInbox: the blob on Azurite, the seeds in the Key Vault stand-in run
// out of process (internal/kvstandin/cmd/kvstandin, latency and rate limit off) so its million
// secrets do not count in this process's memory, in parts of 5-minute budgets handed on through
// continuations. The ledger is the in-memory fake in its compact form,
// pipelinetest.NewStatusOnlyLedger (one byte of status a row: Azurite's table slows down
// superlinearly with the entities of one partition); with
// OATHPIPE_BENCH_LEDGER=azurite it is the real ledger on Azurite (small row counts only).
//
// It reports the wall time, the parts, and two memory figures of this process during the
// import only (the file is generated and uploaded streaming, before): peak-RSS-MB, the peak
// resident set (VmHWM, reset through /proc/self/clear_refs just before the import), and the Go
// heap sampled every 20 ms: peak-heap-MB in use (garbage not yet swept included), peak-live-MB
// live (reachable at the last GC). reader-live-MB is the seed reader alone over the same stream,
// beyond-reader-MB the import's live heap beyond it.
func BenchmarkImportBigFile(b *testing.B) {
	rows := 20_000
	if v := os.Getenv("OATHPIPE_BENCH_ROWS"); v != "" {
		var err error
		if rows, err = strconv.Atoi(v); err != nil || rows < 1 {
			b.Fatalf("OATHPIPE_BENCH_ROWS=%q: want a row count", v)
		}
	}
	ctx := context.Background()
	a := storageAccount(b)
	kv := startKVProcess(b)
	for i := range b.N {
		q := &countQueue{}
		cq := &contQueue{}
		var l pipeline.Ledger = pipelinetest.NewStatusOnlyLedger()
		if os.Getenv("OATHPIPE_BENCH_LEDGER") == "azurite" {
			l = a.Ledger
		}
		p := pipeline.New(pipeline.Deps{
			Vault: kv, Ledger: l, Queue: q, Blobs: a.Blobs, Inbox: a.Blobs, Imports: cq,
			ImportBudget: 5 * time.Minute, VaultConcurrency: 16,
		})
		name := fmt.Sprintf("bench/big-%d-%d.csv", i, time.Now().UnixNano())
		gen := &generated{rows: rows, run: i}
		if _, err := a.Blobs.PutInboxStream(ctx, name, gen.reader(), nil); err != nil {
			b.Fatal(err)
		}
		// The baseline: the seed reader alone over the same stream. Its duplicate indexes (two
		// maps of 64-bit hashes of every serial and seed) are the one part of the import's memory
		// that grows with the file; the rest must not.
		reader := readerOnlyHeap(b, ctx, a, name)
		runtime.GC()
		resetPeakRSS()
		peakHeap := sampleHeap()
		start := time.Now()
		req := pipeline.ImportRequest{Name: name}
		parts := 0
		for {
			parts++
			res, err := p.ImportFromInbox(ctx, req)
			if err != nil {
				b.Fatalf("part %d: %v", parts, err)
			}
			if !res.Continued {
				if res.Disposition != pipeline.DispositionDeleted || res.Rows != rows {
					b.Fatalf("import %+v", res)
				}
				break
			}
			c, _ := cq.take()
			req = pipeline.ImportRequest{Name: c.BlobName, ETag: c.BlobETag, Continuation: true, ImportID: c.ImportID, Part: c.Part}
		}
		wall := time.Since(start)
		heap := peakHeap()
		rss := peakRSS()
		if n := q.n.Load(); n != int64(rows) {
			b.Fatalf("%d messages queued; want %d", n, rows)
		}
		b.ReportMetric(wall.Seconds(), "s/import")
		b.ReportMetric(float64(parts), "parts")
		b.ReportMetric(float64(gen.size.Load())/1e6, "file-MB")
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MB")
		mb := func(n uint64) float64 { return float64(n) / (1 << 20) }
		b.ReportMetric(mb(heap.inUse), "peak-heap-MB")
		b.ReportMetric(mb(heap.live), "peak-live-MB")
		b.ReportMetric(mb(reader.live), "reader-live-MB")
		b.ReportMetric(mb(heap.live)-mb(reader.live), "beyond-reader-MB")
		b.Logf("%d rows, %.1f MB, %v, %d parts, peak RSS %.0f MB, peak Go heap in use %.0f MB, live %.1f MB "+
			"(the seed reader alone: in use %.0f MB, live %.1f MB)", rows, float64(gen.size.Load())/1e6,
			wall.Round(time.Millisecond), parts, mb(uint64(rss)), mb(heap.inUse), mb(heap.live), mb(reader.inUse), mb(reader.live))
	}
}

// generated streams an Entra CSV of rows fresh seeds without holding it.
type generated struct {
	rows, run int
	size      atomic.Int64
}

func (g *generated) reader() io.Reader {
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriterSize(pw, 1<<20)
		n, _ := w.WriteString("upn,serial number,secret key,time interval,manufacturer,model\n")
		total := int64(n)
		secret := make([]byte, 20)
		for j := range g.rows {
			_, _ = rand.Read(secret)
			n, _ := fmt.Fprintf(w, ",BIG%d-%07d,%s,30,Token2,C202\n", g.run, j, base32.StdEncoding.EncodeToString(secret))
			total += int64(n)
		}
		g.size.Store(total)
		pw.CloseWithError(w.Flush())
	}()
	return pr
}

// startKVProcess builds and starts the Key Vault stand-in as its own process (rate limit and
// latency off) and returns the real vault client for it.
func startKVProcess(b *testing.B) *vault.Vault {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "kvstandin")
	build := exec.Command("go", "build", "-o", bin, "github.com/oathpipe/oathpipe/internal/kvstandin/cmd/kvstandin")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the Key Vault stand-in: %v\n%s", err, out)
	}
	ca := filepath.Join(dir, "kv-ca.pem")
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-ca-out", ca, "-rate", "-1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	var url string
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "OATHPIPE_KEYVAULT_URL="); ok {
			url = u
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if url == "" {
		b.Fatal("the Key Vault stand-in printed no URL")
	}
	hc, err := azauth.HTTPClient(ca)
	if err != nil {
		b.Fatal(err)
	}
	v, err := vault.New(vault.Options{VaultURL: url, Credential: azauth.StaticToken(kvstandin.DefaultToken), HTTPClient: hc,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// resetPeakRSS resets the kernel's peak resident set of this process (VmHWM); Linux only.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is VmHWM in bytes (0 when unknown).
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// heapPeaks are the peaks sampleHeap saw: the Go heap in use (spans holding objects, garbage
// not yet swept included) and the live heap (what the last GC found reachable: what is held).
type heapPeaks struct{ inUse, live uint64 }

// sampleHeap samples the Go heap every 20 ms until the returned func is called, which answers
// the peaks.
func sampleHeap() func() heapPeaks {
	var mu sync.Mutex
	var peak heapPeaks
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			runtime.ReadMemStats(&ms)
			metrics.Read(live)
			mu.Lock()
			peak.inUse = max(peak.inUse, ms.HeapInuse)
			if live[0].Value.Kind() == metrics.KindUint64 {
				peak.live = max(peak.live, live[0].Value.Uint64())
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() heapPeaks {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// readerOnlyHeap streams the blob through seedfile.Read alone (records dropped) and answers the
// heap's peaks meanwhile.
func readerOnlyHeap(b *testing.B, ctx context.Context, a *storage.Account, name string) heapPeaks {
	b.Helper()
	f, err := a.Blobs.ReadInbox(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	body, err := f.Open(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer body.Close()
	runtime.GC()
	peak := sampleHeap()
	if _, err := seedfile.Read(body, seedfile.Options{}, func(r seedfile.Record) error { clear(r.Seed.Secret); return nil }, nil); err != nil {
		b.Fatal(err)
	}
	return peak()
}
