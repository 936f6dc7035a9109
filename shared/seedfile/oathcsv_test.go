package seedfile

import (
	"slices"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/token"
)

const oathKey20 = "3132333435363738393031323334353637383930"

func TestOATHCSV(t *testing.T) {
	hint := Options{Manufacturer: "Token2"}
	tests := []struct {
		name   string
		in     string
		opts   Options
		format Format
		valid  int
		want   []string // line:field:code
		hash   token.Hash
		period int
	}{
		{"minimal", "S1," + oathKey20 + ",totp\n", hint, FormatOATHCSV, 1, nil, token.SHA1, 30},
		{"spaces, comments, CRLF", "# export\r\n\r\n  S1 , " + oathKey20 + " , TOTP , 6 , 60 , sha256 \r\n", hint, FormatOATHCSV, 1, nil, token.SHA256, 60},
		{"32-byte key is SHA-256", "S1," + oathKey20 + "313233343536373839303132,totp\n", hint, FormatOATHCSV, 1, nil, token.SHA256, 30},
		{"64-byte key is SHA-512: refused", "S1," + strings.Repeat("31", 64) + ",totp,6,30\n", hint, FormatOATHCSV, 0, []string{"1:hash:hash.unsupported"}, "", 0},
		{"hotp", "S1," + oathKey20 + ",hotp,6\n", hint, FormatOATHCSV, 0, []string{"1:type:algorithm.hotp"}, "", 0},
		{"ocra", "S1," + oathKey20 + ",ocra,OCRA-1:HOTP-SHA1-6:QN08\n", hint, FormatOATHCSV, 0, []string{"1:type:algorithm.unsupported", "1:digits:digits.unsupported"}, "", 0},
		{"not hex", "S1,zz" + oathKey20[2:] + ",totp\n", Options{Manufacturer: "T", Format: FormatOATHCSV}, FormatOATHCSV, 0, []string{"1:key:secret.not-hex"}, "", 0},
		{"8 digits", "S1," + oathKey20 + ",totp,8\n", hint, FormatOATHCSV, 0, []string{"1:digits:digits.unsupported"}, "", 0},
		{"45 s", "S1," + oathKey20 + ",totp,6,45\n", hint, FormatOATHCSV, 0, []string{"1:period:interval.unsupported"}, "", 0},
		{"too few fields", "# c\nS1," + oathKey20 + ",totp\nS2\n", Options{Manufacturer: "T", Format: FormatOATHCSV}, FormatOATHCSV, 1, []string{"3:row:row.columns"}, token.SHA1, 30},
		{"no manufacturer hint", "S1," + oathKey20 + ",totp\n", Options{}, FormatOATHCSV, 0, []string{"0:file:file.missing-column"}, "", 0},
		{"no rows", "# only comments\n", Options{Manufacturer: "T", Format: FormatOATHCSV}, FormatOATHCSV, 0, []string{"0:file:file.no-rows"}, "", 0},
		// Detection only beyond doubt: a short key, an unknown type or a header is not OATH CSV.
		{"short key is not detected", "S1,31323334,totp\n", hint, FormatAuto, 0, []string{"0:file:file.no-header"}, "", 0},
		{"no type is not detected", "S1," + oathKey20 + ",30\n", hint, FormatAuto, 0, []string{"0:file:file.no-header"}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := read(tt.in, tt.opts)
			got := r.codes()
			if !slices.Equal(got, tt.want) || r.sum.Valid != tt.valid || r.sum.Format != tt.format {
				t.Fatalf("problems %q, %d valid, format %s; want %q, %d, %s", got, r.sum.Valid, r.sum.Format, tt.want, tt.valid, tt.format)
			}
			if tt.valid > 0 {
				rec := r.recs[0]
				if rec.Seed.Hash != tt.hash || rec.Seed.Period != tt.period || rec.Token.Manufacturer != "Token2" && rec.Token.Manufacturer != "T" ||
					rec.Token.Model != FallbackModel || rec.UserPrincipalName != "" || len(rec.Warnings) != 2 || rec.Warnings[0].Code != WarnManufacturerHint || rec.Warnings[1].Code != WarnModelFallback {
					t.Errorf("record %+v %+v warnings %v", rec.Token, rec.Seed, rec.Warnings)
				}
			}
		})
	}
}

func TestOATHCSVFixture(t *testing.T) {
	r := read(fixture(t, "oath.csv"), Options{Manufacturer: "Token2", Model: "OTP c200"})
	got := r.codes()
	want := []string{"6:type:algorithm.hotp", "7:hash:hash.unsupported", "8:digits:digits.unsupported", "9:type:algorithm.unsupported", "9:digits:digits.unsupported"}
	if r.err != nil || !slices.Equal(got, want) || r.sum.Valid != 3 || r.sum.Format != FormatOATHCSV {
		t.Fatalf("%v, problems %q, %+v", r.err, got, r.sum)
	}
	if r.recs[1].Seed.Hash != token.SHA256 || r.recs[1].Seed.Period != 60 || r.recs[0].Token.Model != "OTP c200" {
		t.Errorf("records %+v", r.recs)
	}
}

func FuzzReadOATHCSV(f *testing.F) {
	f.Add("S1," + oathKey20 + ",totp,6,30,sha1\n")
	f.Add("# c\nS1 , " + oathKey20 + " , hotp\n,,\n")
	f.Fuzz(func(t *testing.T, in string) {
		for _, format := range []Format{FormatAuto, FormatOATHCSV} {
			r := read(in, Options{Format: format, Manufacturer: "T"})
			if r.sum.Valid+r.sum.Invalid != r.sum.Rows || len(r.recs) != r.sum.Valid {
				t.Fatalf("summary %+v with %d records", r.sum, len(r.recs))
			}
		}
	})
}
