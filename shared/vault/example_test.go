package vault_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/token"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// Store a seed in the local Key Vault stand-in and read it back, the way the demo wires it:
// the stand-in's certificate as OATHPIPE_CA_FILE and the offline token as the credential.
func Example() {
	kv, err := kvstandin.StartTLS(kvstandin.Options{})
	if err != nil {
		panic(err)
	}
	defer kv.Close()
	dir, _ := os.MkdirTemp("", "kv")
	defer os.RemoveAll(dir)
	caFile := filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(caFile, kv.CAPEM, 0o600)
	hc, err := azauth.HTTPClient(caFile)
	if err != nil {
		panic(err)
	}
	v, err := vault.New(vault.Options{
		VaultURL:   kv.URL,
		Credential: azauth.StaticToken(kvstandin.DefaultToken),
		HTTPClient: hc,
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	tok := token.Token{Serial: "8659612000001", Manufacturer: "Token2", Model: "C202"}
	seed := token.Seed{Secret: []byte("12345678901234567890"), Hash: token.SHA1, Digits: 6, Period: 30}

	o, _ := v.Put(ctx, tok, seed, vault.PutOptions{ImportID: "vendor-2026-11.csv"})
	fmt.Println(o)
	o, _ = v.Put(ctx, tok, seed, vault.PutOptions{ImportID: "vendor-2026-11.csv"})
	fmt.Println(o)
	_, err = v.Put(ctx, tok, token.Seed{Secret: []byte("another seed, 20 byt"), Hash: token.SHA1, Digits: 6, Period: 30}, vault.PutOptions{})
	fmt.Println(token.KindOf(err))
	got, _ := v.GetSeed(ctx, "token2", "8659612000001")
	fmt.Println(got) // a Seed prints without its secret
	fmt.Println(vault.SecretName("Token2", "8659612000001"))
	// Output:
	// created
	// unchanged
	// conflict
	// seed{6ed645ef0e1abea1 hmacsha1 6 digits 30s}
	// oath-8322e153206dafc0751d375b25903ed79e0f36fac6b0536355ce24e267dd8079
}
