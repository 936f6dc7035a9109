// Command oathpipe-dev runs oathpipe's local stack: Azurite, the Key Vault and Graph stand-ins,
// `oathpipe serve` as the Functions host would start it, and a runner that plays the host
// (blob and queue triggers with retries and poison queues, HTTP requests on 127.0.0.1:7071/api).
// It is a separate binary so the deployed one carries no stand-ins.
//
//	oathpipe-dev [up] [flags]   run the stack until Ctrl-C or SIGTERM; print its endpoints as one JSON line
//	oathpipe-dev demo [flags]   bring the stack up, import the sample vendor files, reassign a token, stop
//	oathpipe-dev upload FILE... drop vendor files into seed-inbox of a running stack
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/oathpipe/oathpipe/internal/devstack"
	"github.com/oathpipe/oathpipe/shared/logctx"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // the stack or the demo failed
	exitUsage   = 2 // bad flags or paths
	exitSignals = 0 // stopped by Ctrl-C or SIGTERM: a normal end for `up`
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "up"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "up", "demo":
	case "upload":
		return runUpload(args, stdout, stderr)
	case "help":
		usage(stderr)
		return exitOK
	default:
		fmt.Fprintf(stderr, "oathpipe-dev: unknown command %q\n\n", cmd)
		usage(stderr)
		return exitUsage
	}

	fs := flag.NewFlagSet("oathpipe-dev "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "project root (host.json, functions/, testdata/); default: found from the working directory")
	app := fs.String("app", "", "the oathpipe binary; default: next to oathpipe-dev, else built with go build")
	users := fs.String("users", "", "users for the Graph stand-in (JSON); default ROOT/testdata/users.json")
	api := fs.String("api", "127.0.0.1:7071", "address of the HTTP front (/api/...)")
	retry := fs.Duration("retry-delay", 2*time.Second, "wait before a failed message or blob is tried again (host.json says 30s)")
	level := fs.String("log-level", "info", "runner and stack log level: debug, info, warn, error")
	appLevel := fs.String("app-log-level", "", "the app's OATHPIPE_LOG_LEVEL (default: error for demo, info for up)")
	noApp := fs.Bool("no-app", false, "up: start storage and the stand-ins only, for `func start` (see docs/local.md)")
	settingsOut := fs.String("local-settings", "", "up: write a local.settings.json for `func start` pointing at this stack")
	files := fs.String("files", "", "demo: comma-separated vendor files; default ROOT/testdata/demo/token2-batch-{clean,mistakes}.csv")
	timeout := fs.Duration("timeout", 2*time.Minute, "demo: give up when the imports have not settled by then")
	var sec secretFlags
	fs.StringVar(&sec.pskcKey, "pskc-key", "", "hex pre-shared key for encrypted PSKC files: the app's OATHPIPE_PSKC_KEY")
	fs.StringVar(&sec.pskcPassword, "pskc-password", "", "password for PBKDF2-protected PSKC files: the app's OATHPIPE_PSKC_PASSWORD")
	fs.StringVar(&sec.pgpKeyFile, "pgp-key", "", "FILE: an ASCII-armored OpenPGP private key, put in the stand-in vault for PGP-encrypted seed files")
	fs.Func("zip-password", "a password for password-protected zip files (repeatable), put in the stand-in vault", func(v string) error {
		sec.zipPasswords = append(sec.zipPasswords, v)
		return nil
	})
	fs.Usage = func() { usage(stderr); fmt.Fprintln(stderr, "\nflags:"); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oathpipe-dev %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return exitUsage
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "oathpipe-dev: --log-level %q: want debug, info, warn or error\n", *level)
		return exitUsage
	}
	if cmd == "demo" && !flagSet(fs, "log-level") {
		lvl = slog.LevelWarn // the demo's own output is the story; the logs are for trouble
	}
	log := slog.New(logctx.NewHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})))

	var err error
	if *root, err = findRoot(*root); err != nil {
		fmt.Fprintln(stderr, "oathpipe-dev:", err)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := devstack.Options{Root: *root, UsersFile: *users, APIAddr: *api, RetryDelay: *retry, NoApp: *noApp,
		Logger: log, AppOutput: stderr}
	if opts.Settings, opts.VaultSecrets, err = sec.apply(os.Getenv); err != nil {
		fmt.Fprintln(stderr, "oathpipe-dev:", err)
		return exitUsage
	}
	if *appLevel == "" && os.Getenv("OATHPIPE_LOG_LEVEL") == "" {
		*appLevel = "info"
		if cmd == "demo" {
			// The demo's mistakes are expected and shown in its tables; the app logs them at warn.
			*appLevel = "error"
		}
	}
	if *appLevel != "" {
		opts.Settings["OATHPIPE_LOG_LEVEL"] = *appLevel
	}
	if !*noApp {
		var cleanup func()
		opts.AppPath, cleanup, err = findApp(ctx, *app, *root, log)
		if err != nil {
			fmt.Fprintln(stderr, "oathpipe-dev:", err)
			return exitUsage
		}
		defer cleanup()
	}

	if cmd == "demo" {
		if !flagSet(fs, "api") && !canListen(*api) {
			// The demo prints its API address; it need not fail because 7071 is in use.
			log.Warn("port in use; the demo's HTTP front takes a free port", "api", *api)
			opts.APIAddr = "127.0.0.1:0"
		}
		var fileList []string
		if *files != "" {
			fileList = strings.Split(*files, ",")
		} else {
			fileList = []string{
				filepath.Join(*root, "testdata", "demo", "token2-batch-clean.csv"),
				filepath.Join(*root, "testdata", "demo", "token2-batch-mistakes.csv"),
			}
		}
		return runDemo(ctx, opts, fileList, *timeout, stdout, stderr)
	}
	return runUp(ctx, opts, *settingsOut, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: oathpipe-dev [up|demo|upload] [flags]

  up     run the local stack until Ctrl-C or SIGTERM (the default); prints one JSON line
         with every endpoint, then logs what the runner delivers
  demo   bring the stack up, import the sample vendor files, show the outcome per token,
         reassign one token and retire another through the HTTP API, print a reconciliation
         summary, shut down; exit 0 only if all of it worked
  upload --connection-string CS FILE...
         drop vendor files into seed-inbox of a running stack (Azure SDK)

Run 'oathpipe-dev up -h' for the flags.
`)
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// runUp runs the stack until ctx ends (Ctrl-C or SIGTERM).
func runUp(ctx context.Context, opts devstack.Options, settingsOut string, stdout, stderr io.Writer) int {
	s, err := devstack.Start(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "oathpipe-dev: interrupted while starting; everything started is stopped")
			return exitSignals
		}
		fmt.Fprintln(stderr, "oathpipe-dev:", err)
		return exitFailed
	}
	defer s.Stop()
	line, _ := json.Marshal(s.Endpoints)
	fmt.Fprintln(stdout, string(line))
	if settingsOut != "" {
		if err := writeLocalSettings(settingsOut, s); err != nil {
			fmt.Fprintln(stderr, "oathpipe-dev:", err)
			return exitFailed
		}
		opts.Logger.Info("wrote local settings for func start", "path", settingsOut)
	}
	if opts.NoApp {
		opts.Logger.Info("storage and stand-ins ready (no app, no runner); Ctrl-C stops them")
	} else {
		opts.Logger.Info("stack ready; Ctrl-C stops it", "api", s.Endpoints.APIBase)
	}
	<-ctx.Done()
	opts.Logger.Info("stopping")
	return exitSignals
}

// canListen reports whether addr is free to listen on.
func canListen(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// writeLocalSettings writes a local.settings.json for Core Tools pointing at the stack.
func writeLocalSettings(path string, s *devstack.Stack) error {
	values := s.Settings(0)
	delete(values, "FUNCTIONS_CUSTOMHANDLER_PORT") // the host sets it
	doc := map[string]any{"IsEncrypted": false, "Values": values, "Host": map[string]any{"LocalHttpPort": 7071}}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// findRoot returns dir, or the nearest folder above the working directory (then above this
// executable) holding host.json and functions/.
func findRoot(dir string) (string, error) {
	isRoot := func(d string) bool {
		_, e1 := os.Stat(filepath.Join(d, "host.json"))
		st, e2 := os.Stat(filepath.Join(d, "functions"))
		return e1 == nil && e2 == nil && st.IsDir()
	}
	if dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil || !isRoot(abs) {
			return "", fmt.Errorf("--root %s: no host.json and functions/ there", dir)
		}
		return abs, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, d := range starts {
		for {
			if isRoot(d) {
				return d, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", errors.New("cannot find the project root (host.json and functions/); run from the checkout or pass --root")
}

// findApp returns the oathpipe binary: --app, the one next to this executable, or a fresh build.
func findApp(ctx context.Context, app, root string, log *slog.Logger) (string, func(), error) {
	noop := func() {}
	if app != "" {
		abs, err := filepath.Abs(app)
		if err != nil {
			return "", noop, err
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() {
			return "", noop, fmt.Errorf("--app %s: not a file", app)
		}
		return abs, noop, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "oathpipe")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, noop, nil
		}
	}
	dir, err := os.MkdirTemp("", "oathpipe-build-")
	if err != nil {
		return "", noop, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	out := filepath.Join(dir, "oathpipe")
	log.Info("building the app", "root", root)
	build := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	build.Dir = root
	if msg, err := build.CombinedOutput(); err != nil {
		cleanup()
		return "", noop, fmt.Errorf("go build the app: %v\n%s", err, msg)
	}
	return out, cleanup, nil
}
