// Package notify posts short summaries to an incoming webhook (OATHPIPE_NOTIFY_URL): Teams and
// Slack incoming webhooks both take a JSON body {"text": "..."}. It talks to that one endpoint
// and nothing else. A summary never holds a seed: callers build it from counts and names.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Webhook posts to one incoming webhook URL.
type Webhook struct {
	URL      string
	Client   *http.Client  // default: a client with a 15 s timeout
	Attempts int           // tries per summary (default 5)
	Wait     time.Duration // first wait between tries, doubling (default 1 s; Retry-After wins when longer)
}

// Notify posts text as {"text": text}, retrying network failures, 429 and 5xx with backoff
// (honouring Retry-After). Any other answer than 2xx is final. The error never holds the URL,
// which carries the webhook's secret.
func (w *Webhook) Notify(ctx context.Context, text string) error {
	if w == nil || w.URL == "" {
		return nil
	}
	c := w.Client
	if c == nil {
		c = &http.Client{Timeout: 15 * time.Second}
	}
	attempts, wait := w.Attempts, w.Wait
	if attempts < 1 {
		attempts = 5
	}
	if wait <= 0 {
		wait = time.Second
	}
	body, err := json.Marshal(map[string]string{"text": text})
	if err != nil {
		return fmt.Errorf("notify: encode: %w", err)
	}
	var last error
	for try := 1; try <= attempts; try++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("notify: the webhook URL is not usable")
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		retry := true
		next := wait
		if err != nil {
			last = fmt.Errorf("notify: post to the webhook: %w", unwrapURL(err))
		} else {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			switch {
			case resp.StatusCode >= 200 && resp.StatusCode < 300:
				return nil
			case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
				last = fmt.Errorf("notify: the webhook answered %d", resp.StatusCode)
				if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && time.Duration(s)*time.Second > next {
					next = time.Duration(s) * time.Second
				}
			default:
				last, retry = fmt.Errorf("notify: the webhook refused the summary (%d)", resp.StatusCode), false
			}
		}
		if !retry || try == attempts {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("notify: %w (after %v)", ctx.Err(), last)
		case <-time.After(next):
		}
		wait *= 2
	}
	return last
}

// unwrapURL drops the *url.Error wrapper, whose text holds the URL (and so the webhook's secret).
func unwrapURL(err error) error {
	type unwrapper interface{ Unwrap() error }
	if u, ok := err.(interface {
		unwrapper
		Timeout() bool
	}); ok {
		if inner := u.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
