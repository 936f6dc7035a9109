package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/oathpipe/oathpipe/handlers"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/entra"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/storage"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// shutdownGrace is how long in-flight invocations may finish after SIGTERM. The host stops
// sending work first; queue messages not finished are redelivered, so this only needs to cover
// a typical provisioning call.
const shutdownGrace = 25 * time.Second

// listenAddr is where `oathpipe serve` listens: the loopback address the Functions host dials.
func listenAddr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// runServe is `oathpipe serve`: the Functions custom handler on FUNCTIONS_CUSTOMHANDLER_PORT.
func runServe(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: oathpipe serve\n\nRuns the Azure Functions custom handler. Every setting comes from the environment\n(see local.settings.sample.json); the Functions host sets FUNCTIONS_CUSTOMHANDLER_PORT.")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return serve(ctx, os.Getenv, os.Stdout, stderr, nil)
}

// serve loads the settings, wires the pipeline and serves until ctx ends. It makes no network
// call before listening, so the host's readiness ping is answered within milliseconds. When
// ready is not nil it receives the listening address.
func serve(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) int {
	cfg, err := config.Load(getenv)
	if err != nil {
		fmt.Fprintln(stderr, "oathpipe serve: bad settings:")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "  "+line)
		}
		return exitUsage
	}
	log := newLogger(stdout, stderr, cfg.LogLevel)
	srv, err := newHandler(cfg, log)
	if err != nil {
		log.Error("cannot start", logctx.Error, err)
		return exitUsage
	}
	// Loopback only: the host connects to http://127.0.0.1:{port} (WorkerConstants.HostName in
	// azure-functions-host, src/WebJobs.Script/Workers/WorkerConstants.cs), and nothing else
	// should reach the worker.
	ln, err := net.Listen("tcp", listenAddr(cfg.Port))
	if err != nil {
		log.Error("cannot listen", "port", cfg.Port, logctx.Error, err)
		return exitProblem
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// No write timeout: an import may legitimately run for minutes (host.json functionTimeout).
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("oathpipe serve listening", "addr", ln.Addr().String(), "activation", cfg.Activation,
		"roleRequired", cfg.RequiredRole != "", "httpBudget", cfg.HTTPBudget.String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		log.Error("server stopped", logctx.Error, err)
		return exitProblem
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("shutdown cut in-flight invocations short", logctx.Error, err)
		return exitProblem
	}
	return exitOK
}

// newLogger logs JSON lines at level: records below WARN to stdout, WARN and ERROR to stderr.
// The Functions host logs a custom handler's stdout lines as Information and every stderr line
// as an Error (a Warning when the line contains "warn"): HttpWorkerDescription.cs sets
// UseStdErrorStreamForErrorsOnly, read by WorkerProcess.cs ParseErrorMessageAndLog. So routine
// lines must never go to stderr. The JSON "level" field is "WARN" for warnings, so the host
// files them as Warnings.
func newLogger(stdout, stderr io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	// logctx adds the invocation id, import id and serial the context carries to every line.
	return slog.New(logctx.NewHandler(splitHandler{
		low:  slog.NewJSONHandler(stdout, opts),
		high: slog.NewJSONHandler(stderr, opts),
	})).With("app", "oathpipe")
}

// splitHandler sends records below WARN to low and the others to high.
type splitHandler struct{ low, high slog.Handler }

func (h splitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if l >= slog.LevelWarn {
		return h.high.Enabled(ctx, l)
	}
	return h.low.Enabled(ctx, l)
}

func (h splitHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		return h.high.Handle(ctx, r)
	}
	return h.low.Handle(ctx, r)
}

func (h splitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return splitHandler{low: h.low.WithAttrs(as), high: h.high.WithAttrs(as)}
}

func (h splitHandler) WithGroup(name string) slog.Handler {
	return splitHandler{low: h.low.WithGroup(name), high: h.high.WithGroup(name)}
}

