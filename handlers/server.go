package handlers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// Importer imports a seed file dropped in the inbox, reading it from storage (ImportSeeds).
type Importer interface {
	ImportFromInbox(ctx context.Context, r pipeline.ImportRequest) (*pipeline.ImportResult, error)
}

// Parker keeps a message ProvisionFailed cannot record, as a blob in token-parked (storage.Blobs).
type Parker interface {
	Park(ctx context.Context, name string, content []byte, metadata ...string) error
}

// Provisioner provisions one token from a queue message (ProvisionToken).
type Provisioner interface {
	Provision(ctx context.Context, m pipeline.ProvisionMessage, dequeueCount int) (*pipeline.TokenOutcome, error)
}

// PoisonRecorder records a message the host gave up on (ProvisionFailed).
type PoisonRecorder interface {
	RecordPoisoned(ctx context.Context, m pipeline.ProvisionMessage, reason string) error
}

// Assigner changes and reads token assignments (TokenAssignment).
type Assigner interface {
	AssignToken(ctx context.Context, r pipeline.AssignRequest) (*pipeline.Assignment, error)
	UnassignToken(ctx context.Context, serial, caller string) (*pipeline.Assignment, error)
	TokenState(ctx context.Context, serial string) (*pipeline.Assignment, error)
}

// StatusReader reads an import's status (ImportStatus).
type StatusReader interface {
	ImportStatus(ctx context.Context, fileName string) (*pipeline.ImportStatus, error)
	ImportStatusByID(ctx context.Context, fileName, importID string) (*pipeline.ImportStatus, error)
}

// Pipeline is everything the handlers call; *pipeline.Pipeline implements it.
type Pipeline interface {
	Importer
	Provisioner
	PoisonRecorder
	Assigner
	StatusReader
}

// Options configures the handler server.
type Options struct {
	Pipeline     Pipeline
	RequiredRole string        // OATHPIPE_REQUIRED_ROLE; empty: the function key is enough
	HTTPBudget   time.Duration // OATHPIPE_HTTP_BUDGET: time budget of one HTTP API request
	MaxDequeue   int           // host.json maxDequeueCount (default DefaultMaxDequeue)
	PGPKey       PGPPublicKey  // GET /api/pgp-key; nil answers not-found
	Parker       Parker        // token-parked; required for ProvisionFailed to never lose a message
	Lifecycle    Lifecycle     // inventory views and retire (tokens.go); nil answers internal
	Reconciler   Reconciler    // the Reconcile timer function (reconcile.go)
	Reports      ReportReader  // seed-reports, for GET /api/reconcile/latest
	Logger       *slog.Logger
}

// Function names: the folder names under functions/, which the host POSTs to.
const (
	FuncImportSeeds     = "ImportSeeds"
	FuncProvisionToken  = "ProvisionToken"
	FuncProvisionFailed = "ProvisionFailed"
	FuncTokenAssignment = "TokenAssignment"
	FuncImportStatus    = "ImportStatus"
)

// DefaultMaxDequeue is host.json's queues.maxDequeueCount: deliveries of a queue message before
// the host moves it to the poison queue.
const DefaultMaxDequeue = 5

// Server is the custom handler: an http.Handler with one route per function.
type Server struct {
	p          Pipeline
	role       string
	budget     time.Duration
	maxDQ      int
	park       Parker
	pgp        PGPPublicKey
	life       Lifecycle
	reconciler Reconciler
	reports    ReportReader
	log        *slog.Logger
	mux        *http.ServeMux
}

