package main

import (
	"testing"

	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// TestStoreFromSettings checks the one place the seed storage settings become the storage and
// ledger Options: a connection string wins over the identity-based URLs, which go with the
// credential; and the clients build without a request either way.
func TestStoreFromSettings(t *testing.T) {
	cred := azauth.StaticToken("t")
	conn := &config.Config{StorageConnectionString: azuriteConnection, BlobServiceURL: "https://st.blob.core.windows.net/"}
	if so := storageOptions(conn, cred, nil, nil); so.ConnectionString != conn.StorageConnectionString || so.BlobServiceURL != "" || so.Credential != nil {
		t.Errorf("storage options with SeedStorage = %+v", so)
	}
	if lo := ledgerOptions(conn, cred, nil, nil); lo.ConnectionString != conn.StorageConnectionString || lo.ServiceURL != "" || lo.Credential != nil {
		t.Errorf("ledger options with SeedStorage = %+v", lo)
	}
	id := &config.Config{
		BlobServiceURL:  "https://st.blob.core.windows.net/",
		QueueServiceURL: "https://st.queue.core.windows.net/",
		TableServiceURL: "https://st.table.core.windows.net/",
	}
	so := storageOptions(id, cred, nil, nil)
	if so.ConnectionString != "" || so.BlobServiceURL != id.BlobServiceURL || so.QueueServiceURL != id.QueueServiceURL || so.Credential != cred {
		t.Errorf("identity-based storage options = %+v", so)
	}
	if lo := ledgerOptions(id, cred, nil, nil); lo.ServiceURL != id.TableServiceURL || lo.Credential != cred {
		t.Errorf("identity-based ledger options = %+v", lo)
	}
	for _, cfg := range []*config.Config{conn, id} {
		st, err := openStore(cfg, cred, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.blobs == nil || st.ledger == nil || st.provision.Name() != pipeline.ProvisionQueue || st.imports.Name() != pipeline.ImportsQueue {
			t.Fatalf("openStore = %+v", st)
		}
	}
	if _, err := openStore(&config.Config{}, nil, nil, nil); err == nil {
		t.Fatal("openStore with neither a connection string nor URLs succeeded")
	}
}

// azuriteConnection is Azurite's well-known development account (no request is made).
const azuriteConnection = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;" +
	"TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"

// TestStorageCredential: the app's credential serves storage unless SeedStorage__clientId
// names another user-assigned identity.
func TestStorageCredential(t *testing.T) {
	app := azauth.StaticToken("app")
	for _, cfg := range []*config.Config{
		{},
		{StorageConnectionString: "UseDevelopmentStorage=true", StorageClientID: "other"},
		{StorageClientID: "same", ManagedIdentityClientID: "same"},
		{StorageClientID: "other", OfflineToken: "x"},
	} {
		if c, err := storageCredential(cfg, app); err != nil || c != app {
			t.Errorf("%+v: storage credential %v, %v; want the app's", cfg, c, err)
		}
	}
	c, err := storageCredential(&config.Config{StorageClientID: "other"}, app)
	if err != nil || c == nil || c == app {
		t.Errorf("SeedStorage__clientId=other: %v, %v; want a managed identity credential of its own", c, err)
	}
}
