package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/logctx"
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
			p.log.WarnContext(ctx, "notification not sent", slog.String(logctx.Error, err.Error()))
		}
	}()
}

// reportLink is the link to seed-reports/{name}{suffix} in a notification: a URL under
// Deps.ReportsURL, or the container path when the URL is not known. Each path segment of the
// name is escaped (a file name may hold spaces, '#' or '?').
func (p *Pipeline) reportLink(name, suffix string) string {
	if p.d.ReportsURL == "" {
		return config.ReportsContainer + "/" + name + suffix
	}
	segs := strings.Split(name+suffix, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.TrimSuffix(p.d.ReportsURL, "/") + "/" + strings.Join(segs, "/")
}

// importSummary is the notification of an import that settled with failures.
func (p *Pipeline) importSummary(st *ImportStatus) string {
	var parts []string
	for _, k := range sortedKeys(st.Counts) {
		parts = append(parts, fmt.Sprintf("%s %d", k, st.Counts[k]))
	}
	return fmt.Sprintf("oathpipe: the import of %s settled with failures (%d rows: %s). Report: %s and %s (GET /api/imports/%s)",
		st.FileName, st.Rows, strings.Join(parts, ", "), p.reportLink(st.FileName, ".json"), p.reportLink(st.FileName, ".failures.csv"), st.FileName)
}

// reconcileSummary is the notification of a reconciliation that found something.
func (p *Pipeline) reconcileSummary(rep *ReconcileReport) string {
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
	return s + fmt.Sprintf(" Report: %s and %s (GET /api/reconcile/latest)", p.reportLink(rep.ReportName, ".json"), p.reportLink(rep.ReportName, ".failures.csv"))
}

func sortedKeys[K ~string](m map[K]int) []K {
	return slices.Sorted(maps.Keys(m))
}
