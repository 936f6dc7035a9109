package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxKeyBytes keeps encoded keys well inside Table storage's 1 KiB limit for PartitionKey and
// RowKey, leaving room for the short prefixes the ledger adds.
const maxKeyBytes = 700

// EncodeKey makes s usable as a Table storage PartitionKey or RowKey, reversibly (DecodeKey).
//
// Table storage refuses '/', '\', '#', '?' and the control characters U+0000–U+001F and
// U+007F–U+009F in keys. EncodeKey writes each of those, and '%' and '~' themselves, as %XX
// per UTF-8 byte (upper-case hex), and does the same for bytes that are not valid UTF-8.
// Everything else — letters in any script, digits, spaces, quotes, dots — is kept as is, so a
// key stays readable in Storage Explorer: "batch 7/Ω #1.csv" becomes "batch 7%2FΩ %231.csv".
// '~' is escaped so that keys the ledger derives from a hash ("~" + hex, see keyFor) can never
// equal an encoded name.
func EncodeKey(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || mustEscape(r) {
			for j := 0; j < size; j++ {
				fmt.Fprintf(&b, "%%%02X", s[i+j])
			}
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func mustEscape(r rune) bool {
	switch {
	case r == '/', r == '\\', r == '#', r == '?', r == '%', r == '~':
		return true
	case r <= 0x1F, r >= 0x7F && r <= 0x9F:
		return true
	}
	return false
}

// DecodeKey reverses EncodeKey. It fails on a malformed escape.
func DecodeKey(k string) (string, error) {
	if !strings.Contains(k, "%") {
		return k, nil
	}
	b := make([]byte, 0, len(k))
	for i := 0; i < len(k); i++ {
		if k[i] != '%' {
			b = append(b, k[i])
			continue
		}
		if i+2 >= len(k) {
			return "", fmt.Errorf("decode key %q: truncated escape at byte %d", k, i)
		}
		v, err := hex.DecodeString(k[i+1 : i+3])
		if err != nil {
			return "", fmt.Errorf("decode key %q: bad escape at byte %d", k, i)
		}
		b = append(b, v[0])
		i += 2
	}
	return string(b), nil
}

// keyFor is EncodeKey, except that a name whose encoding would be too long for a key becomes
// "~" + the SHA-256 hex of the name; entities keyed that way also store the name itself, and
// readers compare it.
func keyFor(s string) string {
	k := EncodeKey(s)
	if len(k) <= maxKeyBytes {
		return k
	}
	sum := sha256.Sum256([]byte(s))
	return "~" + hex.EncodeToString(sum[:])
}
