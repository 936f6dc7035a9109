package handlers

import (
	"context"
	"net/http"
	"strings"
)

// ImportStatusRoute is the ImportStatus function's route (under /api).
const ImportStatusRoute = "imports/{name}"

// importStatusMethods are the methods function.json allows on the route.
var importStatusMethods = []string{http.MethodGet}

// importStatusAPI answers GET /api/imports/{name} (function ImportStatus): the ledger's summary
// and per-token outcomes of the latest import of that file name.
func (s *Server) importStatusAPI(ctx context.Context, c *apiCall) HTTPResponse {
	name := strings.TrimSpace(c.req.param("name", "imports"))
	if !validImportName(name) {
		return problemResponse(newProblem(codeInvalidName, "The import name must be the file's name in seed-inbox (1 to 1024 printable characters)."))
	}
	c.log = c.log.With("file", name)
	st, err := s.p.ImportStatus(ctx, name)
	if err != nil {
		return c.fail(err)
	}
	return jsonResponse(http.StatusOK, st)
}
