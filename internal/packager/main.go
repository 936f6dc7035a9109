// Command packager builds the zip that Azure Functions zip deploy expects: host.json at the
// root, the oathpipe binary for linux/amd64 with its executable bit set, and every
// functions/<Name>/function.json lifted to <Name>/function.json at the root (the host looks
// one level deep only). `make package` runs it:
//
//	go run ./internal/packager -o dist/oathpipe.zip
package main

import (
	"archive/zip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"time"
)

// binaryName is the executable host.json's customHandler.defaultExecutablePath names.
const binaryName = "oathpipe"

// epoch stamps every zip entry, so the same inputs give the same zip.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// functionName is the Functions host's rule for a function folder name.
var functionName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,126}$`)

func main() {
	out := flag.String("o", "dist/oathpipe.zip", "zip file to write")
	root := flag.String("root", ".", "repository root (holds host.json, functions/ and the main package)")
	bin := flag.String("binary", "", "use this prebuilt linux/amd64 binary instead of building one")
	flag.Parse()
	if err := run(context.Background(), *root, *bin, *out); err != nil {
		fmt.Fprintln(os.Stderr, "packager:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", *out)
}

func run(ctx context.Context, root, bin, out string) error {
	if bin == "" {
		tmp, err := os.MkdirTemp("", "oathpipe-package-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		bin = filepath.Join(tmp, binaryName)
		if err := build(ctx, root, bin); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(out), err)
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	if err := writeZip(f, root, bin); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	return f.Close()
}

// build compiles the main package at root for linux/amd64 into dst: static (CGO_ENABLED=0, so
// it runs on any Functions Linux image) with symbols stripped. The first build in a fresh cache
// compiles the Azure and Graph SDKs for this configuration (minutes on a small machine); later
// ones take seconds.
func build(ctx context.Context, root, dst string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", dst, ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s for linux/amd64: %w", binaryName, err)
	}
	return nil
}

// writeZip writes the deployable layout to w: host.json, the binary (mode 0755) and one folder
// per function, each holding its function.json.
func writeZip(w io.Writer, root, bin string) error {
	funcs, err := functionFolders(root)
	if err != nil {
		return err
	}
	zw := zip.NewWriter(w)
	if err := addFile(zw, "host.json", filepath.Join(root, "host.json"), 0o644); err != nil {
		return err
	}
	if err := addFile(zw, binaryName, bin, 0o755); err != nil {
		return err
	}
	for _, name := range funcs {
		src := filepath.Join(root, "functions", name, "function.json")
		if err := addFile(zw, name+"/function.json", src, 0o644); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("finish zip: %w", err)
	}
	return nil
}

// functionFolders lists functions/<Name> folders holding a function.json, sorted.
func functionFolders(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "functions"))
	if err != nil {
		return nil, fmt.Errorf("list functions: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "functions", e.Name(), "function.json")); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		if !functionName.MatchString(e.Name()) {
			return nil, fmt.Errorf("function folder %q: the host wants letters, digits, _ and -, starting with a letter", e.Name())
		}
		names = append(names, e.Name())
	}
	if len(names) == 0 {
		return nil, errors.New("no functions/<Name>/function.json found")
	}
	sort.Strings(names)
	return names, nil
}

func addFile(zw *zip.Writer, name, src string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("add %s: %w", name, err)
	}
	defer in.Close()
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: epoch}
	h.SetMode(mode)
	out, err := zw.CreateHeader(h)
	if err != nil {
		return fmt.Errorf("add %s: %w", name, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("add %s: %w", name, err)
	}
	return nil
}
