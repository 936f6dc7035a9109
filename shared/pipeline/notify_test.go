package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
)

// TestImportWithFailuresNotifies: an import that settles with a failed row sends one summary
// naming the file, the counts and the reports; an import without failures sends none; no
// summary holds a seed.
func TestImportWithFailuresNotifies(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	notes := make(chan string, 4)
	p := s.Pipeline(l, q, b, func(d *pipeline.Deps) { d.Notifier = chanNotifier(notes) })
	ss := &pipelinetest.SeedSet{}
	bad := ss.Row("NT-2", "")
	bad.Secret = "not-base32!" + bad.Secret
	if _, err := p.Import(ctx, b.Upload("notify/mixed.csv", pipelinetest.EntraCSV([]pipelinetest.Row{bad}))); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-notes:
		if !strings.Contains(n, "notify/mixed.csv") || !strings.Contains(n, "rejected 1") || !strings.Contains(n, "seed-reports/notify/mixed.csv.json") {
			t.Errorf("summary: %s", n)
		}
		for _, leak := range ss.Leaks("notification", n) {
			t.Error(leak)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no summary of an import that settled with failures")
	}
	if _, err := p.Import(ctx, b.Upload("notify/good.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row("NT-3", "")}))); err != nil {
		t.Fatal(err)
	}
	for {
		m, ok := q.Take()
		if !ok {
			break
		}
		_ = m
	}
	select {
	case n := <-notes:
		t.Errorf("summary of an import without failures: %s", n)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestImportSummaryOncePerOutcomeAcrossInstances: two instances (two pipelines over one ledger)
// both writing the final report of the same import send one summary between them; the links
// are URLs under ReportsURL with each path segment escaped.
func TestImportSummaryOncePerOutcomeAcrossInstances(t *testing.T) {
	ctx := context.Background()
	s := pipelinetest.NewStack(t, pipelinetest.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	notes := make(chan string, 4)
	const base = "https://stoathpipe.blob.core.windows.net/seed-reports"
	mk := func() *pipeline.Pipeline {
		return s.Pipeline(l, q, b, func(d *pipeline.Deps) { d.Notifier = chanNotifier(notes); d.ReportsURL = base })
	}
	one, two := mk(), mk()
	ss := &pipelinetest.SeedSet{}
	bad := ss.Row("NT-9", "")
	bad.Secret = "not-base32!" + bad.Secret
	f := b.Upload("notify/vendor #1?.csv", pipelinetest.EntraCSV([]pipelinetest.Row{bad}))
	if _, err := one.Import(ctx, f); err != nil {
		t.Fatal(err)
	}
	// The other instance gets the same event again (a redelivery) and writes the report again.
	if _, err := two.Import(ctx, f); err != nil {
		t.Fatal(err)
	}
	var got []string
	timeout := time.After(2 * time.Second)
wait:
	for {
		select {
		case n := <-notes:
			got = append(got, n)
		case <-timeout:
			break wait
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d summaries, want one across both instances: %q", len(got), got)
	}
	want := base + "/notify/vendor%20%231%3F.csv.json"
	if !strings.Contains(got[0], want) || !strings.Contains(got[0], base+"/notify/vendor%20%231%3F.csv.failures.csv") {
		t.Errorf("summary %q: want the links %s and its failures CSV", got[0], want)
	}
}
