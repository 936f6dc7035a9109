// Package otp computes RFC 4226 (HOTP) and RFC 6238 (TOTP) one-time codes from a token's seed.
//
// It is written on the standard library rather than github.com/pquerna/otp: that library takes
// the secret only as a Base32 string, so every call would copy the raw seed into an immutable
// string that cannot be cleared; the algorithm itself is a dozen lines and is pinned here by the
// RFC test vectors.
package otp

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"hash"
	"time"

	"github.com/oathpipe/oathpipe/shared/token"
)

// Code returns the TOTP code of seed at time t (RFC 6238, T0 = 0), zero-padded to seed.Digits.
// It fails with a *token.Error of kind KindInvalid when the seed cannot make codes (empty
// secret, unknown hash, digits outside 6–8, period not positive, t before 1970).
func Code(seed token.Seed, t time.Time) (string, error) {
	if seed.Period <= 0 {
		return "", token.Errorf(token.KindInvalid, "otp: period %d s is not positive", seed.Period)
	}
	if t.Unix() < 0 {
		return "", token.Errorf(token.KindInvalid, "otp: time %s is before 1970", t.UTC().Format(time.RFC3339))
	}
	return HOTP(seed.Secret, seed.Hash, seed.Digits, Counter(seed.Period, t))
}

// HOTP returns the RFC 4226 code of secret at counter, using the HMAC hash h and digits digits.
func HOTP(secret []byte, h token.Hash, digits int, counter uint64) (string, error) {
	newHash, err := hashFunc(h)
	if err != nil {
		return "", err
	}
	if len(secret) == 0 {
		return "", token.Errorf(token.KindInvalid, "otp: empty secret")
	}
	if digits < 6 || digits > 8 {
		return "", token.Errorf(token.KindInvalid, "otp: %d digits (6 to 8 supported)", digits)
	}
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], counter)
	mac := hmac.New(newHash, secret)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	// Dynamic truncation, RFC 4226 section 5.3.
	off := sum[len(sum)-1] & 0x0f
	bin := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	mod := uint32(1)
	for range digits {
		mod *= 10
	}
	code := bin % mod
	buf := make([]byte, digits)
	for i := digits - 1; i >= 0; i-- {
		buf[i] = byte('0' + code%10)
		code /= 10
	}
	return string(buf), nil
}

// Counter returns the RFC 6238 time step number of t for a period of period seconds (T0 = 0).
// period must be positive.
func Counter(period int, t time.Time) uint64 {
	if period <= 0 || t.Unix() < 0 {
		return 0
	}
	return uint64(t.Unix()) / uint64(period)
}

// SecondsLeft returns how many whole seconds remain in t's time step, from period down to 1:
// a code computed now stays valid that long. It returns 0 when period is not positive.
func SecondsLeft(period int, t time.Time) int {
	if period <= 0 {
		return 0
	}
	s := t.Unix() % int64(period)
	if s < 0 {
		s += int64(period)
	}
	return period - int(s)
}

func hashFunc(h token.Hash) (func() hash.Hash, error) {
	switch h {
	case token.SHA1:
		return sha1.New, nil
	case token.SHA256:
		return sha256.New, nil
	case token.SHA512:
		return sha512.New, nil
	}
	return nil, token.Errorf(token.KindInvalid, "otp: unknown hash function %q", string(h))
}
