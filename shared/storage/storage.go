// Package storage is oathpipe's blob and queue adapter over azblob and azqueue: it reads and
// removes seed files in the inbox, writes reports, moves files whole to the private
// seed-rejected container, and sends provisioning messages as plain text. It implements
// pipeline.Blobs and pipeline.Queue, and Open builds them (and the ledger) from the settings.
package storage

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/shared/azerr"
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/ledger"
)

// Options says how to reach the storage account. Give either ConnectionString (Azurite, local
// runs) or the service URLs and Credential (identity-based access in Azure).
type Options struct {
	ConnectionString string
	BlobServiceURL   string // https://<account>.blob.core.windows.net/
	QueueServiceURL  string // https://<account>.queue.core.windows.net/
	TableServiceURL  string // https://<account>.table.core.windows.net/ (the ledger)
	Credential       azcore.TokenCredential
	HTTPClient       *http.Client // optional transport (extra CA, test proxies)
	Logger           *slog.Logger
}

// Account is everything oathpipe keeps in its storage account.
type Account struct {
	Blobs     *Blobs         // seed-inbox, seed-reports, seed-rejected
	Provision *Queue         // token-provisioning
	Poison    *Queue         // token-provisioning-poison (the host moves messages there; read by ProvisionFailed)
	Imports   *Queue         // seed-imports: Event Grid BlobCreated events and import continuations (ImportSeeds)
	Ledger    *ledger.Ledger // tables oathpipeledger and oathpipeaudit
}

// FromConfig returns the Options for cfg: its connection string when SeedStorage is set,
// otherwise its identity-based service URLs with cred.
func FromConfig(cfg *config.Config, cred azcore.TokenCredential, httpClient *http.Client, logger *slog.Logger) Options {
	o := Options{HTTPClient: httpClient, Logger: logger}
	if cfg.StorageConnectionString != "" {
		o.ConnectionString = cfg.StorageConnectionString
		return o
	}
	o.BlobServiceURL, o.QueueServiceURL, o.TableServiceURL = cfg.BlobServiceURL, cfg.QueueServiceURL, cfg.TableServiceURL
	o.Credential = cred
	return o
}

// Open builds the blob, queue and ledger clients for cfg (see FromConfig). It makes no request;
// call EnsureResources for local runs.
func Open(cfg *config.Config, cred azcore.TokenCredential, httpClient *http.Client, logger *slog.Logger) (*Account, error) {
	return OpenWith(FromConfig(cfg, cred, httpClient, logger))
}

// OpenWith builds the blob, queue and ledger clients from o.
func OpenWith(o Options) (*Account, error) {
	b, err := NewBlobs(o)
	if err != nil {
		return nil, err
	}
	p, err := NewQueue(o, config.ProvisionQueue)
	if err != nil {
		return nil, err
	}
	poison, err := NewQueue(o, config.PoisonQueue)
	if err != nil {
		return nil, err
	}
	imports, err := NewQueue(o, config.ImportsQueue)
	if err != nil {
		return nil, err
	}
	l, err := ledger.New(ledger.Options{
		ConnectionString: o.ConnectionString, ServiceURL: o.TableServiceURL, Credential: o.Credential,
		HTTPClient: o.HTTPClient, Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Account{Blobs: b, Provision: p, Poison: poison, Imports: imports, Ledger: l}, nil
}

// EnsureResources creates the containers, queues and tables oathpipe uses when they do not
// exist. For local runs and tests: in Azure, infra/ creates them (and the app's identity may not
// create them).
func (a *Account) EnsureResources(ctx context.Context) error {
	if err := a.Blobs.EnsureContainers(ctx); err != nil {
		return err
	}
	for _, q := range []*Queue{a.Provision, a.Poison, a.Imports} {
		if err := q.Ensure(ctx); err != nil {
			return err
		}
	}
	return a.Ledger.EnsureTables(ctx)
}

// clientOptions is the azcore options every client here shares.
func clientOptions(o Options, serviceURL string) azcore.ClientOptions {
	co := azcore.ClientOptions{}
	if o.HTTPClient != nil {
		co.Transport = o.HTTPClient
	}
	// A bearer token goes over plain HTTP only to a loopback emulator.
	co.InsecureAllowCredentialWithHTTP = strings.HasPrefix(serviceURL, "http://") && config.IsLoopbackURL(serviceURL)
	co.Retry = policy.RetryOptions{MaxRetries: 4, RetryDelay: 500 * time.Millisecond, MaxRetryDelay: 10 * time.Second}
	return co
}

func logger(o Options) *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// classify turns a blob or queue failure into a *token.Error the pipeline can act on.
func classify(op string, err error) error { return azerr.Classify(op, blobQueueStorage, err) }

var blobQueueStorage = azerr.Service{Name: "storage", Role: "Storage Blob Data Owner and Storage Queue Data Contributor"}

func newBlobClient(o Options) (*azblob.Client, error) {
	co := &azblob.ClientOptions{ClientOptions: clientOptions(o, o.BlobServiceURL)}
	switch {
	case o.ConnectionString != "":
		return azblob.NewClientFromConnectionString(o.ConnectionString, co)
	case o.BlobServiceURL != "" && o.Credential != nil:
		return azblob.NewClient(o.BlobServiceURL, o.Credential, co)
	}
	return nil, errors.New("need a connection string, or a blob service URL and a credential")
}

func newQueueClient(o Options, name string) (*azqueue.QueueClient, error) {
	co := &azqueue.ClientOptions{ClientOptions: clientOptions(o, o.QueueServiceURL)}
	switch {
	case o.ConnectionString != "":
		return azqueue.NewQueueClientFromConnectionString(o.ConnectionString, name, co)
	case o.QueueServiceURL != "" && o.Credential != nil:
		svc, err := azqueue.NewServiceClient(o.QueueServiceURL, o.Credential, co)
		if err != nil {
			return nil, err
		}
		return svc.NewQueueClient(name), nil
	}
	return nil, errors.New("need a connection string, or a queue service URL and a credential")
}
