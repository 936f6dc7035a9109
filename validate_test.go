package main

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// assertNoSeed fails when output holds any long token of input with a digit in it (a secret
// cell, a Base64 or cipher value; not a header name) or any of the extra secrets, in any case.
func assertNoSeed(t *testing.T, input, output string, secrets ...[]byte) {
	t.Helper()
	up := strings.ToUpper(output)
	var needles []string
	for _, tok := range strings.FieldsFunc(input, func(r rune) bool {
		return strings.ContainsRune(",;\"<>= \t\r\n", r)
	}) {
		if len(tok) >= 16 && !strings.ContainsAny(tok, "@:/") && strings.ContainsAny(tok, "0123456789") {
			needles = append(needles, tok)
		}
	}
	for _, s := range secrets {
		needles = append(needles, base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(s), hex.EncodeToString(s))
	}
	for _, n := range needles {
		if strings.Contains(up, strings.ToUpper(n)) {
			t.Errorf("output quotes %q", n)
		}
	}
}

func pskcFixtureSecrets() [][]byte {
	var out [][]byte
	for i, n := range []int{20, 32, 20, 20} {
		label := fmt.Appendf(nil, "oathpipe-pskc-fixture-%d", i+1)
		if n == 32 {
			s := sha256.Sum256(label)
			out = append(out, s[:])
		} else {
			s := sha1.Sum(label)
			out = append(out, s[:])
		}
	}
	return append(out, []byte("12345678901234567890"))
}

func TestValidateCommand(t *testing.T) {
	fixtures := filepath.Join("testdata", "seedfiles")
	tests := []struct {
		args  []string
		exit  int
		valid int
		codes string // problem codes, space-separated
	}{
		{[]string{"token2-bom-crlf.csv"}, exitOK, 4, ""},
		{[]string{"microsoft-doc-example.csv"}, exitProblem, 0, "secret.not-base32 secret.not-base32"},
		{[]string{"hex.csv"}, exitProblem, 0, "secret.not-base32 secret.not-base32"},
		{[]string{"--secret-encoding", "hex", "hex.csv"}, exitOK, 2, ""},
		{[]string{"hex.csv", "--secret-encoding=hex"}, exitOK, 2, ""},
		{[]string{"graph.csv"}, exitProblem, 2, "hash.unsupported"},
		{[]string{"--format", "graph-csv", "semicolon.csv"}, exitOK, 1, ""},
		{[]string{"--format", "pskc", "semicolon.csv"}, exitProblem, 0, "file.not-pskc"},
		{[]string{"garbage.bin"}, exitProblem, 0, "file.zip-corrupt"}, // starts like a zip archive
		{[]string{"empty.csv"}, exitProblem, 0, "file.empty"},
		{[]string{"no-header.csv"}, exitProblem, 0, "file.no-header"},
		{[]string{"pythonpskc-plain.xml"}, exitProblem, 3, "algorithm.hotp"},
		{[]string{"pythonpskc-aes128.xml"}, exitProblem, 0, "pskc.key-missing"},
		{[]string{"--pskc-key", "00112233445566778899AABBCCDDEEFF", "pythonpskc-aes128.xml"}, exitOK, 3, ""},
		{[]string{"--pskc-key", "ffffffffffffffffffffffffffffffff", "pythonpskc-aes128.xml"}, exitProblem, 0, "pskc.bad-key"},
		{[]string{"--pskc-password", "correct horse battery staple", "pythonpskc-pbkdf2.xml"}, exitOK, 3, ""},
		{[]string{"--pskc-password", "Correct horse battery staple", "pythonpskc-pbkdf2.xml"}, exitProblem, 0, "pskc.bad-key"},
		{[]string{"--pskc-password", "qwerty", "rfc6030-figure7-pbkdf2.xml"}, exitProblem, 0, "algorithm.hotp digits.unsupported"},
		{[]string{"--manufacturer", "Token2", "oath.csv"}, exitProblem, 3, "algorithm.hotp hash.unsupported digits.unsupported algorithm.unsupported digits.unsupported"},
		{[]string{"--format", "oath-csv", "oath.csv"}, exitProblem, 0, "file.missing-column"},
		{[]string{"--pskc-key", "00112233445566778899aabbccddeeff", "feitian-no-model.xml"}, exitOK, 3, ""},
		{[]string{"--pskc-key", "00112233445566778899aabbccddeeff", "--model", "c200", "feitian-no-model.xml"}, exitOK, 3, ""},
		{[]string{"--pskc-key", "00112233445566778899aabbccddeeff", "pythonpskc-camellia128.xml"}, exitProblem, 0, "pskc.unsupported-algorithm"},
		{[]string{"--pskc-key", strings.Repeat("00112233445566778899aabbccddeeff", 2), "pythonpskc-kw-aes256.xml"}, exitOK, 3, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"validate", "--json"}, tt.args...)
			for i, a := range args {
				if strings.HasSuffix(a, ".csv") || strings.HasSuffix(a, ".xml") || strings.HasSuffix(a, ".bin") {
					args[i] = filepath.Join(fixtures, a)
				}
			}
			var stdout, stderr bytes.Buffer
			code := run(args, &stdout, &stderr)
			var out struct {
				File, Format string
				Summary      struct{ Rows, Valid, Invalid int }
				Tokens       []map[string]any
				Problems     []struct {
					Line                 int
					Field, Code, Message string
				}
			}
			if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
				t.Fatalf("output is not one JSON object: %v\n%s", err, stdout.String())
			}
			var codes []string
			for _, p := range out.Problems {
				codes = append(codes, p.Code)
			}
			if code != tt.exit || out.Summary.Valid != tt.valid || len(out.Tokens) != tt.valid || strings.Join(codes, " ") != tt.codes {
				t.Errorf("exit %d, summary %+v, codes %q; want exit %d, %d valid, %q\nstderr: %s", code, out.Summary, codes, tt.exit, tt.valid, tt.codes, stderr.String())
			}
			for _, tok := range out.Tokens {
				for _, k := range []string{"line", "serialNumber", "manufacturer", "model", "userPrincipalName", "timeIntervalInSeconds", "hashFunction", "digits", "secretBits", "secretFingerprint"} {
					if _, ok := tok[k]; !ok {
						t.Errorf("token lacks %q: %v", k, tok)
					}
				}
				if fp, _ := tok["secretFingerprint"].(string); len(fp) != 16 {
					t.Errorf("fingerprint %q", fp)
				}
			}
			input, _ := os.ReadFile(args[len(args)-1])
			assertNoSeed(t, string(input), stdout.String()+stderr.String(), pskcFixtureSecrets()...)

			// The table output reaches the same verdict and prints no seed either.
			stdout.Reset()
			stderr.Reset()
			if c := run(append([]string{"validate"}, args[2:]...), &stdout, &stderr); c != code {
				t.Errorf("table output: exit %d, JSON exit %d", c, code)
			}
			for _, c := range codes {
				if !strings.Contains(stdout.String(), c) {
					t.Errorf("table output lacks %s:\n%s", c, stdout.String())
				}
			}
			assertNoSeed(t, string(input), stdout.String()+stderr.String(), pskcFixtureSecrets()...)
		})
	}
}

