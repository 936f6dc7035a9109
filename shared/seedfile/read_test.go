package seedfile

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/oathpipe/oathpipe/shared/token"
)

const entraHeader = "upn,serial number,secret key,time interval,manufacturer,model\n"

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

type result struct {
	recs  []Record
	probs []Problem
	sum   Summary
	err   error
}

func read(input string, opts Options) result {
	var r result
	r.sum, r.err = Read(strings.NewReader(input), opts,
		func(rec Record) error { r.recs = append(r.recs, rec); return nil },
		func(p Problem) { r.probs = append(r.probs, p) })
	return r
}

// codes renders problems as "line:field:code" for compact expectations.
func (r result) codes() []string {
	var out []string
	for _, p := range r.probs {
		out = append(out, fmt.Sprintf("%d:%s:%s", p.Line, p.Field, p.Code))
	}
	return out
}

// noSecretIn fails when any problem or the error quotes any cell of input (8+ characters) or
// any record's seed in Base32 or hex.
func noSecretIn(t *testing.T, input string, r result) {
	t.Helper()
	var texts []string
	for _, p := range r.probs {
		texts = append(texts, p.Message, p.String(), p.Serial, p.UserPrincipalName)
	}
	if r.err != nil {
		texts = append(texts, r.err.Error())
	}
	var needles []string
	for _, line := range strings.Split(input, "\n") {
		for _, cell := range strings.FieldsFunc(line, func(c rune) bool {
			return c == ',' || c == ';' || c == '"' || c == ' ' || c == '\r' || c == '<' || c == '>'
		}) {
			if len(cell) >= 16 && !strings.Contains(cell, "@") && !strings.Contains(cell, ":") {
				needles = append(needles, cell)
			}
		}
	}
	for _, rec := range r.recs {
		needles = append(needles, rec.Seed.Base32(), hex.EncodeToString(rec.Seed.Secret))
	}
	for _, text := range texts {
		for _, n := range needles {
			if strings.Contains(strings.ToUpper(text), strings.ToUpper(n)) {
				t.Errorf("a problem quotes input %q: %s", n, text)
			}
		}
	}
}

const (
	seedA = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP" // 20 bytes
	seedB = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" // the RFC 6238 SHA-1 seed
	seedC = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA"
)

