package main

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// repoRoot is the repository root, two levels above this package.
const repoRoot = "../.."

// checkLayout opens the zip at path and checks what the Functions host needs from it. It
// returns the binary's bytes.
func checkLayout(t *testing.T, path string) []byte {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatalf("open zip: %v", err)
	}
	defer zr.Close()

	want := map[string]bool{"host.json": true, binaryName: true}
	entries, err := os.ReadDir(filepath.Join(repoRoot, "functions"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			want[e.Name()+"/function.json"] = true
		}
	}
	for _, fn := range []string{"ImportSeeds", "ProvisionToken", "ProvisionFailed", "TokenAssignment", "ImportStatus"} {
		if !want[fn+"/function.json"] {
			t.Errorf("functions/%s/function.json missing from the repository", fn)
		}
	}

	var bin []byte
	got := map[string]bool{}
	for _, f := range zr.File {
		got[f.Name] = true
		if strings.HasPrefix(f.Name, "functions/") {
			t.Errorf("%s: function folders must sit at the zip root", f.Name)
		}
		switch {
		case f.Name == binaryName:
			if m := f.Mode().Perm(); m != 0o755 {
				t.Errorf("%s mode = %v, want 0755", f.Name, m)
			}
			bin = readEntry(t, f)
		case f.Name == "host.json":
			var host struct {
				CustomHandler struct {
					Description struct {
						DefaultExecutablePath string   `json:"defaultExecutablePath"`
						Arguments             []string `json:"arguments"`
					} `json:"description"`
				} `json:"customHandler"`
			}
			if err := json.Unmarshal(readEntry(t, f), &host); err != nil {
				t.Fatalf("host.json: %v", err)
			}
			if p := host.CustomHandler.Description.DefaultExecutablePath; p != binaryName {
				t.Errorf("host.json defaultExecutablePath = %q, want %q", p, binaryName)
			}
		case strings.HasSuffix(f.Name, "/function.json"):
			var fj struct{ Bindings []map[string]any }
			if err := json.Unmarshal(readEntry(t, f), &fj); err != nil || len(fj.Bindings) == 0 {
				t.Errorf("%s: not a function.json with bindings (%v)", f.Name, err)
			}
		}
	}
	var missing, extra []string
	for n := range want {
		if !got[n] {
			missing = append(missing, n)
		}
	}
	for n := range got {
		if !want[n] {
			extra = append(extra, n)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("zip layout: missing %v, unexpected %v", missing, extra)
	}
	return bin
}

func readEntry(t *testing.T, f *zip.File) []byte {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestZipLayoutWithPrebuiltBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prebuilt")
	if err := os.WriteFile(bin, []byte("\x7fELF fake"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "dist", "oathpipe.zip")
	if err := run(context.Background(), repoRoot, bin, out); err != nil {
		t.Fatal(err)
	}
	if b := checkLayout(t, out); string(b) != "\x7fELF fake" {
		t.Errorf("binary content not copied")
	}
	// The same inputs give the same bytes.
	out2 := filepath.Join(dir, "again.zip")
	if err := run(context.Background(), repoRoot, bin, out2); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Errorf("packaging twice gave different zips")
	}
}

func TestFunctionFolderNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"ImportSeeds", true}, {"Provision_Token-2", true}, {"2fa", false}, {"bad.name", false},
		{"", false}, {strings.Repeat("a", 127), true}, {strings.Repeat("a", 128), false},
	} {
		if got := functionName.MatchString(tc.name); got != tc.ok {
			t.Errorf("functionName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestRejectsBadFunctionFolder(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "host.json"), []byte("{}"), 0o644))
	must(os.MkdirAll(filepath.Join(root, "functions", "bad.name"), 0o755))
	must(os.WriteFile(filepath.Join(root, "functions", "bad.name", "function.json"), []byte(`{"bindings":[]}`), 0o644))
	err := writeZip(io.Discard, root, filepath.Join(root, "host.json"))
	if err == nil || !strings.Contains(err.Error(), "bad.name") {
		t.Fatalf("writeZip = %v, want an error naming the folder", err)
	}
}

// TestPackageBuildsLinuxBinary runs what `make package` runs: a real linux/amd64 build.
func TestPackageBuildsLinuxBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the whole binary")
	}
	out := filepath.Join(t.TempDir(), "oathpipe.zip")
	if err := run(context.Background(), repoRoot, "", out); err != nil {
		t.Fatal(err)
	}
	bin := checkLayout(t, out)
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("binary is not ELF: %v", err)
	}
	if f.Machine != elf.EM_X86_64 {
		t.Errorf("binary machine = %v, want x86-64", f.Machine)
	}
}
