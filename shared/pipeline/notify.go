package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/config"
)

// Notifier sends a short summary for people to an incoming webhook (package notify). The text
// is built from counts and names only: never a seed.
type Notifier interface {
	Notify(ctx context.Context, text string) error
}

// notify sends text in the background (the webhook is retried with backoff, and a slow one must
// not hold up a function invocation). A failure is logged, never answered.
func (p *Pipeline) notify(ctx context.Context, text string) {
	if p.d.Notifier == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	go func() {
		defer cancel()
		if err := p.d.Notifier.Notify(ctx, text); err != nil {
			p.log.Warn("notification not sent", slog.String("error", err.Error()))
		}
	}()
}

// importSummary is the notification of an import that settled with failures.
func importSummary(st *ImportStatus) string {
	var parts []string
	for _, k := range sortedKeys(st.Counts) {
		parts = append(parts, fmt.Sprintf("%s %d", k, st.Counts[k]))
	}
	return fmt.Sprintf("oathpipe: the import of %s settled with failures (%d rows: %s). Report: %s/%s.json and %s.failures.csv",
		st.FileName, st.Rows, strings.Join(parts, ", "), config.ReportsContainer, st.FileName, st.FileName)
}

// reconcileSummary is the notification of a reconciliation that found something.
func reconcileSummary(rep *ReconcileReport) string {
	var parts []string
	for _, k := range sortedKeys(rep.Counts) {
		parts = append(parts, fmt.Sprintf("%s %d", k, rep.Counts[k]))
	}
	taken := 0
	for _, f := range rep.Findings {
		if f.Action == "taken-back" {
			taken++
		}
	}
	s := fmt.Sprintf("oathpipe reconciliation %s: %d findings over %d tokens (%s).", rep.Date, len(rep.Findings), rep.Devices, strings.Join(parts, ", "))
	if taken > 0 {
		s += fmt.Sprintf(" %d tokens taken back from disabled accounts.", taken)
	}
	return s + fmt.Sprintf(" Report: %s/%s.json (GET /api/reconcile/latest)", config.ReportsContainer, rep.ReportName)
}

func sortedKeys[K ~string](m map[K]int) []K {
	return slices.Sorted(maps.Keys(m))
}