func TestRules(t *testing.T) {
	seed32 := b32.EncodeToString([]byte("12345678901234567890123456789012"))
	tests := []struct {
		name  string
		input string
		opts  Options
		valid int
		want  []string
	}{
		{"valid", entraHeader + "ada@contoso.example,1," + seedA + ",30,Token2,C202\n", Options{}, 1, nil},
		{"inventory row without upn", entraHeader + ",1," + seedA + ",60,Token2,C202\n", Options{}, 1, nil},
		{"not base32", entraHeader + "a@b.example,1,1234567890abcdef1234567890abcdef,30,T,M\n", Options{}, 0, []string{"2:secret key:secret.not-base32"}},
		{"non-canonical base32", entraHeader + "a@b.example,1,2234567abcdef2234567abcdef,30,T,M\n", Options{}, 0, []string{"2:secret key:secret.not-base32"}},
		{"bad base32 length", entraHeader + "a@b.example,1," + seedA + "A,30,T,M\n", Options{}, 0, []string{"2:secret key:secret.not-base32"}},
		{"padded lower-case base32", entraHeader + "a@b.example,1," + strings.ToLower(base32.StdEncoding.EncodeToString([]byte("0123456789abcdefg"))) + ",30,T,M\n", Options{}, 1, nil},
		{"missing secret", entraHeader + "a@b.example,1,,30,T,M\n", Options{}, 0, []string{"2:secret key:secret.missing"}},
		{"short seed", entraHeader + "a@b.example,1," + b32.EncodeToString(make([]byte, 10)) + ",30,T,M\n", Options{}, 0, []string{"2:secret key:secret.too-short"}},
		{"128-bit seed is enough", entraHeader + "a@b.example,1," + b32.EncodeToString([]byte("0123456789abcdef")) + ",30,T,M\n", Options{}, 1, nil},
		{"too long", entraHeader + "a@b.example,1," + b32.EncodeToString(bytes.Repeat([]byte{7}, 81)) + ",30,T,M\n", Options{}, 0, []string{"2:secret key:secret.too-long"}},
		{"128 base32 chars is fine", entraHeader + "a@b.example,1," + b32.EncodeToString(bytes.Repeat([]byte{7}, 80)) + ",30,T,M\n", Options{}, 1, nil},
		{"interval 45", entraHeader + "a@b.example,1," + seedA + ",45,T,M\n", Options{}, 0, []string{"2:time interval:interval.unsupported"}},
		{"interval text", entraHeader + "a@b.example,1," + seedA + ",30s,T,M\n", Options{}, 0, []string{"2:time interval:interval.unsupported"}},
		{"interval empty", entraHeader + "a@b.example,1," + seedA + ",,T,M\n", Options{}, 0, []string{"2:time interval:interval.missing"}},
		{"missing serial manufacturer model", entraHeader + "a@b.example,," + seedA + ",30,,\n", Options{}, 0, []string{"2:serial number:serial.missing", "2:manufacturer:manufacturer.missing", "2:model:model.missing"}},
		{"malformed upn", entraHeader + "not an upn,1," + seedA + ",30,T,M\n", Options{}, 0, []string{"2:upn:upn.malformed"}},
		{"guest upn is well formed", entraHeader + "pat.partner_fabrikam.example#EXT#@contoso.example,1," + seedA + ",30,T,M\n", Options{}, 1, nil},
		{"repeated serial", entraHeader + "a@b.example,1," + seedA + ",30,T,M\nc@b.example,1," + seedB + ",30,T,M\n", Options{}, 1, []string{"3:serial number:serial.duplicate"}},
		{"same seed twice", entraHeader + "a@b.example,1," + seedA + ",30,T,M\nc@b.example,2," + strings.ToLower(seedA) + ",30,T,M\n", Options{}, 1, []string{"3:secret key:secret.duplicate"}},
		{"wrong column count", entraHeader + "a@b.example,1," + seedA + ",30,T\nb@b.example,2," + seedB + ",30,T,M,extra\n", Options{}, 0, []string{"2:row:row.columns", "3:row:row.columns"}},
		{"sha-256 inferred from 32 bytes", entraHeader + "a@b.example,1," + seed32 + ",30,T,M\n", Options{}, 1, nil},
		{"hex needs the option", entraHeader + "a@b.example,1,3132333435363738393031323334353637383930,30,T,M\n", Options{}, 0, []string{"2:secret key:secret.not-base32"}},
		{"hex", entraHeader + "a@b.example,1,3132333435363738393031323334353637383930,30,T,M\n", Options{SecretEncoding: "hex"}, 1, nil},
		{"not hex", entraHeader + "a@b.example,1," + seedA + ",30,T,M\n", Options{SecretEncoding: "hex"}, 0, []string{"2:secret key:secret.not-hex"}},
		{"graph sha512", "serialNumber,secretKey,timeIntervalInSeconds,manufacturer,model,hashFunction\n1," + seedA + ",30,T,M,hmacsha512\n", Options{}, 0, []string{"2:hashFunction:hash.unsupported"}},
		{"graph unknown hash", "serialNumber,secretKey,timeIntervalInSeconds,manufacturer,model,hashFunction\n1," + seedA + ",30,T,M,md5\n", Options{}, 0, []string{"2:hashFunction:hash.unsupported"}},
		{"graph sha256 column", "serialNumber,secretKey,timeIntervalInSeconds,manufacturer,model,hashFunction\n1," + seedA + ",30,T,M,HMAC-SHA256\n", Options{}, 1, nil},
		{"digits column", entraHeader[:len(entraHeader)-1] + ",digits\na@b.example,1," + seedA + ",30,T,M,8\n", Options{}, 0, []string{"2:digits:digits.unsupported"}},
		{"quoted comma", entraHeader + "a@b.example,1," + seedA + ",30,\"Token2, SA\",\"C2\"\"02\"\"\"\nb@b.example,2," + seedB + ",30,T,M\n", Options{}, 2, nil},
		{"quoted line break", entraHeader + "a@b.example,1," + seedA + ",30,\"Token2, SA\",\"C2\n02\"\nb@b.example,2," + seedB + ",30,T,M\nc@b.example,1," + seedC + ",30,T,M\n", Options{}, 1,
			[]string{"2:model:field.not-text", "5:serial number:serial.duplicate"}},
		{"blank and comma-only lines", entraHeader + "\n,,,,,\n  \na@b.example,1," + seedA + ",30,T,M\n\n", Options{}, 1, nil},
		// Past the first 4 KiB, which are sniffed for binary content (blank lines are skipped).
		{"control character in model", entraHeader + strings.Repeat("\n", 4100) + "a@b.example,1," + seedA + ",30,T,M\x01\n", Options{}, 0, []string{"4102:model:field.not-text"}},
		{"latin-1 byte in manufacturer", entraHeader + strings.Repeat("\n", 4100) + "a@b.example,1," + seedA + ",30,Tok\xe9n,M\n", Options{}, 0, []string{"4102:manufacturer:field.not-text"}},
		{"utf-8 manufacturer", entraHeader + "a@b.example,1," + seedA + ",30,Sécurité SA,M\n", Options{}, 1, nil},
		{"excel sep line", "sep=,\n" + entraHeader + "a@b.example,1," + seedA + ",30,T,M\n", Options{}, 1, nil},
		{"header spellings", "UPN , Serial_Number, SecretKey,TimeInterval,MANUFACTURER,Model,Notes\na@b.example,1," + seedA + ",30,T,M,anything\n", Options{}, 1, nil},
		{"every problem in a row", entraHeader + "x,," + seedA[:20] + ",90,,\n", Options{}, 0, []string{
			"2:secret key:secret.not-base32", "2:serial number:serial.missing", "2:manufacturer:manufacturer.missing",
			"2:model:model.missing", "2:upn:upn.malformed", "2:time interval:interval.unsupported"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := read(tt.input, tt.opts)
			if r.err != nil {
				t.Fatalf("Read: %v", r.err)
			}
			if got := r.codes(); !slices.Equal(got, tt.want) {
				t.Errorf("problems = %q, want %q", got, tt.want)
			}
			if r.sum.Valid != tt.valid || len(r.recs) != tt.valid || r.sum.Valid+r.sum.Invalid != r.sum.Rows {
				t.Errorf("summary = %+v with %d records, want %d valid", r.sum, len(r.recs), tt.valid)
			}
			noSecretIn(t, tt.input, r)
		})
	}
}

