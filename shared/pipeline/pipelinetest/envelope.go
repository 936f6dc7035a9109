package pipelinetest

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/oathpipe/oathpipe/shared/envelope"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// ZipPassword is the password of the zip fixtures (testdata/seedfiles/envelope/make-envelope.sh).
const ZipPassword = "zip fixture password"

// EnvelopeFixture returns testdata/seedfiles/envelope/name: files made by GnuPG, zip and 7zz.
func EnvelopeFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(usersFile()), "seedfiles", "envelope", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// DeploymentKey is the stack's own PGP key (the Curve25519 fixture key, as `oathpipe
// pgp-keygen` would have stored it), for decrypting what the pipeline keeps in seed-rejected.
func DeploymentKey(t testing.TB) *envelope.PGPKeys {
	t.Helper()
	k, err := envelope.ParsePGPKeys([][]byte{EnvelopeFixture(t, "key-cv25519.asc")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// StoreEnvelopeSecrets puts the deployment's PGP key and the fixtures' zip password into the
// stand-in vault under the default secret names.
func (s *Stack) StoreEnvelopeSecrets(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	k := DeploymentKey(t)
	if err := s.Vault.PutPGPKey(ctx, vault.DefaultPGPKeySecret, string(EnvelopeFixture(t, "key-cv25519.asc")), k.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if err := s.Vault.PutZipPasswords(ctx, vault.DefaultZipPasswordsSecret, []string{"an older password", ZipPassword}); err != nil {
		t.Fatal(err)
	}
}

// DecryptRejected decrypts a plain file the pipeline kept in seed-rejected (encrypted to the
// deployment's key), the way `oathpipe rejected download` does.
func DecryptRejected(t testing.TB, kept []byte) []byte {
	t.Helper()
	var out []byte
	err := envelope.Open(envelope.Source{Name: "rejected", R: bytes.NewReader(kept)}, envelope.Keys{PGP: DeploymentKey(t)}, envelope.Limits{},
		func(in envelope.Inner) error {
			var err error
			out, err = io.ReadAll(in.R)
			return err
		})
	if err != nil {
		t.Fatalf("decrypt a rejected file: %v", err)
	}
	return out
}