// New returns the handler server.
func New(o Options) *Server {
	s := &Server{p: o.Pipeline, role: o.RequiredRole, budget: o.HTTPBudget, maxDQ: o.MaxDequeue, park: o.Parker, pgp: o.PGPKey, life: o.Lifecycle, reconciler: o.Reconciler, reports: o.Reports, log: o.Logger}
	if s.budget <= 0 {
		s.budget = 60 * time.Second
	}
	if s.maxDQ <= 0 {
		s.maxDQ = DefaultMaxDequeue
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// The invocation id, and the import id and serial below it, travel in the context.
	s.log = slog.New(logctx.NewHandler(s.log.Handler()))
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /{$}", s.ready)
	s.mux.HandleFunc("HEAD /{$}", s.ready)
	s.mux.HandleFunc("POST /"+FuncImportSeeds, s.invocation(FuncImportSeeds, s.importSeeds))
	s.mux.HandleFunc("POST /"+FuncProvisionToken, s.invocation(FuncProvisionToken, s.provisionToken))
	s.mux.HandleFunc("POST /"+FuncProvisionFailed, s.invocation(FuncProvisionFailed, s.provisionFailed))
	s.mux.HandleFunc("POST /"+FuncTokenAssignment, s.invocation(FuncTokenAssignment, s.httpFunction(TokenAssignmentRoute, tokenAssignmentMethods, s.assignmentAPI)))
	s.mux.HandleFunc("POST /"+FuncImportStatus, s.invocation(FuncImportStatus, s.httpFunction(ImportStatusRoute, importStatusMethods, s.importStatusAPI)))
	s.mux.HandleFunc("POST /"+FuncPgpKey, s.invocation(FuncPgpKey, s.httpFunction(PGPKeyRoute, pgpKeyMethods, s.pgpKeyAPI)))
	s.mux.HandleFunc("POST /"+FuncTokens, s.invocation(FuncTokens, s.httpFunction(TokensRoute, tokensMethods, s.tokensAPI)))
	s.mux.HandleFunc("POST /"+FuncRetireToken, s.invocation(FuncRetireToken, s.httpFunction(TokenRoute, tokenMethods, s.retireTokenAPI)))
	s.mux.HandleFunc("POST /"+FuncReconcile, s.invocation(FuncReconcile, s.reconcile))
	s.mux.HandleFunc("POST /"+FuncReconcileLatest, s.invocation(FuncReconcileLatest, s.httpFunction(ReconcileLatestRoute, reconcileLatestMethods, s.reconcileLatestAPI)))
	s.mux.HandleFunc("POST /"+FuncUserTokens, s.invocation(FuncUserTokens, s.httpFunction(UserTokensRoute, userTokensMethods, s.userTokensAPI)))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// ready answers the host's readiness ping. It makes no network call.
func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `{"status":"ready"}`+"\n")
}

// outcome is what a function handler decided: the host status (200, or 500 to have the host
// retry) and the response to encode.
type outcome struct {
	status int
	resp   Response
}

// invocationFunc handles one decoded invocation.
type invocationFunc func(ctx context.Context, log *slog.Logger, in *Invocation) outcome

// invocation wraps a function handler: it decodes the payload, tags the log with the
// invocation id, recovers panics (answering 500 without their text leaking into Logs), and
// writes the answer.
func (s *Server) invocation(name string, h invocationFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		log := s.log.With(logctx.Function, name)
		ctx := r.Context()
		if id := r.Header.Get("X-Azure-Functions-InvocationId"); id != "" && len(id) <= 64 {
			ctx = logctx.WithInvocation(ctx, id)
		}
		in, err := DecodeInvocation(r)
		if err != nil {
			log.ErrorContext(ctx, "undecodable invocation", logctx.Error, err)
			out := badInvocation(name, err)
			writeResponse(w, out.status, out.resp)
			return
		}
		out := s.safely(ctx, log, in, h)
		writeResponse(w, out.status, out.resp)
	}
}

func (s *Server) safely(ctx context.Context, log *slog.Logger, in *Invocation, h invocationFunc) (out outcome) {
	defer func() {
		if v := recover(); v != nil {
			// The panic value may hold anything; log only its type and the stack.
			log.ErrorContext(ctx, "handler panic", "panicType", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
			out = outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{"internal error; see the handler's log"}}}
		}
	}()
	return h(ctx, log, in)
}

// badInvocation answers a payload that cannot be decoded. For the HTTP functions the host
// still gets 200 and the caller a problem; storage triggers get 500 so the host retries and,
// if the payload never decodes, parks the message or blob in its poison queue (visible to
// operators) instead of the handler dropping it silently.
func badInvocation(name string, err error) outcome {
	msg := "undecodable invocation payload: " + err.Error()
	switch name {
	case FuncTokenAssignment, FuncImportStatus, FuncTokens, FuncRetireToken, FuncUserTokens, FuncReconcileLatest:
		c := codeMalformedBody
		if isTooLarge(err) {
			c = codeBodyTooLarge
		}
		return outcome{status: http.StatusOK, resp: Response{
			Outputs: map[string]any{"res": problemResponse(newProblem(c, "The request could not be read."))},
			Logs:    []string{msg},
		}}
	}
	return outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{msg}}}
}
