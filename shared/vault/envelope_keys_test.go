package vault_test

import (
	"fmt"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/oathpipe/oathpipe/shared/token"
)

func TestPGPKeysEveryEnabledVersionNewestFirst(t *testing.T) {
	e := newEnv(t, envOptions{})
	name := "oathpipe-pgp-key"
	if keys, err := e.vault.PGPKeys(ctx, name); err != nil || len(keys) != 0 {
		t.Fatalf("no secret: %d keys, %v", len(keys), err)
	}
	var versions []string
	for i := range 3 {
		if err := e.vault.PutPGPKey(ctx, name, fmt.Sprintf("key %d", i), fmt.Sprintf("FPR%d", i)); err != nil {
			t.Fatal(err)
		}
		resp, err := e.raw.GetSecret(ctx, name, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, resp.ID.Version())
	}
	// The middle key is disabled: it is not tried.
	if _, err := e.raw.UpdateSecretProperties(ctx, name, versions[1], azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: new(false)}}, nil); err != nil {
		t.Fatal(err)
	}
	keys, err := e.vault.PGPKeys(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || string(keys[0]) != "key 2" || string(keys[1]) != "key 0" {
		t.Errorf("keys %q, want [key 2, key 0]", keys)
	}
	// The PGP secret is not a seed.
	if list, err := e.vault.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List = %v, %v; the PGP key is not a seed", list, err)
	}
}

func TestZipPasswords(t *testing.T) {
	e := newEnv(t, envOptions{})
	name := "oathpipe-zip-passwords"
	if pw, err := e.vault.ZipPasswords(ctx, name); err != nil || len(pw) != 0 {
		t.Fatalf("no secret: %q, %v", pw, err)
	}
	set := func(v string) {
		if _, err := e.raw.SetSecret(ctx, name, azsecrets.SetSecretParameters{Value: &v}, nil); err != nil {
			t.Fatal(err)
		}
	}
	set(`["first", "", "second"]`)
	if pw, err := e.vault.ZipPasswords(ctx, name); err != nil || len(pw) != 2 || pw[0] != "first" || pw[1] != "second" {
		t.Errorf("passwords %q, %v", pw, err)
	}
	set(`first,second`)
	if _, err := e.vault.ZipPasswords(ctx, name); token.KindOf(err) != token.KindInvalid {
		t.Errorf("not JSON: %v, want invalid", err)
	}
}
