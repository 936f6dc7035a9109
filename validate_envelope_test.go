package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var envelopeFixtures = filepath.Join("testdata", "seedfiles", "envelope")

func fixtureArg(name string) string { return filepath.Join(envelopeFixtures, name) }

// validateJSON runs validate --json and decodes each JSON object it prints (one per seed file),
// with the file name taken out, so a delivered file's verdict compares with the plain file's.
func validateJSON(t *testing.T, args ...string) (int, []map[string]any, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"validate", "--json"}, args...), &stdout, &stderr)
	var outs []map[string]any
	d := json.NewDecoder(&stdout)
	for d.More() {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("%v: output is not JSON objects: %v", args, err)
		}
		delete(m, "file")
		outs = append(outs, m)
	}
	return code, outs, stderr.String()
}

func TestValidateDeliveredFileAsThePlainFileInside(t *testing.T) {
	plainCode, plain, _ := validateJSON(t, filepath.Join("testdata", "demo", "token2-batch-clean.csv"))
	if plainCode != exitOK || len(plain) != 1 {
		t.Fatalf("plain file: exit %d, %d outputs", plainCode, len(plain))
	}
	want, _ := json.Marshal(plain[0])
	plainText, err := os.ReadFile(filepath.Join("testdata", "demo", "token2-batch-clean.csv"))
	if err != nil {
		t.Fatal(err)
	}
	pw := "zip fixture password"
	tests := [][]string{
		{"--pgp-key", fixtureArg("key-rsa.asc"), fixtureArg("clean.csv.rsa.gpg")},
		{"--pgp-key", fixtureArg("key-rsa.asc"), fixtureArg("clean.csv.rsa.asc")},
		{"--pgp-key", fixtureArg("key-cv25519.asc"), fixtureArg("clean.csv.cv25519.gpg")},
		{"--pgp-key", fixtureArg("key-cv25519.asc"), fixtureArg("clean.csv.cv25519.asc")},
		{"--pgp-key", fixtureArg("key-protected.asc"), "--pgp-passphrase", "fixture passphrase", fixtureArg("clean.csv.protected.gpg")},
		{"--zip-password", "wrong", "--zip-password", pw, fixtureArg("zipcrypto.zip")},
		{"--zip-password", pw, fixtureArg("aes256.zip")},
		{"--zip-password", pw, fixtureArg("aes128.zip")},
		{"--zip-password", pw, "--pgp-key", fixtureArg("key-cv25519.asc"), fixtureArg("aes256.zip.gpg")},
		{"--pgp-key", filepath.Join("testdata", "demo", "pgp-demo-key.asc"), filepath.Join("testdata", "demo", "token2-batch-clean.csv.gpg")},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, outs, stderr := validateJSON(t, args...)
			if code != plainCode || len(outs) != 1 {
				t.Fatalf("exit %d, %d outputs; want %d, 1\n%s", code, len(outs), plainCode, stderr)
			}
			if got, _ := json.Marshal(outs[0]); !bytes.Equal(got, want) {
				t.Errorf("verdict differs from the plain file's:\n%s\nwant\n%s", got, want)
			}
			// Neither output quotes a seed of the plain file inside.
			var out, errOut bytes.Buffer
			run(append([]string{"validate"}, args...), &out, &errOut)
			run(append([]string{"validate", "--json"}, args...), &out, &errOut)
			assertNoSeed(t, string(plainText), out.String()+errOut.String())
		})
	}
}

func TestValidateDeliveredFileProblems(t *testing.T) {
	tests := []struct {
		args []string
		code string
	}{
		{[]string{fixtureArg("clean.csv.rsa.gpg")}, "file.pgp-no-key"},
		{[]string{"--pgp-key", fixtureArg("key-rsa.asc"), fixtureArg("clean.csv.other.gpg")}, "file.pgp-no-key"},
		{[]string{"--pgp-key", fixtureArg("key-protected.asc"), fixtureArg("clean.csv.protected.gpg")}, "file.pgp-passphrase"},
		{[]string{fixtureArg("aes256.zip")}, "file.zip-password"},
		{[]string{"--zip-password", "wrong", fixtureArg("zipcrypto.zip")}, "file.zip-password"},
		{[]string{"--zip-password", "zip fixture password", fixtureArg("nested.zip")}, "file.nested"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, outs, stderr := validateJSON(t, tt.args...)
			if code != exitProblem || len(outs) != 1 {
				t.Fatalf("exit %d, %d outputs; want %d, 1\n%s", code, len(outs), exitProblem, stderr)
			}
			probs, _ := outs[0]["problems"].([]any)
			if len(probs) != 1 || probs[0].(map[string]any)["code"] != tt.code || probs[0].(map[string]any)["line"] != 0.0 {
				t.Errorf("problems %v, want one file-level %s", probs, tt.code)
			}
		})
	}
}

func TestValidateArchiveOfTwoFiles(t *testing.T) {
	code, outs, _ := validateJSON(t, fixtureArg("plain.zip"))
	if code != exitProblem || len(outs) != 2 {
		t.Fatalf("exit %d, %d outputs; want 1 and one per file", code, len(outs))
	}
	var stdout, stderr bytes.Buffer
	run([]string{"validate", fixtureArg("plain.zip")}, &stdout, &stderr)
	for _, want := range []string{"plain.zip!batch-a.csv: entra-csv", "plain.zip!batch-b.csv: entra-csv"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table output lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestValidateEnvelopeFromEnvironment(t *testing.T) {
	t.Setenv("OATHPIPE_PGP_KEY_FILE", fixtureArg("key-protected.asc"))
	t.Setenv("OATHPIPE_PGP_PASSPHRASE", "fixture passphrase")
	if code, _, stderr := validateJSON(t, fixtureArg("clean.csv.protected.gpg")); code != exitOK {
		t.Errorf("PGP from the environment: exit %d %s", code, stderr)
	}
	t.Setenv("OATHPIPE_ZIP_PASSWORD", "zip fixture password")
	if code, _, stderr := validateJSON(t, fixtureArg("aes256.zip")); code != exitOK {
		t.Errorf("zip password from the environment: exit %d %s", code, stderr)
	}
	// Standard input: a zip is held in memory.
	f, err := os.Open(fixtureArg("zipcrypto.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old }()
	if code, _, stderr := validateJSON(t, "-"); code != exitOK {
		t.Errorf("zip on standard input: exit %d %s", code, stderr)
	}
}

func TestValidateEnvelopeUsage(t *testing.T) {
	clean := filepath.Join("testdata", "demo", "token2-batch-clean.csv")
	for _, args := range [][]string{
		{"validate", "--pgp-key", filepath.Join(t.TempDir(), "missing.asc"), clean},
		{"validate", "--pgp-key", fixtureArg("key-cv25519.pub.asc"), clean},
		{"validate", "--pgp-key", fixtureArg("key-protected.asc"), "--pgp-passphrase", "wrong", clean},
		{"validate", "--model", "a\x01b", clean},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitUsage || stderr.Len() == 0 {
			t.Errorf("%q: exit %d, stderr %q; want %d and a message", args, code, stderr.String(), exitUsage)
		}
	}
}
