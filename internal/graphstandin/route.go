package graphstandin

import (
	"net/http"
	"net/url"
	"strings"
)

// route dispatches a request; s.mu is held. Path segments match case-insensitively, as
// Graph's do, unless Lenient.ExactPaths; ids and UPNs in the path are looked up as given.
func (s *Server) route(r *http.Request, body []byte) (answer, *apiError) {
	segs := splitPath(r.URL.EscapedPath())
	if len(segs) < 2 || (!s.is(segs[0], "v1.0") && !s.is(segs[0], "beta")) {
		return answer{}, errf(400, "BadRequest", "Invalid version: %q.", strings.Join(segs, "/"))
	}
	beta := s.is(segs[0], "beta")
	p := segs[1:]
	m := r.Method
	userMethods := len(p) >= 4 && s.is(p[0], "users") && s.is(p[2], "authentication") && s.is(p[3], "hardwareOathMethods")
	devices := len(p) >= 3 && s.is(p[0], "directory") && s.is(p[1], "authenticationMethodDevices") && s.is(p[2], "hardwareOathDevices")
	switch {
	case len(p) == 2 && s.is(p[0], "users") && m == http.MethodGet:
		return s.getUser(r, beta, p[1])
	case len(p) == 4 && s.is(p[0], "users") && s.is(p[2], "authentication") && s.is(p[3], "methods") && m == http.MethodGet:
		return s.listAuthMethods(p[1])
	case beta && userMethods && len(p) == 4:
		switch m {
		case http.MethodGet:
			return s.listMethods(r, p[1])
		case http.MethodPost:
			return s.assign(p[1], body)
		}
	case beta && userMethods && len(p) == 5:
		switch m {
		case http.MethodGet:
			return s.getMethod(p[1], p[4])
		case http.MethodDelete:
			return s.unassign(p[1], p[4])
		}
	case beta && userMethods && len(p) == 6 && m == http.MethodPost:
		switch {
		case s.is(p[5], "activate"):
			return s.activate(p[1], p[4], body)
		case s.is(p[5], "deactivate"):
			return s.deactivate(p[1], p[4])
		}
	case beta && devices && len(p) == 3:
		switch m {
		case http.MethodGet:
			return s.listDevices(r)
		case http.MethodPost:
			return s.createDevice(body)
		case http.MethodPatch:
			return s.bulkCreate(body)
		}
	case beta && devices && len(p) == 4:
		switch m {
		case http.MethodGet:
			d := s.devices[p[3]]
			if d == nil {
				return answer{}, notFound(p[3])
			}
			return answer{200, s.deviceJSON(d)}, nil
		case http.MethodPatch:
			return s.updateDevice(p[3], body)
		case http.MethodDelete:
			return s.deleteDevice(p[3])
		}
	}
	return answer{}, errf(400, "BadRequest", "Resource not found for the segment '%s'.", strings.Join(p, "/"))
}

// is compares a path segment with a name: case-insensitively unless Lenient.ExactPaths.
func (s *Server) is(seg, name string) bool {
	if s.opts.Lenient.ExactPaths {
		return seg == name
	}
	return strings.EqualFold(seg, name)
}

func splitPath(escaped string) []string {
	var out []string
	for _, seg := range strings.Split(strings.Trim(escaped, "/"), "/") {
		if v, err := url.PathUnescape(seg); err == nil {
			seg = v
		}
		out = append(out, seg)
	}
	return out
}
