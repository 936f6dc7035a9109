package arrows

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// The sizes a reader can hold (issue 16 item 6): a production function longer than maxLines
// (from func to its closing brace) or with control flow nested deeper than maxNesting fails.
// Nesting counts if, for, range, switch, type switch, select and func literals; an else-if
// stays at its if's depth, and a case's body at its switch's.
const (
	maxLines   = 80
	maxNesting = 4
)

// funcSize is one function's size.
type funcSize struct {
	pos     token.Position
	name    string
	lines   int
	nesting int
}

func (f funcSize) String() string {
	return fmt.Sprintf("%s:%d %s: %d lines, nesting %d (limits %d and %d)",
		filepath.ToSlash(f.pos.Filename), f.pos.Line, f.name, f.lines, f.nesting, maxLines, maxNesting)
}

// funcName is a declaration's name, with its receiver for a method.
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if ix, ok := t.(*ast.IndexExpr); ok { // generic receiver T[P]
		t = ix.X
	} else if ix, ok := t.(*ast.IndexListExpr); ok {
		t = ix.X
	}
	star := ""
	if s, ok := t.(*ast.StarExpr); ok {
		star, t = "*", s.X
		if ix, ok := t.(*ast.IndexExpr); ok {
			t = ix.X
		} else if ix, ok := t.(*ast.IndexListExpr); ok {
			t = ix.X
		}
	}
	recv := "?"
	if id, ok := t.(*ast.Ident); ok {
		recv = id.Name
	}
	if star != "" {
		return fmt.Sprintf("(*%s).%s", recv, fd.Name.Name)
	}
	return recv + "." + fd.Name.Name
}

// nesting is the deepest control-flow nesting inside body.
func nesting(body ast.Node) int {
	deepest := 0
	var walk func(n ast.Node, d int)
	var ifChain func(s *ast.IfStmt, d int)
	reach := func(d int) { deepest = max(deepest, d) }
	walk = func(n ast.Node, d int) {
		ast.Inspect(n, func(c ast.Node) bool {
			if c == nil || c == n {
				return true
			}
			switch c := c.(type) {
			case *ast.IfStmt:
				ifChain(c, d)
				return false
			case *ast.ForStmt, *ast.RangeStmt, *ast.SwitchStmt, *ast.TypeSwitchStmt, *ast.SelectStmt, *ast.FuncLit:
				reach(d + 1)
				walk(c, d+1)
				return false
			}
			return true
		})
	}
	ifChain = func(s *ast.IfStmt, d int) {
		reach(d + 1)
		if s.Init != nil {
			walk(s.Init, d+1)
		}
		walk(s.Cond, d+1)
		walk(s.Body, d+1)
		switch e := s.Else.(type) {
		case *ast.IfStmt:
			ifChain(e, d) // else if: the same depth as its if
		case *ast.BlockStmt:
			walk(e, d+1)
		}
	}
	walk(body, 0)
	return deepest
}

// sizes measures every function declared in the production .go files under root: not tests,
// not testdata, node_modules, vendor or hidden directories, not generated files.
func sizes(t *testing.T, root string) []funcSize {
	t.Helper()
	var out []funcSize
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (name == "testdata" || name == "node_modules" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return fmt.Errorf("parse: %w", err)
		}
		if ast.IsGenerated(f) {
			return nil
		}
		relPath, _ := filepath.Rel(root, p)
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
			start.Filename = relPath
			out = append(out, funcSize{pos: start, name: funcName(fd), lines: end.Line - start.Line + 1, nesting: nesting(fd.Body)})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFunctionSizes: no production function is longer than maxLines or nested deeper than
// maxNesting.
func TestFunctionSizes(t *testing.T) {
	for _, f := range sizes(t, moduleRoot(t)) {
		if f.lines > maxLines || f.nesting > maxNesting {
			t.Errorf("%s", f)
		}
	}
}

// TestNestingCounts: what counts as a level, on small sources.
func TestNestingCounts(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want int
	}{
		{"x := 1; _ = x", 0},
		{"if a { b() }", 1},
		{"if a { b() } else if c { d() } else if e { f() } else { g() }", 1},
		{"if a { } else { if b { } }", 2},
		{"for { switch x { case 1: if y { go func() { select {} }() } } }", 5},
		{"for range xs { for i := 0; i < 3; i++ { switch v := x.(type) { case int: _ = v } } }", 3},
		{"f := func() { if a { } }; f()", 2},
		{"if v := func() bool { for { } }(); v { }", 3},
	} {
		f, err := parser.ParseFile(token.NewFileSet(), "x.go", "package x\nfunc f() {\n"+tc.src+"\n}\n", 0)
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		if got := nesting(f.Decls[0].(*ast.FuncDecl).Body); got != tc.want {
			t.Errorf("nesting of %q = %d; want %d", tc.src, got, tc.want)
		}
	}
}
