package handlers

import (
	"context"
	"net/http"
)

// PGPKeyRoute is the PgpKey function's route (under /api).
const PGPKeyRoute = "pgp-key"

// FuncPgpKey is the function answering GET /api/pgp-key.
const FuncPgpKey = "PgpKey"

// pgpKeyMethods are the methods function.json allows on the route.
var pgpKeyMethods = []string{http.MethodGet}

// PGPPublicKey gives the deployment's newest PGP public key, ASCII-armored (KindNotFound when
// the vault holds none); *pipeline.Pipeline implements it.
type PGPPublicKey interface {
	PGPPublicKey(ctx context.Context) (string, error)
}

// pgpKeyAPI answers GET /api/pgp-key (function PgpKey): the armored public key a vendor
// encrypts seed files to, as text/plain, for an admin to paste into the vendor's form.
func (s *Server) pgpKeyAPI(ctx context.Context, c *apiCall) HTTPResponse {
	if s.pgp == nil {
		return problemResponse(newProblem(codeNotFound, "No PGP key is configured; run oathpipe pgp-keygen."))
	}
	key, err := s.pgp.PGPPublicKey(ctx)
	if err != nil {
		return c.fail(ctx, err)
	}
	return HTTPResponse{StatusCode: http.StatusOK, Body: key, Headers: map[string]string{
		"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
		"Content-Disposition": `inline; filename="oathpipe-public-key.asc"`,
	}}
}
