package infra

// A small reader for the subset of Bicep that infra/ uses: resource declarations, object
// literals, variables and outputs. There is no Bicep compiler on the build machines, so the
// tests read the templates as text; this keeps that reading honest about strings, string
// interpolation, comments and nesting instead of matching lines with regular expressions.

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// bicepFile is one template, with its comments blanked out (offsets and line numbers kept).
type bicepFile struct {
	Path     string // relative to infra/, e.g. "modules/storage.bicep"
	Text     string // as written
	Stripped string // comments replaced by spaces
}

func newBicepFile(path, text string) bicepFile {
	return bicepFile{Path: path, Text: text, Stripped: stripComments(text)}
}

// resource is one `resource sym 'Type@version' [existing] = {...}` declaration.
type resource struct {
	File     string
	Symbol   string
	Type     string
	Existing bool
	Cond     string // the condition of `= if (cond) {`, or ""
	Body     string // between the braces
	Line     int    // 1-based line of the declaration
	Comment  string // the // comment lines directly above the declaration, without the slashes
}

// entry is one `key: value` of an object literal.
type entry struct {
	Key   string
	Value string
}

// skipString returns the index just past the Bicep string literal that starts at s[i] (a single
// quote). It understands triple-quoted multi-line strings, backslash escapes and ${...}
// interpolation.
func skipString(s string, i int) int {
	if strings.HasPrefix(s[i:], "'''") {
		j := strings.Index(s[i+3:], "'''")
		if j < 0 {
			return len(s)
		}
		return i + 3 + j + 3
	}
	i++
	for i < len(s) {
		switch {
		case s[i] == '\\':
			i += 2
		case s[i] == '\'':
			return i + 1
		case s[i] == '$' && i+1 < len(s) && s[i+1] == '{':
			i = skipBalanced(s, i+1)
		default:
			i++
		}
	}
	return len(s)
}

// skipComment returns the index just past the comment starting at s[i], or i when none starts there.
func skipComment(s string, i int) int {
	switch {
	case strings.HasPrefix(s[i:], "//"):
		if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
			return i + j
		}
		return len(s)
	case strings.HasPrefix(s[i:], "/*"):
		if j := strings.Index(s[i+2:], "*/"); j >= 0 {
			return i + 2 + j + 2
		}
		return len(s)
	}
	return i
}

// skipBalanced returns the index just past the bracket that closes the one at s[i].
func skipBalanced(s string, i int) int {
	depth := 0
	for i < len(s) {
		if j := skipComment(s, i); j != i {
			i = j
			continue
		}
		switch s[i] {
		case '\'':
			i = skipString(s, i)
			continue
		case '{', '[', '(':
			depth++
		case '}', ']', ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return len(s)
}

// stripComments blanks every comment with spaces, keeping newlines so offsets and lines hold.
func stripComments(s string) string {
	b := []byte(s)
	for i := 0; i < len(s); {
		if s[i] == '\'' {
			i = skipString(s, i)
			continue
		}
		if j := skipComment(s, i); j != i {
			for k := i; k < j; k++ {
				if b[k] != '\n' {
					b[k] = ' '
				}
			}
			i = j
			continue
		}
		i++
	}
	return string(b)
}

var (
	resourceDecl = regexp.MustCompile(`(?m)^[ \t]*resource[ \t]+(\w+)[ \t]+'([^'@]+)@[^']+'[ \t]+(existing[ \t]+)?=[ \t]*(?:if[ \t]*\(([^\n]*)\)[ \t]*)?\{`)
	keyValue     = regexp.MustCompile(`(?s)^\s*(?:'([^']*)'|([A-Za-z_][A-Za-z0-9_]*))\s*:\s*(.*?)\s*$`)
	outputDecl   = regexp.MustCompile(`(?m)^[ \t]*output[ \t]+(\w+)[ \t]+(\w+)[ \t]*=[ \t]*(.+)$`)
)

// resources lists the resource declarations of f, nested ones included.
func (f bicepFile) resources() []resource {
	var out []resource
	for _, m := range resourceDecl.FindAllStringSubmatchIndex(f.Stripped, -1) {
		open := m[1] - 1
		end := skipBalanced(f.Stripped, open)
		r := resource{
			File:     f.Path,
			Symbol:   f.Stripped[m[2]:m[3]],
			Type:     f.Stripped[m[4]:m[5]],
			Existing: m[6] >= 0,
			Cond:     submatch(f.Stripped, m, 4),
			Body:     f.Stripped[open+1 : max(open+1, end-1)],
			Line:     1 + strings.Count(f.Stripped[:m[0]], "\n"),
		}
		r.Comment = commentAbove(f.Text, r.Line)
		out = append(out, r)
	}
	return out
}

func submatch(s string, m []int, n int) string {
	if m[2*n] < 0 {
		return ""
	}
	return s[m[2*n]:m[2*n+1]]
}

// elements splits an array literal ([...]) into its top-level elements, which end at a newline
// or a comma outside any bracket or string.
func elements(v string) []string {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "[") {
		return nil
	}
	body := v[1 : skipBalanced(v, 0)-1]
	var out []string
	start := 0
	add := func(t string) {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	for i := 0; i < len(body); {
		switch body[i] {
		case '\'':
			i = skipString(body, i)
			continue
		case '{', '[', '(':
			i = skipBalanced(body, i)
			continue
		case '\n', ',':
			add(body[start:i])
			start = i + 1
		}
		i++
	}
	add(body[start:])
	return out
}

// commentAbove returns the // comment block that ends on the line before line (1-based).
func commentAbove(text string, line int) string {
	lines := strings.Split(text, "\n")
	var got []string
	for i := line - 2; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "//") {
			break
		}
		got = append([]string{strings.TrimSpace(strings.TrimPrefix(l, "//"))}, got...)
	}
	return strings.Join(got, " ")
}

