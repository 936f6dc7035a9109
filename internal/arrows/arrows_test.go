package arrows

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/oathpipe/oathpipe"

// The package roles the arrows are drawn between (paths relative to the module). Keep this in
// step with docs/architecture.md.
var (
	// domain is the middle: the types and rules of importing and provisioning tokens.
	domain = []string{"shared/token", "shared/pipeline"}

	// adapters are the packages that each talk to one outside service. No adapter imports
	// another: main.go wires them together through the interfaces the domain defines.
	//   shared/azauth   Microsoft Entra ID's token endpoint (the one credential and transport)
	//   shared/storage  Azure Blob and Queue storage
	//   shared/ledger   Azure Table storage (the import ledger)
	//   shared/vault    Azure Key Vault (the seeds, the PGP/PSKC keys)
	//   shared/entra    Microsoft Graph (hardware OATH tokens)
	//   shared/notify   the incoming webhook (Teams, Slack)
	adapters = []string{"shared/azauth", "shared/storage", "shared/ledger", "shared/vault", "shared/entra", "shared/notify"}

	// libraries are pure: they talk to no service, and import no adapter (the domain they may).
	//   shared/seedfile  vendor seed files (CSV, OATH CSV, PSKC)
	//   shared/envelope  the OpenPGP messages and zip archives seed files arrive in
	//   shared/otp       TOTP codes
	//   shared/logctx    the log keys and the context-aware slog handler
	//   shared/azerr     classifies Azure SDK failures into the domain's error kinds
	libraries = []string{"shared/seedfile", "shared/envelope", "shared/otp", "shared/logctx", "shared/azerr"}

	// leaves import only the standard library, so any package may import them (decision A).
	leaves = []string{"shared/logctx"}

	// config may be imported only by the packages that wire: the root package (main.go), cmd/…
	// and internal/… (devstack wires the local stack for cmd/oathpipe-dev, testkit the test
	// stacks).
	config = "shared/config"

	// testInfra is what the production binary (the root package) must not link: the stand-ins,
	// the test kits, the local Functions host and its stack. A trailing /... takes the subtree.
	testInfra = []string{
		"internal/graphstandin/...", "internal/kvstandin/...", "internal/testkit/...",
		"internal/devstack/...", "internal/runner/...", "internal/azurite/...", "internal/ledgertest/...",
		"shared/pipeline/pipelinetest/...", "shared/storage/e2e/...",
	}
)

// knownViolations are the arrows broken today (issue 16). Each line goes when its fix lands;
// the test fails on a violation not listed here and on a line here that no longer happens, so
// the list cannot go stale. When it is empty, delete it and the loops that read it.
var knownViolations = []string{
	// Decision E: only main and cmd/ read shared/config (items 1, 2).
	"handlers imports shared/config: only main, cmd/ and internal/ read the configuration",
	"shared/azauth imports shared/config: only main, cmd/ and internal/ read the configuration",
	"shared/ledger imports shared/config: only main, cmd/ and internal/ read the configuration",
	"shared/pipeline imports shared/config: only main, cmd/ and internal/ read the configuration",
	"shared/storage imports shared/config: only main, cmd/ and internal/ read the configuration",
	// Item 1: storage no longer builds the ledger.
	"shared/storage imports shared/ledger: an adapter imports another adapter",
	// Decision D: the parts of pipelinetest that build stand-ins move to internal/testkit.
	"shared/pipeline/pipelinetest imports internal/graphstandin: only internal/, cmd/ and tests import a stand-in",
	"shared/pipeline/pipelinetest imports internal/kvstandin: only internal/, cmd/ and tests import a stand-in",
	"shared/pipeline/pipelinetest imports shared/config: only main, cmd/ and internal/ read the configuration",
}

// pkg is what go list says of one package.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// rel is an import path relative to the module ("." for the root), or "" outside it.
func rel(p string) string {
	switch {
	case p == module:
		return "."
	case strings.HasPrefix(p, module+"/"):
		return strings.TrimPrefix(p, module+"/")
	}
	return ""
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// matches reports whether p is one of the patterns (a trailing /... takes the subtree).
func matches(p string, patterns []string) bool {
	for _, pat := range patterns {
		if d, ok := strings.CutSuffix(pat, "/..."); ok {
			if under(p, d) {
				return true
			}
		} else if p == pat {
			return true
		}
	}
	return false
}

// isStd reports whether p is a standard library package: its first element has no dot.
func isStd(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return !strings.Contains(first, ".")
}

// isStandIn reports whether p is a stand-in for an outside service: internal/*standin.
func isStandIn(p string) bool {
	parts := strings.Split(p, "/")
	return len(parts) >= 2 && parts[0] == "internal" && strings.HasSuffix(parts[1], "standin")
}

// goList runs go list in the module root and decodes its stream of JSON packages.
func goList(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json=ImportPath,Imports,TestImports,XTestImports"}, args...)...)
	cmd.Dir = moduleRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// moduleRoot is the directory of go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == "/dev/null" {
		t.Fatalf("go env GOMOD: %q %v", gomod, err)
	}
	return path.Dir(gomod)
}

