package vault_test

import (
	"testing"

	"github.com/oathpipe/oathpipe/shared/vault"
)

// TestNewNeedsCredential: the vault builds no credential of its own (azauth.Credential is the
// one place one is built), so New without one is refused rather than falling back silently.
func TestNewNeedsCredential(t *testing.T) {
	if _, err := vault.New(vault.Options{VaultURL: "https://kv-oathpipe.vault.azure.net/"}); err == nil {
		t.Fatal("New without a credential succeeded")
	}
	if _, err := vault.New(vault.Options{VaultURL: "https://kv-oathpipe.vault.azure.net/", Credential: staticToken()}); err != nil {
		t.Fatal(err)
	}
}