// entries splits an object literal's body (between its braces) into its top-level entries.
// Entries end at a newline or a comma outside any bracket or string.
func entries(body string) []entry {
	var out []entry
	add := func(t string) {
		if m := keyValue.FindStringSubmatch(t); m != nil {
			k := m[1]
			if k == "" {
				k = m[2]
			}
			out = append(out, entry{Key: k, Value: m[3]})
		}
	}
	start := 0
	for i := 0; i < len(body); {
		switch body[i] {
		case '\'':
			i = skipString(body, i)
			continue
		case '{', '[', '(':
			i = skipBalanced(body, i)
			continue
		case '\n', ',':
			add(body[start:i])
			start = i + 1
		}
		i++
	}
	add(body[start:])
	return out
}

// lookup follows a dotted path of keys through nested object literals ("properties.sku.name")
// and returns the value found there.
func lookup(body, path string) (string, bool) {
	keys := strings.Split(path, ".")
	for n, k := range keys {
		found := false
		for _, e := range entries(body) {
			if e.Key == k {
				if n == len(keys)-1 {
					return e.Value, true
				}
				v := strings.TrimSpace(e.Value)
				if !strings.HasPrefix(v, "{") {
					return "", false
				}
				body = v[1 : skipBalanced(v, 0)-1]
				found = true
				break
			}
		}
		if !found {
			return "", false
		}
	}
	return "", false
}

// literal returns the text of a plain string literal ('abc'), or "" with false.
func literal(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if len(v) < 2 || v[0] != '\'' || skipString(v, 0) != len(v) || strings.Contains(v, "${") {
		return "", false
	}
	return strings.ReplaceAll(v[1:len(v)-1], `\'`, "'"), true
}

// variable returns the value expression of `var name = ...` in f.
func (f bicepFile) variable(name string) (string, bool) {
	re := regexp.MustCompile(`(?m)^[ \t]*var[ \t]+` + regexp.QuoteMeta(name) + `[ \t]*=[ \t]*`)
	loc := re.FindStringIndex(f.Stripped)
	if loc == nil {
		return "", false
	}
	rest := f.Stripped[loc[1]:]
	if strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, "[") {
		return rest[:skipBalanced(rest, 0)], true
	}
	if j := strings.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	return strings.TrimSpace(rest), true
}

// output is one `output NAME type = value` declaration.
type output struct {
	File, Name, Type, Value string
	Secure                  bool
}

func (f bicepFile) outputs() []output {
	var out []output
	for _, m := range outputDecl.FindAllStringSubmatchIndex(f.Stripped, -1) {
		before := strings.TrimSpace(f.Stripped[:m[0]])
		lastLine := before[strings.LastIndexByte(before, '\n')+1:]
		out = append(out, output{
			File:   f.Path,
			Name:   f.Stripped[m[2]:m[3]],
			Type:   f.Stripped[m[4]:m[5]],
			Value:  strings.TrimSpace(f.Stripped[m[6]:m[7]]),
			Secure: strings.HasPrefix(strings.TrimSpace(lastLine), "@secure"),
		})
	}
	return out
}

