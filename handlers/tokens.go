package handlers

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// Routes and functions of a token's life after import (under /api).
const (
	TokensRoute     = "tokens"
	TokenRoute      = "tokens/{serial}"
	UserTokensRoute = "users/{upn}/tokens"

	FuncTokens      = "Tokens"
	FuncRetireToken = "RetireToken"
	FuncUserTokens  = "UserTokens"
)

var (
	tokensMethods     = []string{http.MethodGet}
	tokenMethods      = []string{http.MethodDelete}
	userTokensMethods = []string{http.MethodGet}
)

// Lifecycle answers the inventory views and retires tokens; *pipeline.Lifecycle implements it.
type Lifecycle interface {
	ListTokens(ctx context.Context, f pipeline.TokenFilter, limit int, continuation string) (*pipeline.TokenPage, error)
	UserTokens(ctx context.Context, upnOrID string) (*pipeline.UserTokens, error)
	RetireToken(ctx context.Context, serial, caller string) (*pipeline.Retirement, error)
}

// tokenStatuses are the status filter's values: Entra's words.
var tokenStatuses = []string{"available", "assigned", "activated", "failedActivation"}

// maxFilterBytes bounds a filter value and the continuation.
const (
	maxFilterBytes       = 256
	maxContinuationBytes = 4096
)

func (s *Server) noLifecycle() HTTPResponse {
	return problemResponse(newProblem(codeInternal, "The token views are not configured in this deployment."))
}

// tokensAPI answers GET /api/tokens (function Tokens): one page of the inventory.
func (s *Server) tokensAPI(ctx context.Context, c *apiCall) HTTPResponse {
	if s.life == nil {
		return s.noLifecycle()
	}
	var f pipeline.TokenFilter
	for k := range c.req.Query {
		switch strings.ToLower(k) {
		case "status", "userprincipalname", "manufacturer", "model", "limit", "continuation", "code":
		default:
			return problemResponse(newProblem(codeInvalidRequest, "Unknown query parameter "+strconv.Quote(k)+
				"; allowed: status, userPrincipalName, manufacturer, model, limit, continuation."))
		}
	}
	for _, q := range []struct {
		name string
		to   *string
	}{{"status", &f.Status}, {"userPrincipalName", &f.UserPrincipalName}, {"manufacturer", &f.Manufacturer}, {"model", &f.Model}} {
		v, ok := c.req.query(q.name)
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || len(v) > maxFilterBytes || !printablePathValue(v) {
			return problemResponse(newProblem(codeInvalidRequest, "The "+q.name+" filter must be 1 to 256 printable characters."))
		}
		*q.to = v
	}
	if f.Status != "" {
		ok := false
		for _, st := range tokenStatuses {
			if strings.EqualFold(st, f.Status) {
				f.Status, ok = st, true
			}
		}
		if !ok {
			return problemResponse(newProblem(codeInvalidRequest, "status must be one of "+strings.Join(tokenStatuses, ", ")+"."))
		}
	}
	if f.UserPrincipalName != "" && !validUser(f.UserPrincipalName) {
		return problemResponse(newProblem(codeInvalidUPN, "userPrincipalName must be a user principal name (name@domain) or a user object id."))
	}
	limit := pipeline.DefaultTokenLimit
	if v, ok := c.req.query("limit"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > pipeline.MaxTokenLimit {
			return problemResponse(newProblem(codeInvalidRequest, "limit must be a whole number from 1 to "+strconv.Itoa(pipeline.MaxTokenLimit)+"."))
		}
		limit = n
	}
	cont, _ := c.req.query("continuation")
	if len(cont) > maxContinuationBytes {
		return problemResponse(newProblem(codeInvalidRequest, "continuation is not one this API gave out; start again without it."))
	}
	page, err := s.life.ListTokens(ctx, f, limit, cont)
	if err != nil {
		return c.fail(ctx, err)
	}
	return jsonResponse(http.StatusOK, page)
}

// userTokensAPI answers GET /api/users/{upn}/tokens (function UserTokens).
func (s *Server) userTokensAPI(ctx context.Context, c *apiCall) HTTPResponse {
	if s.life == nil {
		return s.noLifecycle()
	}
	upn := c.req.routeValue("upn", "users", false)
	if !validUser(upn) || strings.TrimSpace(upn) != upn {
		return problemResponse(newProblem(codeInvalidUPN, "The path must name a user principal name (name@domain) or a user object id."))
	}
	c.log = c.log.With(logctx.User, upn)
	ut, err := s.life.UserTokens(ctx, upn)
	if err != nil {
		return c.fail(ctx, err)
	}
	return jsonResponse(http.StatusOK, ut)
}

// retireTokenAPI answers DELETE /api/tokens/{serial} (function RetireToken).
func (s *Server) retireTokenAPI(ctx context.Context, c *apiCall) HTTPResponse {
	if s.life == nil {
		return s.noLifecycle()
	}
	serial := c.req.routeValue("serial", "tokens", false)
	if !validSerial(serial) {
		return problemResponse(newProblem(codeInvalidSerial, "The serial number in the request path must be 1 to 128 bytes of printable UTF-8, "+
			"with no white space at either end (URL-encode it, \"/\" as %2F)."))
	}
	c.log = c.log.With(logctx.Serial, serial)
	r, err := s.life.RetireToken(ctx, serial, c.caller)
	if err != nil {
		return c.fail(ctx, err)
	}
	c.log.InfoContext(ctx, "token retired", "previousUser", r.PreviousUserPrincipalName, "changed", r.Changed)
	return jsonResponse(http.StatusOK, r)
}
