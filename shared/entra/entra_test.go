package entra

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

var _ pipeline.Directory = (*Client)(nil)

const (
	ada       = "ada.lovelace@contoso.example"
	grace     = "grace.hopper@contoso.example"
	guest     = "pat.partner_fabrikam.example#EXT#@contoso.example"
	disabled  = "former.employee@contoso.example"
	collector = "token.collector@contoso.example"
)

// seedFor returns a deterministic test seed (20 bytes) for serial.
func seedFor(serial string, period int, h token.Hash) token.Seed {
	b := []byte(strings.Repeat(serial+"-seed-", 4))[:20]
	return token.Seed{Secret: b, Hash: h, Digits: 6, Period: period}
}

func tok(serial string) token.Token {
	return token.Token{Serial: serial, Manufacturer: "Token2", Model: "C302"}
}

type env struct {
	sa  *graphstandin.Running
	gs  *graphstandin.Server
	c   *Client
	ctx context.Context
}

// start serves the sample directory and returns a client on it through the real Graph SDK.
func start(t testing.TB, so graphstandin.Options, co Options) *env {
	t.Helper()
	if so.Users == nil {
		users, err := graphstandin.LoadUsers("../../testdata/users.json")
		if err != nil {
			t.Fatal(err)
		}
		so.Users = users
	}
	if lenientRun {
		so.Lenient = graphstandin.AllLenient()
	}
	sa, err := graphstandin.StartTLS(so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sa.Close)
	co.GraphURL = sa.URL
	if co.Credential == nil {
		co.Credential = azauth.StaticToken(graphstandin.DefaultToken)
	}
	co.HTTPClient = sa.HTTPClient()
	if co.Logger == nil {
		co.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := New(co)
	if err != nil {
		t.Fatal(err)
	}
	return &env{sa: sa, gs: sa.Server, c: c, ctx: context.Background()}
}

func wantKind(t *testing.T, err error, k token.Kind) *token.Error {
	t.Helper()
	if token.KindOf(err) != k {
		t.Fatalf("error %v: kind %q, want %q", err, token.KindOf(err), k)
	}
	var te *token.Error
	errors.As(err, &te)
	return te
}

func TestAuthorizationHeaderReachesStandIn(t *testing.T) {
	e := start(t, graphstandin.Options{}, Options{})
	if _, err := e.c.ResolveUser(e.ctx, ada); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.FindDevice(e.ctx, "nope"); token.KindOf(err) != token.KindNotFound {
		t.Fatal(err)
	}
	st := e.gs.Stats()
	if st.NoAuth != 0 || st.BadAuth != 0 || st.Requests < 2 {
		t.Fatalf("stats %+v: every request must carry the bearer token", st)
	}

	// A wrong token is refused and reads as a credential problem.
	bad := start(t, graphstandin.Options{}, Options{Credential: azauth.StaticToken("wrong")})
	_, err := bad.c.ResolveUser(bad.ctx, ada)
	te := wantKind(t, err, token.KindForbidden)
	if !strings.Contains(te.Message, "access token") {
		t.Fatalf("message %q", te.Message)
	}
}

func TestProvisionLifecycle(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	e := start(t, graphstandin.Options{DistinctMethodIDs: true, Now: clk.Now, WriteRate: -1}, Options{Now: clk.Now})
	e.c.sleep = clk.Sleep
	ctx := e.ctx
	u, err := e.c.ResolveUser(ctx, ada)
	if err != nil || u.ID != "9ef40d07-18b0-545a-82a5-8f7f3b2b638a" || u.DisplayName != "Ada Lovelace" {
		t.Fatalf("resolve: %+v %v", u, err)
	}
	seed := seedFor("1001", 30, token.SHA1)
	d, created, err := e.c.EnsureDevice(ctx, tok("1001"), seed)
	if err != nil || !created || d.ID == "" || d.Status != token.StatusAvailable || d.Period != 30 || d.Hash != token.SHA1 {
		t.Fatalf("ensure: %+v %v %v", d, created, err)
	}
	d2, created, err := e.c.EnsureDevice(ctx, tok("1001"), seed)
	if err != nil || created || d2.ID != d.ID {
		t.Fatalf("second ensure: %+v %v %v", d2, created, err)
	}
	mid, err := e.c.Assign(ctx, u.ID, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if mid == d.ID {
		t.Fatalf("the stand-in gives method ids unlike device ids; got %s", mid)
	}
	if again, err := e.c.Assign(ctx, u.ID, d.ID); err != nil || again != mid {
		t.Fatalf("assign again: %s %v", again, err)
	}
	used, err := e.c.Activate(ctx, u.ID, mid, seed, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := e.gs.DeviceBySerial("1001")
	if st.Status != "activated" || st.AssignedUserID != u.ID {
		t.Fatalf("device %+v", st)
	}
	ms, err := e.c.ListUserMethods(ctx, u.ID)
	if err != nil || len(ms) != 1 || ms[0].ID != mid || ms[0].DeviceID != d.ID || ms[0].Serial != "1001" || ms[0].Status != token.StatusActivated {
		t.Fatalf("methods %+v %v", ms, err)
	}
	found, err := e.c.FindDevice(ctx, "1001")
	if err != nil || found.AssignedToID != u.ID || found.AssignedToName != "Ada Lovelace" {
		t.Fatalf("find %+v %v", found, err)
	}
	if err := e.c.Unassign(ctx, u.ID, mid); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.gs.DeviceBySerial("1001"); st.Status != "available" || st.AssignedUserID != "" {
		t.Fatalf("after unassign %+v", st)
	}
	if err := e.c.Unassign(ctx, u.ID, mid); err != nil {
		t.Fatalf("a second unassign (redelivery) must succeed: %v", err)
	}
	// Reassign to someone else: a new method, activation again.
	g, _ := e.c.ResolveUser(ctx, grace)
	mid2, err := e.c.Assign(ctx, g.ID, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Within the step of the last activation: Activate waits for the next step.
	if _, err := e.c.Activate(ctx, g.ID, mid2, seed, used); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.gs.DeviceBySerial("1001"); st.Status != "activated" || st.AssignedUPN != grace {
		t.Fatalf("after reassign %+v", st)
	}
	if n := len(e.gs.Devices()); n != 1 {
		t.Fatalf("%d devices, want 1", n)
	}
}

func TestErrors(t *testing.T) {
	e := start(t, graphstandin.Options{}, Options{MaxRetries: 1})
	ctx := e.ctx
	adaU, _ := e.c.ResolveUser(ctx, ada)
	graceU, _ := e.c.ResolveUser(ctx, grace)
	seed := seedFor("2001", 30, token.SHA256)
	dev, _, err := e.c.EnsureDevice(ctx, tok("2001"), seed)
	if err != nil {
		t.Fatal(err)
	}
	adaMethod, err := e.c.Assign(ctx, adaU.ID, dev.ID)
	if err != nil {
		t.Fatal(err)
	}
	coll, err := e.c.ResolveUser(ctx, collector)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := e.c.EnsureDevice(ctx, tok("2002"), seedFor("2002", 60, token.SHA1))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		fault   *graphstandin.Fault
		call    func() error
		kind    token.Kind
		message string // a fragment the admin reads
	}{
		{"unknown user", nil, func() error { _, err := e.c.ResolveUser(ctx, "nobody@contoso.example"); return err },
			token.KindNotFound, "no user nobody@contoso.example"},
		{"guest", nil, func() error { _, err := e.c.ResolveUser(ctx, guest); return err },
			token.KindGuest, "guest account"},
		{"disabled", nil, func() error { _, err := e.c.ResolveUser(ctx, disabled); return err },
			token.KindDisabled, "is disabled"},
		{"guest assign refused by Graph", nil, func() error {
			_, err := e.c.Assign(ctx, "0f9233b1-7390-515d-9787-175006338642", other.ID)
			return err
		}, token.KindGuest, "guest"},
		{"too many methods", nil, func() error { _, err := e.c.Assign(ctx, coll.ID, other.ID); return err },
			token.KindTooManyMethods, "5 OATH methods"},
		{"assigned elsewhere", nil, func() error { _, err := e.c.Assign(ctx, graceU.ID, dev.ID); return err },
			token.KindAssignedElsewhere, "another user"},
		{"unknown device", nil, func() error { _, err := e.c.FindDevice(ctx, "no-such-serial"); return err },
			token.KindNotFound, "no hardware token with serial number no-such-serial"},
		{"assign unknown device", nil, func() error { _, err := e.c.Assign(ctx, adaU.ID, "00000000-0000-0000-0000-000000000000"); return err },
			token.KindNotFound, "does not exist"},
		{"duplicate serial with other parameters", nil, func() error {
			other := tok("2001")
			other.Model = "C999"
			_, err := e.c.CreateDevice(ctx, other, seed)
			return err
		}, token.KindConflict, "this serial is already in Entra with another seed"},
		{"bad code", nil, func() error { return e.c.ActivateWithCode(ctx, adaU.ID, adaMethod, "000000") },
			token.KindBadCode, "rejected the verification code"},
		{"code not digits", nil, func() error { return e.c.ActivateWithCode(ctx, adaU.ID, adaMethod, "12a456") },
			token.KindInvalid, "6 digits"},
		{"sha512 refused", nil, func() error {
			_, err := e.c.CreateDevice(ctx, tok("2003"), seedFor("2003", 30, token.SHA512))
			return err
		},
			token.KindInvalid, "hmacsha1 or hmacsha256"},
		{"forbidden inventory", &graphstandin.Fault{Status: 403, Count: 1}, func() error { _, err := e.c.FindDevice(ctx, "2001"); return err },
			token.KindForbidden, "Policy.ReadWrite.AuthenticationMethod"},
		{"forbidden methods", &graphstandin.Fault{Status: 403, Count: 1}, func() error { _, err := e.c.ListUserMethods(ctx, adaU.ID); return err },
			token.KindForbidden, "UserAuthenticationMethod.ReadWrite.All"},
		{"forbidden users", &graphstandin.Fault{Status: 403, Count: 1}, func() error { _, err := e.c.ResolveUser(ctx, ada); return err },
			token.KindForbidden, "User.Read.All"},
		{"throttled beyond retries", &graphstandin.Fault{Status: 429, Count: 2}, func() error { _, err := e.c.FindDevice(ctx, "2001"); return err },
			token.KindThrottled, "throttling"},
		{"transient", &graphstandin.Fault{Status: 500, Count: 1}, func() error { _, err := e.c.ListUserMethods(ctx, adaU.ID); return err },
			token.KindTransient, "answered 500"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.gs.ClearFaults()
			if tc.fault != nil {
				e.gs.AddFault(*tc.fault)
			}
			err := tc.call()
			te := wantKind(t, err, tc.kind)
			if !strings.Contains(te.Error(), tc.message) {
				t.Fatalf("error %q does not say %q", te.Error(), tc.message)
			}
			if tc.kind == token.KindThrottled && te.RetryAfter != time.Second {
				t.Fatalf("RetryAfter %v, want 1s", te.RetryAfter)
			}
			if te.Err != nil && token.RequestIDOf(err) == "" {
				t.Fatalf("no request-id in %v", err)
			}
		})
	}
	if st, _ := e.gs.DeviceBySerial("2001"); st.Status != "failedActivation" {
		t.Fatalf("after a bad code the token is %s, want failedActivation", st.Status)
	}
	// A fresh computed code recovers from failedActivation.
	if err := activate(e.c, ctx, adaU.ID, adaMethod, seed); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.gs.DeviceBySerial("2001"); st.Status != "activated" {
		t.Fatalf("status %s", st.Status)
	}
	if n := len(e.gs.Devices()); n != 2 {
		t.Fatalf("%d devices, want 2 (nothing created by refused calls)", n)
	}
}

func TestRetriesAndAmbiguousFailures(t *testing.T) {
	e := start(t, graphstandin.Options{}, Options{})
	ctx := e.ctx
	u, _ := e.c.ResolveUser(ctx, ada)
	seed := seedFor("3001", 30, token.SHA1)

	// The create happens, but the answer is lost (504); the retry middleware resends, Graph
	// refuses the duplicate, and EnsureDevice finds the device instead of failing or duplicating.
	e.gs.AddFault(graphstandin.Fault{Method: "POST", PathContains: "hardwareOathDevices", Status: 504, AfterApply: true, Count: 1})
	d, _, err := e.c.EnsureDevice(ctx, tok("3001"), seed)
	if err != nil || d.Serial != "3001" {
		t.Fatalf("ensure after ambiguous failure: %+v %v", d, err)
	}
	if n := len(e.gs.Devices()); n != 1 {
		t.Fatalf("%d devices", n)
	}

	// Same for assign: the first try assigns, its answer is lost.
	e.gs.AddFault(graphstandin.Fault{Method: "POST", PathContains: "hardwareOathMethods", Status: 503, AfterApply: true, Count: 1})
	mid, err := e.c.Assign(ctx, u.ID, d.ID)
	if err != nil || mid == "" {
		t.Fatalf("assign after ambiguous failure: %q %v", mid, err)
	}
	if ms := e.gs.UserMethods(ada); len(ms) != 1 || ms[0].MethodID != mid {
		t.Fatalf("methods %+v", ms)
	}

	// A throttled read is retried by the Graph middleware honouring Retry-After.
	e.gs.FailNext(1, 429)
	if _, err := e.c.FindDevice(ctx, "3001"); err != nil {
		t.Fatalf("find after one 429: %v", err)
	}
}

// fakeClock drives Activate's clock and sleeps, and the stand-in's clock.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.slept = append(f.slept, d)
	f.mu.Unlock()
	return nil
}

func TestActivateTiming(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) // a step boundary for 30 s and 60 s
	tests := []struct {
		name      string
		period    int
		offset    time.Duration // into the step
		wantSleep []time.Duration
	}{
		{"30s token, plenty left", 30, 10 * time.Second, nil},
		{"30s token, 2s left waits", 30, 28 * time.Second, []time.Duration{2 * time.Second}},
		{"30s token, 2.5s left waits", 30, 27500 * time.Millisecond, []time.Duration{2500 * time.Millisecond}},
		{"60s token, 30s in: 60s steps, no wait", 60, 30 * time.Second, nil},
		{"60s token, 1s left waits", 60, 59 * time.Second, []time.Duration{time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: base.Add(tc.offset)}
			e := start(t, graphstandin.Options{Now: clk.Now, WriteRate: -1}, Options{Now: clk.Now})
			e.c.sleep = clk.Sleep
			seed := seedFor("4001", tc.period, token.SHA1)
			u, _ := e.c.ResolveUser(e.ctx, ada)
			d, _, err := e.c.EnsureDevice(e.ctx, tok("4001"), seed)
			if err != nil {
				t.Fatal(err)
			}
			mid, err := e.c.Assign(e.ctx, u.ID, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := activate(e.c, e.ctx, u.ID, mid, seed); err != nil {
				t.Fatal(err)
			}
			if len(clk.slept) != len(tc.wantSleep) || (len(tc.wantSleep) > 0 && clk.slept[0] != tc.wantSleep[0]) {
				t.Fatalf("slept %v, want %v", clk.slept, tc.wantSleep)
			}
		})
	}
}

