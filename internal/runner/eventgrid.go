package runner

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

// BlobCreatedType is the Event Grid event type of a new or overwritten blob.
const BlobCreatedType = "Microsoft.Storage.BlobCreated"

// gridWatch plays one Event Grid subscription: it lists the container and, for every blob
// version (name, ETag) it has not announced yet, writes one Microsoft.Storage.BlobCreated
// event in EventGridSchema as one plain-JSON message on the queue — what a system-topic
// subscription with a StorageQueue destination does. Event Grid itself delivers at least once
// and may repeat an event; the runner announces each version once per run (a restarted runner
// announces the blobs still in the container again, which an idempotent import accepts).
type gridWatch struct {
	r     *Runner
	sub   EventGridSubscription
	blobs *azblob.Client
	queue *azqueue.QueueClient

	mu   sync.Mutex
	seen map[string]string // blob name → ETag announced
}

func newGridWatch(r *Runner, sub EventGridSubscription, bc *azblob.Client, qc *azqueue.ServiceClient) *gridWatch {
	return &gridWatch{r: r, sub: sub, blobs: bc, queue: qc.NewQueueClient(sub.Queue), seen: map[string]string{}}
}

func (g *gridWatch) run(ctx context.Context) {
	for {
		turn := Poll{Source: g.sub.Container, Began: time.Now()}
		var err error
		if turn.Started, err = g.scan(ctx); err != nil && ctx.Err() == nil {
			g.r.log.Warn("event grid: list blobs", "container", g.sub.Container, logctx.Error, err)
		}
		turn.Err = err
		g.r.reportPoll(turn)
		if !sleep(ctx, g.r.poll) {
			return
		}
	}
}

// scan queues an event for every blob version not announced yet; it returns how many it queued.
func (g *gridWatch) scan(ctx context.Context) (int, error) {
	queued := 0
	present := map[string]bool{}
	pager := g.blobs.NewListBlobsFlatPager(g.sub.Container, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return queued, nil
		}
		if err != nil {
			return queued, err
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || it.Properties == nil || it.Properties.ETag == nil {
				continue
			}
			name, etag := *it.Name, string(*it.Properties.ETag)
			present[name] = true
			g.mu.Lock()
			announced := g.seen[name] == etag
			g.mu.Unlock()
			if announced {
				continue
			}
			ev := g.event(name, it)
			text, _ := json.Marshal(ev)
			_, err := g.queue.EnqueueMessage(ctx, string(text), nil)
			if queueerror.HasCode(err, queueerror.QueueNotFound) {
				if _, cerr := g.queue.Create(ctx, nil); cerr == nil || queueerror.HasCode(cerr, queueerror.QueueAlreadyExists) {
					_, err = g.queue.EnqueueMessage(ctx, string(text), nil)
				}
			}
			if err != nil {
				return queued, err
			}
			queued++
			g.mu.Lock()
			g.seen[name] = etag
			g.mu.Unlock()
			g.r.log.Info("event grid: BlobCreated event queued", "container", g.sub.Container, "blob", name, "queue", g.sub.Queue)
		}
	}
	g.mu.Lock()
	for name := range g.seen {
		if !present[name] {
			delete(g.seen, name)
		}
	}
	g.mu.Unlock()
	return queued, nil
}

// GridEvent is an Event Grid event in EventGridSchema.
type GridEvent struct {
	Topic           string         `json:"topic"`
	Subject         string         `json:"subject"`
	EventType       string         `json:"eventType"`
	ID              string         `json:"id"`
	Data            map[string]any `json:"data"`
	DataVersion     string         `json:"dataVersion"`
	MetadataVersion string         `json:"metadataVersion"`
	EventTime       string         `json:"eventTime"`
}

// event is the BlobCreated event of one listed blob, as the storage system topic writes it
// (learn.microsoft.com/azure/event-grid/event-schema-blob-storage): the ETag without quotes,
// the URL with the name's characters escaped.
func (g *gridWatch) event(name string, it *container.BlobItem) GridEvent {
	pr := it.Properties
	data := map[string]any{
		"api":                "PutBlob",
		"clientRequestId":    newGUID(),
		"requestId":          newGUID(),
		"eTag":               strings.Trim(string(*pr.ETag), `"`),
		"contentType":        "application/octet-stream",
		"contentLength":      int64(0),
		"blobType":           "BlockBlob",
		"url":                g.blobURL(name),
		"sequencer":          "0000000000000000000000000000000000000000000000000000000000000000",
		"storageDiagnostics": map[string]any{"batchId": newGUID()},
	}
	if pr.ContentType != nil {
		data["contentType"] = *pr.ContentType
	}
	if pr.ContentLength != nil {
		data["contentLength"] = *pr.ContentLength
	}
	if pr.BlobType != nil {
		data["blobType"] = string(*pr.BlobType)
	}
	when := time.Now()
	if pr.LastModified != nil {
		when = *pr.LastModified
	}
	return GridEvent{
		Topic:     "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/oathpipe-dev/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
		Subject:   "/blobServices/default/containers/" + g.sub.Container + "/blobs/" + name,
		EventType: BlobCreatedType, ID: newGUID(), Data: data, DataVersion: "", MetadataVersion: "1",
		EventTime: when.UTC().Format("2006-01-02T15:04:05.0000000Z"),
	}
}

// blobURL is the blob's URL, its name escaped segment by segment.
func (g *gridWatch) blobURL(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return g.blobs.ServiceClient().NewContainerClient(g.sub.Container).URL() + "/" + strings.Join(segs, "/")
}
