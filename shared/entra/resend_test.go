package entra

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	khttp "github.com/microsoft/kiota-http-go"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/token"
)

// TestEveryResendCarriesItsBody throttles every write three times in a row (429, Retry-After:
// 1) and checks that every resend arrives with its body: none is refused as empty, and every
// token ends activated. kiota-http-go builds its default middleware chain from a Go map, so
// the order of retry, redirect and compression handlers differs from one client to the next;
// several clients are built so that the orders where the compression handler runs outside the
// retry handler are covered too (issue 18 item 2).
func TestEveryResendCarriesItsBody(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out Retry-After")
	}
	// The clients and the stand-in share a clock that stands still in the middle of a time
	// step, so every try of an activation carries the same code: one distinct write, which the
	// stand-in throttles three times. With the real clock, an activation begun 5–6 s before its
	// step ended changed its code after three throttled tries; the stand-in throttled the new
	// code three times anew and the sixth and last try came back 429 (the old flake).
	frozen := time.Unix(1_800_000_000, 0).Truncate(30 * time.Second).Add(10 * time.Second)
	errs, st, orders := resendScenario(t, func() time.Time { return frozen })
	for _, err := range errs {
		t.Error(err)
	}
	if st.EmptyBodies != 0 {
		t.Errorf("%d writes arrived without their body", st.EmptyBodies)
	}
	if st.Activation != resendTokens || st.Throttled < 3*3*resendTokens {
		t.Errorf("stats %+v: want every write throttled 3 times and every token activated", st)
	}
	if len(orders) != 1 {
		t.Errorf("middleware chain differs between clients: %v", orders)
	}
}

// TestChainOrderFixed: kiota-http-go builds its default chain from a Go map, so the chain of
// old (oldChain) differed between clients; oathpipe's is the same for every client.
func TestChainOrderFixed(t *testing.T) {
	old, now := map[string]bool{}, map[string]bool{}
	for range 30 {
		old[names(oldChain(6))] = true
		now[names(graphMiddlewares(6))] = true
	}
	if len(old) < 2 {
		t.Errorf("the old chain came out in %d order(s) in 30 builds; kiota's map order should vary", len(old))
	}
	if len(now) != 1 {
		t.Errorf("the chain differs between builds: %v", now)
	}
	if o := names(graphMiddlewares(6)); strings.Index(o, "gzipAttempt") < strings.Index(o, "RetryHandler") {
		t.Errorf("compression must run inside the retry handler: %s", o)
	}
}

// TestGzipAttemptResendsWholeBody drives gzipAttempt the way the retry handler does (the same
// request three times) and checks each attempt: a complete gzipped body, ContentLength equal
// to its length, GetBody giving the same bytes (net/http's own resend on a broken connection),
// and the retry handler's request left untouched. The chain of old (a copy per attempt, then
// kiota's compression handler) fails the GetBody check: it gave the uncompressed body under
// the gzipped length.
func TestGzipAttemptResendsWholeBody(t *testing.T) {
	body := []byte(`{"serialNumber":"RS001","manufacturer":"Token2","model":"C302","secretKey":"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ","timeIntervalInSeconds":30,"hashFunction":"hmacsha1"}`)
	for _, tc := range []struct {
		name  string
		chain []khttp.Middleware
		ok    bool
	}{
		{"gzipAttempt", []khttp.Middleware{gzipAttempt{}}, true},
		{"old: copy then kiota compression", []khttp.Middleware{oldFreshAttempt{}, khttp.NewCompressionHandler()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "https://graph.example/beta/x", nil)
			req.Body = khttp.NopCloser(bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			bad := ""
			for try := 1; try <= 3; try++ {
				var sent *http.Request
				var sentBody []byte
				p := &capturePipeline{mws: tc.chain, last: func(r *http.Request) {
					sent = r
					sentBody, _ = io.ReadAll(r.Body)
				}}
				if _, err := p.Next(req, 0); err != nil {
					t.Fatal(err)
				}
				if s, ok := req.Body.(io.Seeker); ok {
					_, _ = s.Seek(0, io.SeekStart) // as kiota's retry handler does
				}
				if got := gunzip(t, sentBody); !bytes.Equal(got, body) || int64(len(sentBody)) != sent.ContentLength {
					bad = fmt.Sprintf("try %d: body %q, ContentLength %d, %d bytes sent", try, got, sent.ContentLength, len(sentBody))
					break
				}
				if sent.GetBody == nil {
					bad = fmt.Sprintf("try %d: no GetBody", try)
					break
				}
				rb, _ := sent.GetBody()
				again, _ := io.ReadAll(rb)
				if int64(len(again)) != sent.ContentLength || !bytes.Equal(again, sentBody) {
					bad = fmt.Sprintf("try %d: GetBody gives %d bytes, ContentLength %d", try, len(again), sent.ContentLength)
					break
				}
				if req.Header.Get("Content-Encoding") != "" {
					bad = fmt.Sprintf("try %d: the retry handler's request was labelled gzip", try)
					break
				}
			}
			if tc.ok && bad != "" {
				t.Fatal(bad)
			}
			if !tc.ok && bad == "" {
				t.Fatal("the old chain passed: the test cannot tell the bug")
			}
		})
	}
}

