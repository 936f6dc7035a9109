// Package buildtest builds the project's binaries once per test process, for tests that run
// them as child processes (the local stack, the dev tool), and removes them afterwards.
package buildtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Set builds packages of the module rooted at Root into one temporary folder, lazily: the first
// Path call builds them all, so `go test -list` and filtered runs pay nothing.
type Set struct {
	Root string            // the module root
	Pkgs map[string]string // binary name → package path relative to Root, e.g. "oathpipe": "."

	once sync.Once
	dir  string
	err  error
}

// Path builds the set on first use and returns the path of binary name.
func (s *Set) Path(t testing.TB, name string) string {
	t.Helper()
	s.once.Do(func() {
		if s.dir, s.err = os.MkdirTemp("", "oathpipe-bin-"); s.err != nil {
			return
		}
		for bin, pkg := range s.Pkgs {
			cmd := exec.Command("go", "build", "-o", filepath.Join(s.dir, bin), pkg)
			cmd.Dir = s.Root
			if out, err := cmd.CombinedOutput(); err != nil {
				s.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	if _, ok := s.Pkgs[name]; !ok {
		t.Fatalf("buildtest: %s is not in the set", name)
	}
	return filepath.Join(s.dir, name)
}

// Dir is the folder the binaries are built into ("" before the first Path call).
func (s *Set) Dir() string { return s.dir }

// Remove deletes the built binaries; call it from TestMain after m.Run.
func (s *Set) Remove() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
