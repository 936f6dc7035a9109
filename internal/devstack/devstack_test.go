package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/internal/buildtest"
	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/internal/runner"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

var (
	root string        // the checkout
	bins buildtest.Set // oathpipe, built on first use
)

// TestMain removes the binary the tests built. Building is lazy (app), so `go test -list` and
// filtered runs do not pay for it.
func TestMain(m *testing.M) {
	var err error
	if root, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins = buildtest.Set{Root: root, Pkgs: map[string]string{"oathpipe": "."}}
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// app builds the oathpipe binary once and returns its path.
func app(t *testing.T) string { return bins.Path(t, "oathpipe") }

// testLogger sends the stack's log to the test log, so a failure shows what the runner did.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startStack(t *testing.T, o Options) *Stack {
	t.Helper()
	o.Root, o.AppPath, o.APIAddr = root, app(t), "127.0.0.1:0"
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	if o.AppOutput == nil {
		o.AppOutput = tWriter{t}
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// writeVendorFile writes an Entra-format CSV of n tokens with fresh random seeds, spread over
// the sample directory's members, and returns its path and serials.
func writeVendorFile(t *testing.T, name string, n int) (string, []string) {
	t.Helper()
	users := []string{"ada.lovelace", "grace.hopper", "alan.turing", "edsger.dijkstra", "barbara.liskov", "ken.thompson",
		"margaret.hamilton", "donald.knuth", "frances.allen", "john.backus", "radia.perlman", "leslie.lamport"}
	run := make([]byte, 3)
	_, _ = rand.Read(run)
	var b bytes.Buffer
	b.WriteString("upn,serial number,secret key,time interval,manufacturer,model\n")
	var serials []string
	for i := 0; i < n; i++ {
		seed := make([]byte, 20)
		_, _ = rand.Read(seed)
		serial := fmt.Sprintf("E2E%X%04d", run, i)
		serials = append(serials, serial)
		fmt.Fprintf(&b, "%s@contoso.example,%s,%s,30,Token2,C202\n", users[i%len(users)], serial,
			base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(seed))
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, serials
}

// demoFiles are the sample vendor files when they exist, else generated stand-ins for them.
func demoFiles(t *testing.T) []string {
	clean := filepath.Join(root, "testdata", "demo", "token2-batch-clean.csv")
	mistakes := filepath.Join(root, "testdata", "demo", "token2-batch-mistakes.csv")
	if fileExists(clean) && fileExists(mistakes) {
		return []string{clean, mistakes}
	}
	t.Log("testdata/demo not there yet: using generated files")
	c, _ := writeVendorFile(t, "token2-batch-clean.csv", 6)
	m := filepath.Join(t.TempDir(), "token2-batch-mistakes.csv")
	_ = os.WriteFile(m, []byte("upn,serial number,secret key,time interval,manufacturer,model\n"+
		"nobody@contoso.example,MIS0001,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXA,30,Token2,C202\n"+
		"ada.lovelace@contoso.example,MIS0002,not base32!,30,Token2,C202\n"), 0o600)
	return []string{c, m}
}

// lockedBuffer collects log output written from several goroutines and processes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// seedsIn returns the secret-key cells of vendor CSV files.
func seedsIn(t *testing.T, files []string) []string {
	var seeds []string
	for _, f := range files {
		content, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.ReplaceAll(string(content), "\r", ""), "\n")
		col := -1
		for i, h := range strings.Split(lines[0], ",") {
			if strings.Contains(strings.ToLower(h), "secret") {
				col = i
			}
		}
		for _, line := range lines[1:] {
			cells := strings.Split(line, ",")
			if col >= 0 && col < len(cells) && len(strings.TrimSpace(cells[col])) >= 8 {
				seeds = append(seeds, strings.TrimSpace(cells[col]))
			}
		}
	}
	if len(seeds) == 0 {
		t.Fatal("no seeds found in the demo files")
	}
	return seeds
}

func TestDemo(t *testing.T) {
	logs := &lockedBuffer{}
	s := startStack(t, Options{
		Logger:    slog.New(slog.NewTextHandler(io.MultiWriter(logs, tWriter{t}), nil)),
		AppOutput: io.MultiWriter(logs, tWriter{t}),
		Settings:  map[string]string{"OATHPIPE_LOG_LEVEL": "debug"},
	})
	files := demoFiles(t)
	var out bytes.Buffer
	start := time.Now()
	res, err := s.Demo(context.Background(), DemoOptions{Files: files, Timeout: 90 * time.Second, Out: &out, Progress: logs})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("demo flow took %v (stack already up)", time.Since(start))
	if res.Reassigned == nil || res.Reassigned.Status != "activated" || res.Reassigned.PreviousUserPrincipalName == "" {
		t.Fatalf("reassignment = %+v", res.Reassigned)
	}
	// Never a seed in what the demo prints or anything the stack logged (the app at debug).
	everything := strings.ToUpper(out.String() + logs.String())
	for _, seed := range seedsIn(t, files) {
		if strings.Contains(everything, strings.ToUpper(seed)) {
			t.Errorf("a seed from the demo files appears in the demo output or logs: %.4s…", seed)
		}
	}
}

// TestRestartMidImport crashes the app twice — while ImportSeeds is storing seeds, and while
// tokens are being provisioned — and restarts it. Azurite and the stand-ins stay up: they are
// the durable services (Storage, Key Vault, Entra) that outlive a Functions instance in Azure.
// Everything must complete, and nothing may be duplicated.
func TestRestartMidImport(t *testing.T) {
	const n = 24
	var provisioned atomic.Int32
	s := startStack(t, Options{
		// Slow enough to stop in the middle of each phase.
		Vault:    vaultLatency(40 * time.Millisecond),
		Graph:    graphstandin.Options{Latency: 30 * time.Millisecond, WriteRate: -1},
		Settings: map[string]string{"OATHPIPE_VAULT_CONCURRENCY": "2"},
		Observe: func(d runner.Delivery) {
			if d.Function == "ProvisionToken" && d.Err == nil {
				provisioned.Add(1)
			}
		},
	})
	file, serials := writeVendorFile(t, "restart.csv", n)
	ctx := context.Background()
	content, _ := os.ReadFile(file)
	if _, err := s.uploadInbox(ctx, "restart.csv", content); err != nil {
		t.Fatal(err)
	}

	// 1. Crash while seeds are going into the vault.
	waitUntil(t, "the first seeds in the vault", 30*time.Second, func() bool { return len(s.Vault.Server.Secrets()) >= 3 })
	vaulted := len(s.Vault.Server.Secrets())
	s.KillApp()
	if vaulted >= n {
		t.Fatalf("the import finished before the crash (%d seeds); slow the vault down", vaulted)
	}
	t.Logf("crashed the app during ImportSeeds with %d/%d seeds in the vault", vaulted, n)
	if err := s.StartApp(ctx); err != nil {
		t.Fatal(err)
	}

	// 2. Crash while tokens are being provisioned.
	waitUntil(t, "some tokens provisioned", 60*time.Second, func() bool { return provisioned.Load() >= 3 })
	s.KillApp()
	done := int(provisioned.Load())
	if done >= n {
		t.Fatalf("provisioning finished before the crash")
	}
	t.Logf("crashed the app during provisioning with %d/%d tokens done", done, n)
	if err := s.StartApp(ctx); err != nil {
		t.Fatal(err)
	}

	st := waitImport(t, s, "restart.csv", 90*time.Second)
	if st.Counts["activated"] != n {
		t.Fatalf("after the restarts: %v; want %d activated", st.Counts, n)
	}
	// Nothing duplicated: one device per serial, one method per device, one secret per token.
	devices := s.Graph.Server.Devices()
	if len(devices) != n {
		t.Errorf("%d devices in the Graph stand-in; want %d", len(devices), n)
	}
	seen := map[string]bool{}
	for _, d := range devices {
		if seen[d.Serial] {
			t.Errorf("serial %s created twice", d.Serial)
		}
		seen[d.Serial] = true
		if d.Status != "activated" {
			t.Errorf("%s is %s", d.Serial, d.Status)
		}
	}
	for _, serial := range serials {
		if !seen[serial] {
			t.Errorf("serial %s missing from the Graph stand-in", serial)
		}
	}
	methods := 0
	for _, u := range s.Users {
		methods += len(s.Graph.Server.UserMethods(u.UserPrincipalName))
	}
	if methods != n {
		t.Errorf("%d user methods; want %d", methods, n)
	}
	if secrets := len(s.Vault.Server.Secrets()); secrets != n {
		t.Errorf("%d secrets in the vault; want %d", secrets, n)
	}
	// Repeated messages (a redelivered import queues its tokens again; crashed invocations come
	// back after the retry delay) drain as "already settled": the queues empty, nothing poisoned.
	qc, err := azqueue.NewServiceClientFromConnectionString(s.Endpoints.StorageConnectionString, nil)
	if err != nil {
		t.Fatal(err)
	}
	counts := func() (int32, int32) {
		var c [2]int32
		for i, q := range []string{pipeline.ProvisionQueue, pipeline.PoisonQueue} {
			props, err := qc.NewQueueClient(q).GetProperties(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			c[i] = *props.ApproximateMessagesCount
		}
		return c[0], c[1]
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		work, poison := counts()
		if poison != 0 {
			t.Fatalf("%d messages poisoned", poison)
		}
		if work == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds %d messages after 30s", pipeline.ProvisionQueue, work)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Still nothing duplicated once the repeats have run.
	if d := len(s.Graph.Server.Devices()); d != n {
		t.Errorf("%d devices after the queue drained; want %d", d, n)
	}
}

func vaultLatency(d time.Duration) kvstandin.Options { return kvstandin.Options{Latency: d} }

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitImport waits until the import of name has settled and returns its status.
func waitImport(t *testing.T, s *Stack, name string, d time.Duration) *pipeline.ImportStatus {
	t.Helper()
	sts, err := s.waitSettled(context.Background(), []string{name}, d, io.Discard)
	if err != nil {
		if sts[0] != nil {
			for _, tok := range sts[0].Tokens {
				t.Logf("line %d %s: %s %s", tok.Line, tok.SerialNumber, tok.Status, tok.Reason)
			}
		}
		t.Fatal(err)
	}
	return sts[0]
}

// TestCrashedAppIsRestarted kills `oathpipe serve` behind the stack's back: the stack restarts
// it on the same port, as the Functions host restarts a crashed custom handler, and work goes on.
func TestCrashedAppIsRestarted(t *testing.T) {
	s := startStack(t, Options{})
	old := s.AppPID()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the app restarted", 30*time.Second, func() bool { p := s.AppPID(); return p != 0 && p != old })
	if n := s.Restarts(); n != 1 {
		t.Fatalf("Restarts() = %d; want 1", n)
	}
	file, _ := writeVendorFile(t, "after-crash.csv", 2)
	content, _ := os.ReadFile(file)
	if _, err := s.uploadInbox(context.Background(), "after-crash.csv", content); err != nil {
		t.Fatal(err)
	}
	if st := waitImport(t, s, "after-crash.csv", 60*time.Second); st.Counts["activated"] != 2 {
		t.Fatalf("after the restart: %v; want 2 activated", st.Counts)
	}
	// A deliberate stop is not a crash: no restart.
	s.StopApp()
	time.Sleep(300 * time.Millisecond)
	if p := s.AppPID(); p != 0 || s.Restarts() != 1 {
		t.Fatalf("after StopApp: pid %d, %d restarts; want 0 and 1", p, s.Restarts())
	}
}

// children lists the command lines of this test process's live child processes.
func children(t *testing.T) []string {
	t.Helper()
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st := string(b)
		f := strings.Fields(st[strings.LastIndexByte(st, ')')+1:])
		if len(f) < 2 || f[0] == "Z" || f[1] != fmt.Sprint(os.Getpid()) {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return out
}

// A start that fails part-way stops everything it had started and says why.
func TestFailedStartStopsEverything(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		opts Options
		ctx  context.Context
		want string
	}{
		{"bad users file", Options{UsersFile: filepath.Join(t.TempDir(), "none.json")}, context.Background(), "--users"},
		{"app exits at start", Options{AppPath: "/bin/false"}, context.Background(), "exited during start"},
		{"interrupted", Options{}, cancelled, "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Root, o.APIAddr, o.Logger, o.AppOutput = root, "127.0.0.1:0", testLogger(t), tWriter{t}
			if o.AppPath == "" {
				o.AppPath = app(t)
			}
			s, err := Start(tt.ctx, o)
			if err == nil {
				s.Stop()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if runtime.GOOS == "linux" { // children reads /proc
				waitUntil(t, "no child process left", 5*time.Second, func() bool { return len(children(t)) == 0 })
			}
		})
	}
}
