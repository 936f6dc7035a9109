package devstack

import (
	"context"
	"errors"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/oathpipe/oathpipe/shared/config"
)

// ensureResources creates the containers, queues and tables the app uses (infra/ does this in
// Azure).
func ensureResources(ctx context.Context, conn string) error {
	bc, err := azblob.NewClientFromConnectionString(conn, nil)
	if err != nil {
		return fmt.Errorf("blob client: %w", err)
	}
	for _, c := range []string{config.InboxContainer, config.ReportsContainer, config.RejectedContainer} {
		if _, err := bc.CreateContainer(ctx, c, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return fmt.Errorf("create container %s: %w", c, err)
		}
	}
	qc, err := azqueue.NewServiceClientFromConnectionString(conn, nil)
	if err != nil {
		return fmt.Errorf("queue client: %w", err)
	}
	for _, q := range []string{config.ProvisionQueue, config.PoisonQueue} {
		if _, err := qc.CreateQueue(ctx, q, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
			return fmt.Errorf("create queue %s: %w", q, err)
		}
	}
	tc, err := aztables.NewServiceClientFromConnectionString(conn, nil)
	if err != nil {
		return fmt.Errorf("table client: %w", err)
	}
	for _, t := range []string{config.LedgerTable, config.AuditTable} {
		if _, err := tc.CreateTable(ctx, t, nil); err != nil && !isTableExists(err) {
			return fmt.Errorf("create table %s: %w", t, err)
		}
	}
	return nil
}

func isTableExists(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && (re.ErrorCode == string(aztables.TableAlreadyExists) || re.StatusCode == 409)
}
