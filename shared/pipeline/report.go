package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

// A report (seed-reports/{name}.json, and the ImportStatus API) lists at most MaxReportTokens
// tokens and MaxReportProblems file-level problems, so it stays small for a file of any size;
// past that it says how many it left out (TokensOmitted, ProblemsOmitted) and where the full
// lists are (FullList). Its counts always cover every row. The failures CSV is not cut: it is
// streamed to its blob, one line per problem or failed token.
const (
	MaxReportTokens   = 1000
	MaxReportProblems = 100
)

// status builds an import's ImportStatus from the ledger, reading its rows a page at a time.
func (p *Pipeline) status(ctx context.Context, imp ImportRecord) (*ImportStatus, error) {
	st := newStatus(imp)
	if err := p.d.Ledger.EachToken(ctx, imp.ImportID, 0, 0, func(r TokenRecord) error { st.add(r); return nil }); err != nil {
		return nil, fmt.Errorf("list token rows of import %s: %w", imp.ImportID, err)
	}
	return st.done(), nil
}

// buildStatus is the report of imp with its rows (all in memory: for tests and small imports).
func buildStatus(imp ImportRecord, rows []TokenRecord) *ImportStatus {
	st := newStatus(imp)
	for _, r := range rows {
		st.add(r)
	}
	return st.done()
}

// statusBuilder adds up an import's rows into its ImportStatus, keeping at most
// MaxReportTokens of them.
type statusBuilder struct {
	st       *ImportStatus
	pending  int
	failures int // lines the failures CSV will have beyond its header
}

func newStatus(imp ImportRecord) *statusBuilder {
	st := &ImportStatus{
		ImportID: imp.ImportID, FileName: imp.FileName, Stage: imp.Stage, Format: imp.Format,
		Rows: imp.Rows, Valid: imp.Valid, Invalid: imp.Invalid, Pending: imp.Pending,
		Counts: map[RowStatus]int{}, Disposition: imp.Disposition, Problems: imp.Problems,
		Tokens: []TokenLine{}, Updated: imp.Updated,
	}
	if len(st.Problems) > MaxReportProblems {
		st.ProblemsOmitted = len(st.Problems) - MaxReportProblems
		st.Problems = st.Problems[:MaxReportProblems]
	}
	return &statusBuilder{st: st, failures: len(imp.Problems)}
}

// add counts one row. A vaulted row reads "queued" once the import's messages are sent.
func (b *statusBuilder) add(r TokenRecord) {
	st := b.st
	s := r.Status
	if s == StatusVaulted && !st.Stage.Before(StageEnqueued) {
		s = StatusQueued
	}
	if !r.Status.Settled() {
		b.pending++
	}
	switch r.Status {
	case StatusRejected:
		b.failures += max(len(r.Problems), 1)
	case StatusFailed:
		b.failures++
	}
	if r.Updated.After(st.Updated) {
		st.Updated = r.Updated
	}
	st.Counts[s]++
	if len(st.Tokens) >= MaxReportTokens {
		st.TokensOmitted++
		return
	}
	line := TokenLine{
		Line: r.Line, SerialNumber: r.Serial, Manufacturer: r.Manufacturer, Model: r.Model,
		UserPrincipalName: r.UserPrincipalName, Status: s, Reason: r.Reason, Problems: r.Problems,
	}
	if r.Status != StatusRejected {
		// A row that passed validation keeps its warnings where a rejected row keeps its problems.
		line.Problems, line.Warnings = nil, r.Problems
	}
	st.Tokens = append(st.Tokens, line)
}

func (b *statusBuilder) done() *ImportStatus {
	st := b.st
	// The rows are the truth; Pending on the import is the counter that decides who writes the
	// final report.
	st.Pending = b.pending
	st.Settled = b.pending == 0 && !st.Stage.Before(StageVaulted)
	if st.TokensOmitted > 0 || st.ProblemsOmitted > 0 {
		st.FullList = fmt.Sprintf("this report lists the first %d tokens and %d file-level problems; "+
			"seed-reports/%s.failures.csv lists every rejected or failed row, and the ledger (table oathpipeledger, "+
			"import %s) holds every row", MaxReportTokens, MaxReportProblems, st.FileName, st.ImportID)
	}
	return st
}

// writeReport writes seed-reports/{name}.json from the ledger and, when anything failed,
// seed-reports/{name}.failures.csv, streamed from a second pass over the rows: neither pass
// holds more than a page of rows and the report's capped lists.
func (p *Pipeline) writeReport(ctx context.Context, importID, disposition string) error {
	imp, err := p.d.Ledger.GetImport(ctx, importID)
	if err != nil {
		return fmt.Errorf("report of import %s: %w", importID, err)
	}
	if disposition != "" {
		imp.Disposition = disposition
	}
	b := newStatus(imp)
	if err := p.d.Ledger.EachToken(ctx, imp.ImportID, 0, 0, func(r TokenRecord) error { b.add(r); return nil }); err != nil {
		return fmt.Errorf("report of %s: list token rows: %w", imp.FileName, err)
	}
	st := b.done()
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("report of %s: %w", imp.FileName, err)
	}
	var fails io.Reader
	var stop func() error
	if b.failures > 0 {
		fails, stop = p.streamFailures(ctx, imp, st.Stage)
	}
	err = p.d.Blobs.PutReport(ctx, imp.FileName, js, fails)
	if stop != nil {
		if serr := stop(); err == nil && serr != nil {
			err = serr
		}
	}
	if err != nil {
		return fmt.Errorf("write report of %s: %w", imp.FileName, err)
	}
	p.log.InfoContext(ctx, "report written", logctx.ImportID, importID, logctx.File, imp.FileName, "settled", st.Settled,
		"failures", b.failures, "tokensOmitted", st.TokensOmitted)
	if st.Settled && b.failures > 0 {
		p.notifyImport(ctx, st)
	}
	return nil
}

