package handlers

import (
	"context"
	"net/http"
	"strings"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

// ImportStatusRoute is the ImportStatus function's route (under /api). The name is a catch-all
// ({*name}): a blob name may hold "/", sent as is or as %2F.
const ImportStatusRoute = "imports/{*name}"

// importStatusMethods are the methods the ImportStatus function answers; function.json lists
// every method so that any other gets the handler's 405 with Allow.
var importStatusMethods = []string{http.MethodGet}

// maxImportIDBytes bounds the importId query parameter.
const maxImportIDBytes = 128

// importStatusAPI answers GET /api/imports/{name}[?importId=...] (function ImportStatus): the
// ledger's live summary and per-token outcomes of the latest import of that file name, or of
// the import importId names.
func (s *Server) importStatusAPI(ctx context.Context, c *apiCall) HTTPResponse {
	name := c.req.routeValue("name", "imports", true)
	if !validImportName(name) {
		return problemResponse(newProblem(codeInvalidName, "The import name in the request path must be the file's name in seed-inbox "+
			"(1 to 1024 printable characters, no white space at either end)."))
	}
	c.log = c.log.With(logctx.File, name)
	id, given := c.req.query("importId")
	if given {
		if len(id) > maxImportIDBytes || !printablePathValue(id) {
			return problemResponse(newProblem(codeInvalidRequest, "The importId query parameter must be an import id as a report gives it (imp-...)."))
		}
		c.log = c.log.With(logctx.ImportID, id)
		st, err := s.p.ImportStatusByID(ctx, name, id)
		if err != nil {
			return c.fail(ctx, err)
		}
		return jsonResponse(http.StatusOK, st)
	}
	st, err := s.p.ImportStatus(ctx, name)
	if err != nil {
		return c.fail(ctx, err)
	}
	return jsonResponse(http.StatusOK, st)
}

// query returns the query parameter name (matched case-insensitively, as ASP.NET Core does)
// and whether the request has it.
func (r *HTTPRequest) query(name string) (string, bool) {
	for k, v := range r.Query {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}