// newHandler wires the handlers over the app (newApp).
func newHandler(cfg *config.Config, log *slog.Logger) (*handlers.Server, error) {
	a, err := newApp(cfg, log)
	if err != nil {
		return nil, err
	}
	return handlers.New(handlers.Options{
		Pipeline:     a.pipeline,
		PGPKey:       a.pipeline,
		RequiredRole: cfg.RequiredRole,
		HTTPBudget:   cfg.HTTPBudget,
		Parker:       a.account.Blobs,
		Lifecycle:    a.lifecycle,
		Reconciler:   a.reconciliation,
		Reports:      a.account.Blobs,
		Logger:       log.With(logctx.Component, "handlers"),
	}), nil
}

// app is the pipeline and what else the handlers and the command line use, wired from cfg.
type app struct {
	pipeline       *pipeline.Pipeline
	lifecycle      *pipeline.Lifecycle
	reconciliation pipeline.Reconciliation
	account        *storage.Account
}

// newApp wires the pipeline from cfg: credential and transport, Key Vault, Graph, storage
// and ledger. Every constructor here is offline; the first request makes the first call.
func newApp(cfg *config.Config, log *slog.Logger) (*app, error) {
	cred, err := azauth.Credential(cfg)
	if err != nil {
		return nil, err
	}
	hc, err := azauth.HTTPClient(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("OATHPIPE_CA_FILE: %w", err)
	}
	v, err := vault.New(vault.Options{VaultURL: cfg.KeyVaultURL, Credential: cred, HTTPClient: hc, Logger: log.With(logctx.Component, "vault")})
	if err != nil {
		return nil, fmt.Errorf("OATHPIPE_KEYVAULT_URL: %w", err)
	}
	dir, err := entra.New(entra.Options{GraphURL: cfg.GraphURL, Credential: cred, HTTPClient: hc, Logger: log.With(logctx.Component, "entra"),
		AdaptiveWrites: true})
	if err != nil {
		return nil, fmt.Errorf("OATHPIPE_GRAPH_URL: %w", err)
	}
	scred, err := storageCredential(cfg, cred)
	if err != nil {
		return nil, err
	}
	acct, err := storage.Open(cfg, scred, hc, log.With(logctx.Component, "storage"))
	if err != nil {
		return nil, fmt.Errorf("SeedStorage: %w", err)
	}
	p := pipeline.New(pipeline.Deps{
		Vault: v, Directory: dir, Ledger: acct.Ledger, Queue: acct.Provision, Blobs: acct.Blobs,
		Inbox: acct.Blobs, Imports: acct.Imports, ImportBudget: cfg.ImportBudget,
		Requeue: acct.Provision, ThrottleMaxWait: cfg.ThrottleMaxWait,
		Activation:       cfg.Activation,
		VaultConcurrency: cfg.VaultConcurrency,
		ReadOptions:      seedfile.Options{PSKCKey: cfg.PSKCKey, PSKCPassword: cfg.PSKCPassword},
		Envelope:         envelopeSecrets(v, cfg),
		Notifier:         notifier(cfg, hc),
		ReportsURL:       acct.Blobs.ReportsURL(),
		Logger:           log.With(logctx.Component, "pipeline"),
	})
	life := pipeline.NewLifecycle(p, pipeline.LifecycleDeps{Inventory: dir, Seeds: v})
	return &app{pipeline: p, lifecycle: life, account: acct, reconciliation: pipeline.Reconciliation{
		Lifecycle: life, Seeds: vaultCatalog{v}, Reports: acct.Blobs,
		Options: pipeline.ReconcileOptions{TakeBackDisabled: cfg.ReconcileTakeBack, StuckAfter: cfg.ReconcileStuckAfter},
	}}, nil
}

// storageCredential is the identity for the seed storage account: the user-assigned identity
// named by SeedStorage__clientId (the same one the host uses for the triggers) when set,
// otherwise the app's credential.
func storageCredential(cfg *config.Config, cred azcore.TokenCredential) (azcore.TokenCredential, error) {
	if cfg.StorageConnectionString != "" || cfg.StorageClientID == "" || cfg.OfflineToken != "" ||
		cfg.StorageClientID == cfg.ManagedIdentityClientID {
		return cred, nil
	}
	c, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ID: azidentity.ClientID(cfg.StorageClientID),
	})
	if err != nil {
		return nil, fmt.Errorf("SeedStorage__clientId: %w", err)
	}
	return c, nil
}
