// Package entra is oathpipe's way into Entra ID through Microsoft Graph: resolve users, find and
// create hardware OATH tokens in the tenant inventory, assign, activate and unassign them. It is
// the only package that imports the Graph SDK (msgraph-sdk-go and kiota), so nothing else links it.
//
// One authenticated pipeline serves both API versions: msgraph-sdk-go's request adapter, with
// the azidentity auth provider and Graph's middleware (retry honouring Retry-After, gzip of
// request bodies, redirects), runs the typed v1.0 builders for users and, for the beta-only
// hardware OATH endpoints, request information with absolute beta URLs and small
// project-owned JSON types. See docs/graph.md.
package entra

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	abs "github.com/microsoft/kiota-abstractions-go"
	kiotaauth "github.com/microsoft/kiota-authentication-azure-go"
	khttp "github.com/microsoft/kiota-http-go"
	msgraphsdk "github.com/microsoftgraph/msgraph-sdk-go"
	msgraphcore "github.com/microsoftgraph/msgraph-sdk-go-core"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"
)

// DefaultGraphURL is the root of Microsoft Graph in the global cloud.
const DefaultGraphURL = "https://graph.microsoft.com"

// Options configures a Client.
type Options struct {
	GraphURL   string                 // root, e.g. https://graph.microsoft.com (no version); empty = DefaultGraphURL
	Credential azcore.TokenCredential // managed identity, DefaultAzureCredential, or azauth.StaticToken for the stand-in
	HTTPClient *http.Client           // base transport (trusts the stand-in CA in tests/dev); nil = default
	Logger     *slog.Logger
	Now        func() time.Time // for tests; nil = time.Now

	// MaxRetries is how often Graph's retry middleware retries a 429/503/504 (honouring
	// Retry-After) before the call fails with KindThrottled or KindTransient. 0 = 6.
	MaxRetries int

	// AdaptiveWrites spaces this client's writes with an adaptive rate limit that halves on a
	// 429 and creeps up on success (writeLimiter), starting at InitialWriteRate writes per
	// second (0 = 20, Graph's documented budget). One client per instance: the instances
	// sharing a tenant then spend its budget between them instead of crowding it.
	AdaptiveWrites   bool
	InitialWriteRate float64
}

// Client talks to Microsoft Graph. It is safe for concurrent use; build one per process.
type Client struct {
	adapter *msgraphsdk.GraphRequestAdapter
	graph   *msgraphsdk.GraphServiceClient
	root    string // no trailing slash
	v1      string // root + /v1.0
	beta    string // root + /beta
	log     *slog.Logger
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error
	// middlewares is the chain every request runs through (tests read its order).
	middlewares []khttp.Middleware
	writes      *writeLimiter // nil unless Options.AdaptiveWrites
}

