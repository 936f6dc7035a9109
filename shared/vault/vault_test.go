package vault_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/shared/token"
	"github.com/oathpipe/oathpipe/shared/vault"
)

func TestPutGetRoundTrip(t *testing.T) {
	e := newEnv(t, envOptions{})
	tests := []struct {
		name string
		tok  token.Token
		seed token.Seed
	}{
		{"sha1 6 digits", token.Token{Serial: "8659612000001", Manufacturer: "Token2", Model: "C202"},
			token.Seed{Secret: []byte("12345678901234567890"), Hash: token.SHA1, Digits: 6, Period: 30}},
		{"sha256 8 digits 60s", token.Token{Serial: "8659612000002", Manufacturer: "Token2"},
			token.Seed{Secret: bytes.Repeat([]byte{0xff, 0x00, 0x7f}, 11), Hash: token.SHA256, Digits: 8, Period: 60}},
		{"sha512", token.Token{Serial: "X-3", Manufacturer: "Feitian"},
			token.Seed{Secret: bytes.Repeat([]byte{1}, 64), Hash: token.SHA512, Digits: 6, Period: 30}},
		{"serial Key Vault refuses", token.Token{Serial: "ab/12 #ü_99.z", Manufacturer: "Token2"},
			token.Seed{Secret: []byte("abcdefghij"), Hash: token.SHA1, Digits: 6, Period: 30}},
		{"very long serial", token.Token{Serial: strings.Repeat("9", 200), Manufacturer: "Yubico"},
			token.Seed{Secret: []byte("0123456789"), Hash: token.SHA1, Digits: 6, Period: 30}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := e.vault.Put(ctx, tt.tok, tt.seed, vault.PutOptions{ImportID: "imp-1"})
			if err != nil || o != vault.Created {
				t.Fatalf("Put = %v, %v; want created", o, err)
			}
			got, err := e.vault.GetSeed(ctx, tt.tok.Manufacturer, tt.tok.Serial)
			if err != nil {
				t.Fatalf("GetSeed: %v", err)
			}
			if !bytes.Equal(got.Secret, tt.seed.Secret) || got.Hash != tt.seed.Hash || got.Digits != tt.seed.Digits || got.Period != tt.seed.Period {
				t.Fatalf("GetSeed = %v, want %v", got, tt.seed)
			}
			// Idempotent: the same seed again writes nothing.
			retired, err := e.vault.PutSeed(ctx, tt.tok, tt.seed, "imp-2")
			if err != nil || !retired.IsZero() {
				t.Fatalf("PutSeed again = %v, %v; want no retire, nil", retired, err)
			}
			if has, err := e.vault.Has(ctx, tt.tok.Manufacturer, tt.tok.Serial); !has || err != nil {
				t.Fatalf("Has = %v, %v", has, err)
			}
		})
	}
	for _, s := range e.kv.Server.Secrets() {
		if s.Versions != 1 || s.ContentType != vault.ContentType {
			t.Errorf("secret %s: %d versions, content type %q; want 1, %q", s.Name, s.Versions, s.ContentType, vault.ContentType)
		}
		if s.Tags[vault.TagImportID] != "imp-1" || s.Tags[vault.TagSerial] == "" || s.Tags[vault.TagFingerprint] == "" {
			t.Errorf("secret %s tags %v", s.Name, s.Tags)
		}
	}
	if st := e.kv.Server.Stats(); st.Unauthenticated != 1 {
		t.Errorf("%d unauthenticated requests, want 1 (the first challenge only)", st.Unauthenticated)
	}
}

func TestManufacturerMatching(t *testing.T) {
	e := newEnv(t, envOptions{})
	seed := seedOf("matching-seed-0001")
	if _, err := e.vault.Put(ctx, token.Token{Serial: " 42 ", Manufacturer: " Token2 "}, seed, vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"Token2", "token2", "TOKEN2 "} {
		if _, err := e.vault.GetSeed(ctx, m, "42"); err != nil {
			t.Errorf("GetSeed(%q, 42): %v", m, err)
		}
	}
	// Same serial, other maker: a different token, a different secret.
	if _, err := e.vault.GetSeed(ctx, "Feitian", "42"); token.KindOf(err) != token.KindNotFound {
		t.Errorf("GetSeed(Feitian, 42) = %v, want not_found", err)
	}
	if o, err := e.vault.Put(ctx, token.Token{Serial: "42", Manufacturer: "Feitian"}, seedOf("another-seed-00002"), vault.PutOptions{}); err != nil || o != vault.Created {
		t.Errorf("Put(Feitian 42) = %v, %v", o, err)
	}
	// Serials keep their case.
	if _, err := e.vault.GetSeed(ctx, "Token2", "42 "); err != nil {
		t.Errorf("trimmed serial: %v", err)
	}
}