type capturePipeline struct {
	mws  []khttp.Middleware
	last func(*http.Request)
}

func (p *capturePipeline) Next(req *http.Request, i int) (*http.Response, error) {
	if i < len(p.mws) {
		return p.mws[i].Intercept(p, i+1, req)
	}
	p.last(req)
	return &http.Response{StatusCode: 429, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

func gunzip(t *testing.T, b []byte) []byte {
	z, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	out, _ := io.ReadAll(z)
	return out
}

func names(mws []khttp.Middleware) string {
	var out []string
	for _, m := range mws {
		out = append(out, strings.TrimPrefix(fmt.Sprintf("%T", m), "*"))
	}
	return strings.Join(out, ",")
}

const resendTokens = 8

var resendHTTP2 = false

// resendScenario provisions resendTokens tokens, each through its own client, against a
// stand-in that throttles every write three times. now is the clock of the clients and the
// stand-in (activation codes are computed and checked with it).
func resendScenario(t *testing.T, now func() time.Time) ([]error, graphstandin.Stats, map[string]bool) {
	users, err := graphstandin.LoadUsers("../../testdata/users.json")
	if err != nil {
		t.Fatal(err)
	}
	var members []graphstandin.User
	for i := range resendTokens {
		members = append(members, graphstandin.User{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1),
			UserPrincipalName: fmt.Sprintf("r%d@contoso.example", i), DisplayName: "R", UserType: "Member", AccountEnabled: true})
	}
	sa, err := graphstandin.StartTLS(graphstandin.Options{Users: append(users, members...), WriteRate: -1, ThrottleEachWrite: 3, HTTP2: resendHTTP2, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sa.Close)
	// The server drops idle connections sooner than Retry-After ends, as a loaded front end
	// may: net/http then resends on a new connection with the request's GetBody.
	sa.HTTP.Config.IdleTimeout = 700 * time.Millisecond
	orders := map[string]bool{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	for i, u := range members {
		c, err := New(Options{GraphURL: sa.URL, Credential: azauth.StaticToken(graphstandin.DefaultToken),
			HTTPClient: sa.HTTPClient(), Now: now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		orders[chainOrder(c)] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			serial := fmt.Sprintf("RS%03d", i)
			seed := seedFor(serial, 30, token.SHA1)
			d, _, err := c.EnsureDevice(t.Context(), tok(serial), seed)
			if err != nil {
				fail(fmt.Errorf("ensure %s: %w", serial, err))
				return
			}
			mid, err := c.Assign(t.Context(), u.ID, d.ID)
			if err != nil {
				fail(fmt.Errorf("assign %s: %w", serial, err))
				return
			}
			if _, err := c.Activate(t.Context(), u.ID, mid, seed, time.Time{}); err != nil {
				fail(fmt.Errorf("activate %s: %w", serial, err))
			}
		}()
	}
	wg.Wait()
	return errs, sa.Server.Stats(), orders
}

// chainOrder names the client's middleware types in order.
func chainOrder(c *Client) string { return names(c.middlewares) }
