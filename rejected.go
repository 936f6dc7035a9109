package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/envelope"
	"github.com/oathpipe/oathpipe/shared/storage"
	"github.com/oathpipe/oathpipe/shared/vault"
)

const rejectedUsage = `usage: oathpipe rejected download [--vault URL] [--secret NAME] [--storage URL] [-o FILE] NAME

Reads seed-rejected/NAME (as the report names it: IMPORTID/FILE, with .gpg for a plain file the
import stored encrypted to the deployment's PGP key), decrypts it with the private key from Key
Vault, and writes the file to standard output or to FILE (created, never overwritten, mode
0600). A file kept as the vendor delivered it that is not encrypted to the deployment (a zip
archive) is written as it is. Uses your Azure credential (az login): you need secrets get and
list on the vault and blob read on the storage account.
Storage: --storage (the blob service URL), else $SeedStorage (a connection string), else
$SeedStorage__blobServiceUri.
Exit status: 0 written, 1 not found or not decryptable, 2 usage.

`

func runRejected(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "download" {
		fmt.Fprint(stderr, rejectedUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return exitOK
		}
		return exitUsage
	}
	fs := flag.NewFlagSet("rejected download", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, rejectedUsage)
		fs.PrintDefaults()
	}
	vaultURL := fs.String("vault", os.Getenv("OATHPIPE_KEYVAULT_URL"), "Key Vault URL (default $OATHPIPE_KEYVAULT_URL)")
	secret := fs.String("secret", envOr("OATHPIPE_PGP_KEY_SECRET", vault.DefaultPGPKeySecret), "secret holding the PGP private key")
	storageURL := fs.String("storage", "", "blob service URL of the seed storage account")
	out := fs.String("o", "", "write to FILE instead of standard output")
	names, err := parseInterleaved(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	if len(names) != 1 || strings.TrimSpace(names[0]) == "" {
		fmt.Fprintln(stderr, "oathpipe rejected download: give exactly one NAME (seed-rejected/NAME)")
		return exitUsage
	}
	name := strings.TrimPrefix(names[0], config.RejectedContainer+"/")

	opts := storage.Options{ConnectionString: os.Getenv(config.StorageConnection), BlobServiceURL: *storageURL}
	if opts.BlobServiceURL != "" {
		opts.ConnectionString = ""
	} else if opts.ConnectionString == "" {
		opts.BlobServiceURL = os.Getenv(config.StorageConnection + "__blobServiceUri")
	}
	if opts.ConnectionString == "" && opts.BlobServiceURL == "" {
		fmt.Fprintln(stderr, "oathpipe rejected download: no storage: give --storage URL or set SeedStorage / SeedStorage__blobServiceUri")
		return exitUsage
	}
	endpoints := []string{*vaultURL}
	if opts.BlobServiceURL != "" {
		endpoints = append(endpoints, opts.BlobServiceURL)
	}
	cred, hc, err := cliCredential(endpoints...)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
		return exitUsage
	}
	opts.Credential, opts.HTTPClient = cred, hc
	blobs, err := storage.NewBlobs(opts)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kept, err := blobs.Read(ctx, config.RejectedContainer, name)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
		return exitProblem
	}
	var plain io.Reader = bytes.NewReader(kept)
	if k, ok := envelope.Detect(kept[:min(len(kept), 64)]); ok && k == envelope.KindPGP {
		v, err := cliVault(*vaultURL)
		if err != nil {
			fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
			return exitUsage
		}
		armored, err := v.PGPKeys(ctx, *secret)
		if err != nil {
			fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
			return exitProblem
		}
		keys, err := envelope.ParsePGPKeys(armored, nil)
		if err != nil {
			fmt.Fprintf(stderr, "oathpipe rejected download: secret %s: %v\n", *secret, err)
			return exitProblem
		}
		if plain, err = envelope.DecryptPGP(name, plain, keys); err != nil {
			fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
			return exitProblem
		}
	} else {
		fmt.Fprintf(stderr, "oathpipe rejected download: %s is not encrypted to the deployment's key (kept as delivered): written as it is\n", name)
	}
	// Decrypt whole before writing anything, so a damaged message leaves no partial file.
	b, err := io.ReadAll(plain)
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
		return exitProblem
	}
	defer clear(b)
	if *out == "" {
		_, err = stdout.Write(b)
	} else {
		err = writeNew(*out, b)
	}
	if err != nil {
		fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
		return exitProblem
	}
	return exitOK
}

// writeNew creates path (never overwriting a file) readable by its owner only.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