func TestActivateRetryUsesFreshCode(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 27, 10, 0, 5, 0, time.UTC)}
	e := start(t, graphstandin.Options{Now: clk.Now, WriteRate: -1}, Options{Now: clk.Now})
	// Each wait jumps the clock 5 steps on: a resent old code would be refused (±1 step).
	e.c.sleep = func(ctx context.Context, d time.Duration) error { return clk.Sleep(ctx, d+150*time.Second) }
	seed := seedFor("5001", 30, token.SHA1)
	u, _ := e.c.ResolveUser(e.ctx, ada)
	d, _, _ := e.c.EnsureDevice(e.ctx, tok("5001"), seed)
	mid, err := e.c.Assign(e.ctx, u.ID, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.gs.AddFault(graphstandin.Fault{PathContains: "/activate", Status: 429, Count: 2})
	if err := activate(e.c, e.ctx, u.ID, mid, seed); err != nil {
		t.Fatalf("activate after two 429s: %v", err)
	}
	if len(clk.slept) != 2 || clk.slept[0] != 151*time.Second {
		t.Fatalf("slept %v: want two waits of Retry-After (1s) each", clk.slept)
	}
	if st, _ := e.gs.DeviceBySerial("5001"); st.Status != "activated" {
		t.Fatalf("status %s", st.Status)
	}

	// Beyond the tries, throttling is returned with its Retry-After (on a method not yet
	// activated: an activated one is found by the look before the second try).
	seed2 := seedFor("5002", 30, token.SHA1)
	uid2, mid2 := activationTarget(t, e, "5002", seed2)
	e.gs.AddFault(graphstandin.Fault{PathContains: "/activate", Status: 429, Count: maxActivateTries})
	err = activate(e.c, e.ctx, uid2, mid2, seed2)
	if te := wantKind(t, err, token.KindThrottled); te.RetryAfter != time.Second {
		t.Fatalf("RetryAfter %v", te.RetryAfter)
	}
}

