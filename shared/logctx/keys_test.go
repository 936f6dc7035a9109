package logctx_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// logMethods are the slog.Logger methods (and package functions) whose arguments after the
// message alternate key, value or are attributes; With takes them from the first argument.
var logMethods = map[string]int{
	"Debug": 1, "Info": 1, "Warn": 1, "Error": 1,
	"DebugContext": 2, "InfoContext": 2, "WarnContext": 2, "ErrorContext": 2,
	"Log": 3, "LogAttrs": 3, "With": 0,
}

// attrFuncs are slog's attribute constructors; their first argument is a key.
var attrFuncs = map[string]bool{
	"String": true, "Int": true, "Int64": true, "Uint64": true, "Float64": true, "Bool": true,
	"Time": true, "Duration": true, "Any": true, "Group": true,
}

// aliases are literal keys that spell a constant's idea another way.
var aliases = map[string]string{"err": "Error"}

// keyUse is a literal log key at a place in a production file.
type keyUse struct {
	key string
	pos token.Position
}

// TestLogKeysUseTheConstants fails when a production log call spells a key as a literal that
// is snake_case (or otherwise not camelCase) or that a logctx constant already names.
func TestLogKeysUseTheConstants(t *testing.T) {
	consts := constantValues(t, "logctx.go")
	root := moduleRoot(t)
	uses := literalKeys(t, root)
	if len(uses) == 0 {
		t.Fatal("no literal log key found anywhere: the scan is broken")
	}
	for _, u := range uses {
		switch {
		case !camel(u.key):
			t.Errorf("%s: log key %q is not camelCase", u.pos, u.key)
		case consts[u.key] != "":
			t.Errorf("%s: log key %q: use logctx.%s", u.pos, u.key, consts[u.key])
		case aliases[u.key] != "":
			t.Errorf("%s: log key %q: use logctx.%s", u.pos, u.key, aliases[u.key])
		}
	}
	if testing.Verbose() {
		seen := map[string]int{}
		for _, u := range uses {
			seen[u.key]++
		}
		var ks []string
		for k := range seen {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			t.Logf("literal key %q used %d times", k, seen[k])
		}
	}
}

// contextFree are the logging methods that take no context: their records carry no id from it.
var contextFree = map[string]bool{"Debug": true, "Info": true, "Warn": true, "Error": true}

// TestLogCallsCarryTheContext fails when a production log call in shared/ or handlers/ (whose
// callers put the invocation id, import id and serial in the context) uses a method without a
// context: its line would lose those ids.
func TestLogCallsCarryTheContext(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	found := 0
	for _, dir := range []string{"shared", "handlers"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				if _, ok := logMethods[sel.Sel.Name]; ok && sel.Sel.Name != "With" && isMessage(call.Args[min(logMethods[sel.Sel.Name], len(call.Args))-1]) {
					found++
				}
				if contextFree[sel.Sel.Name] && isMessage(call.Args[0]) {
					rel, _ := filepath.Rel(root, fset.Position(call.Pos()).Filename)
					t.Errorf("%s:%d: %s logs without the context; use %sContext(ctx, ...)", rel, fset.Position(call.Pos()).Line, sel.Sel.Name, sel.Sel.Name)
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if found == 0 {
		t.Fatal("no log call found in shared/ or handlers/: the scan is broken")
	}
}

// TestKeyScanFinds holds the scan to the call shapes it must see.
func TestKeyScanFinds(t *testing.T) {
	src := `package p
func f() {
	log.Info("m", "a_b", 1, slog.String("c", "x"), attr, "d", v)
	l.WarnContext(ctx, "m", "e", 1)
	log.With("f", 1, slog.Int("g", 2)).Error("m")
	c.log.Log(ctx, slog.LevelInfo, "m", "h", 1)
	err.Error()
	x.Info(y)
}`
	f, err := parser.ParseFile(token.NewFileSet(), "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range keysIn(token.NewFileSet(), f) {
		got = append(got, u.key)
	}
	sort.Strings(got)
	if want := "a_b,c,d,e,f,g,h"; strings.Join(got, ",") != want {
		t.Errorf("found %v, want %s", got, want)
	}
	for k, want := range map[string]bool{"importId": true, "id": true, "device_id": false, "DeviceID": false, "x-y": false} {
		if camel(k) != want {
			t.Errorf("camel(%q) = %v", k, !want)
		}
	}
}

func camel(k string) bool {
	if k == "" || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// constantValues maps each string constant's value in file to its name.
func constantValues(t *testing.T, file string) map[string]string {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING && n.IsExported() {
						v, _ := strconv.Unquote(lit.Value)
						out[v] = n.Name
					}
				}
			}
		}
	}
	if out["importId"] != "ImportID" {
		t.Fatalf("logctx.go's constants not read: %v", out)
	}
	return out
}

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = up
	}
}

// literalKeys scans the module's production Go files.
func literalKeys(t *testing.T, root string) []keyUse {
	fset := token.NewFileSet()
	var out []keyUse
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (n == "node_modules" || n == "testdata" || strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		out = append(out, keysIn(fset, f)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range out {
		if rel, err := filepath.Rel(root, out[i].pos.Filename); err == nil {
			out[i].pos.Filename = rel
		}
	}
	return out
}

// keysIn finds the literal keys of log calls and slog attribute constructors in f.
func keysIn(fset *token.FileSet, f *ast.File) []keyUse {
	var out []keyUse
	lit := func(e ast.Expr) {
		if b, ok := e.(*ast.BasicLit); ok && b.Kind == token.STRING {
			v, _ := strconv.Unquote(b.Value)
			out = append(out, keyUse{v, fset.Position(b.Pos())})
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "slog" && attrFuncs[sel.Sel.Name] && len(call.Args) > 0 {
			lit(call.Args[0])
			return true
		}
		first, ok := logMethods[sel.Sel.Name]
		if !ok || len(call.Args) <= first || (first > 0 && !isMessage(call.Args[first-1])) {
			return true
		}
		// Key-value pairs and attributes: a slog.X(...) call or a non-literal that is not a
		// key stands alone; a string literal (or a constant) is a key followed by its value.
		args := call.Args[first:]
		for i := 0; i < len(args); i++ {
			switch a := args[i].(type) {
			case *ast.BasicLit:
				lit(a)
				i++
			case *ast.SelectorExpr:
				if x, ok := a.X.(*ast.Ident); ok && x.Name == "logctx" {
					i++
				}
			}
		}
		return true
	})
	return out
}

// isMessage reports whether e can be a log message: a string literal or a concatenation
// starting with one (err.Error() and x.Info(y) have none).
func isMessage(e ast.Expr) bool {
	switch m := e.(type) {
	case *ast.BasicLit:
		return m.Kind == token.STRING
	case *ast.BinaryExpr:
		return isMessage(m.X)
	}
	return false
}
