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
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/storage"
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
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "oathpipe rejected download: %v\n", err)
		return code
	}
	fs := flag.NewFlagSet("rejected download", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, rejectedUsage)
		fs.PrintDefaults()
	}
	kv := addKeyFlags(fs)
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
	name := strings.TrimPrefix(names[0], pipeline.RejectedContainer+"/")
	blobs, err := rejectedBlobs(*storageURL, *kv.vaultURL)
	if err != nil {
		return fail(exitUsage, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kept, err := blobs.Read(ctx, pipeline.RejectedContainer, name)
	if err != nil {
		return fail(exitProblem, err)
	}
	b, code, err := decryptRejected(ctx, kv, name, kept, stderr)
	if err != nil {
		return fail(code, err)
	}
	defer clear(b)
	if *out == "" {
		_, err = stdout.Write(b)
	} else {
		err = writeNew(*out, b)
	}
	if err != nil {
		return fail(exitProblem, err)
	}
	return exitOK
}

// rejectedBlobs opens the seed storage account's blobs: --storage (the blob service URL), else
// $SeedStorage (a connection string), else $SeedStorage__blobServiceUri; with the caller's
// credential for a URL.
func rejectedBlobs(storageURL, vaultURL string) (*storage.Blobs, error) {
	opts := storage.Options{ConnectionString: os.Getenv(config.StorageConnection), BlobServiceURL: storageURL}
	if opts.BlobServiceURL != "" {
		opts.ConnectionString = ""
	} else if opts.ConnectionString == "" {
		opts.BlobServiceURL = os.Getenv(config.StorageConnection + "__blobServiceUri")
	}
	if opts.ConnectionString == "" && opts.BlobServiceURL == "" {
		return nil, errors.New("no storage: give --storage URL or set SeedStorage / SeedStorage__blobServiceUri")
	}
	endpoints := []string{vaultURL}
	if opts.BlobServiceURL != "" {
		endpoints = append(endpoints, opts.BlobServiceURL)
	}
	cred, hc, err := cliCredential(endpoints...)
	if err != nil {
		return nil, err
	}
	opts.Credential, opts.HTTPClient = cred, hc
	return storage.NewBlobs(opts)
}

// decryptRejected returns the file kept as name: decrypted with the deployment's key when it is
// encrypted to it, else as it is. It decrypts whole before anything is written, so a damaged
// message leaves no partial file. On failure code is the exit status.
func decryptRejected(ctx context.Context, kv keyFlags, name string, kept []byte, stderr io.Writer) (b []byte, code int, err error) {
	var plain io.Reader = bytes.NewReader(kept)
	if k, ok := envelope.Detect(kept[:min(len(kept), 64)]); ok && k == envelope.KindPGP {
		v, err := kv.open()
		if err != nil {
			return nil, exitUsage, err
		}
		keys, err := kv.keys(ctx, v)
		if err != nil {
			return nil, exitProblem, err
		}
		if plain, err = envelope.DecryptPGP(name, plain, keys); err != nil {
			return nil, exitProblem, err
		}
	} else {
		fmt.Fprintf(stderr, "oathpipe rejected download: %s is not encrypted to the deployment's key (kept as delivered): written as it is\n", name)
	}
	b, err = io.ReadAll(plain)
	if err != nil {
		return nil, exitProblem, err
	}
	return b, exitOK, nil
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
