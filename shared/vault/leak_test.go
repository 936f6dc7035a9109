package vault_test

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/oathpipe/oathpipe/shared/token"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// TestNoSeedLeaks drives every path (store, repeat, conflict, replace, delete, recover,
// throttling, failures, listing) and checks that no form of any seed reaches the logs (ours and
// the Azure SDK's), the errors or the listing.
func TestNoSeedLeaks(t *testing.T) {
	var sdkLog syncBuffer
	azlog.SetListener(func(ev azlog.Event, msg string) { fmt.Fprintf(&sdkLog, "%s: %s\n", ev, msg) })
	t.Cleanup(func() { azlog.SetListener(nil) })

	e := newEnv(t, envOptions{retry: &policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond}})
	seeds := []token.Seed{seedOf("LEAKCANARYSEEDNUMBER1"), seedOf("LEAKCANARYSEEDNUMBER2"), seedOf("LEAKCANARYSEEDNUMBER3")}
	tok := token.Token{Serial: "9000", Manufacturer: "Token2", Model: "C202"}

	var errs []error
	try := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	_, err := e.vault.Put(ctx, tok, seeds[0], vault.PutOptions{ImportID: "leak"})
	try(err)
	_, err = e.vault.Put(ctx, tok, seeds[0], vault.PutOptions{ImportID: "leak"})
	try(err)
	_, err = e.vault.Put(ctx, tok, seeds[1], vault.PutOptions{ImportID: "leak"}) // conflict
	try(err)
	_, err = e.vault.Put(ctx, tok, seeds[1], vault.PutOptions{Replace: true})
	try(err)
	try(e.vault.Delete(ctx, "Token2", "9000"))
	_, err = e.vault.Put(ctx, tok, seeds[2], vault.PutOptions{}) // recover, then conflict
	try(err)
	for _, status := range []int{429, 500, 503, 403, 400} {
		e.kv.Server.FailNext(2, status)
		_, err = e.vault.Put(ctx, token.Token{Serial: "9001", Manufacturer: "Token2"}, seeds[2], vault.PutOptions{})
		try(err)
		e.kv.Server.FailNext(2, status)
		_, err = e.vault.GetSeed(ctx, "Token2", "9000")
		try(err)
	}
	_, err = e.vault.GetSeed(ctx, "Token2", "absent")
	try(err)
	entries, err := e.vault.List(ctx)
	try(err)
	if len(errs) < 10 {
		t.Fatalf("only %d errors: the test does not reach the failure paths", len(errs))
	}

	var all strings.Builder
	all.WriteString(e.logs.String())
	all.WriteString(sdkLog.String())
	for _, err := range errs {
		fmt.Fprintf(&all, "%v\n%+v\n%#v\n%s\n", err, err, err, err)
	}
	fmt.Fprintf(&all, "%+v\n", entries)
	if !strings.Contains(all.String(), "seed stored") || !strings.Contains(sdkLog.String(), "Request") {
		t.Fatal("the logs are not being captured")
	}
	for _, s := range seeds {
		b32 := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(s.Secret)
		for _, form := range []string{string(s.Secret), b32, strings.ToLower(b32), hex.EncodeToString(s.Secret),
			base64.StdEncoding.EncodeToString(s.Secret), base64.RawURLEncoding.EncodeToString(s.Secret), fmt.Sprint(s.Secret)} {
			if strings.Contains(all.String(), form) {
				t.Errorf("a seed leaked (as %q)", form)
			}
		}
	}
}
