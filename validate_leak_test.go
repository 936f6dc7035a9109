package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/internal/testkit"
)

// TestValidateSeedInWrongColumn: `oathpipe validate` (table and --json) rejects every row whose
// seed sits in a public column (swapped, shifted, in the UPN, in the model, lower case, hex,
// base64) as the import does, and prints no seed in any form.
func TestValidateSeedInWrongColumn(t *testing.T) {
	ss := &testkit.SeedSet{}
	content := testkit.MisplacedSeedsFile(ss, "CLI", "ada@contoso.example")
	path := filepath.Join(t.TempDir(), "misplaced.csv")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"validate", "--json", path}, &stdout, &stderr)
	var out struct {
		Summary struct{ Rows, Valid, Invalid int }
		Tokens  []struct{ SerialNumber, Model, Manufacturer string }
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	if code != exitProblem || out.Summary.Valid != 1 || len(out.Tokens) != 1 || out.Tokens[0].SerialNumber != "CLI-OK" {
		t.Errorf("exit %d, %+v %+v; want only CLI-OK valid", code, out.Summary, out.Tokens)
	}
	if !strings.Contains(stdout.String(), "row.columns-shifted") {
		t.Errorf("no row.columns-shifted problem:\n%s", stdout.String())
	}
	texts := stdout.String() + stderr.String()
	stdout.Reset()
	stderr.Reset()
	run([]string{"validate", path}, &stdout, &stderr)
	texts += stdout.String() + stderr.String()
	for _, lk := range ss.Leaks("validate output", texts) {
		t.Error("seed leaked: " + lk)
	}
	assertNoSeed(t, string(content), texts)
}