// New builds a Client. Nothing is sent until the first call.
func New(opts Options) (*Client, error) {
	root := strings.TrimRight(opts.GraphURL, "/")
	if root == "" {
		root = DefaultGraphURL
	}
	u, err := url.Parse(root)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("graph client: %q is not an http(s) URL (OATHPIPE_GRAPH_URL)", opts.GraphURL)
	}
	if opts.Credential == nil {
		return nil, errors.New("graph client: no credential")
	}
	// The auth provider only attaches tokens for the hosts it is given: the Graph root's host,
	// whatever it is (national cloud, stand-in on 127.0.0.1). Without it, no token is sent at all.
	auth, err := kiotaauth.NewAzureIdentityAuthenticationProviderWithScopesAndValidHosts(
		opts.Credential, []string{root + "/.default"}, []string{u.Hostname()})
	if err != nil {
		return nil, fmt.Errorf("graph client: auth provider: %w", err)
	}

	var base http.RoundTripper
	if opts.HTTPClient != nil && opts.HTTPClient.Transport != nil {
		base = opts.HTTPClient.Transport
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64 // concurrent provisioning reuses connections
		base = tr
	}
	maxRetries := opts.MaxRetries
	if maxRetries <= 0 {
		maxRetries = 6
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	var writes *writeLimiter
	if opts.AdaptiveWrites {
		writes = newWriteLimiter(opts.InitialWriteRate, now)
		base = limitedTransport{base: base, l: writes}
	}
	middlewares := buildChain(maxRetries)
	httpClient := &http.Client{
		Transport: khttp.NewCustomTransportWithParentTransport(base, middlewares...),
		// The redirect middleware follows redirects itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       100 * time.Second,
	}
	adapter, err := msgraphsdk.NewGraphRequestAdapterWithParseNodeFactoryAndSerializationWriterFactoryAndHttpClient(auth, nil, nil, httpClient)
	if err != nil {
		return nil, fmt.Errorf("graph client: request adapter: %w", err)
	}
	adapter.SetBaseUrl(root + "/v1.0")

	c := &Client{
		adapter:     adapter,
		graph:       msgraphsdk.NewGraphServiceClient(adapter),
		root:        root,
		v1:          root + "/v1.0",
		beta:        root + "/beta",
		log:         opts.Logger,
		now:         opts.Now,
		sleep:       sleepCtx,
		middlewares: middlewares,
		writes:      writes,
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// WriteRate is the adaptive write limiter's current rate in writes per second (0 without
// Options.AdaptiveWrites).
func (c *Client) WriteRate() float64 {
	if c.writes == nil {
		return 0
	}
	return c.writes.Rate()
}

// graphMiddlewares is msgraph-sdk-go's default middleware chain (Graph telemetry, /me
// replacement, then kiota's retry, redirect, compression, parameter decoding, user agent and
// header inspection), in that fixed order, with the retry handler allowed maxRetries tries,
// none of them waiting past the request's deadline (retryWithinDeadline), and kiota's
// compression handler replaced by gzipAttempt.
//
// The order must be fixed here: kiota-http-go v1.5.4 builds its default chain by ranging over
// a Go map (getDefaultMiddleWare), so each client gets its own random order. In the orders
// where compression ran outside the retry handler, a throttled POST or PATCH was resent after
// Retry-After with the body its first try had consumed: "http: ContentLength=169 with Body
// length 0" (issue 18 item 2; TestEveryResendCarriesItsBody).
func graphMiddlewares(maxRetries int) []khttp.Middleware {
	opts := msgraphsdk.GetDefaultClientOptions()
	var graph, retry, redirect, rest []khttp.Middleware
	for _, m := range msgraphcore.GetDefaultMiddlewaresWithOptions(&opts) {
		switch m.(type) {
		case *khttp.RetryHandler:
			ro := khttp.RetryHandlerOptions{MaxRetries: maxRetries}
			ro.ShouldRetry = retryWithinDeadline(ro.GetDelaySeconds())
			retry = append(retry, khttp.NewRetryHandlerWithOptions(ro))
		case *khttp.RedirectHandler:
			redirect = append(redirect, m)
		case *khttp.CompressionHandler:
			// replaced by gzipAttempt, below
		case *msgraphcore.GraphTelemetryHandler, *khttp.UrlReplaceHandler:
			graph = append(graph, m)
		default:
			rest = append(rest, m)
		}
	}
	sort.SliceStable(rest, func(i, j int) bool { return middlewareRank(rest[i]) < middlewareRank(rest[j]) })
	out := append(graph, retry...)
	out = append(out, redirect...)
	out = append(out, gzipAttempt{})
	return append(out, rest...)
}

// buildChain builds a client's middleware chain (a test swaps in the chain of old to show the bug).
var buildChain = graphMiddlewares

// middlewareRank orders the middlewares after compression as kiota lists them in its docs.
func middlewareRank(m khttp.Middleware) int {
	switch m.(type) {
	case *khttp.ParametersNameDecodingHandler:
		return 0
	case *khttp.UserAgentHandler:
		return 1
	case *khttp.HeadersInspectionHandler:
		return 2
	}
	return 3
}

// retryWithinDeadline is the retry middleware's ShouldRetry: it lets kiota retry a 429/503/504
// only if the wait kiota is about to take (Retry-After, else its exponential backoff plus at
// most 1 s of jitter) ends before the request context's deadline. Otherwise kiota would wait,
// give up with ctx.Err() and lose Graph's answer; stopping returns the answer itself, which
// becomes KindThrottled with Retry-After and request-id (so the HTTP API can answer 429). The
// deadline is the caller's or, failing that, the http.Client's Timeout. delaySeconds is the
// handler's backoff base (RetryHandlerOptions.GetDelaySeconds).
func retryWithinDeadline(delaySeconds int) func(time.Duration, int, *http.Request, *http.Response) bool {
	return func(_ time.Duration, executionCount int, req *http.Request, resp *http.Response) bool {
		return !waitOutlastsDeadline(req.Context(), retryDelay(resp, delaySeconds, executionCount+1))
	}
}

// retryDelay is how long kiota-http-go v1.5.4's retry handler waits before retry number attempt
// (1 for the first): Retry-After in whole seconds or as a date, else delaySeconds·2^(attempt-1)
// plus up to 1 s of jitter (counted in full here).
func retryDelay(resp *http.Response, delaySeconds, attempt int) time.Duration {
	if v := resp.Header.Get("Retry-After"); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return time.Duration(f) * time.Second
		}
		if t, err := time.Parse(time.RFC1123, v); err == nil {
			return time.Until(t)
		}
	}
	return time.Duration(delaySeconds)*time.Second<<(attempt-1) + time.Second
}

