package main

import (
	"bufio"
	"encoding/base32"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/otp"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

const codeUsage = `usage: oathpipe code --secret BASE32 [--hash sha1|sha256|sha512] [--digits 6|8] [--period 30|60] [--time UNIX]

Prints the TOTP code of a seed: compare it with the token's display to check its clock.
--secret - reads the secret from standard input (keeps it out of the process list).

`

func runCode(args []string, stdout, stderr io.Writer) int {
	return runCodeWith(args, os.Stdin, stdout, stderr, time.Now)
}

func runCodeWith(args []string, stdin io.Reader, stdout, stderr io.Writer, now func() time.Time) int {
	fs := flag.NewFlagSet("code", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, codeUsage)
		fs.PrintDefaults()
	}
	secret := fs.String("secret", "", "the token's seed in Base32 (spaces, dashes, lower case and padding accepted); - reads stdin")
	hashFlag := fs.String("hash", "sha1", "sha1, sha256 or sha512")
	digits := fs.Int("digits", 6, "6 or 8")
	period := fs.Int("period", 30, "time step in seconds: 30 or 60")
	at := fs.Int64("time", -1, "Unix time to compute the code for (default: now)")
	rest, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "oathpipe code: "+format+"\n", a...)
		return exitUsage
	}
	if len(rest) > 0 {
		return usageErr("unexpected argument %q (the secret goes in --secret)", rest[0])
	}
	text := *secret
	if text == "-" {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return usageErr("read the secret from stdin: %v", err)
		}
		text = line
	}
	if strings.TrimSpace(text) == "" {
		return usageErr("--secret is required")
	}
	raw, ok := decodeSecret(text)
	if !ok {
		return usageErr("--secret is not Base32 (letters A-Z, digits 2-7)")
	}
	h, ok := seedfile.ParseHash(*hashFlag)
	if !ok {
		return usageErr("--hash %q: use sha1, sha256 or sha512", *hashFlag)
	}
	if *digits != 6 && *digits != 8 {
		return usageErr("--digits %d: use 6 or 8", *digits)
	}
	if *period != 30 && *period != 60 {
		return usageErr("--period %d: use 30 or 60", *period)
	}
	t := now()
	if *at >= 0 {
		t = time.Unix(*at, 0)
	}
	code, err := otp.Code(token.Seed{Secret: raw, Hash: h, Digits: *digits, Period: *period}, t)
	if err != nil {
		return usageErr("%v", err)
	}
	fmt.Fprintln(stdout, code)
	if *at < 0 {
		fmt.Fprintf(stderr, "%d s left in this %d s step\n", otp.SecondsLeft(*period, t), *period)
	}
	return exitOK
}

// decodeSecret reads a Base32 secret as admins copy it: any case, spaces or dashes between
// groups, with or without '=' padding.
func decodeSecret(s string) ([]byte, bool) {
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n', '-', '=':
			return -1
		}
		return r
	}, strings.ToUpper(s))
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
	if err != nil || len(raw) == 0 {
		return nil, false
	}
	return raw, true
}
