package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/buildtest"
	"github.com/oathpipe/oathpipe/internal/devstack"
)

var (
	root string        // the checkout
	bins buildtest.Set // oathpipe and oathpipe-dev side by side, as `make build` puts them
)

// TestMain removes the binaries the tests built. Building is lazy (dev), so `go test -list` and
// the usage tests do not pay for it.
func TestMain(m *testing.M) {
	var err error
	if root, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins = buildtest.Set{Root: root, Pkgs: map[string]string{"oathpipe": ".", "oathpipe-dev": "./cmd/oathpipe-dev"}}
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// dev builds oathpipe and oathpipe-dev once, side by side, and returns oathpipe-dev's path.
func dev(t *testing.T) string { return bins.Path(t, "oathpipe-dev") }

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"help"}, exitOK},
		{[]string{"up", "-h"}, exitOK},
		{[]string{"launch"}, exitUsage},
		{[]string{"up", "--log-level", "loud"}, exitUsage},
		{[]string{"up", "extra"}, exitUsage},
		{[]string{"up", "--root", "/nonexistent"}, exitUsage},
		{[]string{"demo", "--root", root, "--app", "/nonexistent/oathpipe"}, exitUsage},
		{[]string{"upload", "--connection-string", ""}, exitUsage},
		{[]string{"upload", "--connection-string", "x=y", "/nonexistent.csv"}, exitUsage},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if got := run(tt.args, &out, &errb); got != tt.want {
			t.Errorf("oathpipe-dev %v = %d; want %d\n%s", tt.args, got, tt.want, errb.String())
		}
	}
}

// proc is a process seen under the tool, identified by pid and start time (pids are reused).
type proc struct {
	pid   int
	start string
	cmd   string
}

// descendants lists every process below pid, from /proc.
func descendants(pid int) []proc {
	children := map[int][]proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, start, state, ok := stat(p)
		if !ok || state == "Z" {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		children[ppid] = append(children[ppid], proc{pid: p, start: start, cmd: strings.ReplaceAll(string(cmd), "\x00", " ")})
	}
	var out []proc
	queue := []int{pid}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
		queue = queue[1:]
	}
	return out
}

// stat reads a process's parent, start time and state from /proc/PID/stat.
func stat(pid int) (ppid int, start, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", "", false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", "", false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return 0, "", "", false
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[19], f[0], true
}

func alive(p proc) bool {
	_, start, state, ok := stat(p.pid)
	return ok && start == p.start && state != "Z"
}

// watch records every descendant of pid until stop is closed.
func watch(pid int, stop <-chan struct{}) *watcher {
	w := &watcher{seen: map[string]proc{}, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for _, p := range descendants(pid) {
				key := strconv.Itoa(p.pid) + "/" + p.start
				w.mu.Lock()
				// A process caught between fork and exec has no command line yet; keep the
				// one seen after exec.
				if old, ok := w.seen[key]; !ok || p.cmd != "" || old.cmd == "" {
					w.seen[key] = p
				}
				w.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

// watcher records every process seen under a root process.
type watcher struct {
	mu   sync.Mutex
	seen map[string]proc
	done chan struct{}
}

// snapshot returns the processes seen so far.
func (w *watcher) snapshot() []proc {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]proc, 0, len(w.seen))
	for _, p := range w.seen {
		out = append(out, p)
	}
	return out
}

// finish waits for the watch to stop (close its stop channel first) and returns all it saw.
func (w *watcher) finish() []proc {
	<-w.done
	return w.snapshot()
}

// waitSeen waits until the watcher has seen a process whose command line holds each substr,
// so a test signals the stack only after the watcher knows every process it must check.
func (w *watcher) waitSeen(t *testing.T, substrs ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := ""
		procs := w.snapshot()
		for _, sub := range substrs {
			found := false
			for _, p := range procs {
				found = found || strings.Contains(p.cmd, sub)
			}
			if !found {
				missing = sub
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw a %q process under oathpipe-dev; saw %v", missing, procs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkNoneAlive fails when a process the tool started is still running; it kills stragglers.
func checkNoneAlive(t *testing.T, procs []proc) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second) // let the kernel finish reaping
	for _, p := range procs {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(p) {
			t.Errorf("process %d (%s) outlived oathpipe-dev", p.pid, p.cmd)
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
}

// TestUpStopsEverything runs `oathpipe-dev up`, checks the endpoints line and that the stack
// answers, stops it with Ctrl-C's SIGINT or with SIGTERM, and checks no process outlives it.
// SIGKILL gives oathpipe-dev no chance to clean up: its children die with it (Pdeathsig).
func TestUpStopsEverything(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc and relies on the parent-death signal")
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(dev(t), "up", "--api", "127.0.0.1:0")
			cmd.Dir = root
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			seen := watch(cmd.Process.Pid, stop)
			exited := make(chan error, 1)
			lines := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					select {
					case lines <- sc.Text():
					default:
					}
				}
				exited <- cmd.Wait()
			}()
			defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }()

			var ep devstack.Endpoints
			select {
			case line := <-lines:
				if err := json.Unmarshal([]byte(line), &ep); err != nil {
					t.Fatalf("first line is not the endpoints JSON: %q", line)
				}
			case err := <-exited:
				t.Fatalf("oathpipe-dev exited before printing its endpoints: %v\n%s", err, stderr.String())
			case <-time.After(90 * time.Second):
				t.Fatalf("no endpoints line within 90s\n%s", stderr.String())
			}
			for name, v := range map[string]string{"storageConnectionString": ep.StorageConnectionString, "vaultURL": ep.VaultURL,
				"graphURL": ep.GraphURL, "apiBase": ep.APIBase, "handlerURL": ep.HandlerURL, "caFile": ep.CAFile} {
				if v == "" {
					t.Errorf("endpoints line has no %s", name)
				}
			}
			resp, err := http.Get(ep.HandlerURL + "/")
			if err != nil {
				t.Fatalf("handler does not answer: %v", err)
			}
			resp.Body.Close()
			resp, err = http.Get(ep.APIBase + "/imports/nothing-here.csv")
			if err != nil {
				t.Fatalf("HTTP front does not answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET an unknown import = %d; want 404", resp.StatusCode)
			}

			seen.waitSeen(t, "azurite", "oathpipe serve")
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if err != nil && sig != syscall.SIGKILL {
					t.Errorf("oathpipe-dev after %v: %v\n%s", sig, err, stderr.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("oathpipe-dev did not stop within 30s of %v", sig)
			}
			close(stop)
			checkNoneAlive(t, seen.finish())
			if sig == syscall.SIGKILL {
				_ = os.RemoveAll(filepath.Dir(ep.CAFile)) // no one left to remove it
			} else if _, err := os.Stat(ep.CAFile); err == nil {
				t.Errorf("state folder %s left behind", filepath.Dir(ep.CAFile))
			}
		})
	}
}

// TestDemoCommand runs what `make demo` runs and measures it.
func TestDemoCommand(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	args := []string{"demo", "--api", "127.0.0.1:0"}
	cmd := exec.Command(dev(t), args...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }()
	stop := make(chan struct{})
	seen := watch(cmd.Process.Pid, stop)
	err := cmd.Wait()
	close(stop)
	t.Logf("oathpipe-dev demo: %v wall time\n%s", time.Since(start).Round(100*time.Millisecond), stdout.String())
	if err != nil {
		t.Fatalf("oathpipe-dev demo: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"token2-batch-clean.csv", "token2-batch-mistakes.csv", "activated", "reassigning", "200 OK", "demo done"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	checkNoneAlive(t, seen.finish())
}
