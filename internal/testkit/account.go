package testkit

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/internal/azurite"
	"github.com/oathpipe/oathpipe/shared/ledger"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/storage"
)

// Account is the storage adapters and the ledger on one storage account, as wire.go wires them
// from SeedStorage, built here from a connection string (Azurite).
type Account struct {
	Blobs     *storage.Blobs // seed-inbox, seed-reports, seed-rejected, token-parked
	Provision *storage.Queue // token-provisioning
	Poison    *storage.Queue // token-provisioning-poison
	Imports   *storage.Queue // seed-imports
	Ledger    *ledger.Ledger // oathpipeledger and oathpipeaudit

	// ProvisionClient is token-provisioning's own client, for tests that receive its messages
	// the way the host's queue trigger does.
	ProvisionClient *azqueue.QueueClient

	inbox *azblob.Client // uploads to seed-inbox (PutInbox), which nothing in the app does
}

// StartAzurite starts an Azurite of the test's own, stopped when the test ends, and returns its
// connection string.
func StartAzurite(tb testing.TB) string {
	tb.Helper()
	server, err := azurite.Start(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(server.Stop)
	return server.ConnectionString()
}

// OpenAccount builds the adapters on the account behind connectionString and creates the
// containers, queues and tables they use (as infra/ does in Azure).
func OpenAccount(tb testing.TB, connectionString string) *Account {
	tb.Helper()
	o := storage.Options{ConnectionString: connectionString}
	a := &Account{}
	var err error
	if a.Blobs, err = storage.NewBlobs(o); err != nil {
		tb.Fatal(err)
	}
	for _, q := range []struct {
		to   **storage.Queue
		name string
	}{{&a.Provision, pipeline.ProvisionQueue}, {&a.Poison, pipeline.PoisonQueue}, {&a.Imports, pipeline.ImportsQueue}} {
		if *q.to, err = storage.NewQueue(o, q.name); err != nil {
			tb.Fatal(err)
		}
	}
	if a.ProvisionClient, err = azqueue.NewQueueClientFromConnectionString(connectionString, pipeline.ProvisionQueue, nil); err != nil {
		tb.Fatal(err)
	}
	if a.inbox, err = azblob.NewClientFromConnectionString(connectionString, nil); err != nil {
		tb.Fatal(err)
	}
	if a.Ledger, err = ledger.New(ledger.Options{ConnectionString: connectionString}); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Blobs.EnsureContainers(ctx); err != nil {
		tb.Fatal(err)
	}
	for _, q := range []*storage.Queue{a.Provision, a.Poison, a.Imports} {
		if err := q.Ensure(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	if err := a.Ledger.EnsureTables(ctx); err != nil {
		tb.Fatal(err)
	}
	return a
}

// PutInbox uploads a seed file to seed-inbox, the way an admin or a vendor portal drops one,
// and returns its ETag.
func (a *Account) PutInbox(ctx context.Context, name string, content []byte, metadata map[string]string) (string, error) {
	resp, err := a.inbox.UploadBuffer(ctx, pipeline.InboxContainer, name, content, &azblob.UploadBufferOptions{Metadata: blobMetadata(metadata)})
	if err != nil {
		return "", fmt.Errorf("upload %s to %s: %w", name, pipeline.InboxContainer, err)
	}
	return string(*resp.ETag), nil
}

// PutInboxStream uploads what r streams (to its end) to seed-inbox/{name} in blocks, without
// holding it, and returns its ETag: PutInbox for a generated big file (benchmarks).
func (a *Account) PutInboxStream(ctx context.Context, name string, r io.Reader, metadata map[string]string) (string, error) {
	resp, err := a.inbox.UploadStream(ctx, pipeline.InboxContainer, name, r, &azblob.UploadStreamOptions{Metadata: blobMetadata(metadata)})
	if err != nil {
		return "", fmt.Errorf("upload %s to %s: %w", name, pipeline.InboxContainer, err)
	}
	return string(*resp.ETag), nil
}

func blobMetadata(m map[string]string) map[string]*string {
	md := make(map[string]*string, len(m))
	for k, v := range m {
		md[k] = to.Ptr(v)
	}
	return md
}
