package arrows

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The package graph in docs/architecture.md (a Mermaid flowchart) is held to the code: every
// arrow it draws is an import of the production code, and every production import between two
// packages it draws is an arrow (shared/logctx, which every package that logs imports, is left
// out of the drawing and of this check).

var (
	mermaidBlock = regexp.MustCompile("(?s)```mermaid\n(.*?)```")
	mermaidNode  = regexp.MustCompile(`^\s*([A-Za-z]\w*)\["([^"]+)"\]\s*$`)
	mermaidEdge  = regexp.MustCompile(`^\s*([\w &]+?)\s*-->\s*([\w &]+?)\s*$`)
	pathToken    = regexp.MustCompile(`(?:shared|internal|cmd|handlers)[\w/.-]*|^oathpipe\b`)
)

// diagram is the drawing: each node's packages (relative paths, "." for the root) and the
// arrows between nodes.
type diagram struct {
	nodes map[string][]string
	edges [][2]string
}

func parseDiagram(t *testing.T, doc string) diagram {
	t.Helper()
	m := mermaidBlock.FindStringSubmatch(doc)
	if m == nil {
		t.Fatal("docs/architecture.md has no mermaid block")
	}
	d := diagram{nodes: map[string][]string{}}
	split := func(s string) []string {
		var out []string
		for _, f := range strings.Split(s, "&") {
			out = append(out, strings.TrimSpace(f))
		}
		return out
	}
	for _, line := range strings.Split(m[1], "\n") {
		if n := mermaidNode.FindStringSubmatch(line); n != nil {
			for _, p := range pathToken.FindAllString(n[2], -1) {
				if p == "oathpipe" {
					p = "."
				}
				d.nodes[n[1]] = append(d.nodes[n[1]], p)
			}
			continue
		}
		if e := mermaidEdge.FindStringSubmatch(line); e != nil {
			for _, from := range split(e[1]) {
				for _, to := range split(e[2]) {
					d.edges = append(d.edges, [2]string{from, to})
				}
			}
		}
	}
	return d
}

func TestArchitectureDiagramIsTheCode(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(moduleRoot(t), "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	d := parseDiagram(t, string(doc))
	if len(d.nodes) < 10 || len(d.edges) < 10 {
		t.Fatalf("the diagram read as %d nodes and %d arrows: the parser no longer understands it", len(d.nodes), len(d.edges))
	}
	nodeOf := map[string]string{}
	for id, ps := range d.nodes {
		for _, p := range ps {
			nodeOf[p] = id
		}
	}
	imports := map[[2]string]bool{} // node → node, from the production imports
	for _, p := range goList(t, "./...") {
		from, ok := nodeOf[rel(p.ImportPath)]
		if !ok {
			continue
		}
		for _, imp := range p.Imports {
			to, ok := nodeOf[rel(imp)]
			if ok && to != from && rel(imp) != "shared/logctx" {
				imports[[2]string{from, to}] = true
			}
		}
	}
	drawn := map[[2]string]bool{}
	for _, e := range d.edges {
		for _, id := range e {
			if _, ok := d.nodes[id]; !ok {
				t.Errorf("arrow %s --> %s names a node the diagram does not define", e[0], e[1])
			}
		}
		drawn[e] = true
		if !imports[e] {
			t.Errorf("the diagram draws %s --> %s (%v → %v); the code has no such import", e[0], e[1], d.nodes[e[0]], d.nodes[e[1]])
		}
	}
	var missing []string
	for e := range imports {
		if !drawn[e] {
			missing = append(missing, e[0]+" --> "+e[1])
		}
	}
	slices.Sort(missing)
	for _, m := range missing {
		t.Errorf("the code imports %s; docs/architecture.md's diagram does not draw it", m)
	}
}

func TestDiagramParser(t *testing.T) {
	doc := "x\n```mermaid\nflowchart LR\n  a[\"oathpipe (main)\"]\n  b[\"shared/vault (Key Vault)\"]\n" +
		"  c[\"cmd/x → internal/y\"]\n  a --> b & c\n  b & c --> a\n```\n"
	d := parseDiagram(t, doc)
	if !slices.Equal(d.nodes["a"], []string{"."}) || !slices.Equal(d.nodes["c"], []string{"cmd/x", "internal/y"}) {
		t.Errorf("nodes: %v", d.nodes)
	}
	want := [][2]string{{"a", "b"}, {"a", "c"}, {"b", "a"}, {"c", "a"}}
	if !slices.Equal(d.edges, want) {
		t.Errorf("edges: %v, want %v", d.edges, want)
	}
}