func TestConflictAndReplace(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := token.Token{Serial: "1000", Manufacturer: "Token2"}
	a, b := seedOf("first-seed-aaaaaaaa"), seedOf("second-seed-bbbbbbb")
	if _, err := e.vault.Put(ctx, tok, a, vault.PutOptions{ImportID: "one"}); err != nil {
		t.Fatal(err)
	}
	variants := []struct {
		name string
		seed token.Seed
	}{
		{"other secret", b},
		{"other digits", token.Seed{Secret: a.Secret, Hash: a.Hash, Digits: 8, Period: a.Period}},
		{"other hash", token.Seed{Secret: a.Secret, Hash: token.SHA256, Digits: a.Digits, Period: a.Period}},
		{"other period", token.Seed{Secret: a.Secret, Hash: a.Hash, Digits: a.Digits, Period: 60}},
	}
	for _, v := range variants {
		_, err := e.vault.Put(ctx, tok, v.seed, vault.PutOptions{ImportID: "two"})
		if token.KindOf(err) != token.KindConflict || !strings.Contains(err.Error(), "serial 1000") {
			t.Fatalf("%s: Put = %v, want a conflict naming serial 1000", v.name, err)
		}
		if token.IsTransient(err) {
			t.Errorf("%s: a conflict must not be retried", v.name)
		}
	}
	if got, _ := e.vault.GetSeed(ctx, "Token2", "1000"); !bytes.Equal(got.Secret, a.Secret) {
		t.Fatal("the stored seed changed after a conflict")
	}
	if s := e.kv.Server.Secrets(); len(s) != 1 || s[0].Versions != 1 {
		t.Fatalf("after conflicts the vault holds %+v; want one secret, one version", s)
	}
	o, err := e.vault.Put(ctx, tok, b, vault.PutOptions{ImportID: "reseed", Replace: true})
	if err != nil || o != vault.Replaced {
		t.Fatalf("Put(Replace) = %v, %v", o, err)
	}
	if got, _ := e.vault.GetSeed(ctx, "Token2", "1000"); !bytes.Equal(got.Secret, b.Secret) {
		t.Fatal("Replace did not store the new seed")
	}
	if s := e.kv.Server.Secrets(); s[0].Versions != 2 || s[0].Tags[vault.TagImportID] != "reseed" {
		t.Fatalf("after Replace: %+v", s[0])
	}
}

