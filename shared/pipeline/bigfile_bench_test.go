package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
)

// countQueue counts provisioning messages and keeps none: the benchmark measures the import,
// not a million messages held in memory (the Azurite queue path is measured by EndToEnd).
type countQueue struct{ n atomic.Int64 }

func (q *countQueue) Enqueue(_ context.Context, msgs []pipeline.ProvisionMessage) error {
	q.n.Add(int64(len(msgs)))
	return nil
}

// BenchmarkImportBigFile imports one generated file of OATHPIPE_BENCH_ROWS rows (default
// 1,000,000; about 60 MB) through ImportFromInbox: the blob and the ledger on Azurite (the
// ledger in memory with OATHPIPE_BENCH_LEDGER=mem), the seeds
// in the Key Vault stand-in with its latency and rate limit off, in parts of
// OATHPIPE_IMPORT_BUDGET-like budgets (5 minutes) handed on through continuations. It reports
// the wall time, the parts, and the process's peak RSS (which includes the in-process Key Vault
// stand-in holding every secret).
func BenchmarkImportBigFile(b *testing.B) {
	rows := 1_000_000
	if v := os.Getenv("OATHPIPE_BENCH_ROWS"); v != "" {
		rows, _ = strconv.Atoi(v)
	}
	ctx := context.Background()
	a := storageAccount(b)
	for i := range b.N {
		s := pipelinetest.NewStack(b, pipelinetest.Options{KVRate: -1, Quiet: true})
		q := &countQueue{}
		cq := &contQueue{}
		var l pipeline.Ledger = a.Ledger
		if os.Getenv("OATHPIPE_BENCH_LEDGER") == "mem" {
			// Azurite's in-memory table slows down superlinearly past ~10,000 entities in one
			// partition; the Table service does not. docs/benchmarks.md gives both figures.
			l = pipelinetest.NewMemLedger()
		}
		p := s.Pipeline(l, q, a.Blobs, func(d *pipeline.Deps) {
			d.Inbox, d.Imports, d.ImportBudget = a.Blobs, cq, 5*time.Minute
		})
		var file bytes.Buffer
		file.WriteString("upn,serial number,secret key,time interval,manufacturer,model\n")
		ss := &pipelinetest.SeedSet{}
		for j := range rows {
			fmt.Fprintf(&file, ",BIG%d-%07d,%s,30,Token2,C202\n", i, j, ss.Fresh())
		}
		ss.Secrets = nil // a million remembered secrets would only inflate the figure
		name := fmt.Sprintf("bench/big-%d-%d.csv", i, time.Now().UnixNano())
		size := file.Len()
		if _, err := a.Blobs.PutInbox(ctx, name, file.Bytes(), nil); err != nil {
			b.Fatal(err)
		}
		file = bytes.Buffer{}
		runtime.GC()
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
		if n := q.n.Load(); n != int64(rows) {
			b.Fatalf("%d messages queued; want %d", n, rows)
		}
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		b.ReportMetric(wall.Seconds(), "s/import")
		b.ReportMetric(float64(parts), "parts")
		b.ReportMetric(float64(size)/1e6, "file-MB")
		b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MB")
		b.Logf("%d rows, %.1f MB, %v, %d parts, peak RSS %d MB, %d log lines", rows, float64(size)/1e6, wall, parts,
			ru.Maxrss/1024, strings.Count(s.Logs.String(), "\n"))
	}
}
