package pipeline

import (
	"bytes"
	"encoding/csv"
	"slices"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/seedfile"
)

func TestNeutralise(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"8659612000001", "8659612000001"},
		{"=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"},
		{"+1", "'+1"},
		{"-2+3", "'-2+3"},
		{"@SUM(A1)", "'@SUM(A1)"},
		{"\t=1", "'\t=1"},
		{"\r=1", "'\r=1"},
		{"a=b", "a=b"},
		{"ada@contoso.example", "ada@contoso.example"},
	} {
		if got := neutralise(c.in); got != c.want {
			t.Errorf("neutralise(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFailuresCSV(t *testing.T) {
	ok := &ImportStatus{Tokens: []TokenLine{{Line: 2, SerialNumber: "A", Status: StatusActivated}}}
	if failuresCSV(ok) != nil {
		t.Error("a failures csv for an import without failures")
	}
	st := &ImportStatus{
		Problems: []seedfile.Problem{{Field: "file", Code: "file.no-rows", Message: "no rows"}},
		Tokens: []TokenLine{
			{Line: 2, SerialNumber: "A", Status: StatusActivated},
			{Line: 3, Status: StatusRejected, Problems: []seedfile.Problem{{Line: 3, Field: "secret key", Code: "secret.missing", Message: "empty"}, {Line: 3, Field: "upn", Code: "upn.malformed", Message: "=cmd|' /C calc'!A0"}}},
			{Line: 4, SerialNumber: "-5", UserPrincipalName: "g@x", Status: StatusFailed, Reason: "guest, \"quoted\", and\nmultiline"},
		},
	}
	rows, err := csv.NewReader(bytes.NewReader(failuresCSV(st))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"line", "serial number", "upn", "status", "field", "code", "reason"},
		{"0", "", "", string(StatusRejected), "file", "file.no-rows", "no rows"},
		{"3", "", "", string(StatusRejected), "secret key", "secret.missing", "empty"},
		{"3", "", "", string(StatusRejected), "upn", "upn.malformed", "'=cmd|' /C calc'!A0"},
		{"4", "'-5", "g@x", string(StatusFailed), "", "", "guest, \"quoted\", and\nmultiline"},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows: %q", len(rows), rows)
	}
	for i := range want {
		if strings.Join(rows[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("row %d: %q, want %q", i, rows[i], want[i])
		}
	}
}

// FuzzFailuresCSV: whatever a vendor file puts in a serial, UPN or message, the failures CSV
// parses back to the same cells, and no cell can start a formula.
func FuzzFailuresCSV(f *testing.F) {
	f.Add("8659612000001", "ada@contoso.example", "guest account")
	f.Add("=1+1", "@x", "-2")
	f.Add("a\"b,c\nd", "\t=x", "\r+y")
	f.Fuzz(func(t *testing.T, serial, upn, reason string) {
		st := &ImportStatus{Tokens: []TokenLine{{Line: 7, SerialNumber: serial, UserPrincipalName: upn, Status: StatusFailed, Reason: reason}}}
		out := failuresCSV(st)
		r := csv.NewReader(bytes.NewReader(out))
		r.LazyQuotes = false
		rows, err := r.ReadAll()
		if err != nil {
			t.Skip("encoding/csv cannot round-trip this input (e.g. a lone \\r)")
		}
		if len(rows) != 2 || len(rows[1]) != 7 {
			t.Fatalf("rows %q", rows)
		}
		for _, cell := range rows[1] {
			if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
				t.Fatalf("cell %q can start a formula", cell)
			}
		}
		for i, in := range map[int]string{1: serial, 2: upn, 6: reason} {
			got := rows[1][i]
			if got != neutralise(in) && strings.ReplaceAll(got, "\r\n", "\n") != strings.ReplaceAll(neutralise(in), "\r\n", "\n") {
				// encoding/csv normalises \r\n inside quoted fields to \n.
				if !strings.Contains(in, "\r") {
					t.Fatalf("cell %d: %q, want %q", i, got, neutralise(in))
				}
			}
		}
	})
}

// TestOutcomeWithWarnings: an outcome's warnings are added once by code, and the row's own
// problems stay as they were.
func TestOutcomeWithWarnings(t *testing.T) {
	w := seedfile.Problem{Line: 2, Code: CodeRetiredBefore, Message: "retired"}
	other := seedfile.Problem{Line: 2, Code: "manufacturer.hint", Message: "hint"}
	o := Outcome{Warnings: []seedfile.Problem{w}}
	for _, tt := range []struct {
		name string
		in   []seedfile.Problem
		want []string
	}{
		{"none before", nil, []string{CodeRetiredBefore}},
		{"another warning kept", []seedfile.Problem{other}, []string{"manufacturer.hint", CodeRetiredBefore}},
		{"recorded twice", []seedfile.Problem{other, w}, []string{"manufacturer.hint", CodeRetiredBefore}},
	} {
		in := slices.Clone(tt.in)
		var got []string
		for _, p := range o.WithWarnings(in) {
			got = append(got, p.Code)
		}
		if !slices.Equal(got, tt.want) || !slices.Equal(in, tt.in) {
			t.Errorf("%s: %v (input now %v), want %v", tt.name, got, in, tt.want)
		}
	}
	if got := (Outcome{}).WithWarnings([]seedfile.Problem{other}); len(got) != 1 {
		t.Errorf("no warnings: %v", got)
	}
}
