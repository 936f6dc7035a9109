package kvstandin

import (
	"sync"
	"time"
)

// bucket is a token bucket: it holds up to capacity transactions and refills evenly, capacity
// per period. Key Vault's limit ("4,000 transactions per 10 s") is modelled this way.
type bucket struct {
	mu       sync.Mutex
	capacity float64
	perSec   float64
	tokens   float64
	last     time.Time
}

func newBucket(capacity int, per time.Duration) *bucket {
	return &bucket{
		capacity: float64(capacity),
		perSec:   float64(capacity) / per.Seconds(),
		tokens:   float64(capacity),
		last:     time.Now(),
	}
}

// take spends one token at now; when none is left it reports how long until one is.
func (b *bucket) take(now time.Time) (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(b.capacity, b.tokens+el*b.perSec)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / b.perSec * float64(time.Second)), false
}

func (b *bucket) drain(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens, b.last = 0, now
}