func TestSoftDeleteRecovery(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := token.Token{Serial: "2000", Manufacturer: "Token2"}
	a := seedOf("recoverable-seed-01")
	if _, err := e.vault.Put(ctx, tok, a, vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Delete(ctx, "Token2", "2000"); err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Delete(ctx, "Token2", "2000"); token.KindOf(err) != token.KindNotFound {
		t.Fatalf("second Delete = %v, want not_found", err)
	}
	if has, err := e.vault.Has(ctx, "Token2", "2000"); has || err != nil {
		t.Fatalf("Has after delete = %v, %v", has, err)
	}
	if _, err := e.vault.GetSeed(ctx, "Token2", "2000"); token.KindOf(err) != token.KindNotFound {
		t.Fatalf("GetSeed after delete = %v, want not_found", err)
	}
	o, err := e.vault.Put(ctx, tok, a, vault.PutOptions{})
	if err != nil || o != vault.Recovered {
		t.Fatalf("Put after delete = %v, %v; want recovered", o, err)
	}
	if s := e.kv.Server.Secrets(); len(s) != 1 || s[0].Deleted || s[0].Versions != 1 {
		t.Fatalf("after recovery: %+v", s)
	}
	// A different seed over a soft-deleted secret: recovered, compared, refused.
	if err := e.vault.Delete(ctx, "Token2", "2000"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vault.Put(ctx, tok, seedOf("a-different-seed-02"), vault.PutOptions{}); token.KindOf(err) != token.KindConflict {
		t.Fatalf("Put of another seed over a deleted secret = %v, want conflict", err)
	}
	if got, err := e.vault.GetSeed(ctx, "Token2", "2000"); err != nil || !bytes.Equal(got.Secret, a.Secret) {
		t.Fatalf("GetSeed after refused put = %v, %v; want the original seed back", got, err)
	}
}

func TestDisabledSecret(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := token.Token{Serial: "3000", Manufacturer: "Token2"}
	a := seedOf("disabled-seed-00001")
	if _, err := e.vault.Put(ctx, tok, a, vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	name := vault.SecretName("Token2", "3000")
	if _, err := e.raw.UpdateSecretProperties(ctx, name, "", azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: new(false)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vault.GetSeed(ctx, "Token2", "3000"); token.KindOf(err) != token.KindConflict {
		t.Errorf("GetSeed of a disabled secret = %v, want conflict", err)
	}
	if _, err := e.vault.Put(ctx, tok, a, vault.PutOptions{}); token.KindOf(err) != token.KindConflict {
		t.Errorf("Put over a disabled secret = %v, want conflict", err)
	}
	if o, err := e.vault.Put(ctx, tok, a, vault.PutOptions{Replace: true}); err != nil || o != vault.Replaced {
		t.Errorf("Put(Replace) over a disabled secret = %v, %v", o, err)
	}
	if _, err := e.vault.GetSeed(ctx, "Token2", "3000"); err != nil {
		t.Errorf("GetSeed after replace: %v", err)
	}
}

func TestForeignSecret(t *testing.T) {
	e := newEnv(t, envOptions{})
	name := vault.SecretName("Token2", "4000")
	if _, err := e.raw.SetSecret(ctx, name, azsecrets.SetSecretParameters{Value: new("not a seed")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vault.GetSeed(ctx, "Token2", "4000"); token.KindOf(err) != token.KindConflict {
		t.Errorf("GetSeed of a foreign secret = %v, want conflict", err)
	}
	if _, err := e.vault.Put(ctx, token.Token{Serial: "4000", Manufacturer: "Token2"}, seedOf("some-seed-000000001"), vault.PutOptions{}); token.KindOf(err) != token.KindConflict {
		t.Errorf("Put over a foreign secret = %v, want conflict", err)
	}
	if strings.Contains(e.logs.String(), "not a seed") {
		t.Error("the foreign value leaked into the logs")
	}
}

func TestInvalidInput(t *testing.T) {
	e := newEnv(t, envOptions{})
	good := seedOf("valid-seed-00000001")
	tests := []struct {
		name string
		tok  token.Token
		seed token.Seed
	}{
		{"empty serial", token.Token{Serial: "  ", Manufacturer: "Token2"}, good},
		{"empty manufacturer", token.Token{Serial: "1"}, good},
		{"serial too long for a tag", token.Token{Serial: strings.Repeat("1", 257), Manufacturer: "Token2"}, good},
		{"empty seed", token.Token{Serial: "1", Manufacturer: "Token2"}, token.Seed{Hash: token.SHA1, Digits: 6, Period: 30}},
		{"bad hash", token.Token{Serial: "1", Manufacturer: "Token2"}, token.Seed{Secret: good.Secret, Hash: "md5", Digits: 6, Period: 30}},
		{"bad digits", token.Token{Serial: "1", Manufacturer: "Token2"}, token.Seed{Secret: good.Secret, Hash: token.SHA1, Digits: 4, Period: 30}},
		{"bad period", token.Token{Serial: "1", Manufacturer: "Token2"}, token.Seed{Secret: good.Secret, Hash: token.SHA1, Digits: 6}},
	}
	for _, tt := range tests {
		if _, err := e.vault.Put(ctx, tt.tok, tt.seed, vault.PutOptions{}); token.KindOf(err) != token.KindInvalid {
			t.Errorf("%s: Put = %v, want invalid", tt.name, err)
		}
	}
	if n := e.kv.Server.Stats().Requests; n != 0 {
		t.Errorf("invalid input reached Key Vault (%d requests)", n)
	}
	for _, u := range []string{"http://127.0.0.1:1/", "kv.vault.azure.net", ""} {
		if _, err := vault.New(vault.Options{VaultURL: u, Credential: nil}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestList(t *testing.T) {
	e := newEnv(t, envOptions{})
	const n = 60 // more than two of Key Vault's 25-item pages
	for i := range n {
		tok := token.Token{Serial: fmt.Sprintf("L%03d", i), Manufacturer: "Token2", Model: "C202"}
		if _, err := e.vault.Put(ctx, tok, seedOf(fmt.Sprintf("list-seed-%09d", i)), vault.PutOptions{ImportID: "list"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.raw.SetSecret(ctx, "someone-elses-secret", azsecrets.SetSecretParameters{Value: new("x")}, nil); err != nil {
		t.Fatal(err)
	}
	before := len(e.kv.Server.Records())
	entries, err := e.vault.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("List returned %d entries, want %d", len(entries), n)
	}
	seen := map[string]bool{}
	for _, en := range entries {
		if en.Name != vault.SecretName(en.Manufacturer, en.Serial) || en.Model != "C202" || en.ImportID != "list" ||
			len(en.Fingerprint) != 16 || !en.Enabled || en.Created.IsZero() {
			t.Errorf("entry %+v", en)
		}
		seen[en.Serial] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct serials, want %d", len(seen), n)
	}
	for _, r := range e.kv.Server.Records()[before:] {
		if r.Path != "/secrets" {
			t.Errorf("List sent %s %s: it must read properties only", r.Method, r.Path)
		}
	}
}

func TestThrottlingHonoursRetryAfter(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := token.Token{Serial: "5000", Manufacturer: "Token2"}
	if _, err := e.vault.Put(ctx, tok, seedOf("throttle-seed-00001"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	e.kv.Server.FailNext(1, 429)
	start := len(e.kv.Server.Records())
	if _, err := e.vault.GetSeed(ctx, "Token2", "5000"); err != nil {
		t.Fatalf("GetSeed after one 429: %v", err)
	}
	recs := e.kv.Server.Records()[start:]
	if len(recs) != 2 || recs[0].Status != 429 || recs[1].Status != 200 {
		t.Fatalf("records %+v; want 429 then 200", recs)
	}
	if gap := recs[1].Time.Sub(recs[0].Time); gap < 950*time.Millisecond {
		t.Errorf("retried %v after a 429 with Retry-After: 1", gap)
	}
}

func TestRateLimitedBulkPut(t *testing.T) {
	// 40 new seeds cost ~80 transactions against a bucket of 20 refilled at 40/s.
	e := newEnv(t, envOptions{standin: kvstandin.Options{Rate: 20, Per: 500 * time.Millisecond}})
	for i := range 40 {
		tok := token.Token{Serial: fmt.Sprintf("R%02d", i), Manufacturer: "Token2"}
		if _, err := e.vault.Put(ctx, tok, seedOf(fmt.Sprintf("rate-seed-%09d", i)), vault.PutOptions{}); err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	if st := e.kv.Server.Stats(); st.Throttled == 0 {
		t.Errorf("no request was throttled (%+v): the test does not exercise the limit", st)
	}
}

func TestErrorClassification(t *testing.T) {
	noRetry := &policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 2 * time.Second}
	tests := []struct {
		name   string
		status int
		kind   token.Kind
		retry  time.Duration
	}{
		{"throttled", 429, token.KindThrottled, time.Second},
		{"unavailable", 503, token.KindTransient, time.Second},
		{"internal error", 500, token.KindTransient, 0},
		{"forbidden", 403, token.KindForbidden, 0},
		{"bad request", 400, token.KindInvalid, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{retry: noRetry})
			// Let the challenge happen first, so the failures hit real requests.
			if _, err := e.vault.Has(ctx, "Token2", "0"); err != nil {
				t.Fatal(err)
			}
			e.kv.Server.FailNext(2, tt.status)
			_, err := e.vault.GetSeed(ctx, "Token2", "6000")
			if token.KindOf(err) != tt.kind {
				t.Fatalf("GetSeed = %v (kind %s), want %s", err, token.KindOf(err), tt.kind)
			}
			if got := token.RetryAfterOf(err); got != tt.retry {
				t.Errorf("RetryAfter = %v, want %v", got, tt.retry)
			}
			if token.RequestIDOf(err) == "" {
				t.Error("no x-ms-request-id in the error")
			}
			if !strings.Contains(err.Error(), "serial 6000") {
				t.Errorf("error %q does not say what was being done", err)
			}
		})
	}
}

func TestWrongToken(t *testing.T) {
	e := newEnv(t, envOptions{token: "not-the-token"})
	_, err := e.vault.Put(ctx, token.Token{Serial: "7000", Manufacturer: "Token2"}, seedOf("wrong-token-seed-01"), vault.PutOptions{})
	if token.KindOf(err) != token.KindForbidden {
		t.Fatalf("Put with a token the vault refuses = %v, want forbidden", err)
	}
	var te *token.Error
	if !errors.As(err, &te) || te.Err == nil {
		t.Error("the SDK error is not wrapped")
	}
}

// TestRetireThenReimport: a retired seed is marked and soft-deleted; the serial imported again
// later is a new token (Reissued, the new seed current), never a conflict with the retired seed,
// and the retired seed stays in the history. A plain Delete keeps refusing another seed.
func TestRetireThenReimport(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := token.Token{Serial: "RT-1", Manufacturer: "Token2"}
	old, fresh := seedOf("retired-seed-0001"), seedOf("replacement-seed-02")
	if _, err := e.vault.Put(ctx, tok, old, vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Retire(ctx, "Token2", "RT-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Retire(ctx, "Token2", "RT-1"); token.KindOf(err) != token.KindNotFound {
		t.Fatalf("second Retire = %v, want not_found", err)
	}
	if has, err := e.vault.Has(ctx, "Token2", "RT-1"); has || err != nil {
		t.Fatalf("Has after retire = %v, %v", has, err)
	}
	o, err := e.vault.Put(ctx, tok, fresh, vault.PutOptions{ImportID: "imp-2"})
	if err != nil || o != vault.Reissued {
		t.Fatalf("Put of a new seed under a retired serial = %v, %v; want reissued", o, err)
	}
	if got, err := e.vault.GetSeed(ctx, "Token2", "RT-1"); err != nil || !bytes.Equal(got.Secret, fresh.Secret) {
		t.Fatalf("GetSeed after reissue = %v, %v; want the new seed", got, err)
	}
	// The same seed again is now an ordinary repeat of the new token.
	if o, err := e.vault.Put(ctx, tok, fresh, vault.PutOptions{}); err != nil || o != vault.Unchanged {
		t.Fatalf("repeat after reissue = %v, %v; want unchanged", o, err)
	}
	// History: the original, its retired mark, the new seed.
	if s := e.kv.Server.Secrets(); len(s) != 1 || s[0].Deleted || s[0].Versions != 3 {
		t.Fatalf("after reissue: %+v", s)
	}
	// Retired, then the very same seed again (a token found again): a new token as well.
	if err := e.vault.Retire(ctx, "Token2", "RT-1"); err != nil {
		t.Fatal(err)
	}
	if o, err := e.vault.Put(ctx, tok, fresh, vault.PutOptions{}); err != nil || o != vault.Reissued {
		t.Fatalf("same seed after retire = %v, %v; want reissued", o, err)
	}
}

// TestPutSeedSaysRetiredBefore: PutSeed answers when a serial was retired, on the import that
// reissues it and on a repeat of that import (the new version carries TagRetiredBefore), and
// zero for a serial never retired.
func TestPutSeedSaysRetiredBefore(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := token.Token{Serial: "RB-1", Manufacturer: "Token2"}
	seed := seedOf("retired-before-0001")
	if at, err := e.vault.PutSeed(ctx, tok, seed, "imp-1"); err != nil || !at.IsZero() {
		t.Fatalf("first PutSeed = %v, %v; want zero", at, err)
	}
	before := time.Now().UTC().Add(-time.Second)
	if err := e.vault.Retire(ctx, "Token2", "RB-1"); err != nil {
		t.Fatal(err)
	}
	at, err := e.vault.PutSeed(ctx, tok, seed, "imp-2")
	if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
		t.Fatalf("PutSeed after retire = %v, %v; want the retire's time (after %v)", at, err, before)
	}
	again, err := e.vault.PutSeed(ctx, tok, seed, "imp-2")
	if err != nil || !again.Equal(at) {
		t.Fatalf("repeated PutSeed = %v, %v; want %v again", again, err, at)
	}
	if s := e.kv.Server.Secrets(); len(s) != 1 || s[0].Tags[vault.TagRetiredBefore] == "" {
		t.Fatalf("secret after reissue: %+v; want the %s tag", s, vault.TagRetiredBefore)
	}
}
