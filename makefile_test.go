package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeLintFailsWithoutShellcheck: `make test` must fail, not skip, when shellcheck is
// missing (issue 18 item 12). It runs the lint-shell target with a PATH that holds make and the
// shell only.
func TestMakeLintFailsWithoutShellcheck(t *testing.T) {
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed")
	}
	bin := t.TempDir()
	for _, tool := range []string{"sh", "bash"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(mk, "-s", "lint-shell")
	cmd.Env = append(os.Environ(), "PATH="+bin)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("make lint-shell passed without shellcheck on PATH:\n%s", out)
	}
	if !strings.Contains(string(out), "shellcheck is not installed") {
		t.Errorf("make lint-shell output does not say shellcheck is missing:\n%s", out)
	}
	mf, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mf), "lint: lint-shell") {
		t.Error("make lint (and so make test) does not run lint-shell")
	}
}
