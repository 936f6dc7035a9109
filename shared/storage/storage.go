// Package storage is oathpipe's blob and queue adapter over azblob and azqueue: it reads and
// removes seed files in the inbox, writes reports, moves files whole to the private
// seed-rejected container, and sends provisioning messages as plain text. It implements
// pipeline.Blobs and pipeline.Queue; main builds them (NewBlobs, NewQueue) from its Options.
// The ledger's tables are package ledger's.
package storage

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/shared/azerr"
	"github.com/oathpipe/oathpipe/shared/loopback"
)

// Options says how to reach the storage account. Give either ConnectionString (Azurite, local
// runs) or the service URLs and Credential (identity-based access in Azure).
type Options struct {
	ConnectionString string
	BlobServiceURL   string // https://<account>.blob.core.windows.net/
	QueueServiceURL  string // https://<account>.queue.core.windows.net/
	Credential       azcore.TokenCredential
	HTTPClient       *http.Client // optional transport (extra CA, test proxies)
	Logger           *slog.Logger
}

// clientOptions is the azcore options every client here shares.
func clientOptions(o Options, serviceURL string) azcore.ClientOptions {
	co := azcore.ClientOptions{}
	if o.HTTPClient != nil {
		co.Transport = o.HTTPClient
	}
	// A bearer token goes over plain HTTP only to a loopback emulator.
	co.InsecureAllowCredentialWithHTTP = loopback.PlainHTTP(serviceURL)
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
