package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/oathpipe/oathpipe/handlers"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/entra"
	"github.com/oathpipe/oathpipe/shared/ledger"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/notify"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/storage"
	"github.com/oathpipe/oathpipe/shared/vault"
)

// This file is the composition root: the only place the settings (config.Config) become the
// plain Options each adapter, the pipeline and the handlers take. `oathpipe serve` and
// `oathpipe reconcile` wire through newApp; the other commands build the one adapter they need
// from flags (cli.go). cmd/oathpipe-dev and internal/devstack wire the local stack the same way.

// newHandler wires the handlers over the app (newApp).
func newHandler(cfg *config.Config, log *slog.Logger) (*handlers.Server, error) {
	a, err := newApp(cfg, log)
	if err != nil {
		return nil, err
	}
	return handlers.New(handlers.Options{
		Pipeline:     a.pipeline,
		PGPKey:       a.pipeline,
		RequiredRole: cfg.RequiredRole,
		HTTPBudget:   cfg.HTTPBudget,
		Parker:       a.store.blobs,
		Lifecycle:    a.lifecycle,
		Reconciler:   a.reconciliation,
		Reports:      a.store.blobs,
		Logger:       log.With(logctx.Component, "handlers"),
	}), nil
}

// app is the pipeline and what else the handlers and the command line use, wired from cfg.
type app struct {
	pipeline       *pipeline.Pipeline
	lifecycle      *pipeline.Lifecycle
	reconciliation pipeline.Reconciliation
	store          *store
}

// store is the adapters on the seed storage account: blobs, the queues the app sends to, and
// the ledger's tables.
type store struct {
	blobs     *storage.Blobs
	provision *storage.Queue // token-provisioning
	imports   *storage.Queue // seed-imports
	ledger    *ledger.Ledger
}

// newApp wires the pipeline from cfg: credential and transport, Key Vault, Graph, storage
// and ledger. Every constructor here is offline; the first request makes the first call.
func newApp(cfg *config.Config, log *slog.Logger) (*app, error) {
	cred, err := azauth.Credential(azauth.Identity{OfflineToken: cfg.OfflineToken, ClientID: cfg.ManagedIdentityClientID})
	if err != nil && cfg.ManagedIdentityClientID != "" {
		return nil, fmt.Errorf("OATHPIPE_MANAGED_IDENTITY_CLIENT_ID: %w", err)
	} else if err != nil {
		return nil, err
	}
	hc, err := azauth.HTTPClient(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("OATHPIPE_CA_FILE: %w", err)
	}
	v, err := vault.New(vault.Options{VaultURL: cfg.KeyVaultURL, Credential: cred, HTTPClient: hc, Logger: log.With(logctx.Component, "vault")})
	if err != nil {
		return nil, fmt.Errorf("OATHPIPE_KEYVAULT_URL: %w", err)
	}
	dir, err := entra.New(entra.Options{GraphURL: cfg.GraphURL, Credential: cred, HTTPClient: hc, Logger: log.With(logctx.Component, "entra"),
		AdaptiveWrites: true})
	if err != nil {
		return nil, fmt.Errorf("OATHPIPE_GRAPH_URL: %w", err)
	}
	scred, err := storageCredential(cfg, cred)
	if err != nil {
		return nil, err
	}
	st, err := openStore(cfg, scred, hc, log.With(logctx.Component, "storage"))
	if err != nil {
		return nil, fmt.Errorf("SeedStorage: %w", err)
	}
	p := pipeline.New(pipeline.Deps{
		Vault: v, Directory: dir, Ledger: st.ledger, Queue: st.provision, Blobs: st.blobs,
		Inbox: st.blobs, Imports: st.imports, ImportBudget: cfg.ImportBudget,
		Requeue: st.provision, ThrottleMaxWait: cfg.ThrottleMaxWait,
		AssignOnly:       cfg.Activation == config.ActivationNone,
		VaultConcurrency: cfg.VaultConcurrency,
		ReadOptions:      seedfile.Options{PSKCKey: cfg.PSKCKey, PSKCPassword: cfg.PSKCPassword},
		Envelope:         vault.EnvelopeSecrets{Vault: v, PGPKeySecret: cfg.PGPKeySecret, ZipSecret: cfg.ZipPasswordsSecret},
		Notifier:         notifier(cfg, hc),
		ReportsURL:       st.blobs.ReportsURL(),
		Logger:           log.With(logctx.Component, "pipeline"),
	})
	life := pipeline.NewLifecycle(p, pipeline.LifecycleDeps{Inventory: dir, Seeds: v})
	return &app{pipeline: p, lifecycle: life, store: st, reconciliation: pipeline.Reconciliation{
		Lifecycle: life, Seeds: vaultCatalog{v}, Reports: st.blobs,
		Options: pipeline.ReconcileOptions{TakeBackDisabled: cfg.ReconcileTakeBack, StuckAfter: cfg.ReconcileStuckAfter},
	}}, nil
}

