package testkit

import (
	"context"
	"testing"

	"github.com/oathpipe/oathpipe/shared/ledger"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/storage"
)

// Account is the storage adapters and the ledger on one storage account, as serve.go wires them
// from SeedStorage, built here from a connection string (Azurite).
type Account struct {
	Blobs     *storage.Blobs // seed-inbox, seed-reports, seed-rejected, token-parked
	Provision *storage.Queue // token-provisioning
	Poison    *storage.Queue // token-provisioning-poison
	Imports   *storage.Queue // seed-imports
	Ledger    *ledger.Ledger // oathpipeledger and oathpipeaudit
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
