package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/internal/azurite"
	"github.com/oathpipe/oathpipe/internal/kvstandin"
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/envelope"
	"github.com/oathpipe/oathpipe/shared/storage"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// standInVault starts the Key Vault stand-in and points the CLI's environment at it.
func standInVault(t *testing.T) *kvstandin.Running {
	t.Helper()
	kv, err := kvstandin.StartTLS(kvstandin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, kv.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OATHPIPE_CA_FILE", ca)
	t.Setenv("OATHPIPE_OFFLINE_TOKEN", kvstandin.DefaultToken)
	t.Setenv("OATHPIPE_KEYVAULT_URL", kv.URL+"/")
	return kv
}

func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func vaultKeys(t *testing.T) *envelope.PGPKeys {
	t.Helper()
	v, err := cliVault(os.Getenv("OATHPIPE_KEYVAULT_URL"))
	if err != nil {
		t.Fatal(err)
	}
	armored, err := v.PGPKeys(context.Background(), vault.DefaultPGPKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	k, err := envelope.ParsePGPKeys(armored, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPGPKeygen(t *testing.T) {
	standInVault(t)
	code, pub, stderr := cli(t, "pgp-keygen", "--if-missing", "--uid", "Contoso seeds <seeds@contoso.example>")
	if code != exitOK || !strings.HasPrefix(pub, "-----BEGIN PGP PUBLIC KEY BLOCK-----") || strings.Contains(pub, "PRIVATE") {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, pub, stderr)
	}
	k := vaultKeys(t)
	if k.Len() != 1 {
		t.Fatalf("%d keys stored, want 1", k.Len())
	}
	first := k.Fingerprint()
	// --if-missing with a key there: the same public key, nothing stored.
	code, again, _ := cli(t, "pgp-keygen", "--if-missing")
	if code != exitOK || again != pub || vaultKeys(t).Len() != 1 {
		t.Fatalf("--if-missing over a key: exit %d, same key %v, %d keys", code, again == pub, vaultKeys(t).Len())
	}
	// GnuPG encrypts to the printed key; the key in the vault opens it.
	gpgMessage := gpgEncryptTo(t, []byte(pub), []byte("upn,serial number\n"))
	if got := openWith(t, gpgMessage, k); got != "upn,serial number\n" {
		t.Fatalf("GnuPG message to the new key: %q", got)
	}
	// A new key is a new version; the old one still opens files encrypted to it.
	if code, _, stderr := cli(t, "pgp-keygen"); code != exitOK {
		t.Fatalf("rotate: exit %d %s", code, stderr)
	}
	k2 := vaultKeys(t)
	if k2.Len() != 2 || k2.Fingerprint() == first {
		t.Fatalf("after rotation: %d keys, newest %s (old %s)", k2.Len(), k2.Fingerprint(), first)
	}
	if got := openWith(t, gpgMessage, k2); got != "upn,serial number\n" {
		t.Fatalf("a file encrypted to the older key no longer opens: %q", got)
	}
	for _, args := range [][]string{{"pgp-keygen", "--uid", "<broken"}, {"pgp-keygen", "extra"}} {
		if code, _, _ := cli(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
	t.Setenv("OATHPIPE_KEYVAULT_URL", "")
	if code, _, _ := cli(t, "pgp-keygen"); code != exitUsage {
		t.Errorf("no vault: exit %d", code)
	}
}

func openWith(t *testing.T, msg []byte, k *envelope.PGPKeys) string {
	t.Helper()
	var got string
	err := envelope.Open(envelope.Source{Name: "m", R: bytes.NewReader(msg)}, envelope.Keys{PGP: k}, envelope.Limits{}, func(in envelope.Inner) error {
		b, err := io.ReadAll(in.R)
		got = string(b)
		return err
	})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return got
}

func gpgEncryptTo(t *testing.T, publicKey, content []byte) []byte {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatalf("gpg is not installed (apt-get install -y gnupg): %v", err)
	}
	home := t.TempDir()
	imp := exec.Command("gpg", "--batch", "--homedir", home, "--import")
	imp.Stdin = bytes.NewReader(publicKey)
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("gpg --import of the printed key: %v\n%s", err, out)
	}
	enc := exec.Command("gpg", "--batch", "--homedir", home, "--trust-model", "always", "--encrypt", "--recipient", "Contoso seeds")
	enc.Stdin = bytes.NewReader(content)
	var stderr bytes.Buffer
	enc.Stderr = &stderr
	out, err := enc.Output()
	if err != nil {
		t.Fatalf("gpg --encrypt: %v\n%s", err, stderr.String())
	}
	return out
}

func TestRejectedDownload(t *testing.T) {
	standInVault(t)
	if code, _, stderr := cli(t, "pgp-keygen"); code != exitOK {
		t.Fatalf("pgp-keygen: %s", stderr)
	}
	az, err := azurite.Start(context.Background())
	if err != nil {
		t.Fatalf("Azurite: %v", err)
	}
	t.Cleanup(az.Stop)
	t.Setenv(config.StorageConnection, az.ConnectionString())
	blobs, err := storage.NewBlobs(storage.Options{ConnectionString: az.ConnectionString()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := blobs.EnsureContainers(ctx); err != nil {
		t.Fatal(err)
	}
	plain := []byte("upn,serial number,secret key,time interval,manufacturer,model\n")
	var enc bytes.Buffer
	w, err := envelope.Encrypt(&enc, vaultKeys(t), "batch.csv", []byte("imp-1"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	w.Close()
	if err := blobs.Reject(ctx, "batch.csv", `"0x1"`, bytes.NewReader(enc.Bytes()), "imp-1/batch.csv.gpg"); err != nil {
		t.Fatal(err)
	}
	if err := blobs.Reject(ctx, "batch.zip", `"0x2"`, strings.NewReader("PK\x03\x04 as delivered"), "imp-2/batch.zip"); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := cli(t, "rejected", "download", "imp-1/batch.csv.gpg")
	if code != exitOK || out != string(plain) {
		t.Fatalf("download: exit %d, %q, %s", code, out, stderr)
	}
	file := filepath.Join(t.TempDir(), "fixed.csv")
	if code, _, stderr := cli(t, "rejected", "download", "-o", file, "seed-rejected/imp-1/batch.csv.gpg"); code != exitOK {
		t.Fatalf("download -o: exit %d %s", code, stderr)
	}
	if b, _ := os.ReadFile(file); string(b) != string(plain) {
		t.Fatalf("file holds %q", b)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	if code, _, _ := cli(t, "rejected", "download", "-o", file, "imp-1/batch.csv.gpg"); code != exitProblem {
		t.Errorf("overwrote %s: exit %d", file, code)
	}
	if code, out, _ := cli(t, "rejected", "download", "imp-2/batch.zip"); code != exitOK || out != "PK\x03\x04 as delivered" {
		t.Errorf("a zip kept as delivered: exit %d %q", code, out)
	}
	if code, _, _ := cli(t, "rejected", "download", "imp-9/none.csv.gpg"); code != exitProblem {
		t.Errorf("missing: exit %d", code)
	}
	for _, args := range [][]string{{"rejected"}, {"rejected", "upload", "x"}, {"rejected", "download"}} {
		if code, _, _ := cli(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
}
