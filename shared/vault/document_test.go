package vault

import (
	"bytes"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/token"
)

func TestDocumentRoundTrip(t *testing.T) {
	seeds := []token.Seed{
		{Secret: []byte("12345678901234567890"), Hash: token.SHA1, Digits: 6, Period: 30},
		{Secret: []byte{0}, Hash: token.SHA256, Digits: 8, Period: 60},
		{Secret: bytes.Repeat([]byte{0xab}, 64), Hash: token.SHA512, Digits: 10, Period: 3600},
	}
	for _, s := range seeds {
		v, err := encodeDocument(token.Token{Serial: " 1 ", Manufacturer: " Token2 "}, s)
		if err != nil {
			t.Fatal(err)
		}
		d, got, err := decodeDocument(v)
		if err != nil || !sameSeed(got, s) || d.Serial != "1" || d.Manufacturer != "Token2" {
			t.Errorf("round trip of %v: %+v %v %v", s, d, got, err)
		}
	}
	for _, bad := range []string{"", "{}", `{"v":2}`, `{"v":1,"secret":"!!","hash":"hmacsha1","digits":6,"period":30}`,
		`{"v":1,"secret":"GEZDG","hash":"md5","digits":6,"period":30}`, `{"v":1,"secret":"","hash":"hmacsha1","digits":6,"period":30}`} {
		if _, _, err := decodeDocument(bad); err == nil {
			t.Errorf("decodeDocument(%q) accepted", bad)
		}
	}
}

func FuzzDecodeDocument(f *testing.F) {
	f.Add(`{"v":1,"manufacturer":"Token2","serial":"1","secret":"GEZDGNBVGY3TQOJQ","hash":"hmacsha1","digits":6,"period":30}`)
	f.Add(`{"v":1,"secret":"gezdgnbvgy3tqojq====","hash":"hmacsha256","digits":8,"period":60}`)
	f.Add(`{"v":1,"secret":"SECRETVALUEXX","hash":"hmacsha1","digits":6`)
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, value string) {
		d, s, err := decodeDocument(value)
		if err != nil {
			// Errors must never quote the value.
			if len(value) > 3 && strings.Contains(err.Error(), value) {
				t.Fatalf("error %q quotes the value", err)
			}
			return
		}
		if checkSeed(s) != nil {
			t.Fatalf("accepted an unusable seed %v", s)
		}
		// What decodes re-encodes to a document that decodes to the same seed.
		v2, err := encodeDocument(token.Token{Serial: d.Serial, Manufacturer: d.Manufacturer}, s)
		if err != nil {
			t.Fatal(err)
		}
		if _, s2, err := decodeDocument(v2); err != nil || !sameSeed(s, s2) {
			t.Fatalf("re-encoded document does not round-trip: %v", err)
		}
	})
}
