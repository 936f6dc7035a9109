package envelope

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const fixtures = "../../testdata/seedfiles/envelope"

var zipPassword = "zip fixture password"

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keys(t testing.TB, passphrase string, names ...string) *PGPKeys {
	t.Helper()
	var armored [][]byte
	for _, n := range names {
		armored = append(armored, read(t, "key-"+n+".asc"))
	}
	k, err := ParsePGPKeys(armored, []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type got struct {
	names  []string
	layers [][]Kind
	bodies []string
}

func open(data []byte, name string, k Keys, lim Limits) (got, error) {
	var g got
	err := Open(Source{Name: name, R: bytes.NewReader(data), At: bytes.NewReader(data), Size: int64(len(data))}, k, lim,
		func(in Inner) error {
			b, err := io.ReadAll(in.R)
			if err != nil {
				return err
			}
			g.names = append(g.names, in.Name)
			g.layers = append(g.layers, in.Layers)
			g.bodies = append(g.bodies, string(b))
			return nil
		})
	return g, err
}

func codeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func TestOpenFixtures(t *testing.T) {
	clean := string(must(os.ReadFile("../../testdata/demo/token2-batch-clean.csv")))
	mistakes := string(must(os.ReadFile("../../testdata/demo/token2-batch-mistakes.csv")))
	all := keys(t, "", "cv25519", "rsa")
	pw := []string{"not this one", zipPassword}
	tests := []struct {
		file     string
		keys     Keys
		code     string
		names    []string
		layers   []Kind
		contents []string
	}{
		{file: "clean.csv.rsa.gpg", keys: Keys{PGP: all}, names: []string{"clean.csv.rsa.gpg"}, layers: []Kind{KindPGP}, contents: []string{clean}},
		{file: "clean.csv.rsa.asc", keys: Keys{PGP: all}, names: []string{"clean.csv.rsa.asc"}, layers: []Kind{KindPGP}, contents: []string{clean}},
		{file: "clean.csv.cv25519.gpg", keys: Keys{PGP: all}, names: []string{"clean.csv.cv25519.gpg"}, layers: []Kind{KindPGP}, contents: []string{clean}},
		{file: "clean.csv.cv25519.asc", keys: Keys{PGP: keys(t, "", "cv25519")}, names: []string{"clean.csv.cv25519.asc"}, layers: []Kind{KindPGP}, contents: []string{clean}},
		{file: "clean.csv.signed.gpg", keys: Keys{PGP: all}, names: []string{"clean.csv.signed.gpg"}, layers: []Kind{KindPGP}, contents: []string{clean}},
		{file: "clean.csv.rsa.gpg", keys: Keys{PGP: keys(t, "", "cv25519")}, code: CodePGPNoKey},
		{file: "clean.csv.other.gpg", keys: Keys{PGP: all}, code: CodePGPNoKey},
		{file: "clean.csv.other.gpg", code: CodePGPNoKey},
		{file: "clean.csv.protected.gpg", keys: Keys{PGP: keys(t, "", "protected")}, code: CodePGPPassphrase},
		{file: "clean.csv.protected.gpg", keys: Keys{PGP: keys(t, "fixture passphrase", "protected")}, names: []string{"clean.csv.protected.gpg"}, layers: []Kind{KindPGP}, contents: []string{clean}},
		{file: "zipcrypto.zip", keys: Keys{ZipPasswords: pw}, names: []string{"zipcrypto.zip!batch-a.csv"}, layers: []Kind{KindZip}, contents: []string{clean}},
		{file: "zipcrypto-stream.zip", keys: Keys{ZipPasswords: pw}, names: []string{"zipcrypto-stream.zip!batch-a.csv"}, layers: []Kind{KindZip}, contents: []string{clean}},
		{file: "zipcrypto-7z.zip", keys: Keys{ZipPasswords: pw}, names: []string{"zipcrypto-7z.zip!batch-a.csv"}, layers: []Kind{KindZip}, contents: []string{clean}},
		{file: "zipcrypto-stream.zip", keys: Keys{ZipPasswords: []string{"wrong"}}, code: CodeZipPassword},
		{file: "aes256.zip", keys: Keys{ZipPasswords: pw}, names: []string{"aes256.zip!batch-a.csv"}, layers: []Kind{KindZip}, contents: []string{clean}},
		{file: "aes128.zip", keys: Keys{ZipPasswords: pw}, names: []string{"aes128.zip!batch-a.csv"}, layers: []Kind{KindZip}, contents: []string{clean}},
		{file: "aes256-stored.zip", keys: Keys{ZipPasswords: pw}, names: []string{"aes256-stored.zip!batch-a.csv"}, layers: []Kind{KindZip}, contents: []string{clean}},
		{file: "plain.zip", names: []string{"plain.zip!batch-a.csv", "plain.zip!batch-b.csv"}, layers: []Kind{KindZip}, contents: []string{clean, mistakes}},
		{file: "aes256.zip.gpg", keys: Keys{PGP: all, ZipPasswords: pw}, names: []string{"aes256.zip.gpg!batch-a.csv"}, layers: []Kind{KindPGP, KindZip}, contents: []string{clean}},
		{file: "aes256.zip.gpg", keys: Keys{PGP: all}, code: CodeZipPassword},
		{file: "zipcrypto.zip", keys: Keys{ZipPasswords: []string{"wrong"}}, code: CodeZipPassword},
		{file: "aes256.zip", keys: Keys{ZipPasswords: []string{"wrong"}}, code: CodeZipPassword},
		{file: "aes128.zip", code: CodeZipPassword},
		{file: "nested.zip", keys: Keys{ZipPasswords: pw}, code: CodeNested},
		{file: "key-cv25519.pub.asc", names: []string{"key-cv25519.pub.asc"}, contents: []string{string(read(t, "key-cv25519.pub.asc"))}},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.code, func(t *testing.T) {
			g, err := open(read(t, tt.file), tt.file, tt.keys, Limits{})
			if c := codeOf(err); c != tt.code {
				t.Fatalf("code %q, want %q (%v)", c, tt.code, err)
			}
			if tt.code != "" {
				return
			}
			if strings.Join(g.names, " ") != strings.Join(tt.names, " ") {
				t.Errorf("names %q, want %q", g.names, tt.names)
			}
			for i := range g.bodies {
				if g.bodies[i] != tt.contents[i] {
					t.Errorf("%s: content differs from the plain file", g.names[i])
				}
				if k := g.layers[i]; len(k) != len(tt.layers) || (len(k) > 0 && k[len(k)-1] != tt.layers[len(tt.layers)-1]) {
					t.Errorf("%s: layers %v, want %v", g.names[i], k, tt.layers)
				}
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A damaged file is a file-level problem, reported at the latest by the last Read.
func TestOpenDamaged(t *testing.T) {
	all := keys(t, "", "cv25519", "rsa")
	pw := []string{zipPassword}
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x55
		return c
	}
	gpg := read(t, "clean.csv.rsa.gpg")
	asc := read(t, "clean.csv.cv25519.asc")
	aesZip := read(t, "aes256.zip")
	zc := read(t, "zipcrypto.zip")
	tests := []struct {
		name string
		data []byte
		code string
	}{
		{"pgp truncated", gpg[:len(gpg)-40], CodePGPCorrupt},
		{"pgp altered body", flip(gpg, len(gpg)-30), CodePGPCorrupt},
		{"armor truncated", asc[:len(asc)/2], CodePGPCorrupt},
		{"zip truncated", aesZip[:len(aesZip)-30], CodeZipCorrupt},
		{"aes zip altered ciphertext", flip(aesZip, 120), CodeZipCorrupt},
		{"zipcrypto altered ciphertext", flip(zc, 200), CodeZipCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := open(tt.data, tt.name, Keys{PGP: all, ZipPasswords: pw}, Limits{})
			if c := codeOf(err); c != tt.code {
				t.Fatalf("code %q, want %q (%v)", c, tt.code, err)
			}
		})
	}
}

func TestOpenCaps(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("bomb.csv")
	zeros := make([]byte, 1<<20)
	for range 8 {
		w.Write(zeros)
	}
	w, _ = zw.Create("second.csv")
	w.Write([]byte("x"))
	zw.Close()
	bomb := buf.Bytes()
	tests := []struct {
		name string
		lim  Limits
		code string
	}{
		{"ratio", Limits{}, CodeTooLarge},
		{"size from the directory", Limits{MaxExpanded: 1 << 20, MaxRatio: 1 << 30}, CodeTooLarge},
		{"entries", Limits{MaxRatio: 1 << 30, MaxEntries: 1}, CodeTooLarge},
		{"within the caps", Limits{MaxRatio: 1 << 30}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := open(bomb, "bomb.zip", Keys{}, tt.lim)
			if c := codeOf(err); c != tt.code {
				t.Fatalf("code %q, want %q (%v)", c, tt.code, err)
			}
		})
	}
	// The caps hold for the archive as a whole: four files of 1 MiB under a 3 MiB cap.
	var four bytes.Buffer
	zw = zip.NewWriter(&four)
	for i := range 4 {
		w, _ := zw.Create(fmt.Sprintf("part%d.csv", i))
		w.Write(zeros)
	}
	zw.Close()
	if _, err := open(four.Bytes(), "four.zip", Keys{}, Limits{MaxExpanded: 3 << 20, MaxRatio: 1 << 30}); codeOf(err) != CodeTooLarge {
		t.Errorf("archive total: %v", err)
	}
	if _, err := open(four.Bytes(), "four.zip", Keys{}, Limits{MaxExpanded: 8 << 20, MaxRatio: 1 << 30}); err != nil {
		t.Errorf("archive within its total: %v", err)
	}
	// A zip read from a stream only is held in memory, within its cap.
	err := Open(Source{Name: "s.zip", R: bytes.NewReader(bomb)}, Keys{}, Limits{MaxInMemory: 1 << 10}, func(Inner) error { return nil })
	if c := codeOf(err); c != CodeTooLarge {
		t.Fatalf("stream zip: %q", c)
	}
	zc := read(t, "zipcrypto.zip")
	err = Open(Source{Name: "s.zip", R: bytes.NewReader(zc)}, Keys{ZipPasswords: []string{zipPassword}}, Limits{}, func(in Inner) error {
		_, err := io.Copy(io.Discard, in.R)
		return err
	})
	if err != nil {
		t.Fatalf("stream zip: %v", err)
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		head string
		kind Kind
		ok   bool
	}{
		{"upn,serial number,secret key\n", "", false},
		{"\xef\xbb\xbfupn,serial", "", false},
		{"<?xml version=\"1.0\"?>", "", false},
		{"PK\x03\x04rest", KindZip, true},
		{"\n-----BEGIN PGP MESSAGE-----\n", KindPGP, true},
		{"-----BEGIN PGP PUBLIC KEY BLOCK-----\n", "", false},
		{"\x85\x01\x0c\x03", KindPGP, true}, // legacy PKESK v3
		{"\xc1\x5e\x03", KindPGP, true},     // new-format PKESK v3
		{"\xc3\x0d\x04", KindPGP, true},     // SKESK v4
		{"\xc3\x83rger", "", false},         // "Ã" then text: no SKESK version
		{string(read(t, "clean.csv.rsa.gpg")[:64]), KindPGP, true},
		{string(read(t, "clean.csv.cv25519.gpg")[:64]), KindPGP, true},
	}
	for _, tt := range tests {
		k, ok := Detect([]byte(tt.head))
		if k != tt.kind || ok != tt.ok {
			t.Errorf("Detect(%q) = %q %v, want %q %v", tt.head, k, ok, tt.kind, tt.ok)
		}
	}
}

func TestParsePGPKeys(t *testing.T) {
	if _, err := ParsePGPKeys([][]byte{read(t, "key-cv25519.pub.asc")}, nil); err == nil {
		t.Error("a public key was taken as a private key")
	}
	if _, err := ParsePGPKeys([][]byte{[]byte("not a key")}, nil); err == nil {
		t.Error("garbage was taken as a key")
	}
	if _, err := ParsePGPKeys([][]byte{read(t, "key-protected.asc")}, []byte("wrong")); err == nil {
		t.Error("a wrong passphrase unlocked the key")
	}
}

func FuzzOpen(f *testing.F) {
	for _, n := range []string{"clean.csv.rsa.gpg", "clean.csv.cv25519.asc", "aes256.zip", "zipcrypto.zip", "plain.zip", "aes256.zip.gpg"} {
		f.Add(read(f, n))
	}
	f.Add([]byte("upn,serial number\n"))
	k := keys(f, "", "cv25519", "rsa")
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := open(data, "fuzz", Keys{PGP: k, ZipPasswords: []string{zipPassword}}, Limits{MaxExpanded: 4 << 20, MaxInMemory: 1 << 20})
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("not an *Error: %v", err)
		}
	})
}

