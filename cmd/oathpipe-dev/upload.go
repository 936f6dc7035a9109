package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// runUpload is `oathpipe-dev upload`: drop vendor files into seed-inbox of a running stack
// with the Azure SDK, as an admin or a vendor portal would.
func runUpload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("oathpipe-dev upload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn := fs.String("connection-string", os.Getenv(config.StorageConnection), "storage connection string (the endpoints line's storageConnectionString; default $SeedStorage)")
	container := fs.String("container", pipeline.InboxContainer, "container to upload into")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: oathpipe-dev upload --connection-string CS FILE...\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	if *conn == "" || fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	bc, err := azblob.NewClientFromConnectionString(*conn, nil)
	if err != nil {
		fmt.Fprintln(stderr, "oathpipe-dev upload: --connection-string:", err)
		return exitUsage
	}
	for _, f := range fs.Args() {
		content, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(stderr, "oathpipe-dev upload:", err)
			return exitUsage
		}
		name := filepath.Base(f)
		resp, err := bc.UploadBuffer(context.Background(), *container, name, content, nil)
		if err != nil {
			fmt.Fprintf(stderr, "oathpipe-dev upload: %s: %v\n", name, err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "uploaded %s to %s (%d bytes, ETag %s)\n", name, *container, len(content), *resp.ETag)
	}
	return exitOK
}