func TestRecordFields(t *testing.T) {
	input := "\uFEFFupn,serial number,secret key,timeinterval,manufacturer,model\r\n" +
		"  ada@contoso.example , 8659612000001 , " + strings.ToLower(seedB) + " , 60 , Token2 , C202 \r\n" +
		",8659612000002," + b32.EncodeToString([]byte("12345678901234567890123456789012")) + ",30,Token2,C302\r\n"
	r := read(input, Options{})
	if r.err != nil || len(r.recs) != 2 {
		t.Fatalf("Read = %d records, %v, problems %v", len(r.recs), r.err, r.probs)
	}
	got := r.recs[0]
	want := Record{Line: 2, Token: token.Token{Serial: "8659612000001", Manufacturer: "Token2", Model: "C202"},
		UserPrincipalName: "ada@contoso.example",
		Seed:              token.Seed{Secret: []byte("12345678901234567890"), Hash: token.SHA1, Digits: 6, Period: 60}}
	if got.Line != want.Line || got.Token != want.Token || got.UserPrincipalName != want.UserPrincipalName ||
		!bytes.Equal(got.Seed.Secret, want.Seed.Secret) || got.Seed.Hash != want.Seed.Hash || got.Seed.Digits != 6 || got.Seed.Period != 60 {
		t.Errorf("record = %+v %+v, want %+v", got, got.Seed, want)
	}
	if got.Seed.Base32() != seedB {
		t.Errorf("normalised secret = %s", got.Seed.Base32())
	}
	if r.recs[1].Seed.Hash != token.SHA256 || r.recs[1].UserPrincipalName != "" || r.recs[1].Line != 3 {
		t.Errorf("second record = %+v %v", r.recs[1], r.recs[1].Seed)
	}
	if r.sum.Format != FormatEntraCSV {
		t.Errorf("format = %q", r.sum.Format)
	}
	// --hash overrides the inference from the seed length, not a hash column.
	r = read(input, Options{Hash: token.SHA256})
	if r.recs[0].Seed.Hash != token.SHA256 {
		t.Errorf("--hash sha256 gave %s", r.recs[0].Seed.Hash)
	}
}

func TestFileProblems(t *testing.T) {
	tests := []struct {
		name, input string
		opts        Options
		code        string
	}{
		{"empty", "", Options{}, CodeFileEmpty},
		{"blank lines", "\n \r\n\n", Options{}, CodeFileEmpty},
		{"no header", "ada@contoso.example,1," + seedA + ",30,T,M\n", Options{}, CodeFileNoHeader},
		{"header only", entraHeader + "\r\n", Options{}, CodeFileNoRows},
		{"missing column", "upn,serial number,secret key,manufacturer,model\na,1," + seedA + ",T,M\n", Options{}, CodeFileMissingColumn},
		{"binary", "PK\x03\x04\x00\x00garbage", Options{}, CodeFileNotText},
		{"utf-16", "\xff\xfeu\x00p\x00n\x00", Options{}, CodeFileNotText},
		{"latin-1", "upn,serial number,secret key,time interval,manufacturer,model\nj\xe9r\xf4me@b.example,1,A,30,T,M\n", Options{}, CodeFileNotText},
		{"pskc asked, csv given", entraHeader, Options{Format: FormatPSKC}, CodeFileNotPSKC},
		{"xml but not pskc", "<?xml version=\"1.0\"?><html><body/></html>", Options{}, CodeFileNotPSKC},
		{"broken xml", "<KeyContainer><KeyPackage>", Options{}, CodePSKCMalformed},
		{"no key packages", "<KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"/>", Options{}, CodeFileNoRows},
		{"duplicate column", "serial,serial number,secret key,time interval,manufacturer,model\n", Options{}, CodeFileNoHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := read(tt.input, tt.opts)
			var fe *FileError
			if !errors.As(r.err, &fe) || fe.Problem.Code != tt.code {
				t.Fatalf("err = %v, want a FileError %s", r.err, tt.code)
			}
			if token.KindOf(r.err) != token.KindInvalid {
				t.Errorf("KindOf = %s", token.KindOf(r.err))
			}
			if len(r.probs) != 1 || r.probs[0] != fe.Problem || fe.Problem.Line != 0 || fe.Problem.Field != "file" {
				t.Errorf("problems = %+v", r.probs)
			}
		})
	}
}

func TestOptionsAndCallbackErrors(t *testing.T) {
	for _, o := range []Options{{Format: "xlsx"}, {SecretEncoding: "base64"}, {Hash: token.SHA512}, {PSKCKey: []byte{1, 2, 3}}} {
		if _, err := Read(strings.NewReader(entraHeader), o, nil, nil); token.KindOf(err) != token.KindInvalid {
			t.Errorf("Read(%+v) err = %v, want KindInvalid", o, err)
		}
	}
	stop := errors.New("vault down")
	input := entraHeader + "a@b.example,1," + seedA + ",30,T,M\nb@b.example,2," + seedB + ",30,T,M\n"
	calls := 0
	sum, err := Read(strings.NewReader(input), Options{}, func(Record) error { calls++; return stop }, nil)
	if !errors.Is(err, stop) || calls != 1 || sum.Valid != 1 {
		t.Errorf("Read = %+v, %v after %d calls; want the callback's error after 1", sum, err, calls)
	}
}

