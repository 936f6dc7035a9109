// Package token holds oathpipe's domain vocabulary: a hardware OATH token's public facts, its
// secret seed, its state in Entra ID, and the typed errors every layer uses to tell callers
// whether a failure is worth retrying. It imports no Azure SDK, so every package may use it.
package token

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Hash is an HMAC hash function, spelled the way Microsoft Graph spells it.
type Hash string

// The hash functions oathpipe knows. Entra ID accepts SHA1 and SHA256 only; SHA512 exists for
// the code calculator and to reject vendor rows with a clear reason.
const (
	SHA1   Hash = "hmacsha1"
	SHA256 Hash = "hmacsha256"
	SHA512 Hash = "hmacsha512"
)

// Status is a hardware OATH token's state in the Entra ID inventory (Graph's words).
type Status string

// The documented states of a hardware OATH token.
const (
	StatusAvailable        Status = "available"
	StatusAssigned         Status = "assigned"
	StatusActivated        Status = "activated"
	StatusFailedActivation Status = "failedActivation"
)

// Token is the public, non-secret identity of one hardware token.
type Token struct {
	Serial       string
	Manufacturer string
	Model        string
	// AssignTo is the Entra user object id a new device is created assigned to (Graph's
	// assignTo on create); "" creates it unassigned. It does not identify the token.
	AssignTo string
}

// Seed is a token's secret and what is needed to compute its codes. Its formatting and slog
// methods never print the secret: a Seed can be logged or wrapped in an error by mistake
// without leaking.
type Seed struct {
	Secret []byte // raw key bytes
	Hash   Hash
	Digits int
	Period int // seconds per step
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Base32 returns the secret as upper-case unpadded Base32, the form Graph and the Entra CSV take.
func (s Seed) Base32() string { return b32.EncodeToString(s.Secret) }

// Fingerprint returns the first 16 hex characters of SHA-256 over the raw secret: enough to
// tell seeds apart in reports and tags, useless for recovering one.
func (s Seed) Fingerprint() string { return Fingerprint(s.Secret) }

// Fingerprint returns the first 16 hex characters of SHA-256 over secret.
func Fingerprint(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:8])
}

// Bits is the secret's length in bits.
func (s Seed) Bits() int { return len(s.Secret) * 8 }

// String describes the seed without its secret.
func (s Seed) String() string {
	return fmt.Sprintf("seed{%s %s %d digits %ds}", s.Fingerprint(), s.Hash, s.Digits, s.Period)
}

// GoString keeps %#v from printing the secret bytes.
func (s Seed) GoString() string { return s.String() }

// Format keeps every fmt verb (%v, %+v, %x, %s, ...) from printing the secret bytes.
func (s Seed) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// LogValue keeps slog from printing the secret bytes.
func (s Seed) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Device is a hardware token as the Entra ID inventory holds it.
type Device struct {
	ID               string
	Serial           string
	Manufacturer     string
	Model            string
	Status           Status
	Period           int
	Hash             Hash
	AssignedToID     string // user object id, empty when unassigned
	AssignedToName   string // display name, as Graph reports it
	DisplayName      string
	LastUsedDateTime string
}

// User is an Entra ID user as oathpipe needs it.
type User struct {
	ID                string
	UserPrincipalName string
	DisplayName       string
	Guest             bool
	Enabled           bool
}

// Method is one hardware OATH authentication method held by a user.
type Method struct {
	ID       string // the user's method id: look it up, never assume it equals the device id
	DeviceID string
	Serial   string
	Status   Status
}
