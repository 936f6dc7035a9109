package vault

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// NamePrefix starts every secret name oathpipe writes, so operators can tell its secrets apart.
const NamePrefix = "oath-"

// nameDomain separates this scheme's hashes from any other use of SHA-256; bump it (and
// migrate) if the scheme ever changes.
const nameDomain = "oathpipe/seed-name/v1"

// NormalizeManufacturer is how manufacturers are matched: surrounding white space trimmed,
// case ignored ("Token2", " token2 " and "TOKEN2" are the same maker).
func NormalizeManufacturer(m string) string { return strings.ToLower(strings.TrimSpace(m)) }

// NormalizeSerial is how serials are matched: surrounding white space trimmed, case kept
// (serials are compared exactly otherwise).
func NormalizeSerial(s string) string { return strings.TrimSpace(s) }

// SecretName returns the Key Vault secret name holding the seed of the token (manufacturer,
// serial): "oath-" followed by the 64 lower-case hex digits of SHA-256 over a domain string and
// the length-prefixed normalized manufacturer and serial. The name is valid for Key Vault (69
// characters of [0-9a-z-], so Key Vault's case-insensitivity cannot merge two names), the same
// for the same token however its manufacturer is cased, different across manufacturers, and
// works for any serial, whatever characters it holds. It cannot be turned back into the serial:
// the secret's tags say which token it belongs to.
func SecretName(manufacturer, serial string) string {
	m, s := NormalizeManufacturer(manufacturer), NormalizeSerial(serial)
	h := sha256.New()
	// Length prefixes make the encoding of the pair unambiguous: ("ab","c") and ("a","bc")
	// hash different inputs.
	h.Write([]byte(nameDomain + "\x00" + strconv.Itoa(len(m)) + ":" + m + strconv.Itoa(len(s)) + ":" + s))
	return NamePrefix + hex.EncodeToString(h.Sum(nil))
}
