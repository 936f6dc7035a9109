// Package ledger implements pipeline.Ledger on Azure Table storage: what happened to each seed
// file and each token. One partition per import holds one entity per row of the file and one
// summary entity; two small index partitions find the latest import of a file name and the
// latest row of a serial; a separate table holds an audit record for every change made through
// the HTTP API. It never stores a seed: entities carry serials, user names, statuses and plain
// reasons only. docs/ledger.md shows the entity shapes and key encoding.
//
// The summary's Pending count changes in the same entity group transaction as the token row
// that settles, conditional on both ETags, and the loser of a race re-reads and tries again —
// so concurrent workers never lose a count, and exactly one of them learns that it settled the
// import's last token (and rewrites the report).
package ledger

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/config"
)

// Options configures New. Give either ConnectionString (Azurite, local runs) or ServiceURL and
// Credential (identity-based access in Azure).
type Options struct {
	ConnectionString string
	ServiceURL       string // the account's table endpoint, e.g. https://st.table.core.windows.net/
	Credential       azcore.TokenCredential
	HTTPClient       *http.Client // optional transport (extra CA, test proxies)
	Logger           *slog.Logger
	Now              func() time.Time // optional clock for tests
	LedgerTable      string           // default config.LedgerTable
	AuditTable       string           // default config.AuditTable
}

// Ledger reads and writes the ledger and audit tables.
type Ledger struct {
	service *aztables.ServiceClient
	table   *aztables.Client
	audit   *aztables.Client
	names   [2]string
	log     *slog.Logger
	now     func() time.Time
}

// New builds a Ledger. It makes no request; call EnsureTables for local runs.
func New(o Options) (*Ledger, error) {
	co := &aztables.ClientOptions{}
	if o.HTTPClient != nil {
		co.Transport = o.HTTPClient
	}
	var (
		svc *aztables.ServiceClient
		err error
	)
	switch {
	case o.ConnectionString != "":
		svc, err = aztables.NewServiceClientFromConnectionString(o.ConnectionString, co)
	case o.ServiceURL != "" && o.Credential != nil:
		// The offline credential of the local stand-ins goes to Azurite over plain HTTP; never
		// allowed anywhere but loopback.
		co.InsecureAllowCredentialWithHTTP = strings.HasPrefix(o.ServiceURL, "http://") && config.IsLoopbackURL(o.ServiceURL)
		svc, err = aztables.NewServiceClient(o.ServiceURL, o.Credential, co)
	default:
		return nil, fmt.Errorf("ledger: need a connection string, or a table service URL and a credential")
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: table service client: %w", err)
	}
	l := &Ledger{service: svc, log: o.Logger, now: o.Now, names: [2]string{o.LedgerTable, o.AuditTable}}
	if l.names[0] == "" {
		l.names[0] = config.LedgerTable
	}
	if l.names[1] == "" {
		l.names[1] = config.AuditTable
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.table = svc.NewClient(l.names[0])
	l.audit = svc.NewClient(l.names[1])
	return l, nil
}

// EnsureTables creates the ledger and audit tables when they do not exist (local runs; in
// Azure, infra/ creates them).
func (l *Ledger) EnsureTables(ctx context.Context) error {
	for _, name := range l.names {
		if _, err := l.service.CreateTable(ctx, name, nil); err != nil && !isExists(err) {
			return classify("create table "+name, err)
		}
	}
	return nil
}
