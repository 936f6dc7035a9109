package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// The reconciliation's functions.
const (
	FuncReconcile        = "Reconcile"       // timer trigger, schedule OATHPIPE_RECONCILE_SCHEDULE
	FuncReconcileLatest  = "ReconcileLatest" // GET /api/reconcile/latest
	ReconcileLatestRoute = "reconcile/latest"
)

var reconcileLatestMethods = []string{http.MethodGet}

// Reconciler runs one reconciliation (pipeline.Reconciliation).
type Reconciler interface {
	Run(ctx context.Context) (*pipeline.ReconcileReport, error)
}

// ReportReader reads a blob of seed-reports (storage.Blobs).
type ReportReader interface {
	Read(ctx context.Context, container, name string) ([]byte, error)
}

// reconcile handles the timer trigger: one reconciliation. A failure answers 500, which the
// host records as a failed invocation (a timer is not retried; the next schedule runs again).
func (s *Server) reconcile(ctx context.Context, log *slog.Logger, _ *Invocation) outcome {
	if s.reconciler == nil {
		log.ErrorContext(ctx, "reconciliation not configured")
		return outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{"reconciliation not configured"}}}
	}
	rep, err := s.reconciler.Run(ctx)
	if err != nil {
		log.ErrorContext(ctx, "reconciliation failed", logctx.Kind, string(token.KindOf(err)), logctx.Error, err)
		return outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{"reconciliation failed: " + err.Error()}}}
	}
	log.InfoContext(ctx, "reconciliation done", "devices", rep.Devices, "seeds", rep.Seeds, "findings", len(rep.Findings), "report", rep.ReportName)
	return outcome{status: http.StatusOK, resp: Response{Logs: []string{fmt.Sprintf("reconciled %d devices and %d seeds: %d findings in %s/%s.json",
		rep.Devices, rep.Seeds, len(rep.Findings), config.ReportsContainer, rep.ReportName)}}}
}

// reconcileLatestAPI answers GET /api/reconcile/latest: the last reconciliation's report.
func (s *Server) reconcileLatestAPI(ctx context.Context, c *apiCall) HTTPResponse {
	if s.reports == nil {
		return problemResponse(newProblem(codeInternal, "The reconciliation reports are not configured in this deployment."))
	}
	b, err := s.reports.Read(ctx, config.ReportsContainer, pipeline.LatestReconcileReport+".json")
	if token.KindOf(err) == token.KindNotFound {
		return problemResponse(newProblem(codeNotFound, "No reconciliation has run yet; the Reconcile function runs on OATHPIPE_RECONCILE_SCHEDULE, or run oathpipe reconcile."))
	}
	if err != nil {
		return c.fail(ctx, err)
	}
	return HTTPResponse{StatusCode: http.StatusOK, Body: string(b), Headers: map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"}}
}
