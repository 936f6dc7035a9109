package devstack

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/oathpipe/oathpipe/shared/storage"
)

// ensureResources creates the containers, queues and tables the app uses, as infra/ does in
// Azure.
func ensureResources(ctx context.Context, conn string, log *slog.Logger) error {
	acct, err := storage.OpenWith(storage.Options{ConnectionString: conn, Logger: log})
	if err != nil {
		return fmt.Errorf("storage clients: %w", err)
	}
	if err := acct.EnsureResources(ctx); err != nil {
		return fmt.Errorf("create storage resources: %w", err)
	}
	return nil
}
