package ledger

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodeKey(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"tokens.csv", "tokens.csv"},
		{"batch 7/Ω #1.csv", "batch 7%2FΩ %231.csv"},
		{`a\b?c`, "a%5Cb%3Fc"},
		{"100%~", "100%25%7E"},
		{"tab\there", "tab%09here"},
		{"del\x7f", "del%7F"},
		{"c1\u0085", "c1%C2%85"},
		{"bad\xffutf8", "bad%FFutf8"},
		{"quote's", "quote's"},
		{"", ""},
	} {
		got := EncodeKey(c.in)
		if got != c.want {
			t.Errorf("EncodeKey(%q) = %q, want %q", c.in, got, c.want)
		}
		back, err := DecodeKey(got)
		if err != nil || back != c.in {
			t.Errorf("DecodeKey(%q) = %q, %v; want %q", got, back, err, c.in)
		}
	}
	for _, bad := range []string{"%", "%4", "%zz"} {
		if _, err := DecodeKey(bad); err == nil {
			t.Errorf("DecodeKey(%q) accepted a malformed escape", bad)
		}
	}
	long := strings.Repeat("x/", 400)
	if k := keyFor(long); !strings.HasPrefix(k, "~") || len(k) != 65 {
		t.Errorf("keyFor(long) = %q, want ~ + 64 hex", k)
	}
}

// validKey is Table storage's rule for PartitionKey and RowKey values.
func validKey(k string) bool {
	if len(k) > 1024 || !utf8.ValidString(k) {
		return false
	}
	for _, r := range k {
		if r == '/' || r == '\\' || r == '#' || r == '?' || r <= 0x1F || (r >= 0x7F && r <= 0x9F) {
			return false
		}
	}
	return true
}

func FuzzEncodeKey(f *testing.F) {
	for _, s := range []string{"", "a/b", "%41", "~", "\x00\x1f\u0085", "日本", "\xff\xfe", strings.Repeat("/", 600)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := EncodeKey(s)
		back, err := DecodeKey(k)
		if err != nil || back != s {
			t.Fatalf("round trip %q -> %q -> %q, %v", s, k, back, err)
		}
		if strings.HasPrefix(k, "~") {
			t.Fatalf("EncodeKey(%q) = %q starts with the hashed-key marker", s, k)
		}
		if kf := keyFor(s); !validKey(kf) {
			t.Fatalf("keyFor(%q) = %q is not a valid table key", s, kf)
		}
		_, _ = DecodeKey(s) // never panics on arbitrary input
	})
}