func TestValidateHumanOutput(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"validate", filepath.Join("testdata", "seedfiles", "microsoft-doc-example.csv")}, &stdout, &stderr)
	out := stdout.String()
	for _, want := range []string{"LINE", "FIELD", "CODE", "secret key", "secret.not-base32", "it has digits 0, 1, 8 or 9", "entra-csv, 2 rows, 0 valid, 2 invalid"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code != exitProblem {
		t.Errorf("exit %d", code)
	}
}

func TestValidateUsage(t *testing.T) {
	dir := t.TempDir()
	tests := [][]string{
		{"validate"},
		{"validate", "a.csv", "b.csv"},
		{"validate", "--nope", "x"},
		{"validate", filepath.Join(dir, "missing.csv")},
		{"validate", dir},
		{"validate", "--format", "xlsx", filepath.Join("testdata", "seedfiles", "graph.csv")},
		{"validate", "--secret-encoding", "base64", filepath.Join("testdata", "seedfiles", "graph.csv")},
		{"validate", "--hash", "sha512", filepath.Join("testdata", "seedfiles", "graph.csv")},
		{"validate", "--pskc-key", "xyz", filepath.Join("testdata", "seedfiles", "graph.csv")},
		{"validate", "--pskc-key", "0011", filepath.Join("testdata", "seedfiles", "graph.csv")},
	}
	for _, args := range tests {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitUsage || stderr.Len() == 0 || stdout.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d, a message and no output", args, code, stdout.String(), stderr.String(), exitUsage)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"validate", "-h"}, &stdout, &stderr); code != exitOK || !strings.Contains(stderr.String(), "--secret-encoding") {
		t.Errorf("-h: exit %d, %q", code, stderr.String())
	}
}

func TestValidateReadsPasswordFromEnvironment(t *testing.T) {
	t.Setenv("OATHPIPE_PSKC_PASSWORD", "correct horse battery staple")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"validate", filepath.Join("testdata", "seedfiles", "pythonpskc-pbkdf2.xml")}, &stdout, &stderr); code != exitOK {
		t.Errorf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
}
