package token

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// MinSecretBytes is the shortest seed oathpipe accepts: 128 bits, RFC 4226 requirement R6. A
// public cell (serial, manufacturer, model) that decodes to this many bytes is taken for a seed
// in the wrong column.
const MinSecretBytes = 16

// CellField names the public cells of a seed-file row that outputs may show.
type CellField int

// The public cells. The secret key cell is never shown, whatever it holds.
const (
	CellSerial CellField = iota
	CellManufacturer
	CellModel
	CellUPN
)

// HiddenPrefix starts the marker that stands in for a cell that is not shown.
const HiddenPrefix = "[hidden: fingerprint "

var (
	b32pad    = base32.StdEncoding
	b64std    = base64.StdEncoding
	b64raw    = base64.RawStdEncoding
	b64url    = base64.URLEncoding
	b64urlRaw = base64.RawURLEncoding
)

// SecretLike reports whether cell (trimmed of white space) decodes to at least MinSecretBytes
// bytes as Base32 (either case, padded or not), hex (either case, spaces between groups
// allowed) or base64 (standard or URL alphabet, padded or not), the ways a seed is written. It
// returns the decoded bytes of the first encoding that fits, in that order. This is the one rule
// for "a seed in a public column": the seed file reader rejects such a row as shifted, and
// ShownCell hides such a cell from every output.
func SecretLike(cell string) ([]byte, bool) {
	s := strings.TrimSpace(cell)
	if len(s) < 22 { // the shortest encoding of 16 bytes: unpadded base64
		return nil, false
	}
	if b, ok := decodeBase32Cell(s); ok && len(b) >= MinSecretBytes {
		return b, true
	}
	if b, ok := decodeHexCell(s); ok && len(b) >= MinSecretBytes {
		return b, true
	}
	for _, enc := range []*base64.Encoding{b64std, b64raw, b64url, b64urlRaw} {
		if b, err := enc.DecodeString(s); err == nil && len(b) >= MinSecretBytes {
			return b, true
		}
	}
	return nil, false
}

func decodeBase32Cell(s string) ([]byte, bool) {
	u := strings.ToUpper(strings.TrimRight(s, "="))
	if n := len(u) % 8; n != 0 {
		u += strings.Repeat("=", 8-n)
	}
	b, err := b32pad.DecodeString(u)
	return b, err == nil
}

func decodeHexCell(s string) ([]byte, bool) {
	h := strings.ReplaceAll(s, " ", "")
	if strings.HasPrefix(h, "0x") || strings.HasPrefix(h, "0X") {
		h = h[2:]
	}
	b, err := hex.DecodeString(h)
	return b, err == nil
}

// ShownCell returns cell as reports, the ledger, the API, logs and the CLI may show it: the
// trimmed cell itself when it passes its own field's check (a UPN that ValidUPN accepts; a
// serial, manufacturer or model that is printable UTF-8 and not SecretLike), "" for an empty
// cell, and otherwise HiddenCell(cell). Use it for every cell of a row that was not accepted:
// its columns may not be where the header says.
func ShownCell(f CellField, cell string) string {
	s := strings.TrimSpace(cell)
	if s == "" {
		return ""
	}
	ok := printable(s)
	switch f {
	case CellUPN:
		ok = ok && ValidUPN(s)
	default:
		if _, secret := SecretLike(s); secret {
			ok = false
		}
	}
	if ok {
		return s
	}
	return HiddenCell(s)
}

// HiddenCell is the marker shown instead of a cell that fails its field's check:
// "[hidden: fingerprint 0123456789abcdef]", the Fingerprint of the bytes the cell decodes to
// (a seed's own fingerprint, when the cell holds one) or of the trimmed cell text when it
// decodes to nothing. An admin finds the row by its line and this fingerprint; no part of the
// cell can be read back from it.
func HiddenCell(cell string) string {
	s := strings.TrimSpace(cell)
	b, ok := SecretLike(s)
	if !ok {
		b = []byte(s)
	}
	return HiddenPrefix + Fingerprint(b) + "]"
}

// IsHidden reports whether s is a HiddenCell marker.
func IsHidden(s string) bool { return strings.HasPrefix(s, HiddenPrefix) && strings.HasSuffix(s, "]") }

// printable reports whether s is UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// ValidUPN reports whether s is a well-formed user principal name as Entra ID allows them:
// local@domain, the local part of A–Z a–z 0–9 and ' . - _ ! # ^ ~ (guest UPNs carry #EXT#),
// at most 64 characters, not starting or ending with a dot nor holding two in a row; the domain
// at most 48 characters, made of dot-separated labels of letters, digits and hyphens, with at
// least one dot; at most 113 characters in all. Source:
// Microsoft Entra "Password policies and account restrictions" (UserPrincipalName). This is the
// one UPN rule: the seed file reader and the HTTP API both use it.
func ValidUPN(s string) bool {
	at := strings.IndexByte(s, '@')
	if at <= 0 || at > 64 || len(s) > 113 || strings.IndexByte(s[at+1:], '@') >= 0 {
		return false
	}
	local, domain := s[:at], s[at+1:]
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return false
	}
	for i := 0; i < len(local); i++ {
		ch := local[i]
		switch {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9':
		case strings.IndexByte("'.-_!#^~", ch) >= 0:
		default:
			return false
		}
	}
	if len(domain) < 3 || len(domain) > 48 || strings.IndexByte(domain, '.') < 0 {
		return false
	}
	label := 0
	for i := 0; i < len(domain); i++ {
		switch ch := domain[i]; {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9':
			label++
		case ch == '-':
			if label == 0 || i == len(domain)-1 || domain[i+1] == '.' {
				return false
			}
			label++
		case ch == '.':
			if label == 0 {
				return false
			}
			label = 0
		default:
			return false
		}
	}
	return label > 0
}
