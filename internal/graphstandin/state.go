// Package graphstandin is a local stand-in for the part of Microsoft Graph oathpipe uses: users
// (v1.0 and beta) and the beta hardware OATH token inventory and methods. It speaks Graph's JSON,
// inflates gzip request bodies, answers with Graph's error bodies and request-id headers, pages
// with @odata.nextLink, verifies activation codes against the stored seed, enforces the
// documented state machine and limits, and throttles writes with a token bucket (429 +
// Retry-After). Tests and the demo point the real msgraph-sdk-go client at it.
package graphstandin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash"
	"os"
	"strings"
	"time"
)

// User is one user in the stand-in's directory, in the format of testdata/users.json.
type User struct {
	ID                  string `json:"id"`
	UserPrincipalName   string `json:"userPrincipalName"`
	DisplayName         string `json:"displayName"`
	Mail                string `json:"mail,omitempty"`
	UserType            string `json:"userType"` // "Member" or "Guest"
	AccountEnabled      bool   `json:"accountEnabled"`
	ExistingOathMethods int    `json:"existingOathMethods,omitempty"` // OATH methods held outside the inventory (apps), counted against the limit of 5
}

// LoadUsers reads a directory file: {"users":[{id,userPrincipalName,displayName,userType,accountEnabled,existingOathMethods?}]}.
func LoadUsers(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users file: %w", err)
	}
	var f struct {
		Users []User `json:"users"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse users file %s: %w", path, err)
	}
	for i, u := range f.Users {
		if u.ID == "" || u.UserPrincipalName == "" {
			return nil, fmt.Errorf("users file %s: user %d needs id and userPrincipalName", path, i+1)
		}
	}
	return f.Users, nil
}

// DeviceState is what the stand-in holds about one hardware token (without its secret).
type DeviceState struct {
	ID             string
	Serial         string
	Manufacturer   string
	Model          string
	DisplayName    string
	Status         string // available, assigned, activated, failedActivation
	AssignedUserID string
	AssignedUPN    string
	MethodID       string // the assigned user's method id (deliberately not the device id)
	Hash           string
	Period         int
	Activations    int // successful activations
}

type device struct {
	DeviceState
	secret []byte
	// usedStep is the time step of the code that last activated the device (-1: none). A
	// later activation must use a later step (RFC 6238 §5.2), whoever holds the device.
	usedStep int64
}

// MaxOathMethods is Entra's limit of OATH methods per user (hardware and software together).
const MaxOathMethods = 5

// newID returns a random GUID-shaped id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// ParseSerialFilter parses the only $filter the stand-in supports, serialNumber eq '...', with
// two quotes (”) standing for one quote inside the literal, as OData escapes it.
func ParseSerialFilter(f string) (string, bool) {
	f = strings.TrimSpace(f)
	const prefix = "serialNumber eq '"
	if len(f) < len(prefix)+1 || !strings.EqualFold(f[:len(prefix)], prefix) || f[len(f)-1] != '\'' {
		return "", false
	}
	lit := f[len(prefix) : len(f)-1]
	var b strings.Builder
	for i := 0; i < len(lit); i++ {
		if lit[i] == '\'' {
			if i+1 < len(lit) && lit[i+1] == '\'' {
				b.WriteByte('\'')
				i++
				continue
			}
			return "", false // an unescaped quote ends the literal early
		}
		b.WriteByte(lit[i])
	}
	return b.String(), true
}

// totp computes the 6-digit RFC 6238 code of secret at step counter.
func totp(secret []byte, hashName string, counter uint64) string {
	var h func() hash.Hash
	switch hashName {
	case "hmacsha256":
		h = sha256.New
	case "hmacsha512":
		h = sha512.New
	default:
		h = sha1.New
	}
	m := hmac.New(h, secret)
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], counter)
	m.Write(c[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1000000)
}

// verifyCode accepts the code for the current step and one step either side, and returns the
// step it matched.
func verifyCode(d *device, code string, now time.Time) (int64, bool) {
	if len(code) != 6 {
		return 0, false
	}
	period := int64(d.Period)
	if period <= 0 {
		period = 30
	}
	step := now.Unix() / period
	for _, s := range []int64{step, step - 1, step + 1} {
		if s >= 0 && hmac.Equal([]byte(totp(d.secret, d.Hash, uint64(s))), []byte(code)) {
			return s, true
		}
	}
	return 0, false
}
