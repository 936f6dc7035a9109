package entra

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Bounds of the adaptive write limiter (writes per second of one client, i.e. one instance).
const (
	defaultWriteRate = 20.0 // Graph's documented budget (3,000 writes per 150 s per app and tenant)
	minWriteRate     = 0.5
	maxWriteRate     = 2000.0
)

// writeLimiter spaces one process's Graph writes (POST, PATCH, DELETE) and adapts their rate to
// the tenant's answers, the way TCP adapts to a congested link: each 429 halves the rate (at
// most once per interval between writes, so one burst of 429s is one cut), each accepted write
// adds 1/rate, i.e. the rate grows by one write per second per second of success. Instances
// that share the tenant's budget each run one; together they settle near the budget with 429s
// a small fraction of the writes (docs/benchmarks.md), instead of every instance sending as
// fast as its queue delivers. Reads are not limited (they spend resource units, not writes).
type writeLimiter struct {
	mu      sync.Mutex
	rate    float64   // writes per second
	next    time.Time // when the next write may start
	lastCut time.Time
	now     func() time.Time
}

func newWriteLimiter(initial float64, now func() time.Time) *writeLimiter {
	if initial <= 0 {
		initial = defaultWriteRate
	}
	return &writeLimiter{rate: min(max(initial, minWriteRate), maxWriteRate), now: now}
}

// wait blocks until the caller may send a write (or ctx ends).
func (l *writeLimiter) wait(ctx context.Context) error {
	l.mu.Lock()
	now := l.now()
	start := l.next
	if start.Before(now) {
		start = now
	}
	l.next = start.Add(time.Duration(float64(time.Second) / l.rate))
	l.mu.Unlock()
	if d := start.Sub(now); d > 0 {
		return sleepCtx(ctx, d)
	}
	return nil
}

// observe adapts the rate to one write's answer.
func (l *writeLimiter) observe(status int, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	switch {
	case status == http.StatusTooManyRequests:
		if now.Sub(l.lastCut) < time.Duration(float64(time.Second)/l.rate) || now.Sub(l.lastCut) < time.Second/2 {
			return // the same burst of 429s
		}
		l.rate = max(l.rate/2, minWriteRate)
		l.lastCut = now
		// Nothing more goes out of this process before Retry-After (capped: the tenant's
		// budget refills continuously).
		if p := now.Add(min(retryAfter, 2*time.Second)); l.next.Before(p) {
			l.next = p
		}
	case status < 500: // accepted, or refused for a reason of its own: the tenant was not crowded
		l.rate = min(l.rate+1/l.rate, maxWriteRate)
	}
}

// Rate is the limiter's current rate (writes per second), for tests and benchmarks.
func (l *writeLimiter) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// limitedTransport sends every write through the limiter, below the retry middleware: each
// attempt (a retry too) waits its turn and reports its answer.
type limitedTransport struct {
	base http.RoundTripper
	l    *writeLimiter
}

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.Method {
	case http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodPut:
	default:
		return t.base.RoundTrip(req)
	}
	if err := t.l.wait(req.Context()); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	var ra time.Duration
	if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil {
		ra = time.Duration(s) * time.Second
	}
	t.l.observe(resp.StatusCode, ra)
	return resp, nil
}