// storageCredential is the identity for the seed storage account: the user-assigned identity
// named by SeedStorage__clientId (the same one the host uses for the triggers) when set,
// otherwise the app's credential.
func storageCredential(cfg *config.Config, cred azcore.TokenCredential) (azcore.TokenCredential, error) {
	if cfg.StorageConnectionString != "" || cfg.StorageClientID == "" || cfg.OfflineToken != "" ||
		cfg.StorageClientID == cfg.ManagedIdentityClientID {
		return cred, nil
	}
	c, err := azauth.Credential(azauth.Identity{ClientID: cfg.StorageClientID})
	if err != nil {
		return nil, fmt.Errorf("SeedStorage__clientId: %w", err)
	}
	return c, nil
}

// storageOptions is how to reach the seed storage account's blobs and queues: the connection
// string when SeedStorage is set, otherwise the identity-based service URLs with cred.
func storageOptions(cfg *config.Config, cred azcore.TokenCredential, hc *http.Client, log *slog.Logger) storage.Options {
	o := storage.Options{HTTPClient: hc, Logger: log}
	if cfg.StorageConnectionString != "" {
		o.ConnectionString = cfg.StorageConnectionString
		return o
	}
	o.BlobServiceURL, o.QueueServiceURL, o.Credential = cfg.BlobServiceURL, cfg.QueueServiceURL, cred
	return o
}

// ledgerOptions is how to reach the ledger's tables on the same account.
func ledgerOptions(cfg *config.Config, cred azcore.TokenCredential, hc *http.Client, log *slog.Logger) ledger.Options {
	o := ledger.Options{HTTPClient: hc, Logger: log}
	if cfg.StorageConnectionString != "" {
		o.ConnectionString = cfg.StorageConnectionString
		return o
	}
	o.ServiceURL, o.Credential = cfg.TableServiceURL, cred
	return o
}

// openStore builds the storage adapters and the ledger for cfg. It makes no request.
func openStore(cfg *config.Config, cred azcore.TokenCredential, hc *http.Client, log *slog.Logger) (*store, error) {
	so := storageOptions(cfg, cred, hc, log)
	blobs, err := storage.NewBlobs(so)
	if err != nil {
		return nil, err
	}
	provision, err := storage.NewQueue(so, pipeline.ProvisionQueue)
	if err != nil {
		return nil, err
	}
	imports, err := storage.NewQueue(so, pipeline.ImportsQueue)
	if err != nil {
		return nil, err
	}
	l, err := ledger.New(ledgerOptions(cfg, cred, hc, log))
	if err != nil {
		return nil, err
	}
	return &store{blobs: blobs, provision: provision, imports: imports, ledger: l}, nil
}

// notifier is the OATHPIPE_NOTIFY_URL webhook, or nil (off) when it is unset.
func notifier(cfg *config.Config, hc *http.Client) pipeline.Notifier {
	if cfg.NotifyURL == "" {
		return nil
	}
	return &notify.Webhook{URL: cfg.NotifyURL, Client: hc}
}
