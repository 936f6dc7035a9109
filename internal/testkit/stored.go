package testkit

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// StoredOutsideVault reads, raw, everything the app keeps in storage that must never hold a
// seed — every entity of the ledger and audit tables and every blob of every container
// (seed-reports, seed-inbox, seed-rejected, where rejected files are kept encrypted, ...) —
// from the account behind connectionString, for the leak scan (SeedSet.Leaks).
func StoredOutsideVault(tb testing.TB, ctx context.Context, connectionString string) string {
	tb.Helper()
	var sb strings.Builder
	tables, err := aztables.NewServiceClientFromConnectionString(connectionString, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, table := range []string{pipeline.LedgerTable, pipeline.AuditTable} {
		pager := tables.NewClient(table).NewListEntitiesPager(nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				tb.Fatalf("list %s: %v", table, err)
			}
			for _, e := range page.Entities {
				sb.Write(e)
				sb.WriteByte('\n')
			}
		}
	}
	blobs, err := azblob.NewClientFromConnectionString(connectionString, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var containers []string
	for cp := blobs.NewListContainersPager(nil); cp.More(); {
		page, err := cp.NextPage(ctx)
		if err != nil {
			tb.Fatalf("list containers: %v", err)
		}
		for _, c := range page.ContainerItems {
			containers = append(containers, *c.Name)
		}
	}
	for _, c := range containers {
		pager := blobs.NewListBlobsFlatPager(c, nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				tb.Fatalf("list %s: %v", c, err)
			}
			for _, item := range page.Segment.BlobItems {
				resp, err := blobs.DownloadStream(ctx, c, *item.Name, nil)
				if err != nil {
					tb.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					tb.Fatal(err)
				}
				sb.WriteString(c + "/" + *item.Name + "\n")
				sb.Write(b)
				sb.WriteByte('\n')
			}
		}
	}
	return sb.String()
}
