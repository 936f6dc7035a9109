package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
)

// TestImportWithFailuresNotifies: an import that settles with a failed row sends one summary
// naming the file, the counts and the reports; an import without failures sends none; no
// summary holds a seed.
func TestImportWithFailuresNotifies(t *testing.T) {
	ctx := context.Background()
	s := testkit.NewStack(t, testkit.Options{})
	l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
	notes := make(chan string, 4)
	p := s.Pipeline(l, q, b, func(d *pipeline.Deps) { d.Notifier = chanNotifier(notes) })
	ss := &testkit.SeedSet{}
	bad := ss.Row("NT-2", "")
	bad.Secret = "not-base32!" + bad.Secret
	if _, err := p.Import(ctx, b.Upload("notify/mixed.csv", testkit.EntraCSV([]testkit.Row{bad}))); err != nil {
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
	if _, err := p.Import(ctx, b.Upload("notify/good.csv", testkit.EntraCSV([]testkit.Row{ss.Row("NT-3", "")}))); err != nil {
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
