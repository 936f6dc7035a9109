package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestCodeCommand(t *testing.T) {
	const sha1Seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	const sha256Seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA"
	tests := []struct {
		args []string
		out  string
	}{
		{[]string{"--secret", sha1Seed, "--digits", "8", "--time", "59"}, "94287082"},
		{[]string{"--secret", sha1Seed, "--digits", "8", "--time", "1111111109"}, "07081804"},
		{[]string{"--secret", sha256Seed, "--hash", "sha256", "--digits", "8", "--time", "1234567890"}, "91819424"},
		{[]string{"--secret", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNA",
			"--hash", "sha512", "--digits", "8", "--time", "2000000000"}, "38618901"},
		{[]string{"--secret", sha1Seed, "--period", "60", "--time", "1234567890"}, "713351"},
		{[]string{"--secret", "gezd gnbv-gy3t qojq gezd gnbv gy3t qojq====", "--time", "59"}, "287082"},
		{[]string{"--time", "59", "--secret", "-"}, "287082"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := runCodeWith(tt.args, strings.NewReader(sha1Seed+"\n"), &stdout, &stderr, time.Now)
		if code != exitOK || strings.TrimSpace(stdout.String()) != tt.out {
			t.Errorf("code %q = %q (exit %d, %s), want %s", tt.args, stdout.String(), code, stderr.String(), tt.out)
		}
	}
}

func TestCodeCommandNow(t *testing.T) {
	var stdout, stderr bytes.Buffer
	now := func() time.Time { return time.Unix(1111111111, 0) }
	if code := runCodeWith([]string{"--secret", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "--digits", "8"}, nil, &stdout, &stderr, now); code != exitOK ||
		stdout.String() != "14050471\n" || !strings.Contains(stderr.String(), "29 s left") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

func TestCodeCommandUsage(t *testing.T) {
	const seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	for _, args := range [][]string{
		{},
		{"--secret", "1234567890abcdef"},
		{"--secret", seed, "--hash", "md5"},
		{"--secret", seed, "--digits", "7"},
		{"--secret", seed, "--period", "45"},
		{"--secret", seed, "extra"},
		{"--bogus"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"code"}, args...), &stdout, &stderr)
		if code != exitUsage || stdout.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q", args, code, stdout.String())
		}
		if strings.Contains(strings.ToUpper(stderr.String()), seed) || strings.Contains(stderr.String(), "1234567890abcdef") {
			t.Errorf("%q: stderr quotes the secret: %s", args, stderr.String())
		}
	}
}
