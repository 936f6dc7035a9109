package graphstandin

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"time"
)

// admitWrite refuses a write whose body is missing or mislabelled (checkWriteBody), throttles
// it (ThrottleEachWrite, then the write rate), or counts it as carried out.
func (s *Server) admitWrite(r *http.Request, body []byte) *apiError {
	if aerr := s.checkWriteBody(r, body); aerr != nil {
		return s.word(aerr)
	}
	if n := s.opts.ThrottleEachWrite; n > 0 {
		key := r.Method + " " + strings.ToLower(r.URL.Path) + " " + string(body)
		if s.throttled[key] < n {
			s.throttled[key]++
			return s.throttle(max(1, s.opts.ThrottleRetryAfter))
		}
	}
	cost := writeCost(body)
	if wait, ok := s.take(cost); s.rate > 0 && !ok {
		return s.throttle(max(1, int(math.Ceil(wait.Seconds()))))
	}
	s.stats.Writes += int64(cost)
	return nil
}

// throttle counts a 429 and words it with its Retry-After.
func (s *Server) throttle(secs int) *apiError {
	s.stats.Throttled++
	e := errf(429, "TooManyRequests", "Too many requests. Retry after %d seconds.", secs)
	e.retryAfter = secs
	return e
}

func isWrite(method string) bool {
	return method == http.MethodPost || method == http.MethodPatch || method == http.MethodDelete || method == http.MethodPut
}

// writeCost counts the items of a bulk (#$delta) request; any other write costs 1.
func writeCost(body []byte) int {
	if len(body) == 0 || !bytes.Contains(body, []byte("$delta")) {
		return 1
	}
	var b struct {
		Value []json.RawMessage `json:"value"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.Value) == 0 {
		return 1
	}
	return len(b.Value)
}

// take spends cost writes from the bucket, or says how long until it could.
func (s *Server) take(cost int) (time.Duration, bool) {
	if s.rate <= 0 {
		return 0, true
	}
	now := s.now()
	if !s.last.IsZero() {
		s.tokens = math.Min(s.burst, s.tokens+now.Sub(s.last).Seconds()*s.rate)
	}
	s.last = now
	need := math.Min(float64(cost), s.burst)
	if s.tokens >= need {
		s.tokens -= float64(cost)
		return 0, true
	}
	return time.Duration((need - s.tokens) / s.rate * float64(time.Second)), false
}

// checkWriteBody refuses a write whose body is missing where its endpoint needs one (counted:
// a client that lost its body on a resend) or, unless Lenient.AnyContentType, whose body is
// not labelled Content-Type: application/json.
func (s *Server) checkWriteBody(r *http.Request, body []byte) *apiError {
	if needsBody(r) && len(bytes.TrimSpace(body)) == 0 {
		s.stats.EmptyBodies++
		return errf(400, "BadRequest", "Empty Payload. JSON content expected.")
	}
	if len(body) == 0 || s.opts.Lenient.AnyContentType {
		return nil
	}
	ct := strings.ToLower(strings.TrimSpace(strings.SplitN(r.Header.Get("Content-Type"), ";", 2)[0]))
	if ct != "application/json" {
		return errf(415, "UnsupportedMediaType", "Content-Type must be application/json.")
	}
	return nil
}

// needsBody says whether a write's endpoint takes a JSON body: every POST and PATCH except
// deactivate.
func needsBody(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPatch, http.MethodPut:
		return !strings.HasSuffix(strings.ToLower(r.URL.Path), "/deactivate")
	}
	return false
}
