package entra

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestWriteLimiter: writes are spaced at the rate; a burst of 429s halves it once; success adds
// about one write per second per second; the rate stays within its bounds.
func TestWriteLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newWriteLimiter(10, func() time.Time { return now })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.wait(ctx); err != nil { // the first write goes at once
		t.Fatalf("first write waited: %v", err)
	}
	if err := l.wait(ctx); err == nil { // the second must wait 100 ms: the cancelled context says so
		t.Fatal("second write did not wait")
	}
	if want := now.Add(200 * time.Millisecond); !l.next.Equal(want) {
		t.Errorf("next write at %v, want %v", l.next, want)
	}
	now = now.Add(time.Second)
	l.observe(http.StatusTooManyRequests, time.Second)
	l.observe(http.StatusTooManyRequests, time.Second) // same burst
	if r := l.Rate(); r != 5 {
		t.Fatalf("rate after a burst of 429s: %v, want 5", r)
	}
	if !l.next.Equal(now.Add(time.Second)) {
		t.Errorf("no write paused for Retry-After: next %v", l.next)
	}
	for range 5 { // one second of success at 5/s
		l.observe(http.StatusCreated, 0)
	}
	if r := l.Rate(); r < 5.9 || r > 6.1 {
		t.Errorf("rate after a second of success: %v, want about 6", r)
	}
	l.observe(http.StatusServiceUnavailable, 0)
	if r := l.Rate(); r < 5.9 || r > 6.1 {
		t.Errorf("a 503 changed the rate: %v", r)
	}
	for range 20 {
		now = now.Add(time.Second)
		l.observe(http.StatusTooManyRequests, 0)
	}
	if r := l.Rate(); r != minWriteRate {
		t.Errorf("rate after sustained 429s: %v, want the floor %v", r, minWriteRate)
	}
}
