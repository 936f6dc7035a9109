// Package devstack brings up oathpipe's local stack: Azurite, the Key Vault and Graph
// stand-ins, `oathpipe serve` as a child process started the way the Functions host starts it,
// and the runner that plays the host (blob and queue triggers, the HTTP front on /api). It is
// what `oathpipe-dev` and the end-to-end tests run.
package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/oathpipe/oathpipe/internal/azurite"
	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/internal/runner"
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/logctx"
)

// OfflineToken is the bearer token the stand-ins accept and the app sends
// (OATHPIPE_OFFLINE_TOKEN); the same value as local.settings.sample.json.
const OfflineToken = "oathpipe-local-offline-token"

// Options configures a stack.
type Options struct {
	Root      string // project root: host.json, functions/, testdata/ (required)
	AppPath   string // the oathpipe binary (required unless NoApp)
	UsersFile string // Graph stand-in directory; default Root/testdata/users.json
	APIAddr   string // HTTP front; default 127.0.0.1:7071 ("127.0.0.1:0" picks a free port)
	NoApp     bool   // start storage and the stand-ins only (for `func start`)

	// RetryDelay is how long a failed queue message or blob waits before its next try.
	// host.json says 30s; the local default is 2s so retries show up while you watch.
	RetryDelay time.Duration
	// Settings are extra app settings for the child (e.g. OATHPIPE_LOG_LEVEL=debug). They win
	// over the app settings found in the environment (see Stack.Settings).
	Settings map[string]string
	// VaultSecrets are put into the Key Vault stand-in before the app starts, name → value:
	// the PGP private key (PGPKeySecret) and the zip passwords (ZipPasswordsSecret) the app
	// reads at import time.
	VaultSecrets map[string]string
	// Graph tunes the Graph stand-in (latency, throttling); Users is filled from UsersFile.
	Graph graphstandin.Options
	// Vault tunes the Key Vault stand-in.
	Vault kvstandin.Options

	Logger    *slog.Logger
	AppOutput io.Writer             // the child's stdout and stderr; default os.Stderr
	Observe   func(runner.Delivery) // called after every delivery the runner makes
}

// Endpoints is everything a developer (or a test) needs to reach the stack. oathpipe-dev
// prints it as one JSON line.
type Endpoints struct {
	StorageConnectionString string `json:"storageConnectionString"`
	BlobURL                 string `json:"blobURL"`
	QueueURL                string `json:"queueURL"`
	TableURL                string `json:"tableURL"`
	VaultURL                string `json:"vaultURL"`
	GraphURL                string `json:"graphURL"`
	APIBase                 string `json:"apiBase,omitempty"`    // http://127.0.0.1:7071/api
	HandlerURL              string `json:"handlerURL,omitempty"` // the `oathpipe serve` child
	CAFile                  string `json:"caFile"`               // the stand-ins' certificates (OATHPIPE_CA_FILE)
	OfflineToken            string `json:"offlineToken"`         // accepted by the stand-ins only
}

// Stack is a running local stack. Stop it with Stop.
type Stack struct {
	Endpoints Endpoints
	Azurite   *azurite.Server
	Vault     *kvstandin.Running
	Graph     *graphstandin.Running
	Users     []graphstandin.User // the Graph stand-in's directory

	opts  Options
	log   *slog.Logger
	dir   string // state: the CA bundle
	fns   []runner.Function
	host  runner.Host
	front *http.Server

	life       sync.Mutex // serialises starting, stopping and restarting the app
	closed     bool       // Stop was called (under life)
	quickFails int        // consecutive crashes soon after start (under life)
	restarts   int        // restarts after a crash (under life)
	appPort    int        // FUNCTIONS_CUSTOMHANDLER_PORT, chosen once (under life)
	done       context.Context
	cancel     context.CancelFunc // cancels done: Stop interrupts a restart in progress

	mu   sync.Mutex
	app  *appProcess // nil while the app is stopped
	down bool        // the app kept crashing and is not restarted
}