func TestValidUPN(t *testing.T) {
	good := []string{"ada@contoso.example", "a.b-c_d'e!f#g^h~i@x.y.example", "pat.partner_fabrikam.example#EXT#@contoso.onmicrosoft.com", "A@B.CO"}
	bad := []string{"", "ada", "@contoso.example", "ada@", "ada@contoso", "ada@@contoso.example", "a b@contoso.example", ".ada@contoso.example",
		"ada.@contoso.example", "a..b@contoso.example", "ada@-contoso.example", "ada@contoso-.example", "ada@contoso..example", "ada@contoso.example.",
		"ada+tag@contoso.example", "<ada@contoso.example>", strings.Repeat("a", 65) + "@contoso.example", "jérôme@contoso.example"}
	for _, s := range good {
		if !ValidUPN([]byte(s)) {
			t.Errorf("ValidUPN(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidUPN([]byte(s)) {
			t.Errorf("ValidUPN(%q) = true", s)
		}
	}
}

func TestParseHash(t *testing.T) {
	for in, want := range map[string]token.Hash{"sha1": token.SHA1, "SHA-1": token.SHA1, "HMAC-SHA1": token.SHA1, "hmacsha256": token.SHA256, " Sha_256 ": token.SHA256, "sha512": token.SHA512} {
		if got, ok := ParseHash(in); !ok || got != want {
			t.Errorf("ParseHash(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "md5", "sha", "hmacsha1024"} {
		if _, ok := ParseHash(in); ok {
			t.Errorf("ParseHash(%q) ok", in)
		}
	}
}

func fixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "seedfiles", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// pythonSecret recomputes the secrets make-pskc.py wrapped.
func pythonSecret(i, n int) []byte {
	label := fmt.Appendf(nil, "oathpipe-pskc-fixture-%d", i)
	if n == 32 {
		s := sha256.Sum256(label)
		return s[:]
	}
	s := sha1.Sum(label)
	return s[:n]
}

func TestFixtures(t *testing.T) {
	aes128, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	aes256, _ := hex.DecodeString(strings.Repeat("00112233445566778899aabbccddeeff", 2))
	pythonWant := [][]byte{pythonSecret(1, 20), pythonSecret(2, 32), pythonSecret(3, 20)}
	tests := []struct {
		file     string
		opts     Options
		format   Format
		valid    int
		want     []string
		fileCode string
		secrets  [][]byte
	}{
		{file: "token2-bom-crlf.csv", format: FormatEntraCSV, valid: 4},
		{file: "microsoft-doc-example.csv", format: FormatEntraCSV, want: []string{"2:secret key:secret.not-base32", "3:secret key:secret.not-base32"}},
		{file: "graph.csv", format: FormatGraphCSV, valid: 2, want: []string{"4:hashFunction:hash.unsupported"}},
		{file: "hex.csv", opts: Options{SecretEncoding: "hex"}, format: FormatEntraCSV, valid: 2,
			secrets: [][]byte{[]byte("12345678901234567890"), []byte("12345678901234567890123456789012")}},
		{file: "hex.csv", format: FormatEntraCSV, want: []string{"2:secret key:secret.not-base32", "3:secret key:secret.not-base32"}},
		{file: "semicolon.csv", format: FormatEntraCSV, valid: 1},
		{file: "empty.csv", fileCode: CodeFileEmpty},
		{file: "header-only.csv", format: FormatEntraCSV, fileCode: CodeFileNoRows},
		{file: "no-header.csv", fileCode: CodeFileNoHeader},
		{file: "utf16.csv", fileCode: CodeFileNotText},
		{file: "garbage.bin", fileCode: CodeFileNotText},
		{file: "pythonpskc-plain.xml", format: FormatPSKC, valid: 3, want: []string{"67:Algorithm:algorithm.hotp"}, secrets: pythonWant},
		{file: "pythonpskc-aes128.xml", opts: Options{PSKCKey: aes128}, format: FormatPSKC, valid: 3, secrets: pythonWant},
		{file: "pythonpskc-aes128.xml", format: FormatPSKC, fileCode: CodePSKCKeyMissing},
		{file: "pythonpskc-aes128.xml", opts: Options{PSKCKey: aes256[1:17]}, format: FormatPSKC, fileCode: CodePSKCBadKey},
		{file: "pythonpskc-aes256.xml", opts: Options{PSKCKey: aes256}, format: FormatPSKC, valid: 3, secrets: pythonWant},
		{file: "pythonpskc-aes256.xml", opts: Options{PSKCKey: aes128}, format: FormatPSKC, fileCode: CodePSKCBadKey},
		{file: "pythonpskc-pbkdf2.xml", opts: Options{PSKCPassword: "correct horse battery staple"}, format: FormatPSKC, valid: 3, secrets: pythonWant},
		{file: "pythonpskc-pbkdf2.xml", opts: Options{PSKCPassword: "wrong horse"}, format: FormatPSKC, fileCode: CodePSKCBadKey},
		{file: "pythonpskc-pbkdf2.xml", opts: Options{PSKCKey: aes128}, format: FormatPSKC, fileCode: CodePSKCKeyMissing},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			input := fixture(t, tt.file)
			r := read(input, tt.opts)
			noSecretIn(t, input, r)
			if tt.fileCode != "" {
				var fe *FileError
				if !errors.As(r.err, &fe) || fe.Problem.Code != tt.fileCode {
					t.Fatalf("err = %v, want FileError %s", r.err, tt.fileCode)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("Read: %v (problems %v)", r.err, r.probs)
			}
			if got := r.codes(); !slices.Equal(got, tt.want) {
				t.Errorf("problems = %q, want %q", got, tt.want)
			}
			if r.sum.Valid != tt.valid || r.sum.Format != tt.format {
				t.Errorf("summary = %+v, want %d valid, format %s", r.sum, tt.valid, tt.format)
			}
			for i, s := range tt.secrets {
				if i >= len(r.recs) || !bytes.Equal(r.recs[i].Seed.Secret, s) {
					t.Errorf("record %d: secret does not match the one the other implementation wrapped", i)
				}
			}
		})
	}
}

func TestPythonPSKCFields(t *testing.T) {
	r := read(fixture(t, "pythonpskc-pbkdf2.xml"), Options{PSKCPassword: "correct horse battery staple"})
	if len(r.recs) != 3 {
		t.Fatalf("records = %d, err %v, problems %v", len(r.recs), r.err, r.probs)
	}
	want := []struct {
		line   int
		serial string
		upn    string
		hash   token.Hash
		period int
	}{{24, "8659622000001", "ada.lovelace@contoso.example", token.SHA1, 30},
		{51, "8659622000002", "grace.hopper@contoso.example", token.SHA256, 30},
		{79, "8659622000003", "", token.SHA1, 60}}
	for i, w := range want {
		g := r.recs[i]
		if g.Line != w.line || g.Token.Serial != w.serial || g.UserPrincipalName != w.upn || g.Seed.Hash != w.hash || g.Seed.Period != w.period ||
			g.Token.Manufacturer != "Token2" || g.Token.Model != "C302" || g.Seed.Digits != 6 {
			t.Errorf("record %d = %+v %v, want %+v", i, g, g.Seed, w)
		}
	}
}

// rfcAsTOTP turns an RFC 6030 example (HOTP, 8 digits, no model) into a key Entra would take,
// without touching the encrypted secret or its MAC.
func rfcAsTOTP(s string) string {
	s = strings.ReplaceAll(s, "keyprov:pskc:hotp", "keyprov:pskc:totp")
	s = strings.ReplaceAll(s, `Length="8"`, `Length="6"`)
	s = strings.ReplaceAll(s, "<UserId>UID=jsmith,DC=example-bank,DC=net</UserId>", "")
	s = strings.ReplaceAll(s, "<UserId>DC=example-bank,DC=net</UserId>", "")
	s = strings.ReplaceAll(s, "</SerialNo>", "</SerialNo><Model>RFC</Model>")
	return strings.ReplaceAll(s, "</pskc:SerialNo>", "</pskc:SerialNo><pskc:Model>RFC</pskc:Model>")
}

func TestRFC6030Examples(t *testing.T) {
	key, _ := hex.DecodeString("12345678901234567890123456789012")
	tests := []struct {
		file string
		opts Options
	}{
		{"rfc6030-figure2-plain.xml", Options{}},
		{"rfc6030-figure5-preshared.xml", Options{PSKCKey: key}},
		{"rfc6030-figure7-pbkdf2.xml", Options{PSKCPassword: "qwerty"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := fixture(t, tt.file)
			// As published: HOTP, 8 digits: rejected row by row, not as a file (no model is a warning).
			r := read(raw, tt.opts)
			if r.err != nil || r.sum.Rows != 1 || r.sum.Invalid != 1 {
				t.Fatalf("as published: %+v, %v", r.sum, r.err)
			}
			for _, want := range []string{"algorithm.hotp", "digits.unsupported"} {
				if !slices.ContainsFunc(r.probs, func(p Problem) bool { return p.Code == want }) {
					t.Errorf("as published: no %s in %v", want, r.codes())
				}
			}
			r = read(rfcAsTOTP(raw), tt.opts)
			if r.err != nil || len(r.recs) != 1 {
				t.Fatalf("as TOTP: %+v, %v, %v", r.sum, r.err, r.codes())
			}
			if got := r.recs[0].Seed.Secret; string(got) != "12345678901234567890" {
				t.Errorf("secret fingerprint %s, want the RFC's", token.Fingerprint(got))
			}
			noSecretIn(t, raw, r)
		})
	}
	// Wrong and missing keys are file problems, never garbage seeds.
	wrong := bytes.Repeat([]byte{0x42}, 16)
	for _, tt := range []struct {
		file string
		opts Options
		code string
	}{
		{"rfc6030-figure5-preshared.xml", Options{}, CodePSKCKeyMissing},
		{"rfc6030-figure5-preshared.xml", Options{PSKCKey: wrong}, CodePSKCBadKey},
		{"rfc6030-figure5-preshared.xml", Options{PSKCPassword: "qwerty"}, CodePSKCKeyMissing},
		{"rfc6030-figure7-pbkdf2.xml", Options{PSKCPassword: "qwertz"}, CodePSKCBadKey},
		{"rfc6030-figure7-pbkdf2.xml", Options{}, CodePSKCKeyMissing},
	} {
		r := read(rfcAsTOTP(fixture(t, tt.file)), tt.opts)
		var fe *FileError
		if !errors.As(r.err, &fe) || fe.Problem.Code != tt.code || len(r.recs) != 0 {
			t.Errorf("%s %+v: err = %v, %d records; want %s", tt.file, tt.opts.PSKCPassword, r.err, len(r.recs), tt.code)
		}
	}
	// A tampered MAC or ciphertext with the right key: the MAC catches it.
	raw := rfcAsTOTP(fixture(t, "rfc6030-figure5-preshared.xml"))
	for _, tamper := range []struct{ from, to string }{
		{"Su+NvtQfmvfJzF6bmQiJqoLRExc=", "Tu+NvtQfmvfJzF6bmQiJqoLRExc="},
		{"AAECAwQFBgcICQoLDA0OD+cI", "AAECAwQFBgcICQoLDA0OD+cJ"},
		{"<ValueMAC>Su+NvtQfmvfJzF6bmQiJqoLRExc=\n                    </ValueMAC>", ""},
	} {
		r := read(strings.Replace(raw, tamper.from, tamper.to, 1), Options{PSKCKey: key})
		if r.err == nil || len(r.recs) != 0 {
			t.Errorf("tampered %q: err = %v, %d records", tamper.from, r.err, len(r.recs))
		}
	}
}

// A second package whose MAC fails after the first verified is a row problem, not a file one.
func TestPSKCLaterMACMismatch(t *testing.T) {
	aes128, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	raw := fixture(t, "pythonpskc-aes128.xml")
	i := strings.Index(raw, "8659622000002")
	j := i + strings.Index(raw[i:], "<pskc:ValueMAC>") + len("<pskc:ValueMAC>")
	tampered := raw[:j] + "AAAA" + raw[j+4:]
	r := read(tampered, Options{PSKCKey: aes128})
	if r.err != nil || r.sum.Valid != 2 || !slices.Contains(r.codes(), "41:Secret:secret.mac-mismatch") {
		t.Errorf("got %+v, %v, %v", r.sum, r.err, r.codes())
	}
}

func FuzzReadCSV(f *testing.F) {
	for _, name := range []string{"token2-bom-crlf.csv", "microsoft-doc-example.csv", "graph.csv", "hex.csv", "semicolon.csv", "header-only.csv"} {
		f.Add([]byte(fixture(f, name)), false)
	}
	f.Add([]byte(entraHeader+"a@b.example,1,\"x\"\"y\n\"z\",30,T,M\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, hexSecrets bool) {
		opts := Options{Format: FormatEntraCSV}
		if hexSecrets {
			opts.SecretEncoding = "hex"
		}
		checkInvariants(t, data, opts)
	})
}

func FuzzReadPSKC(f *testing.F) {
	for _, name := range []string{"pythonpskc-plain.xml", "pythonpskc-aes128.xml", "pythonpskc-aes256.xml", "rfc6030-figure5-preshared.xml"} {
		f.Add([]byte(fixture(f, name)))
	}
	aes128, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	f.Fuzz(func(t *testing.T, data []byte) {
		checkInvariants(t, data, Options{PSKCKey: aes128})
	})
}

func checkInvariants(t *testing.T, data []byte, opts Options) {
	r := read(string(data), opts)
	var fe *FileError
	if r.err != nil && !errors.As(r.err, &fe) {
		t.Fatalf("Read failed with a non-file error on an in-memory reader: %v", r.err)
	}
	if r.sum.Valid+r.sum.Invalid != r.sum.Rows || r.sum.Valid != len(r.recs) {
		t.Fatalf("summary %+v with %d records", r.sum, len(r.recs))
	}
	for _, rec := range r.recs {
		s := rec.Seed
		if len(s.Secret) < MinSecretBytes || len(s.Secret) > MaxSecretBytes || (s.Hash != token.SHA1 && s.Hash != token.SHA256) ||
			s.Digits != 6 || (s.Period != 30 && s.Period != 60) || rec.Token.Serial == "" || rec.Token.Model == "" || rec.Token.Manufacturer == "" {
			t.Fatalf("invalid record passed: %+v %v", rec, s)
		}
		for _, p := range r.probs {
			if strings.Contains(strings.ToUpper(p.Message), s.Base32()) {
				t.Fatalf("problem quotes a seed: %s", p.Message)
			}
		}
	}
}

func TestIndex(t *testing.T) {
	var x index
	for i := range 100_000 {
		if _, dup := x.seen(uint64(i)*0x9E3779B97F4A7C15, i+2); dup {
			t.Fatalf("key %d reported as seen", i)
		}
	}
	for _, i := range []int{0, 1, 99_999} {
		if first, dup := x.seen(uint64(i)*0x9E3779B97F4A7C15, 1); !dup || first != i+2 {
			t.Errorf("key %d: first line %d, %v", i, first, dup)
		}
	}
	if x.n != 100_000 {
		t.Errorf("n = %d", x.n)
	}
}

func TestReaderFailure(t *testing.T) {
	boom := errors.New("connection reset")
	for _, head := range []string{
		entraHeader + "a@b.example,1," + seedA + ",30,T,M\n",
		entraHeader + "a@b.example,1," + seedA + ",30,\"T\n",
		fixture(t, "pythonpskc-plain.xml")[:900],
	} {
		_, err := Read(io.MultiReader(strings.NewReader(head), iotest.ErrReader(boom)), Options{}, nil, nil)
		var fe *FileError
		if !errors.Is(err, boom) || errors.As(err, &fe) {
			t.Errorf("err = %v, want the reader's error, not a file problem", err)
		}
	}
}

// TestProblemNamesRow: every row problem carries the row's serial and UPN cells (trimmed),
// whatever column the problem is about, and never when the columns do not line up; a cell that
// fails its own field's check is a hidden marker with a fingerprint.
func TestProblemNamesRow(t *testing.T) {
	const pskcHead = `<?xml version="1.0"?><KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">`
	tests := []struct {
		name  string
		input string
		want  []string // "line:code:serial:upn"
	}{
		{"secret column before serial", "secret key,serial number,upn,time interval,manufacturer,model\n" +
			"not base32!, SN-1 , ada@contoso.example ,30,T,M\n",
			[]string{"2:secret.not-base32:SN-1:ada@contoso.example"}},
		{"duplicate serial names the repeated one", entraHeader + "a@b.example,SN-7," + seedA + ",30,T,M\nc@b.example,SN-7," + seedB + ",45,T,M\n",
			[]string{"3:serial.duplicate:SN-7:c@b.example", "3:interval.unsupported:SN-7:c@b.example"}},
		{"malformed upn hidden", entraHeader + "not an upn,SN-2," + seedA + ",30,T,M\n", []string{"2:upn.malformed:SN-2:" + token.HiddenCell("not an upn")}},
		{"inventory row", entraHeader + ",SN-3,,30,T,M\n", []string{"2:secret.missing:SN-3:"}},
		{"shifted columns name nothing", entraHeader + "a@b.example,SN-4," + seedA + ",30,T\n", []string{"2:row.columns::"}},
		{"control characters name nothing", entraHeader + strings.Repeat("\n", 4100) + "a@b.example,SN\x015," + seedA + ",30,T,M\n",
			[]string{"4102:field.not-text:" + token.HiddenCell("SN\x015") + ":a@b.example"}},
		{"next row starts clean", entraHeader + "a@b.example,SN-6,,30,T,M\n,,,,,\nb@b.example,," + seedB + ",30,T,M\n",
			[]string{"2:secret.missing:SN-6:a@b.example", "4:serial.missing::b@b.example"}},
		{"pskc", pskcHead + `<KeyPackage><DeviceInfo><SerialNo> P-1 </SerialNo><Manufacturer>T</Manufacturer><Model>M</Model></DeviceInfo>` +
			`<Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp"><UserId>ada@contoso.example</UserId>` +
			`<Data><Secret><PlainValue>not base64!</PlainValue></Secret></Data></Key></KeyPackage></KeyContainer>`,
			[]string{"1:secret.not-base64:P-1:ada@contoso.example", "1:algorithm.hotp:P-1:ada@contoso.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := read(tt.input, Options{})
			if r.err != nil {
				t.Fatalf("Read: %v", r.err)
			}
			var got []string
			for _, p := range r.probs {
				got = append(got, fmt.Sprintf("%d:%s:%s:%s", p.Line, p.Code, p.Serial, p.UserPrincipalName))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems = %q, want %q", got, tt.want)
			}
			noSecretIn(t, tt.input, r)
		})
	}
	// The validate --json shape does not change.
	b, err := json.Marshal(Problem{Line: 2, Field: "f", Code: "c", Message: "m", Serial: "s", UserPrincipalName: "u"})
	if err != nil || string(b) != `{"line":2,"field":"f","code":"c","message":"m"}` {
		t.Errorf("Problem JSON = %s, %v", b, err)
	}
}

// TestSeedInPublicColumn: a seed where a serial, manufacturer or model belongs (columns
// swapped or shifted, any case, any encoding) rejects the row as row.columns-shifted, and no
// problem, record or message carries the seed; a seed in the UPN column is hidden too.
func TestSeedInPublicColumn(t *testing.T) {
	raw := []byte("0123456789abcdef0123") // 20 bytes
	hexSeed := fmt.Sprintf("%x", raw)
	b64Seed := base64.StdEncoding.EncodeToString(raw)
	lower := strings.ToLower(seedA)
	tests := []struct {
		name  string
		input string
		want  []string  // "line:code:field"
		shown [2]string // serial and UPN as problems carry them
	}{
		{"swapped serial and secret", entraHeader + "ada@contoso.example," + seedA + ",8659612000101,30,Token2,C202\n",
			[]string{"2:secret.not-base32:secret key", "2:row.columns-shifted:serial number"},
			[2]string{token.HiddenCell(seedA), "ada@contoso.example"}},
		{"shifted left (upn left out)", entraHeader + "8659612000101," + seedA + ",30,Token2,C202,\n",
			[]string{"2:secret.not-base32:secret key", "2:interval.unsupported:time interval", "2:row.columns-shifted:serial number", "2:model.missing:model", "2:upn.malformed:upn"},
			[2]string{token.HiddenCell(seedA), token.HiddenCell("8659612000101")}},
		{"seed in the upn", entraHeader + seedA + ",SN-1," + seedB + ",30,Token2,C202\n",
			[]string{"2:upn.malformed:upn"},
			[2]string{"SN-1", token.HiddenCell(seedA)}},
		{"seed in the model", entraHeader + "ada@contoso.example,SN-1," + seedB + ",30,Token2," + seedA + "\n",
			[]string{"2:row.columns-shifted:model"},
			[2]string{"SN-1", "ada@contoso.example"}},
		{"seed in the manufacturer, hex", entraHeader + "ada@contoso.example,SN-1," + seedB + ",30," + hexSeed + ",C202\n",
			[]string{"2:row.columns-shifted:manufacturer"},
			[2]string{"SN-1", "ada@contoso.example"}},
		{"lower-case seed as serial", entraHeader + "ada@contoso.example," + lower + "," + seedB + ",30,Token2,C202\n",
			[]string{"2:row.columns-shifted:serial number"},
			[2]string{token.HiddenCell(lower), "ada@contoso.example"}},
		{"base64 seed as serial", entraHeader + "ada@contoso.example," + b64Seed + "," + seedB + ",30,Token2,C202\n",
			[]string{"2:row.columns-shifted:serial number"},
			[2]string{token.HiddenCell(b64Seed), "ada@contoso.example"}},
		{"graph csv, seed in the model", "serialNumber,secretKey,timeIntervalInSeconds,manufacturer,model,hashFunction\nSN-1," + seedB + ",30,Token2," + lower + ",hmacsha1\n",
			[]string{"2:row.columns-shifted:model"},
			[2]string{"SN-1", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := read(tt.input, Options{})
			if r.err != nil {
				t.Fatalf("Read: %v", r.err)
			}
			if len(r.recs) != 0 || r.sum.Invalid != 1 {
				t.Fatalf("the row was accepted: %d records, summary %+v", len(r.recs), r.sum)
			}
			var got []string
			for _, p := range r.probs {
				got = append(got, fmt.Sprintf("%d:%s:%s", p.Line, p.Code, p.Field))
				if p.Serial != tt.shown[0] || p.UserPrincipalName != tt.shown[1] {
					t.Errorf("%s names the row %q / %q, want %q / %q", p.Code, p.Serial, p.UserPrincipalName, tt.shown[0], tt.shown[1])
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems = %q, want %q", got, tt.want)
			}
			var texts []string
			for _, p := range r.probs {
				texts = append(texts, p.Message, p.String(), p.Serial, p.UserPrincipalName)
			}
			all := strings.ToLower(strings.Join(texts, "\n"))
			for _, seed := range []string{seedA, seedB, hexSeed, b64Seed} {
				if strings.Contains(all, strings.ToLower(seed)) {
					t.Errorf("a seed is in the problems: %s", all)
				}
			}
		})
	}
	// Real public values pass: serials, models and makers as vendors write them.
	for _, ok := range []string{"8659612000101", "Token2", "C202", "Feitian Technologies Co., Ltd.", "FT-00001234",
		"OATH-TOTP", "miniOTP-3", "c200", "YubiKey 5 NFC", "0123456789ABCDEF"} {
		if _, bad := token.SecretLike(ok); bad {
			t.Errorf("%q is taken for a seed", ok)
		}
	}
}

// TestLongHeader: a header over 64 KiB (thousands of extra columns) is read, the extra columns
// ignored; one over 1 MiB is a file problem that says why.
func TestLongHeader(t *testing.T) {
	var h, pad strings.Builder
	h.WriteString("upn,serial number,secret key,time interval,manufacturer,model")
	for i := range 5000 {
		fmt.Fprintf(&h, ",vendor extra column %04d", i)
		pad.WriteString(",")
	}
	if h.Len() <= 64<<10 {
		t.Fatalf("header is only %d bytes", h.Len())
	}
	input := h.String() + "\r\nada@contoso.example,SN-1," + seedA + ",30,Token2,C202" + pad.String() + "\r\n"
	r := read(input, Options{})
	if r.err != nil || len(r.recs) != 1 || r.recs[0].Token.Serial != "SN-1" || len(r.probs) != 0 {
		t.Fatalf("long header: err %v, %d records, problems %v", r.err, len(r.recs), r.probs)
	}
	huge := strings.Repeat("x,", 600<<10) + "\nada@contoso.example,SN-1," + seedA + ",30,Token2,C202\n"
	r = read(huge, Options{})
	var fe *FileError
	if !errors.As(r.err, &fe) || fe.Problem.Code != CodeFileHeaderTooLong || !strings.Contains(fe.Problem.Message, "1 MiB") {
		t.Fatalf("huge header: %v", r.err)
	}
}

// TestAdviceForItsReader: a hex seed read as Base32 tells the CLI user the flag and the blob
// uploader the metadata hint; an encrypted PSKC without its key tells each what to set.
func TestAdviceForItsReader(t *testing.T) {
	input := entraHeader + "ada@contoso.example,SN-1,1234567890abcdef1234567890abcdef,30,Token2,C202\n"
	for adv, want := range map[Advice][2]string{
		AdviceCLI:    {"--secret-encoding hex", "--metadata"},
		AdviceUpload: {"--metadata secretencoding=hex", "--secret-encoding"},
	} {
		r := read(input, Options{Advice: adv})
		if len(r.probs) != 1 || !strings.Contains(r.probs[0].Message, want[0]) || strings.Contains(r.probs[0].Message, want[1]) {
			t.Errorf("advice %d: %v, want %q and not %q", adv, r.probs, want[0], want[1])
		}
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "seedfiles", "pythonpskc-pbkdf2.xml"))
	if err != nil {
		t.Skip(err)
	}
	r := read(string(b), Options{Advice: AdviceUpload})
	var fe *FileError
	if !errors.As(r.err, &fe) || fe.Problem.Code != CodePSKCKeyMissing || strings.Contains(fe.Problem.Message, "--pskc") ||
		!strings.Contains(fe.Problem.Message, "OATHPIPE_PSKC_PASSWORD") {
		t.Errorf("upload advice for a PSKC password: %v", r.err)
	}
}