func TestEncryptRoundTripAndDeterminism(t *testing.T) {
	for _, name := range []string{"cv25519", "rsa"} {
		t.Run(name, func(t *testing.T) {
			k := keys(t, "", name)
			enc := func(nonce string, content string) []byte {
				var b bytes.Buffer
				w, err := Encrypt(&b, k, "batch.csv", []byte(nonce))
				if err != nil {
					t.Fatal(err)
				}
				w.Write([]byte(content))
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				return b.Bytes()
			}
			a := enc("imp-1", "upn,serial number\n")
			if bytes.Contains(a, []byte("serial")) {
				t.Fatal("plaintext in the message")
			}
			g, err := open(a, "r.gpg", Keys{PGP: k}, Limits{})
			if err != nil || len(g.bodies) != 1 || g.bodies[0] != "upn,serial number\n" {
				t.Fatalf("round trip: %v %q", err, g.bodies)
			}
			// Go's RSA encryption takes no random source of the caller's, so only a Curve25519
			// key (what oathpipe pgp-keygen makes) gives the same message again.
			if b := enc("imp-1", "upn,serial number\n"); name == "cv25519" && !bytes.Equal(a, b) {
				t.Error("the same nonce and content gave another message")
			}
			if b := enc("imp-2", "upn,serial number\n"); bytes.Equal(a, b) {
				t.Error("another nonce gave the same message")
			}
			if _, err := open(a, "r.gpg", Keys{PGP: keys(t, "", "other")}, Limits{}); codeOf(err) != CodePGPNoKey {
				t.Errorf("another key opened it: %v", err)
			}
		})
	}
}

func FuzzZip(f *testing.F) {
	for _, n := range []string{"aes256.zip", "aes128.zip", "aes256-stored.zip", "zipcrypto.zip", "plain.zip", "nested.zip"} {
		f.Add(read(f, n))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := open(data, "fuzz.zip", Keys{ZipPasswords: []string{"wrong", zipPassword}}, Limits{MaxExpanded: 4 << 20, MaxInMemory: 1 << 20})
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("not an *Error: %v", err)
		}
	})
}

func FuzzPGP(f *testing.F) {
	for _, n := range []string{"clean.csv.cv25519.gpg", "clean.csv.cv25519.asc", "clean.csv.other.gpg", "aes256.zip.gpg"} {
		f.Add(read(f, n))
	}
	k := keys(f, "", "cv25519")
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := open(data, "fuzz.gpg", Keys{PGP: k, ZipPasswords: []string{zipPassword}}, Limits{MaxExpanded: 4 << 20, MaxInMemory: 1 << 20})
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("not an *Error: %v", err)
		}
	})
}