// appProcess is the `oathpipe serve` child and the runner delivering to it.
type appProcess struct {
	cmd        *exec.Cmd
	exited     chan struct{}
	runner     *runner.Runner
	stopRun    context.CancelFunc
	runDone    chan struct{}
	handlerURL string
	started    time.Time
}

// Start brings the stack up and returns when the app answers and the runner runs. On error
// everything already started is stopped.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if o.Root == "" {
		return nil, errors.New("devstack: Root is required")
	}
	if o.AppPath == "" && !o.NoApp {
		return nil, errors.New("devstack: AppPath is required")
	}
	if o.UsersFile == "" {
		o.UsersFile = filepath.Join(o.Root, "testdata", "users.json")
	}
	if o.APIAddr == "" {
		o.APIAddr = "127.0.0.1:7071"
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if o.AppOutput == nil {
		o.AppOutput = os.Stderr
	}
	s := &Stack{opts: o, log: o.Logger}
	s.done, s.cancel = context.WithCancel(context.Background())
	if err := s.start(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// start brings up what Start promises; on error Start stops whatever it had started.
func (s *Stack) start(ctx context.Context) (err error) {
	o := s.opts
	if s.fns, err = runner.LoadFunctions(filepath.Join(o.Root, "functions")); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	if s.host, err = runner.LoadHost(filepath.Join(o.Root, "host.json")); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.host.VisibilityTimeout = o.RetryDelay
	s.host.MaxPollInterval = min(s.host.MaxPollInterval, time.Second)

	if s.dir, err = os.MkdirTemp("", "oathpipe-dev-"); err != nil {
		return fmt.Errorf("devstack: state folder: %w", err)
	}

	if os.Getenv("OATHPIPE_AZURITE") == "" {
		if p := filepath.Join(o.Root, "node_modules", ".bin", "azurite"); fileExists(p) {
			_ = os.Setenv("OATHPIPE_AZURITE", p)
		}
	}
	if s.Azurite, err = azurite.Start(ctx); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.log.Info("azurite started", "blob", s.Azurite.BlobURL(), "queue", s.Azurite.QueueURL(), "table", s.Azurite.TableURL(), "pid", s.Azurite.Pid())

	vo := o.Vault
	vo.Token = OfflineToken
	if s.Vault, err = kvstandin.StartTLS(vo); err != nil {
		return fmt.Errorf("devstack: key vault stand-in: %w", err)
	}
	gopts := o.Graph
	gopts.Token = OfflineToken
	if gopts.Users, err = graphstandin.LoadUsers(o.UsersFile); err != nil {
		return fmt.Errorf("devstack: users for the Graph stand-in (--users): %w", err)
	}
	s.Users = gopts.Users
	if s.Graph, err = graphstandin.StartTLS(gopts); err != nil {
		return fmt.Errorf("devstack: graph stand-in: %w", err)
	}
	s.log.Info("stand-ins started", "vault", s.Vault.URL, "graph", s.Graph.URL, "users", len(gopts.Users))
	for name, value := range o.VaultSecrets {
		if err = putSecret(s.Vault.Server, name, value); err != nil {
			return fmt.Errorf("devstack: key vault stand-in: %w", err)
		}
		s.log.Info("secret put in the key vault stand-in", logctx.Secret, name, "bytes", len(value))
	}

	caFile := filepath.Join(s.dir, "ca.pem")
	bundle := append(append([]byte{}, s.Vault.CAPEM...), s.Graph.CAPEM...)
	if err = os.WriteFile(caFile, bundle, 0o600); err != nil {
		return fmt.Errorf("devstack: write CA bundle: %w", err)
	}
	s.Endpoints = Endpoints{
		StorageConnectionString: s.Azurite.ConnectionString(),
		BlobURL:                 s.Azurite.BlobURL(),
		QueueURL:                s.Azurite.QueueURL(),
		TableURL:                s.Azurite.TableURL(),
		VaultURL:                strings.TrimRight(s.Vault.URL, "/") + "/",
		GraphURL:                strings.TrimRight(s.Graph.URL, "/"),
		CAFile:                  caFile,
		OfflineToken:            OfflineToken,
	}
	if err = ensureResources(ctx, s.Endpoints.StorageConnectionString, s.log); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	if o.NoApp {
		return nil
	}

	ln, err := net.Listen("tcp", o.APIAddr)
	if err != nil {
		return fmt.Errorf("devstack: HTTP front on %s (--api): %w", o.APIAddr, err)
	}
	s.Endpoints.APIBase = "http://" + ln.Addr().String() + "/" + s.host.RoutePrefix
	s.front = &http.Server{Handler: http.HandlerFunc(s.serveFront), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.front.Serve(ln) }()

	if err = s.StartApp(ctx); err != nil {
		return err
	}
	s.Endpoints.HandlerURL = "http://127.0.0.1:" + strconv.Itoa(s.appPort)
	return nil
}

// stackOwned are the settings only the stack sets: they point the app at Azurite and the
// stand-ins, so an environment that names a real vault or tenant never reaches the child.
var stackOwned = map[string]bool{
	"FUNCTIONS_CUSTOMHANDLER_PORT": true, "FUNCTIONS_WORKER_RUNTIME": true, config.StorageConnection: true,
	"AzureWebJobsStorage": true, "OATHPIPE_KEYVAULT_URL": true, "OATHPIPE_GRAPH_URL": true, "OATHPIPE_CA_FILE": true,
	"OATHPIPE_OFFLINE_TOKEN": true, "OATHPIPE_MANAGED_IDENTITY_CLIENT_ID": true,
}

// Settings returns the app settings the child gets, as the host would pass them (the shape
// of local.settings.sample.json's Values), for a handler on port: the stack's own, then every
// other setting the app reads (config.Settings) that the environment has — OATHPIPE_PSKC_KEY,
// OATHPIPE_ACTIVATION, OATHPIPE_PGP_KEY_SECRET, ... — then Options.Settings.
func (s *Stack) Settings(port int) map[string]string {
	m := map[string]string{
		"FUNCTIONS_CUSTOMHANDLER_PORT": strconv.Itoa(port),
		"FUNCTIONS_WORKER_RUNTIME":     "custom",
		config.StorageConnection:       s.Endpoints.StorageConnectionString,
		"AzureWebJobsStorage":          s.Endpoints.StorageConnectionString,
		"OATHPIPE_KEYVAULT_URL":        s.Endpoints.VaultURL,
		"OATHPIPE_GRAPH_URL":           s.Endpoints.GraphURL,
		"OATHPIPE_CA_FILE":             s.Endpoints.CAFile,
		"OATHPIPE_OFFLINE_TOKEN":       OfflineToken,
		"OATHPIPE_ACTIVATION":          config.ActivationAuto,
		"OATHPIPE_LOG_LEVEL":           "info",
	}
	for _, set := range config.Settings {
		if v, ok := os.LookupEnv(set.Name); ok && !stackOwned[set.Name] && !strings.HasPrefix(set.Name, "SeedStorage") {
			m[set.Name] = v
		}
	}
	for k, v := range s.opts.Settings {
		m[k] = v
	}
	return m
}

// StartApp starts `oathpipe serve` and the runner (after StopApp or KillApp).
func (s *Stack) StartApp(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	return s.startApp(ctx)
}

// startApp starts the app and its runner; the caller holds s.life. When the app exits on its own
// later, supervise restarts it, as the Functions host restarts a crashed custom handler.
func (s *Stack) startApp(ctx context.Context) error {
	if s.closed {
		return errors.New("devstack: the stack is stopped")
	}
	s.mu.Lock()
	running := s.app != nil
	s.mu.Unlock()
	if running {
		return errors.New("devstack: the app is already running")
	}
	if s.appPort == 0 {
		// One port for the stack's life: restarts keep the handler URL printed at start.
		p, err := freePort()
		if err != nil {
			return fmt.Errorf("devstack: handler port: %w", err)
		}
		s.appPort = p
	}
	port := s.appPort
	cmd := exec.Command(s.opts.AppPath, "serve")
	cmd.Dir = s.opts.Root
	settings := s.Settings(port)
	cmd.Env = appEnv(os.Environ(), settings)
	cmd.Stdout, cmd.Stderr = s.opts.AppOutput, s.opts.AppOutput
	// Its own process group, killed with us if we die first.
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("devstack: start %s serve: %w", s.opts.AppPath, err)
	}
	a := &appProcess{cmd: cmd, exited: make(chan struct{}), handlerURL: "http://127.0.0.1:" + strconv.Itoa(port), started: time.Now()}
	go func() { _ = cmd.Wait(); close(a.exited) }()
	// HttpWorkerOptions.cs InitializationTimeout: the host gives the handler 30 s to answer.
	if err := waitHandler(ctx, a, 30*time.Second); err != nil {
		a.kill(syscall.SIGKILL)
		<-a.exited
		return fmt.Errorf("devstack: oathpipe serve: %w", err)
	}
	s.log.Info("app started", "handler", a.handlerURL, "pid", cmd.Process.Pid)

	var err error
	a.runner, err = runner.New(runner.Options{
		Functions: s.fns, Host: s.host, HandlerURL: a.handlerURL,
		Connection: map[string]string{config.StorageConnection: s.Endpoints.StorageConnectionString},
		Logger:     s.log.With(logctx.Component, "runner"), PollInterval: 200 * time.Millisecond, Observe: s.opts.Observe,
		// The Event Grid system-topic subscription infra/ deploys: BlobCreated of seed-inbox into seed-imports.
		EventGrid: []runner.EventGridSubscription{{Connection: config.StorageConnection, Container: config.InboxContainer, Queue: config.ImportsQueue}},
		// %NAME% in function.json (Reconcile's schedule) from the app's settings; infra/ always
		// sets them in Azure, locally an unset one takes the app's documented default.
		AppSetting: func(name string) string {
			if v := settings[name]; v != "" {
				return v
			}
			for _, st := range config.Settings {
				if st.Name == name {
					return st.Default
				}
			}
			return ""
		},
	})
	if err != nil {
		a.kill(syscall.SIGKILL)
		<-a.exited
		return fmt.Errorf("devstack: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.stopRun, a.runDone = cancel, make(chan struct{})
	go func() { _ = a.runner.Run(rctx); close(a.runDone) }()
	s.mu.Lock()
	s.app = a
	s.mu.Unlock()
	go s.supervise(a)
	return nil
}

// supervise restarts the app when it exits without being asked to. Three crashes in a row,
// each within 10 s of its start, leave it stopped: the HTTP front then answers 503 saying the
// app is down. A crash later than 10 s after its start is not counted (it resets the count).
func (s *Stack) supervise(a *appProcess) {
	<-a.exited
	s.life.Lock()
	defer s.life.Unlock()
	s.mu.Lock()
	current := s.app == a
	if current {
		s.app = nil
	}
	s.mu.Unlock()
	if !current || s.closed {
		return // stopped on purpose
	}
	a.stopRun()
	<-a.runDone
	if time.Since(a.started) < 10*time.Second {
		s.quickFails++
	} else {
		s.quickFails = 0
	}
	s.log.Error("oathpipe serve exited on its own; restarting it as the Functions host would",
		"pid", a.cmd.Process.Pid, "state", a.cmd.ProcessState.String(), "crashes", s.quickFails)
	if s.quickFails >= 3 {
		s.log.Error("oathpipe serve keeps crashing; not restarting it (see its log above)")
		s.mu.Lock()
		s.down = true
		s.mu.Unlock()
		return
	}
	if !sleepCtx(s.done, time.Duration(s.quickFails)*500*time.Millisecond) {
		return
	}
	s.restarts++
	if err := s.startApp(s.done); err != nil {
		s.log.Error("restart the app", logctx.Error, err)
	}
}

// Restarts counts the times the app was restarted after exiting on its own.
func (s *Stack) Restarts() int {
	s.life.Lock()
	defer s.life.Unlock()
	return s.restarts
}

// StopApp stops the runner (queue messages in flight become visible again) and then the app
// with SIGKILL, as the Functions host does.
func (s *Stack) StopApp() { s.stopApp(false) }

// KillApp kills the app with SIGKILL first, as a crashed instance, then stops the runner: the
// invocations in flight fail and are retried after RetryDelay.
func (s *Stack) KillApp() { s.stopApp(true) }

func (s *Stack) stopApp(crash bool) {
	s.life.Lock()
	defer s.life.Unlock()
	s.stopAppLocked(crash)
}

func (s *Stack) stopAppLocked(crash bool) {
	s.mu.Lock()
	a := s.app
	s.app = nil
	s.mu.Unlock()
	if a == nil {
		return
	}
	if crash {
		a.kill(syscall.SIGKILL)
		<-a.exited
		// Let the runner see the failed invocations before it stops.
		time.Sleep(100 * time.Millisecond)
	}
	a.stopRun()
	<-a.runDone
	// The host stops a worker with Process.Kill() (WorkerProcess.cs): SIGKILL, no grace.
	a.kill(syscall.SIGKILL)
	<-a.exited
	s.log.Info("app stopped", "pid", a.cmd.Process.Pid, "crash", crash)
}

func (a *appProcess) kill(sig syscall.Signal) {
	if a.cmd.Process != nil {
		_ = syscall.Kill(-a.cmd.Process.Pid, sig)
	}
}

// AppPID is the process id of the running `oathpipe serve`, or 0.
func (s *Stack) AppPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.app == nil {
		return 0
	}
	return s.app.cmd.Process.Pid
}

// Stop stops everything Start started and removes the state folder. It is safe to call twice.
func (s *Stack) Stop() {
	s.cancel()
	s.life.Lock()
	s.closed = true
	s.stopAppLocked(false)
	s.life.Unlock()
	if s.front != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = s.front.Shutdown(ctx)
		cancel()
		s.front = nil
	}
	if s.Graph != nil {
		s.Graph.Close()
		s.Graph = nil
	}
	if s.Vault != nil {
		s.Vault.Close()
		s.Vault = nil
	}
	if s.Azurite != nil {
		s.Azurite.Stop()
		s.Azurite = nil
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
		s.dir = ""
	}
}

// serveFront hands /api/... to the current runner; while the app restarts it answers 503.
func (s *Stack) serveFront(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	a, down := s.app, s.down
	s.mu.Unlock()
	if a == nil && down {
		http.Error(w, "the app is down: oathpipe serve crashed 3 times within 10 s of its start and is not restarted; see its log", http.StatusServiceUnavailable)
		return
	}
	if a == nil {
		http.Error(w, "the app is restarting", http.StatusServiceUnavailable)
		return
	}
	a.runner.ServeHTTP(w, r)
}

// appEnv is the child's environment: ours without any setting the app reads, plus settings
// (which carry the app settings of ours the child should see: Stack.Settings).
func appEnv(base []string, settings map[string]string) []string {
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OATHPIPE_") || strings.HasPrefix(k, "SeedStorage") || strings.HasPrefix(k, "FUNCTIONS_") || k == "AzureWebJobsStorage" {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range settings {
		env = append(env, k+"="+v)
	}
	return env
}

// waitHandler waits until the handler answers GET / (the host's start-up ping).
func waitHandler(ctx context.Context, a *appProcess, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(a.handlerURL + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-a.exited:
			return fmt.Errorf("exited during start (%v); see its log above", a.cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not listen on FUNCTIONS_CUSTOMHANDLER_PORT within %v", limit)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Secret names the app reads from Key Vault unless OATHPIPE_PGP_KEY_SECRET /
// OATHPIPE_ZIP_PASSWORDS_SECRET name others: an ASCII-armored OpenPGP private key, and a JSON
// array of zip passwords.
const (
	PGPKeySecret       = "oathpipe-pgp-key"
	ZipPasswordsSecret = "oathpipe-zip-passwords"
)

// putSecret sets a secret in the stand-in through its Key Vault REST API (in process).
func putSecret(kv http.Handler, name, value string) error {
	body, err := json.Marshal(map[string]string{"value": value})
	if err != nil {
		return err
	}
	req := httptest.NewRequest(http.MethodPut, "https://127.0.0.1/secrets/"+url.PathEscape(name)+"?api-version=7.5", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+OfflineToken)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	kv.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("put secret %s: %d %s", name, rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	return nil
}