// violations lists every import that breaks an arrow, as "FROM imports TO: rule". The rules
// read the imports of the files a build compiles; a package's tests may import the
// configuration and the stand-ins to build their stacks.
func violations(pkgs []pkg, binary []pkg) []string {
	var out []string
	add := func(from, to, rule string) { out = append(out, fmt.Sprintf("%s imports %s: %s", from, to, rule)) }
	for _, p := range pkgs {
		from := rel(p.ImportPath)
		for _, imp := range p.Imports {
			to := rel(imp)
			if matches(from, leaves) && !isStd(imp) {
				add(from, cmp.Or(to, imp), "a leaf imports only the standard library")
			}
			if to == "" || to == from {
				continue
			}
			if to == config && !(from == "." || under(from, "cmd") || under(from, "internal")) {
				add(from, to, "only main, cmd/ and internal/ read the configuration")
			}
			if matches(from, adapters) && matches(to, adapters) {
				add(from, to, "an adapter imports another adapter")
			}
			if (matches(from, domain) || matches(from, libraries)) && matches(to, adapters) {
				add(from, to, "the domain and the libraries import no adapter")
			}
			if isStandIn(to) && !(under(from, "internal") || under(from, "cmd")) {
				add(from, to, "only internal/, cmd/ and tests import a stand-in")
			}
		}
	}
	for _, p := range binary {
		if dep := rel(p.ImportPath); dep != "" && (isStandIn(dep) || matches(dep, testInfra)) {
			add(".", dep, "the production binary links test infrastructure (go list -deps .)")
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestArrows: every import points the way docs/architecture.md draws it.
func TestArrows(t *testing.T) {
	found := violations(goList(t, "./..."), goList(t, "-deps", "."))
	for _, v := range found {
		if !slices.Contains(knownViolations, v) {
			t.Errorf("%s", v)
		}
	}
	for _, k := range knownViolations {
		if !slices.Contains(found, k) {
			t.Errorf("fixed, so delete its line from knownViolations: %q", k)
		}
	}
}

// TestArrowsCatch: each rule fires on the import it forbids, and allows what it allows.
func TestArrowsCatch(t *testing.T) {
	m := func(p string) string {
		if p == "." {
			return module
		}
		return module + "/" + p
	}
	pkgs := []pkg{
		{ImportPath: m("shared/ledger"), Imports: []string{m("shared/config"), m("shared/token"), m("shared/azerr"), "fmt"}},
		{ImportPath: m("shared/storage"), Imports: []string{m("shared/ledger")}},
		{ImportPath: m("shared/pipeline"), Imports: []string{m("shared/vault"), m("shared/seedfile")}},
		{ImportPath: m("shared/seedfile"), Imports: []string{m("shared/entra")}},
		{ImportPath: m("shared/pipeline/pipelinetest"), Imports: []string{m("internal/kvstandin")}},
		{ImportPath: m("."), Imports: []string{m("shared/config"), m("shared/ledger"), m("shared/storage")}},
		{ImportPath: m("cmd/oathpipe-dev"), Imports: []string{m("shared/config"), m("internal/devstack")}},
		{ImportPath: m("internal/testkit"), Imports: []string{m("shared/config"), m("internal/graphstandin")},
			TestImports: []string{m("internal/kvstandin")}},
		{ImportPath: m("handlers"), XTestImports: []string{m("internal/kvstandin")}},
		{ImportPath: m("shared/logctx"), Imports: []string{"log/slog", m("shared/token"), "github.com/Azure/azure-sdk-for-go/sdk/azcore"}},
	}
	binary := []pkg{{ImportPath: m(".")}, {ImportPath: m("shared/token")}, {ImportPath: m("internal/testkit")},
		{ImportPath: m("internal/kvstandin/cmd/kvstandin")}, {ImportPath: "fmt"}}
	got := violations(pkgs, binary)
	want := []string{
		". imports internal/kvstandin/cmd/kvstandin: the production binary links test infrastructure (go list -deps .)",
		". imports internal/testkit: the production binary links test infrastructure (go list -deps .)",
		"shared/ledger imports shared/config: only main, cmd/ and internal/ read the configuration",
		"shared/logctx imports github.com/Azure/azure-sdk-for-go/sdk/azcore: a leaf imports only the standard library",
		"shared/logctx imports shared/token: a leaf imports only the standard library",
		"shared/pipeline imports shared/vault: the domain and the libraries import no adapter",
		"shared/pipeline/pipelinetest imports internal/kvstandin: only internal/, cmd/ and tests import a stand-in",
		"shared/seedfile imports shared/entra: the domain and the libraries import no adapter",
		"shared/storage imports shared/ledger: an adapter imports another adapter",
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
