package main

import (
	"bytes"
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/seedfile"
)

// TestOnePSKCKeyRule: `oathpipe validate --pskc-key` and `oathpipe serve` (OATHPIPE_PSKC_KEY
// through config.Load) take the same pre-shared PSKC keys (seedfile.ParsePSKCKey is the one
// rule; issue 16 found validate taking an AES-256 key that made serve refuse to start), and a key
// both take opens the same file for both: the python-pskc fixture encrypted with it.
func TestOnePSKCKeyRule(t *testing.T) {
	const k256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	for _, tc := range []struct {
		name, key, file string // file: the fixture the key opens ("" for a key both refuse)
	}{
		{"AES-128", k256[:32], "pythonpskc-aes128.xml"},
		{"AES-192", k256[:48], "pythonpskc-aes192.xml"},
		{"AES-256", k256, "pythonpskc-aes256.xml"},
		{"TripleDES", k256[:48], "pythonpskc-tripledes.xml"},
		{"0x and spaces", "0x0011 2233 4455 6677 8899 AABB CCDD EEFF", "pythonpskc-aes128.xml"},
		{"15 bytes", k256[:30], ""},
		{"33 bytes", k256 + "00", ""},
		{"odd hex", k256[:31], ""},
		{"not hex", "correct horse battery staple", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join("testdata", "seedfiles", cmp.Or(tc.file, "pythonpskc-aes128.xml"))
			var stdout, stderr bytes.Buffer
			code := runValidate([]string{"--pskc-key", tc.key, file}, &stdout, &stderr)
			validateTakes := code != exitUsage

			// serve's settings: the least it starts with, and the key.
			env := map[string]string{
				"FUNCTIONS_CUSTOMHANDLER_PORT": "8080", "SeedStorage": "UseDevelopmentStorage=true",
				"OATHPIPE_KEYVAULT_URL": "https://oathpipe-test.vault.azure.net/", "OATHPIPE_PSKC_KEY": tc.key,
			}
			cfg, err := config.Load(func(name string) string { return env[name] })
			serveTakes := !namesSetting(err, "OATHPIPE_PSKC_KEY")
			if validateTakes != serveTakes {
				t.Fatalf("validate takes the key: %v (%s); serve: %v (%v)", validateTakes, stderr.String(), serveTakes, err)
			}
			if validateTakes != (tc.file != "") {
				t.Fatalf("both take the key: %v, want %v (%s)", validateTakes, tc.file != "", stderr.String())
			}
			if tc.file == "" {
				return
			}
			// The key opens the file for both: validate finds every row valid, and so does the
			// reader serve's import runs with the key config.Load read.
			if code != exitOK {
				t.Errorf("validate exit %d: %s%s", code, stdout.String(), stderr.String())
			}
			if cfg == nil {
				t.Fatalf("config.Load returned no config for the other settings: %v", err)
			}
			sum := readWithKey(t, file, cfg.PSKCKey)
			if sum.Valid != 3 || sum.Invalid != 0 {
				t.Errorf("serve's reader: %+v, want 3 valid rows", sum)
			}
		})
	}
}

// namesSetting reports whether err (config.Load's, joined) names the setting.
func namesSetting(err error, setting string) bool {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else if err != nil {
		errs = []error{err}
	}
	for _, e := range errs {
		var ce *config.Error
		if errors.As(e, &ce) && ce.Setting == setting {
			return true
		}
	}
	return false
}

// readWithKey reads file as serve's import does with the PSKC key from its settings.
func readWithKey(t *testing.T, file string, key []byte) seedfile.Summary {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	sum, err := seedfile.Read(bytes.NewReader(b), seedfile.Options{PSKCKey: key}, func(seedfile.Record) error { return nil },
		func(p seedfile.Problem) { problems = append(problems, p.Field+": "+p.Message) })
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Errorf("problems: %s", strings.Join(problems, "; "))
	}
	return sum
}
