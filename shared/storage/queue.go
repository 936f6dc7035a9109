package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// MaxMessage is the largest message Queue storage accepts (64 KiB of text).
const MaxMessage = 64 << 10

// enqueueConcurrency is how many messages Enqueue sends at once: a file of thousands of tokens
// is queued in seconds, well inside one account's 20,000 requests/s.
const enqueueConcurrency = 16

// Queue sends messages to one storage queue as plain text: the Functions host reads them with
// host.json's messageEncoding "none", so they are not Base64-encoded. It implements
// pipeline.Queue.
type Queue struct {
	client *azqueue.QueueClient
	name   string
	log    *slog.Logger
}

var (
	_ pipeline.Queue       = (*Queue)(nil)
	_ pipeline.ImportQueue = (*Queue)(nil)
	_ pipeline.Requeue     = (*Queue)(nil)
)

// NewQueue builds the adapter for the queue called name. It makes no request.
func NewQueue(o Options, name string) (*Queue, error) {
	c, err := newQueueClient(o, name)
	if err != nil {
		return nil, fmt.Errorf("storage: queue client for %s: %w", name, err)
	}
	return &Queue{client: c, name: name, log: logger(o)}, nil
}

// Name is the queue's name.
func (q *Queue) Name() string { return q.name }

// Ensure creates the queue when missing.
func (q *Queue) Ensure(ctx context.Context) error {
	if _, err := q.client.Create(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		return classify("storage: create queue "+q.name, err)
	}
	return nil
}

// Enqueue sends one JSON message per provisioning job, several at once. Messages never expire
// (time-to-live -1): a token waiting out a long Graph outage must not silently drop out of
// its import. On error some messages may have been sent; sending them all again is safe, as
// the worker is idempotent.
func (q *Queue) Enqueue(ctx context.Context, msgs []pipeline.ProvisionMessage) error {
	texts := make([]string, len(msgs))
	for i, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("storage: encode message for %s: %w", m.SerialNumber, err)
		}
		texts[i] = string(b)
	}
	if err := q.enqueueText(ctx, texts...); err != nil {
		return err
	}
	q.log.DebugContext(ctx, "provisioning messages sent", "queue", q.name, "count", len(msgs))
	return nil
}

// EnqueueAfter sends one provisioning message that stays invisible for delay (a throttled
// token's next try; Queue storage allows up to 7 days). It never expires, like Enqueue's.
func (q *Queue) EnqueueAfter(ctx context.Context, m pipeline.ProvisionMessage, delay time.Duration) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("storage: encode message for %s: %w", m.SerialNumber, err)
	}
	secs := int32(min(max(delay, 0), 7*24*time.Hour-time.Second).Round(time.Second) / time.Second)
	if _, err := q.client.EnqueueMessage(ctx, string(b), &azqueue.EnqueueMessageOptions{
		TimeToLive: to.Ptr(int32(-1)), VisibilityTimeout: to.Ptr(secs),
	}); err != nil {
		return classify("storage: re-queue message for "+m.SerialNumber+" to "+q.name, err)
	}
	return nil
}

// EnqueueContinuation sends an import's continuation message (to seed-imports), as plain JSON
// like the Event Grid events beside it. It never expires: a long import must not lose its
// next part.
func (q *Queue) EnqueueContinuation(ctx context.Context, c pipeline.ImportContinuation) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("storage: encode continuation of %s: %w", c.BlobName, err)
	}
	return q.enqueueText(ctx, string(b))
}

// enqueueText sends each text as one message, as is, several at once.
func (q *Queue) enqueueText(ctx context.Context, texts ...string) error {
	for _, t := range texts {
		if len(t) > MaxMessage {
			return &token.Error{Kind: token.KindInvalid, Op: "storage: enqueue to " + q.name, Message: fmt.Sprintf("a message of %d bytes is over the 64 KiB limit", len(t))}
		}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, enqueueConcurrency)
	)
	for i, t := range texts {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := q.client.EnqueueMessage(ctx, t, &azqueue.EnqueueMessageOptions{TimeToLive: to.Ptr(int32(-1))})
			if err != nil {
				mu.Lock()
				if first == nil {
					first = classify(fmt.Sprintf("storage: enqueue message %d of %d to %s", i+1, len(texts), q.name), err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}
