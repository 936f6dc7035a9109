package vault_test

import (
	"regexp"
	"testing"

	"github.com/oathpipe/oathpipe/shared/vault"
)

var validName = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)

func TestSecretName(t *testing.T) {
	tests := []struct {
		m1, s1, m2, s2 string
		same           bool
	}{
		{"Token2", "123", "token2", "123", true},
		{" Token2 ", " 123 ", "TOKEN2", "123", true},
		{"Token2", "123", "Feitian", "123", false},
		{"Token2", "abc", "Token2", "ABC", false}, // serials keep their case
		{"ab", "c", "a", "bc", false},             // the pair is encoded unambiguously
		{"Token2", "12 3", "Token2", "123", false},
		{"Token2", "a/b", "Token2", "a_b", false},
	}
	for _, tt := range tests {
		n1, n2 := vault.SecretName(tt.m1, tt.s1), vault.SecretName(tt.m2, tt.s2)
		if (n1 == n2) != tt.same {
			t.Errorf("SecretName(%q,%q)=%s, SecretName(%q,%q)=%s; same=%v, want %v", tt.m1, tt.s1, n1, tt.m2, tt.s2, n2, n1 == n2, tt.same)
		}
		if !validName.MatchString(n1) {
			t.Errorf("SecretName(%q,%q) = %q is not a valid Key Vault name", tt.m1, tt.s1, n1)
		}
	}
	// Pinned: changing the scheme orphans every stored seed.
	const pinned = "oath-8322e153206dafc0751d375b25903ed79e0f36fac6b0536355ce24e267dd8079"
	if got := vault.SecretName("token2", " 8659612000001"); got != pinned {
		t.Errorf("SecretName(token2, 8659612000001) = %q, want %q", got, pinned)
	}
}

func FuzzSecretName(f *testing.F) {
	f.Add("Token2", "123", "token2", "123")
	f.Add("ab", "c", "a", "bc")
	f.Add("", "", " ", "\x00")
	f.Add("Token2", "ü/é 1", "Token2", "Ü/É 1")
	f.Fuzz(func(t *testing.T, m1, s1, m2, s2 string) {
		n1, n2 := vault.SecretName(m1, s1), vault.SecretName(m2, s2)
		for _, n := range []string{n1, n2} {
			if !validName.MatchString(n) {
				t.Fatalf("%q is not a valid Key Vault secret name", n)
			}
		}
		sameToken := vault.NormalizeManufacturer(m1) == vault.NormalizeManufacturer(m2) && vault.NormalizeSerial(s1) == vault.NormalizeSerial(s2)
		// Key Vault compares names case-insensitively, so compare them that way too.
		if sameName := equalFold(n1, n2); sameName != sameToken {
			t.Fatalf("(%q,%q)→%s and (%q,%q)→%s: same name %v, same token %v", m1, s1, n1, m2, s2, n2, sameName, sameToken)
		}
	})
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
