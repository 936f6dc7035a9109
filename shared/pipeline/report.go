package pipeline

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/oathpipe/oathpipe/shared/token"
)

// status builds an import's ImportStatus from the ledger.
func (p *Pipeline) status(ctx context.Context, imp ImportRecord) (*ImportStatus, error) {
	rows, err := p.d.Ledger.ListTokens(ctx, imp.ImportID)
	if err != nil {
		return nil, fmt.Errorf("list token rows of import %s: %w", imp.ImportID, err)
	}
	return buildStatus(imp, rows), nil
}

// buildStatus is the report of imp with its rows. A vaulted row reads "queued" once the
// import's messages are sent.
func buildStatus(imp ImportRecord, rows []TokenRecord) *ImportStatus {
	st := &ImportStatus{
		ImportID: imp.ImportID, FileName: imp.FileName, Stage: imp.Stage, Format: imp.Format,
		Rows: imp.Rows, Valid: imp.Valid, Invalid: imp.Invalid, Pending: imp.Pending,
		Counts: map[string]int{}, Disposition: imp.Disposition, Problems: imp.Problems,
		Tokens: make([]TokenLine, 0, len(rows)), Updated: imp.Updated,
	}
	pending := 0
	for _, r := range rows {
		s := r.Status
		if s == StatusVaulted && !stageBefore(imp.Stage, StageEnqueued) {
			s = StatusQueued
		}
		if !Settled(r.Status) {
			pending++
		}
		if r.Updated.After(st.Updated) {
			st.Updated = r.Updated
		}
		st.Counts[s]++
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
	// The rows are the truth; Pending on the import is the counter that decides who writes the
	// final report.
	st.Pending = pending
	st.Settled = pending == 0 && !stageBefore(imp.Stage, StageVaulted)
	return st
}

// writeReport writes seed-reports/{name}.json from the ledger and, when anything failed,
// seed-reports/{name}.failures.csv.
func (p *Pipeline) writeReport(ctx context.Context, importID, disposition string) error {
	imp, err := p.d.Ledger.GetImport(ctx, importID)
	if err != nil {
		return fmt.Errorf("report of import %s: %w", importID, err)
	}
	if disposition != "" {
		imp.Disposition = disposition
	}
	st, err := p.status(ctx, imp)
	if err != nil {
		return fmt.Errorf("report of %s: %w", imp.FileName, err)
	}
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("report of %s: %w", imp.FileName, err)
	}
	fails := failuresCSV(st)
	if err := p.d.Blobs.PutReport(ctx, imp.FileName, js, fails); err != nil {
		return fmt.Errorf("write report of %s: %w", imp.FileName, err)
	}
	p.log.Info("report written", "importId", importID, "file", imp.FileName, "settled", st.Settled,
		"failures", fails != nil)
	if st.Settled && fails != nil {
		// The final report may be written more than once (a repeated message, the import's own
		// last check): one summary per import and outcome from this process.
		if _, sent := p.notified.LoadOrStore(importID+"|"+fmt.Sprint(st.Counts), true); !sent {
			p.notify(ctx, importSummary(st))
		}
	}
	return nil
}

// failuresCSV is the Entra "Failures_" idea: one row per problem or failed token, nil when
// nothing failed. Cells an office suite would read as a formula are neutralised.
func failuresCSV(st *ImportStatus) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	n := 0
	write := func(cells ...string) {
		for i := range cells {
			cells[i] = neutralise(cells[i])
		}
		_ = w.Write(cells) // a bytes.Buffer does not fail
	}
	write("line", "serial number", "upn", "status", "field", "code", "reason")
	for _, pr := range st.Problems {
		write("0", "", "", StatusRejected, pr.Field, pr.Code, pr.Message)
		n++
	}
	for _, t := range st.Tokens {
		switch t.Status {
		case StatusRejected:
			for _, pr := range t.Problems {
				write(strconv.Itoa(t.Line), t.SerialNumber, t.UserPrincipalName, t.Status, pr.Field, pr.Code, pr.Message)
				n++
			}
			if len(t.Problems) == 0 {
				write(strconv.Itoa(t.Line), t.SerialNumber, t.UserPrincipalName, t.Status, "", "", t.Reason)
				n++
			}
		case StatusFailed:
			write(strconv.Itoa(t.Line), t.SerialNumber, t.UserPrincipalName, t.Status, "", "", t.Reason)
			n++
		}
	}
	w.Flush()
	if n == 0 {
		return nil
	}
	return buf.Bytes()
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
