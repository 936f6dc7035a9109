package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

type fakeReconciler struct{ err error }

func (f fakeReconciler) Run(context.Context) (*pipeline.ReconcileReport, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &pipeline.ReconcileReport{Devices: 3, Seeds: 2, ReportName: "reconcile/2026-12-01", Findings: []pipeline.Finding{{Kind: pipeline.FindingStuck}}}, nil
}

type fakeReports struct {
	body []byte
	err  error
	name string
}

func (f *fakeReports) Read(_ context.Context, container, name string) ([]byte, error) {
	f.name = container + "/" + name
	return f.body, f.err
}

func TestReconcileTimer(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Reconciler
		want int
	}{
		{"ok", fakeReconciler{}, 200},
		{"fails", fakeReconciler{err: token.Errorf(token.KindTransient, "graph 503")}, 500},
		{"not configured", nil, 500},
	} {
		s := New(Options{Pipeline: &fakePipeline{}, Reconciler: tc.r, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
		if a := invoke(t, s, FuncReconcile, fixture(t, "timer-reconcile.json")); a.Status != tc.want || len(a.Logs) == 0 {
			t.Errorf("%s: host %d logs %v, want %d", tc.name, a.Status, a.Logs, tc.want)
		}
	}
}

func TestReconcileLatest(t *testing.T) {
	rep, _ := json.Marshal(pipeline.ReconcileReport{Date: "2026-12-01", Findings: []pipeline.Finding{}})
	for _, tc := range []struct {
		name   string
		rr     *fakeReports
		method string
		want   int
		code   string
	}{
		{"ok", &fakeReports{body: rep}, "GET", 200, ""},
		{"none yet", &fakeReports{err: token.Errorf(token.KindNotFound, "no blob")}, "GET", 404, "not-found"},
		{"storage down", &fakeReports{err: token.Errorf(token.KindTransient, "503")}, "GET", 503, "upstream-unavailable"},
		{"unexpected", &fakeReports{err: errors.New("boom")}, "GET", 500, "internal"},
		{"method", &fakeReports{}, "DELETE", 405, "method-not-allowed"},
	} {
		s := New(Options{Pipeline: &fakePipeline{}, Reports: tc.rr, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
		res := invoke(t, s, FuncReconcileLatest, queryPayload(tc.method, "https://x/api/reconcile/latest", nil, nil)).res(t)
		var p Problem
		_ = json.Unmarshal([]byte(res.Body), &p)
		if res.StatusCode != tc.want || p.Code != tc.code {
			t.Errorf("%s: %d %q, want %d %q", tc.name, res.StatusCode, p.Code, tc.want, tc.code)
		}
		if tc.want == 200 && (res.Body != string(rep) || tc.rr.name != "seed-reports/reconcile/latest.json") {
			t.Errorf("%s: read %s, answered %s", tc.name, tc.rr.name, res.Body)
		}
	}
}
