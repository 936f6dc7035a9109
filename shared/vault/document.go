package vault

import (
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"strings"

	"github.com/oathpipe/oathpipe/shared/token"
)

// ContentType marks a secret whose value is an oathpipe seed document (version 1).
const ContentType = "application/vnd.oathpipe.totp+json;v=1"

// document is the secret value: everything needed to compute codes, plus the token it belongs
// to so a read can check it got the right one.
type document struct {
	V            int    `json:"v"`
	Manufacturer string `json:"manufacturer"`
	Serial       string `json:"serial"`
	Secret       string `json:"secret"` // upper-case unpadded Base32
	Hash         string `json:"hash"`
	Digits       int    `json:"digits"`
	Period       int    `json:"period"`
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func encodeDocument(t token.Token, s token.Seed) (string, error) {
	b, err := json.Marshal(document{
		V: 1, Manufacturer: strings.TrimSpace(t.Manufacturer), Serial: NormalizeSerial(t.Serial),
		Secret: b32.EncodeToString(s.Secret), Hash: string(s.Hash), Digits: s.Digits, Period: s.Period,
	})
	if err != nil {
		return "", errors.New("encode seed document")
	}
	return string(b), nil
}

// errNotSeed never carries the decoder's own message: that could quote part of the value.
var errNotSeed = errors.New("the secret is not an oathpipe seed document")

// decodeDocument parses a secret value. Its errors never quote the value.
func decodeDocument(value string) (document, token.Seed, error) {
	var d document
	if err := json.Unmarshal([]byte(value), &d); err != nil || d.V != 1 {
		return document{}, token.Seed{}, errNotSeed
	}
	secret, err := b32.DecodeString(strings.ToUpper(strings.TrimRight(d.Secret, "=")))
	if err != nil || len(secret) == 0 {
		return document{}, token.Seed{}, errNotSeed
	}
	s := token.Seed{Secret: secret, Hash: token.Hash(d.Hash), Digits: d.Digits, Period: d.Period}
	if err := checkSeed(s); err != nil {
		return document{}, token.Seed{}, errNotSeed
	}
	return d, s, nil
}

// checkSeed checks what the vault needs to compute codes later, not the vendor's rules.
func checkSeed(s token.Seed) error {
	switch {
	case len(s.Secret) == 0:
		return errors.New("the seed is empty")
	case len(s.Secret) > 1024:
		return errors.New("the seed is longer than 1024 bytes")
	case s.Hash != token.SHA1 && s.Hash != token.SHA256 && s.Hash != token.SHA512:
		return errors.New("the hash is not hmacsha1, hmacsha256 or hmacsha512")
	case s.Digits < 6 || s.Digits > 10:
		return errors.New("digits must be 6 to 10")
	case s.Period < 1 || s.Period > 3600:
		return errors.New("the period must be 1 to 3600 seconds")
	}
	return nil
}

// sameSeed reports whether two seeds compute the same codes.
func sameSeed(a, b token.Seed) bool {
	return subtle.ConstantTimeCompare(a.Secret, b.Secret) == 1 && a.Hash == b.Hash && a.Digits == b.Digits && a.Period == b.Period
}
