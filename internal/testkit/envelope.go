package testkit

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// GPGEncrypt encrypts content with GnuPG (gpg, Debian's gnupg) to the public key of the
// fixture key file keyFixture (e.g. "key-cv25519.pub.asc", "key-other.asc"), armored or not:
// a file as a vendor sends it.
func GPGEncrypt(t testing.TB, content []byte, keyFixture string, armored bool) []byte {
	t.Helper()
	home := t.TempDir()
	run(t, home, nil, "gpg", "--batch", "--quiet", "--homedir", home, "--import", filepath.Join(filepath.Dir(usersFile()), "seedfiles", "envelope", keyFixture))
	args := []string{"--batch", "--quiet", "--homedir", home, "--trust-model", "always", "--encrypt"}
	if armored {
		args = append(args, "--armor")
	}
	// Every key in the home is a recipient: the one imported.
	out := run(t, home, nil, "gpg", "--batch", "--homedir", home, "--with-colons", "--list-keys")
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Split(line, ":"); len(f) > 4 && f[0] == "pub" {
			args = append(args, "--recipient", f[4])
		}
	}
	return run(t, home, content, "gpg", args...)
}

// SevenZipAES makes a zip archive of files (name → content) with 7-Zip (7zz, Debian's 7zip),
// encrypted with WinZip AES-256 under password.
func SevenZipAES(t testing.TB, files map[string][]byte, password string) []byte {
	t.Helper()
	dir := t.TempDir()
	args := []string{"a", "-bso0", "-tzip", "-mem=AES256", "-p" + password, filepath.Join(dir, "out.zip")}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, name)
	}
	run(t, dir, nil, "7zz", args...)
	b, err := os.ReadFile(filepath.Join(dir, "out.zip"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func run(t testing.TB, dir string, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed (apt-get install -y gnupg 7zip; .ci/run installs them): %v", name, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return out
}