func TestSerialsWithQuotesAndPaging(t *testing.T) {
	e := start(t, graphstandin.Options{PageSize: 2, SparsePages: true}, Options{})
	ctx := e.ctx
	serials := []string{"A'1", "B''2", "C 3", "D+4", "E&5=%6", "O'Brien's#7"}
	for _, s := range serials {
		if _, _, err := e.c.EnsureDevice(ctx, tok(s), seedFor(s, 30, token.SHA1)); err != nil {
			t.Fatalf("ensure %q: %v", s, err)
		}
	}
	for _, s := range serials {
		d, err := e.c.FindDevice(ctx, s)
		if err != nil || d.Serial != s {
			t.Fatalf("find %q: %+v %v", s, d, err)
		}
	}
	if n := len(e.gs.Devices()); n != len(serials) {
		t.Fatalf("%d devices, want %d", n, len(serials))
	}
	// A user's methods over several pages.
	u, _ := e.c.ResolveUser(ctx, grace)
	for _, s := range serials[:3] {
		d, _ := e.c.FindDevice(ctx, s)
		if _, err := e.c.Assign(ctx, u.ID, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := e.c.ListUserMethods(ctx, u.ID)
	if err != nil || len(ms) != 3 {
		t.Fatalf("methods %+v %v", ms, err)
	}
}

func TestNewRejectsBadSettings(t *testing.T) {
	for _, o := range []Options{
		{GraphURL: "ftp://graph", Credential: azauth.StaticToken("x")},
		{GraphURL: "https://graph.microsoft.com"},
	} {
		if _, err := New(o); err == nil {
			t.Fatalf("New(%+v) accepted", o)
		}
	}
	c, err := New(Options{Credential: azauth.StaticToken("x")})
	if err != nil || c.beta != "https://graph.microsoft.com/beta" || c.v1 != "https://graph.microsoft.com/v1.0" {
		t.Fatalf("%v %+v", err, c)
	}
	c, err = New(Options{GraphURL: "https://graph.microsoft.us/", Credential: azauth.StaticToken("x")})
	if err != nil || c.beta != "https://graph.microsoft.us/beta" {
		t.Fatalf("%v", err)
	}
}

// activate is Activate with no earlier activation to wait past.
func activate(c *Client, ctx context.Context, userID, methodID string, seed token.Seed) error {
	_, err := c.Activate(ctx, userID, methodID, seed, time.Time{})
	return err
}
