package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/envelope"
	"github.com/oathpipe/oathpipe/shared/vault"
)

const pgpKeygenUsage = `usage: oathpipe pgp-keygen [--vault URL] [--secret NAME] [--if-missing] [--uid "NAME <EMAIL>"]

Creates the deployment's PGP key pair (Curve25519: an Ed25519 primary key with an X25519
encryption subkey, OpenPGP v4, no expiry), stores the ASCII-armored private key without a
passphrase as a new version of the Key Vault secret (older versions stay, so files encrypted
to an older key still open), and prints the armored public key on standard output: give it to
the vendor. With --if-missing and a key already in the secret, prints that key's public key
and changes nothing. Uses your Azure credential (az login); it needs secrets get, list and set.
Exit status: 0 done, 1 the vault refused or failed, 2 usage.

`

func runPGPKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pgp-keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, pgpKeygenUsage)
		fs.PrintDefaults()
	}
	kv := addKeyFlags(fs)
	ifMissing := fs.Bool("if-missing", false, "when the secret already holds a key, print its public key and change nothing")
	uid := fs.String("uid", "oathpipe seed files", `user id of the key, "NAME <EMAIL>" or "NAME"`)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "oathpipe pgp-keygen: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	name, email, err := parseUID(*uid)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe pgp-keygen: --uid %q: %v\n", *uid, err)
		return exitUsage
	}
	v, err := kv.open()
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe pgp-keygen: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if *ifMissing {
		if done, code := printExistingKey(ctx, v, *kv.secret, stdout, stderr); done {
			return code
		}
	}
	k, err := envelope.NewPGPKey(name, email, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe pgp-keygen: %v\n", err)
		return exitProblem
	}
	if err := v.PutPGPKey(ctx, *kv.secret, k.Private, k.Fingerprint); err != nil {
		fmt.Fprintf(stderr, "oathpipe pgp-keygen: %v\n", err)
		return exitProblem
	}
	fmt.Fprintf(stderr, "oathpipe pgp-keygen: key %s stored as a new version of secret %s\n", k.Fingerprint, *kv.secret)
	fmt.Fprint(stdout, k.Public)
	return exitOK
}

// printExistingKey is --if-missing: when the secret already holds a key, it prints that key's
// public key and reports done.
func printExistingKey(ctx context.Context, v *vault.Vault, secret string, stdout, stderr io.Writer) (done bool, code int) {
	existing, err := v.PGPKeys(ctx, secret)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe pgp-keygen: %v\n", err)
		return true, exitProblem
	}
	if len(existing) == 0 {
		return false, exitOK
	}
	keys, err := envelope.ParsePGPKeys(existing[:1], nil)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe pgp-keygen: the newest version of secret %s is not a usable key (%v); run without --if-missing to store a new one\n", secret, err)
		return true, exitProblem
	}
	pub, err := keys.PublicKey()
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe pgp-keygen: %v\n", err)
		return true, exitProblem
	}
	fmt.Fprintf(stderr, "oathpipe pgp-keygen: secret %s already holds key %s; nothing changed\n", secret, keys.Fingerprint())
	fmt.Fprint(stdout, pub)
	return true, exitOK
}

func parseUID(s string) (name, email string, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", "", errors.New("empty")
	}
	if strings.ContainsAny(s, "<>") {
		a, err := mail.ParseAddress(s)
		if err != nil {
			return "", "", errors.New(`want "NAME <EMAIL>" or "NAME"`)
		}
		return a.Name, a.Address, nil
	}
	return s, "", nil
}
