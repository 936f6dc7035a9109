package token

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func TestSecretLikeAndShownCell(t *testing.T) {
	raw := []byte("0123456789abcdef0123")
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw)
	tests := []struct {
		field  CellField
		cell   string
		secret bool   // SecretLike
		shown  string // "" : hidden (unless the cell is empty)
	}{
		{CellSerial, "8659612000101", false, "8659612000101"},
		{CellSerial, " SN-1 ", false, "SN-1"},
		{CellSerial, b32, true, ""},
		{CellSerial, strings.ToLower(b32), true, ""},
		{CellSerial, base32.StdEncoding.EncodeToString(raw), true, ""}, // padded
		{CellModel, hex.EncodeToString(raw), true, ""},
		{CellModel, strings.ToUpper(hex.EncodeToString(raw)), true, ""},
		{CellModel, "0x" + hex.EncodeToString(raw), true, ""},
		{CellModel, "30313233 34353637 38396162 63646566", true, ""}, // grouped hex, 16 bytes
		{CellManufacturer, base64.StdEncoding.EncodeToString(raw), true, ""},
		{CellManufacturer, base64.RawURLEncoding.EncodeToString(raw[:16]), true, ""},
		{CellManufacturer, "Feitian Technologies Co., Ltd.", false, "Feitian Technologies Co., Ltd."},
		{CellModel, "C202", false, "C202"},
		{CellModel, hex.EncodeToString(raw[:15]), true, ""},                            // 15 bytes as hex, but 22 bytes read as base64
		{CellModel, hex.EncodeToString(raw[:10]), false, hex.EncodeToString(raw[:10])}, // 20 characters: too short for any seed
		{CellSerial, "865961200010186596120", false, "865961200010186596120"},          // 21 digits
		{CellSerial, "8659612000101865961200", true, ""},                               // 22 digits read as base64: 16 bytes
		{CellModel, "bad\x01model", false, ""},
		{CellModel, "", false, ""},
		{CellUPN, "ada@contoso.example", false, "ada@contoso.example"},
		{CellUPN, "pat.partner_fabrikam.example#EXT#@contoso.example", false, "pat.partner_fabrikam.example#EXT#@contoso.example"},
		{CellUPN, b32, true, ""},
		{CellUPN, "Margaret Hamilton <margaret@contoso>", false, ""},
		{CellUPN, "a+b@contoso.com", false, ""},
	}
	for _, tt := range tests {
		_, secret := SecretLike(tt.cell)
		if secret != tt.secret {
			t.Errorf("SecretLike(%q) = %v, want %v", tt.cell, secret, tt.secret)
		}
		got := ShownCell(tt.field, tt.cell)
		want := tt.shown
		if want == "" && strings.TrimSpace(tt.cell) != "" {
			want = HiddenCell(tt.cell)
			if !IsHidden(got) {
				t.Errorf("ShownCell(%q) = %q, want a hidden marker", tt.cell, got)
			}
		}
		if got != want {
			t.Errorf("ShownCell(%d, %q) = %q, want %q", tt.field, tt.cell, got, want)
		}
	}
	// The marker carries the fingerprint of what the cell decodes to: the seed's own.
	if got, want := HiddenCell(strings.ToLower(b32)), HiddenPrefix+Fingerprint(raw)+"]"; got != want {
		t.Errorf("HiddenCell = %q, want %q", got, want)
	}
}

func TestValidUPN(t *testing.T) {
	for s, want := range map[string]bool{
		"ada@contoso.example": true, "o'brien@contoso.example": true, "a_b-c.d!#^~@x.co": true,
		"x#EXT#@contoso.onmicrosoft.com": true,
		"a+b@contoso.com":                false, // '+' is not in Entra's UPN alphabet (the API once let it through)
		"a@b":                            false, "@contoso.com": false, "a@@contoso.com": false, "a.@contoso.com": false,
		".a@contoso.com": false, "a..b@contoso.com": false, "a@-x.com": false, "a@x-.com": false, "a@x..com": false,
		"a b@contoso.com": false, "ada@contoso.example ": false, strings.Repeat("a", 65) + "@x.com": false,
		strings.Repeat("a", 64) + "@" + strings.Repeat("d", 44) + ".com": true,  // 113 in all, 48 after the @
		"a@" + strings.Repeat("d", 45) + ".com":                          false, // 49 characters after the @ (Entra allows 48)
	} {
		if got := ValidUPN(s); got != want {
			t.Errorf("ValidUPN(%q) = %v, want %v", s, got, want)
		}
	}
}

// FuzzShownCell: a shown cell is the trimmed input only when it passes its field's check, and a
// cell that decodes like a seed is never shown.
func FuzzShownCell(f *testing.F) {
	for _, s := range []string{"8659612000101", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "ada@contoso.example", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM=", ""} {
		f.Add(s, 0)
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, cell string, field int) {
		fl := CellField(field & 3)
		got := ShownCell(fl, cell)
		if _, secret := SecretLike(cell); secret && !IsHidden(got) {
			t.Fatalf("a seed-like cell %q is shown as %q", cell, got)
		}
		if got != "" && !IsHidden(got) && got != strings.TrimSpace(cell) {
			t.Fatalf("ShownCell(%q) = %q", cell, got)
		}
	})
}
