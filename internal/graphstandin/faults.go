package graphstandin

import (
	"net/http"
	"strings"
)

// FailNext makes the next n requests fail with status (429 answers carry Retry-After: 1).
func (s *Server) FailNext(n int, status int) { s.AddFault(Fault{Status: status, Count: n}) }

// AddFault injects a failure.
func (s *Server) AddFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes the injected failures that have not fired.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

func (s *Server) takeFault(r *http.Request) *Fault {
	for i, f := range s.faults {
		if (f.Method == "" || strings.EqualFold(f.Method, r.Method)) && strings.Contains(r.URL.Path, f.PathContains) {
			f.Count--
			if f.Count <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

func faultError(f *Fault) *apiError {
	ra := f.RetryAfter
	if ra <= 0 {
		ra = 1
	}
	switch f.Status {
	case 403:
		return errf(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
	case 429:
		e := errf(429, "TooManyRequests", "Too many requests. Retry after %d seconds.", ra)
		e.retryAfter = ra
		return e
	case 404:
		return notFound("injected")
	case 503:
		return &apiError{status: 503, code: "serviceNotAvailable", msg: "The service is temporarily unavailable.", retryAfter: ra}
	case 504:
		return &apiError{status: 504, code: "gatewayTimeout", msg: "The gateway timed out.", retryAfter: ra}
	default:
		return errf(f.Status, "generalException", "An injected failure.")
	}
}
