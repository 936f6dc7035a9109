package entra

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	khttp "github.com/microsoft/kiota-http-go"
	msgraphsdk "github.com/microsoftgraph/msgraph-sdk-go"
	msgraphcore "github.com/microsoftgraph/msgraph-sdk-go-core"
)

// oldChain is the middleware chain oathpipe built before issue 18 item 2: kiota's default
// chain in whatever order its map gave, with a copy-per-attempt middleware (oldFreshAttempt)
// inserted right before kiota's compression handler. Kept to show the bug it had.
func oldChain(maxRetries int) []khttp.Middleware {
	opts := msgraphsdk.GetDefaultClientOptions()
	var out []khttp.Middleware
	for _, m := range msgraphcore.GetDefaultMiddlewaresWithOptions(&opts) {
		switch m.(type) {
		case *khttp.RetryHandler:
			ro := khttp.RetryHandlerOptions{MaxRetries: maxRetries}
			ro.ShouldRetry = retryWithinDeadline(ro.GetDelaySeconds())
			m = khttp.NewRetryHandlerWithOptions(ro)
		case *khttp.CompressionHandler:
			out = append(out, oldFreshAttempt{})
		}
		out = append(out, m)
	}
	return out
}

type oldFreshAttempt struct{}

func (oldFreshAttempt) Intercept(p khttp.Pipeline, i int, req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return p.Next(req, i)
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	if s, ok := req.Body.(io.Seeker); ok {
		_, _ = s.Seek(0, io.SeekStart)
	}
	attempt := req.Clone(req.Context())
	attempt.Body = io.NopCloser(bytes.NewReader(b))
	attempt.ContentLength = int64(len(b))
	attempt.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return p.Next(attempt, i)
}
