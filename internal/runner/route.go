package runner

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Route is a compiled HTTP route template such as "tokens/{serial}/assignment". It follows
// ASP.NET routing as the Functions host does: literals match case-insensitively, "{name}" takes
// one path segment, "{name?}" may be absent, "{*name}" takes the rest of the path, and
// constraints or defaults ("{id:int}", "{x=1}") are accepted and ignored.
type Route struct {
	Template string
	params   []string
	re       *regexp.Regexp
}

// ParseRoute compiles a route template.
func ParseRoute(template string) (*Route, error) {
	t := strings.Trim(template, "/")
	if t == "" {
		return nil, fmt.Errorf("route template is empty")
	}
	var b strings.Builder
	b.WriteString("^")
	r := &Route{Template: template}
	seen := map[string]bool{}
	segs := strings.Split(t, "/")
	for i, seg := range segs {
		if seg == "" {
			return nil, fmt.Errorf("route %q has an empty segment", template)
		}
		rs, err := parseSegment(template, seg, i == len(segs)-1, seen)
		if err != nil {
			return nil, err
		}
		r.params = append(r.params, rs.params...)
		sep := ""
		if i > 0 {
			sep = "/"
		}
		switch {
		case rs.optional:
			b.WriteString("(?:" + sep + rs.pattern + ")?")
		case rs.catchAll && rs.pattern == "(.*)" && i > 0:
			// A whole-segment catch-all may also match nothing, slash included.
			b.WriteString("(?:/(.*))?")
		default:
			b.WriteString(sep + rs.pattern)
		}
	}
	b.WriteString("/?$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("route %q: %w", template, err)
	}
	r.re = re
	return r, nil
}

// routeSegment is one compiled segment of a route template.
type routeSegment struct {
	pattern  string   // its regular expression
	params   []string // the parameters it names, in order
	optional bool     // it has a "{name?}" parameter
	catchAll bool     // its last parameter is "{*name}"
}

// parseSegment compiles one segment (last: the template's last) of template; seen holds the
// parameter names so far, lower-cased, and gains this segment's.
func parseSegment(template, seg string, last bool, seen map[string]bool) (routeSegment, error) {
	var rs routeSegment
	var sb strings.Builder
	for rest := seg; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			if strings.ContainsRune(rest, '}') {
				return rs, fmt.Errorf("route %q: unmatched }", template)
			}
			sb.WriteString("(?i:" + regexp.QuoteMeta(rest) + ")")
			break
		}
		if strings.ContainsRune(rest[:open], '}') {
			return rs, fmt.Errorf("route %q: unmatched }", template)
		}
		if open > 0 {
			sb.WriteString("(?i:" + regexp.QuoteMeta(rest[:open]) + ")")
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return rs, fmt.Errorf("route %q: unmatched {", template)
		}
		name, optional, catchAll := parseParam(rest[open+1 : open+end])
		rest = rest[open+end+1:]
		rs.optional, rs.catchAll = rs.optional || optional, catchAll
		if !validName(name) {
			return rs, fmt.Errorf("route %q: bad parameter name %q", template, name)
		}
		if seen[strings.ToLower(name)] {
			return rs, fmt.Errorf("route %q: parameter %q appears twice", template, name)
		}
		seen[strings.ToLower(name)] = true
		rs.params = append(rs.params, name)
		if catchAll {
			if !last || rest != "" {
				return rs, fmt.Errorf("route %q: a catch-all parameter must come last", template)
			}
			sb.WriteString("(.*)")
		} else {
			sb.WriteString("([^/]+)")
		}
		if rs.optional && (!last || rest != "" || sb.Len() != len("([^/]+)")) {
			return rs, fmt.Errorf("route %q: only a whole last segment may be optional", template)
		}
	}
	rs.pattern = sb.String()
	return rs, nil
}

// parseParam reads what stands between { and }: "*name" (catch-all), "name?" (optional),
// and a constraint or default after ':' or '=', accepted and ignored.
func parseParam(inner string) (name string, optional, catchAll bool) {
	catchAll = strings.HasPrefix(inner, "*")
	inner = strings.TrimPrefix(inner, "*")
	if k := strings.IndexAny(inner, ":="); k >= 0 {
		inner = inner[:k]
	}
	if strings.HasSuffix(inner, "?") {
		optional = true
		inner = strings.TrimSuffix(inner, "?")
	}
	return inner, optional, catchAll
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// Match matches an escaped path (below the route prefix, without leading slash) and returns
// the unescaped route parameters.
func (r *Route) Match(escapedPath string) (map[string]string, bool) {
	m := r.re.FindStringSubmatch(strings.TrimPrefix(escapedPath, "/"))
	if m == nil {
		return nil, false
	}
	params := make(map[string]string, len(r.params))
	for i, name := range r.params {
		v := m[i+1]
		if v == "" {
			continue // an absent optional parameter is not in the route data
		}
		u, ok := unescapeRouteValue(v)
		if !ok {
			return nil, false
		}
		params[name] = u
	}
	return params, true
}

// blobPattern matches blob names against a blobTrigger path such as "seed-inbox/{name}".
type blobPattern struct {
	container string
	params    []string
	re        *regexp.Regexp
}

// splitBlobPath splits a blobTrigger path into its container and the blob name pattern.
func splitBlobPath(path string) (container, pattern string, err error) {
	container, pattern, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || container == "" || strings.ContainsAny(container, "{}") {
		return "", "", fmt.Errorf("blobTrigger path %q: want container/pattern", path)
	}
	if pattern == "" {
		pattern = "{name}"
	}
	return container, pattern, nil
}

// parseBlobPattern compiles a blobTrigger path. Parameters match any characters, slashes
// included (the host binds {name} to the whole blob name below the container).
func parseBlobPattern(path string) (*blobPattern, error) {
	container, pattern, err := splitBlobPath(path)
	if err != nil {
		return nil, err
	}
	p := &blobPattern{container: container}
	var b strings.Builder
	b.WriteString("^")
	for rest := pattern; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			b.WriteString(regexp.QuoteMeta(rest))
			break
		}
		b.WriteString(regexp.QuoteMeta(rest[:open]))
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("blobTrigger path %q: unmatched {", path)
		}
		name := rest[open+1 : open+end]
		if !validName(name) {
			return nil, fmt.Errorf("blobTrigger path %q: bad parameter %q", path, name)
		}
		p.params = append(p.params, name)
		b.WriteString("(.+?)")
		rest = rest[open+end+1:]
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("blobTrigger path %q: %w", path, err)
	}
	p.re = re
	return p, nil
}

// match returns the path parameters for a blob name in the container.
func (p *blobPattern) match(blobName string) (map[string]string, bool) {
	m := p.re.FindStringSubmatch(blobName)
	if m == nil {
		return nil, false
	}
	out := make(map[string]string, len(p.params))
	for i, n := range p.params {
		out[n] = m[i+1]
	}
	return out, true
}

// unescapeRouteValue decodes a route value as ASP.NET Core routing hands it to the host: every
// escape except %2F, which Kestrel leaves encoded in the path (dotnet/aspnetcore#30655), so a
// value "a%2Fb" reaches Params as "a%2Fb" and the handler decodes it.
func unescapeRouteValue(v string) (string, bool) {
	parts := splitFold(v, "%2F")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return "", false
		}
		parts[i] = u
	}
	return strings.Join(parts, "%2F"), true
}

// splitFold splits s around each case-insensitive occurrence of sep (ASCII).
func splitFold(s, sep string) []string {
	var out []string
	for {
		i := strings.Index(strings.ToUpper(s), strings.ToUpper(sep))
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		s = s[i+len(sep):]
	}
}
