package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/internal/devstack"
)

// TestSecretFlags: --pskc-key and --pskc-password become the app's settings; --pgp-key's
// armored private key and the --zip-password list go into the stand-in vault under the secrets
// the app reads (names from OATHPIPE_PGP_KEY_SECRET / OATHPIPE_ZIP_PASSWORDS_SECRET when set).
func TestSecretFlags(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k.asc")
	armored := "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxcLYBG...\n-----END PGP PRIVATE KEY BLOCK-----\n"
	if err := os.WriteFile(key, []byte(armored), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "pub.asc")
	_ = os.WriteFile(pub, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n"), 0o600)
	noEnv := func(string) string { return "" }

	f := secretFlags{pskcKey: "00112233445566778899AABBCCDDEEFF", pskcPassword: "pw", pgpKeyFile: key, zipPasswords: []string{"a", `b"c`}}
	settings, secrets, err := f.apply(noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if settings["OATHPIPE_PSKC_KEY"] != f.pskcKey || settings["OATHPIPE_PSKC_PASSWORD"] != "pw" {
		t.Errorf("settings %v", settings)
	}
	if secrets[devstack.PGPKeySecret] != armored || secrets[devstack.ZipPasswordsSecret] != `["a","b\"c"]` {
		t.Errorf("secrets %q", secrets)
	}
	env := func(k string) string {
		return map[string]string{"OATHPIPE_PGP_KEY_SECRET": "my-pgp", "OATHPIPE_ZIP_PASSWORDS_SECRET": "my-zip"}[k]
	}
	if _, secrets, _ = f.apply(env); secrets["my-pgp"] == "" || secrets["my-zip"] == "" {
		t.Errorf("secret names from the settings: %v", secrets)
	}
	for _, bad := range []secretFlags{{pskcKey: "xyz"}, {pskcKey: "0011"}, {pgpKeyFile: pub}, {pgpKeyFile: filepath.Join(dir, "missing")}} {
		if _, _, err := bad.apply(noEnv); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	// Without --pgp-key the stack makes its own key, so a rejected plain file can be kept
	// encrypted (the app leaves it in the inbox when the vault holds no key).
	if _, secrets, err = (secretFlags{}).apply(noEnv); err != nil || !strings.HasPrefix(secrets[devstack.PGPKeySecret], "-----BEGIN PGP PRIVATE KEY BLOCK-----") {
		t.Errorf("no --pgp-key: secrets %v, err %v", secrets, err)
	}
	// The flags exist on up and demo.
	var stdout, stderr strings.Builder
	run([]string{"up", "-h"}, &stdout, &stderr)
	for _, fl := range []string{"-pskc-key", "-pskc-password", "-pgp-key", "-zip-password"} {
		if !strings.Contains(stderr.String(), fl) {
			t.Errorf("up -h does not list %s", fl)
		}
	}
	if code := run([]string{"demo", "--pskc-key", "nothex"}, &stdout, &stderr); code != exitUsage {
		t.Errorf("demo --pskc-key nothex: exit %d, want %d", code, exitUsage)
	}
}
