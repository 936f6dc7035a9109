package otp

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/token"
)

var (
	seed1   = []byte("12345678901234567890")
	seed256 = []byte("12345678901234567890123456789012")
	seed512 = append(bytes.Repeat([]byte("1234567890"), 6), "1234"...)
)

// RFC 6238 Appendix B.
func TestCodeRFC6238(t *testing.T) {
	tests := []struct {
		unix               int64
		sha1, sha256, s512 string
	}{
		{59, "94287082", "46119246", "90693936"},
		{1111111109, "07081804", "68084774", "25091201"},
		{1111111111, "14050471", "67062674", "99943326"},
		{1234567890, "89005924", "91819424", "93441116"},
		{2000000000, "69279037", "90698825", "38618901"},
		{20000000000, "65353130", "77737706", "47863826"},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			secret []byte
			hash   token.Hash
			want   string
		}{{seed1, token.SHA1, tt.sha1}, {seed256, token.SHA256, tt.sha256}, {seed512, token.SHA512, tt.s512}} {
			got, err := Code(token.Seed{Secret: c.secret, Hash: c.hash, Digits: 8, Period: 30}, time.Unix(tt.unix, 0))
			if err != nil || got != c.want {
				t.Errorf("Code(%s, %d) = %q, %v; want %q", c.hash, tt.unix, got, err, c.want)
			}
		}
	}
}

// RFC 4226 Appendix D.
func TestHOTPRFC4226(t *testing.T) {
	want := []string{"755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"}
	for i, w := range want {
		got, err := HOTP(seed1, token.SHA1, 6, uint64(i))
		if err != nil || got != w {
			t.Errorf("HOTP(counter %d) = %q, %v; want %q", i, got, err, w)
		}
	}
}

func TestCodeSixtySeconds(t *testing.T) {
	got, err := Code(token.Seed{Secret: seed1, Hash: token.SHA1, Digits: 6, Period: 60}, time.Unix(1234567890, 0))
	if err != nil || got != "713351" {
		t.Fatalf("Code(60 s) = %q, %v; want 713351", got, err)
	}
}

func TestCodeInvalid(t *testing.T) {
	tests := []struct {
		name string
		seed token.Seed
		at   int64
	}{
		{"no secret", token.Seed{Hash: token.SHA1, Digits: 6, Period: 30}, 0},
		{"unknown hash", token.Seed{Secret: seed1, Hash: "md5", Digits: 6, Period: 30}, 0},
		{"5 digits", token.Seed{Secret: seed1, Hash: token.SHA1, Digits: 5, Period: 30}, 0},
		{"9 digits", token.Seed{Secret: seed1, Hash: token.SHA1, Digits: 9, Period: 30}, 0},
		{"zero period", token.Seed{Secret: seed1, Hash: token.SHA1, Digits: 6}, 0},
		{"before 1970", token.Seed{Secret: seed1, Hash: token.SHA1, Digits: 6, Period: 30}, -1},
	}
	for _, tt := range tests {
		_, err := Code(tt.seed, time.Unix(tt.at, 0))
		var te *token.Error
		if !errors.As(err, &te) || te.Kind != token.KindInvalid {
			t.Errorf("%s: err = %v, want KindInvalid", tt.name, err)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), seed1) {
			t.Errorf("%s: error leaks the seed: %v", tt.name, err)
		}
	}
}

func TestSecondsLeft(t *testing.T) {
	tests := []struct {
		period int
		unix   int64
		want   int
	}{
		{30, 0, 30}, {30, 1, 29}, {30, 29, 1}, {30, 30, 30}, {60, 59, 1}, {60, 1234567890, 30}, {0, 5, 0},
	}
	for _, tt := range tests {
		if got := SecondsLeft(tt.period, time.Unix(tt.unix, 0)); got != tt.want {
			t.Errorf("SecondsLeft(%d, %d) = %d, want %d", tt.period, tt.unix, got, tt.want)
		}
	}
}

func ExampleCode() {
	seed := token.Seed{Secret: []byte("12345678901234567890"), Hash: token.SHA1, Digits: 6, Period: 30}
	at := time.Unix(1111111109, 0)
	code, _ := Code(seed, at)
	fmt.Println(code, SecondsLeft(seed.Period, at))
	// Output: 081804 1
}