func (r resource) String() string {
	return fmt.Sprintf("%s (%s, %s:%d)", r.Symbol, r.Type, r.File, r.Line)
}

func TestBicepReader(t *testing.T) {
	src := `// header
resource acct 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${token}' // a comment with a } brace
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    note: 'it\'s \'quoted\' and has { and // inside'
    nested: { a: 1, b: [ 1, 2 ] }
  }
}

/* block
resource hidden 'Microsoft.Fake/things@1' = {
} */

// Why this exists,
// on two lines.
resource cont 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (make) {
  parent: blob
  name: 'seed-inbox'
}

var role = {
  'quoted-key': 'abc'
  plain: '${x}-${y}'
}

output url string = 'https://${acct.name}'
@secure()
output hidden string = 'x'
`
	f := newBicepFile("x.bicep", src)
	rs := f.resources()
	if len(rs) != 2 {
		t.Fatalf("got %d resources, want 2 (the commented one must not count): %v", len(rs), rs)
	}
	tests := []struct {
		body, path, want string
		ok               bool
	}{
		{rs[0].Body, "name", `'st${token}'`, true},
		{rs[0].Body, "kind", `'StorageV2'`, true},
		{rs[0].Body, "properties.allowSharedKeyAccess", "false", true},
		{rs[0].Body, "properties.nested.b", "[ 1, 2 ]", true},
		{rs[0].Body, "properties.nested.a", "1", true},
		{rs[0].Body, "properties.missing", "", false},
		{rs[0].Body, "kind.deeper", "", false},
		{rs[1].Body, "name", "'seed-inbox'", true},
	}
	for _, tc := range tests {
		got, ok := lookup(tc.body, tc.path)
		if got != tc.want || ok != tc.ok {
			t.Errorf("lookup(%s) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
	if rs[1].Comment != "Why this exists, on two lines." || rs[0].Comment != "header" {
		t.Errorf("comments: %q, %q", rs[0].Comment, rs[1].Comment)
	}
	if rs[1].Line != 18 || rs[1].Type != "Microsoft.Storage/storageAccounts/blobServices/containers" {
		t.Errorf("second resource: %+v", rs[1])
	}
	v, ok := f.variable("role")
	if !ok {
		t.Fatal("var role not found")
	}
	es := entries(v[1 : len(v)-1])
	if len(es) != 2 || es[0].Key != "quoted-key" || es[1].Value != "'${x}-${y}'" {
		t.Errorf("entries of var role: %+v", es)
	}
	outs := f.outputs()
	if len(outs) != 2 || outs[0].Secure || !outs[1].Secure || outs[0].Value != "'https://${acct.name}'" {
		t.Errorf("outputs: %+v", outs)
	}
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"'abc'", "abc", true},
		{`'it\'s'`, "it's", true},
		{"'a${b}'", "", false},
		{"name", "", false},
		{"'abc' + 'd'", "", false},
	} {
		if got, ok := literal(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("literal(%s) = %q, %v", tc.in, got, ok)
		}
	}
}

// FuzzBicepReader feeds the reader arbitrary text: it must not panic, and stripping comments
// must keep every offset and newline so line numbers stay right.
func FuzzBicepReader(f *testing.F) {
	for _, p := range []string{"main.bicep", "modules/storage.bicep", "modules/roles.bicep"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b))
		}
	}
	f.Add("resource x 'a@b' = {\n name: '${'\n}")
	f.Add("var v = {\n a: '''\nmulti\n'''\n b: /* c */ 1\n}")
	f.Add("[\n  'a'\n  {\n b: [1, 2]\n }, 'c,d'\n]")
	f.Add("@minValue(40)\n@maxValue(1000)\nparam namePrefix int")
	f.Add("take('st${prefix}${token}', 24)")
	f.Fuzz(func(t *testing.T, s string) {
		st := stripComments(s)
		if len(st) != len(s) || strings.Count(st, "\n") != strings.Count(s, "\n") {
			t.Fatalf("stripComments changed length or lines")
		}
		bf := newBicepFile("f.bicep", s)
		for _, r := range bf.resources() {
			_, _ = lookup(r.Body, "properties.name")
			entries(r.Body)
		}
		bf.outputs()
		bf.variable("role")
		bf.decorators("namePrefix")
		for _, el := range elements(s) {
			literal(el)
		}
		_, _ = evalName(s, "p", "t")
		literal(s)
	})
}