// notifyImport sends the summary of an import that settled with failures once per import and
// outcome across every instance: the final report may be written more than once (a repeated
// message, the import's own last check, two instances), and the ledger's ClaimNotification
// lets one of them send it. A claim that cannot be recorded sends nothing (logged): a missed
// summary is better than one repeated on every redelivery.
func (p *Pipeline) notifyImport(ctx context.Context, st *ImportStatus) {
	if p.d.Notifier == nil {
		return
	}
	sum := sha256.Sum256([]byte(fmt.Sprint(st.Counts)))
	first, err := p.d.Ledger.ClaimNotification(ctx, st.ImportID, hex.EncodeToString(sum[:8]))
	if err != nil {
		p.log.WarnContext(ctx, "notification not sent: the claim was not recorded", slog.String(logctx.ImportID, st.ImportID), slog.String(logctx.Error, err.Error()))
		return
	}
	if first {
		p.notify(ctx, p.importSummary(st))
	}
}

// streamFailures streams the failures CSV of imp from the ledger through a pipe; stop ends
// the producer (when the reader stopped early) and returns its error.
func (p *Pipeline) streamFailures(ctx context.Context, imp ImportRecord, stage Stage) (io.Reader, func() error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		fw := newFailuresWriter(pw)
		for _, pb := range imp.Problems {
			fw.write("0", "", "", string(StatusRejected), pb.Field, pb.Code, pb.Message)
		}
		err := p.d.Ledger.EachToken(ctx, imp.ImportID, 0, 0, func(r TokenRecord) error {
			fw.row(r)
			return fw.err()
		})
		if err == nil {
			err = fw.flush()
		}
		pw.CloseWithError(err)
		done <- err
	}()
	return pr, func() error {
		pr.CloseWithError(io.ErrClosedPipe) // unblocks the producer if the upload stopped early
		err := <-done
		if errors.Is(err, io.ErrClosedPipe) {
			return nil
		}
		return err
	}
}

// failuresWriter writes the Entra "Failures_" idea: one row per problem or failed token. Cells
// an office suite would read as a formula are neutralised.
type failuresWriter struct {
	w *csv.Writer
	n int
}

func newFailuresWriter(w io.Writer) *failuresWriter {
	fw := &failuresWriter{w: csv.NewWriter(w)}
	fw.write("line", "serial number", "upn", "status", "field", "code", "reason")
	fw.n = 0
	return fw
}

func (fw *failuresWriter) write(cells ...string) {
	for i := range cells {
		cells[i] = neutralise(cells[i])
	}
	_ = fw.w.Write(cells) // the error sticks: see err
	fw.n++
}

func (fw *failuresWriter) row(r TokenRecord) {
	switch r.Status {
	case StatusRejected:
		for _, pr := range r.Problems {
			fw.write(strconv.Itoa(r.Line), r.Serial, r.UserPrincipalName, string(r.Status), pr.Field, pr.Code, pr.Message)
		}
		if len(r.Problems) == 0 {
			fw.write(strconv.Itoa(r.Line), r.Serial, r.UserPrincipalName, string(r.Status), "", "", r.Reason)
		}
	case StatusFailed:
		fw.write(strconv.Itoa(r.Line), r.Serial, r.UserPrincipalName, string(r.Status), "", "", r.Reason)
	}
}

func (fw *failuresWriter) err() error { return fw.w.Error() }

func (fw *failuresWriter) flush() error {
	fw.w.Flush()
	return fw.w.Error()
}

// failuresCSV is the failures CSV of a status held in memory, nil when nothing failed (tests).
func failuresCSV(st *ImportStatus) []byte {
	var buf strings.Builder
	fw := newFailuresWriter(&buf)
	for _, pr := range st.Problems {
		fw.write("0", "", "", string(StatusRejected), pr.Field, pr.Code, pr.Message)
	}
	for _, t := range st.Tokens {
		fw.row(TokenRecord{Line: t.Line, Serial: t.SerialNumber, UserPrincipalName: t.UserPrincipalName, Status: t.Status, Reason: t.Reason, Problems: t.Problems})
	}
	_ = fw.flush()
	if fw.n == 0 {
		return nil
	}
	return []byte(buf.String())
}

// neutralise keeps a spreadsheet from evaluating a cell: cells starting with = + - @ (or a tab
// or carriage return, which some importers strip) get a leading apostrophe.
func neutralise(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// importStatus is ImportStatus.
func (p *Pipeline) importStatus(ctx context.Context, fileName string) (*ImportStatus, error) {
	if strings.TrimSpace(fileName) == "" {
		return nil, token.Errorf(token.KindInvalid, "import status: the file name is empty")
	}
	imp, err := p.d.Ledger.ImportByName(ctx, fileName)
	if err != nil {
		return nil, fmt.Errorf("import status of %s: %w", fileName, err)
	}
	return p.status(ctx, imp)
}

// importStatusByID is ImportStatusByID.
func (p *Pipeline) importStatusByID(ctx context.Context, fileName, importID string) (*ImportStatus, error) {
	if strings.TrimSpace(fileName) == "" || strings.TrimSpace(importID) == "" {
		return nil, token.Errorf(token.KindInvalid, "import status: the file name and import id must not be empty")
	}
	imp, err := p.d.Ledger.GetImport(ctx, importID)
	if err != nil {
		return nil, fmt.Errorf("import status of %s, import %s: %w", fileName, importID, err)
	}
	if imp.FileName != fileName {
		return nil, &token.Error{Kind: token.KindNotFound, Op: "import status of " + fileName,
			Message: "import " + importID + " is not an import of this file name"}
	}
	return p.status(ctx, imp)
}