// waitOutlastsDeadline reports whether waiting d from now would end at or after ctx's deadline.
func waitOutlastsDeadline(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && !time.Now().Add(d).Before(deadline)
}

// gzipAttempt gzips the request body of every attempt afresh, on a copy of the request with
// its own headers and body, and replaces kiota's compression handler. kiota-http-go v1.5.4's
// handler gzips in place: it sets Content-Encoding: gzip on the header map it shares with the
// retry handler's request (so a retry skipped compression and sent the plain body labelled
// gzip) and swaps the body for the compressed one, which a resend then found consumed when the
// handler ran outside the retry handler. Here the retry handler's request is never touched:
// its body is read (and rewound for the next try) and each attempt gets a new reader of the
// compressed bytes, with GetBody for net/http's own resends on a broken connection.
type gzipAttempt struct{}

// Intercept implements khttp.Middleware.
func (gzipAttempt) Intercept(p khttp.Pipeline, i int, req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return p.Next(req, i)
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	s, ok := req.Body.(io.Seeker)
	if !ok {
		return nil, errors.New("request body cannot be rewound for a resend")
	}
	if _, err := s.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind request body: %w", err)
	}
	attempt := req.Clone(req.Context())
	if _, encoded := req.Header["Content-Encoding"]; !encoded && len(b) > 0 {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		if _, err := w.Write(b); err != nil {
			return nil, fmt.Errorf("gzip request body: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("gzip request body: %w", err)
		}
		b = z.Bytes()
		attempt.Header.Set("Content-Encoding", "gzip")
	}
	attempt.Body = io.NopCloser(bytes.NewReader(b))
	attempt.ContentLength = int64(len(b))
	attempt.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return p.Next(attempt, i)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// errorMapping makes the adapter decode every 4xx/5xx answer as Graph's OData error, which
// carries the code, the message and the request-id.
var errorMapping = abs.ErrorMappings{"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue}

// noRetry turns the retry middleware off for one request (activation codes must be fresh on
// every try, so Activate retries itself).
var noRetry = &khttp.RetryHandlerOptions{
	MaxRetries:  1,
	ShouldRetry: func(time.Duration, int, *http.Request, *http.Response) bool { return false },
}

// send runs one request through the Graph adapter: method on the absolute URL u, body (when
// not nil) as JSON, the answer (when out is not nil) decoded into out.
func (c *Client) send(ctx context.Context, method abs.HttpMethod, u string, body, out any, opts ...abs.RequestOption) error {
	ri := abs.NewRequestInformation()
	ri.Method = method
	pu, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("graph url %q: %w", u, err)
	}
	ri.SetUri(*pu)
	ri.Headers.Add("Accept", "application/json")
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		ri.SetStreamContentAndContentType(b, "application/json")
	}
	if len(opts) > 0 {
		ri.AddRequestOptions(opts)
	}
	res, err := c.adapter.SendPrimitive(ctx, ri, "[]byte", errorMapping)
	if err != nil {
		return err
	}
	if out == nil || res == nil {
		return nil
	}
	b, ok := res.([]byte)
	if !ok || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode Graph answer: %w", err)
	}
	return nil
}

// pathEscape escapes one path segment (UPNs hold @, guest UPNs hold #).
func pathEscape(s string) string { return url.PathEscape(s) }
