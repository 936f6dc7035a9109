package devstack

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/oathpipe/oathpipe/shared/ledger"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/storage"
)

// ensureResources creates the containers, queues and tables the app uses, as infra/ does in
// Azure.
func ensureResources(ctx context.Context, conn string, log *slog.Logger) error {
	o := storage.Options{ConnectionString: conn, Logger: log}
	blobs, err := storage.NewBlobs(o)
	if err != nil {
		return fmt.Errorf("storage clients: %w", err)
	}
	if err := blobs.EnsureContainers(ctx); err != nil {
		return fmt.Errorf("create storage resources: %w", err)
	}
	for _, name := range []string{pipeline.ProvisionQueue, pipeline.PoisonQueue, pipeline.ImportsQueue} {
		q, err := storage.NewQueue(o, name)
		if err != nil {
			return fmt.Errorf("storage clients: %w", err)
		}
		if err := q.Ensure(ctx); err != nil {
			return fmt.Errorf("create storage resources: %w", err)
		}
	}
	l, err := ledger.New(ledger.Options{ConnectionString: conn, Logger: log})
	if err != nil {
		return fmt.Errorf("storage clients: %w", err)
	}
	if err := l.EnsureTables(ctx); err != nil {
		return fmt.Errorf("create storage resources: %w", err)
	}
	return nil
}
