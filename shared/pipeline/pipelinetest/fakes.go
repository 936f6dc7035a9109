// Package pipelinetest helps test code that runs the pipeline: in-memory Ledger, Queue and Blobs
// with the contract's semantics, a stack of the Key Vault and Graph stand-ins with the real
// vault and entra clients, seed-file builders, and a scan for leaked seeds. For tests only.
package pipelinetest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// MemQueue is an in-memory queue holding the message texts as the SDK would send them.
type MemQueue struct {
	mu   sync.Mutex
	Msgs []string // waiting messages, oldest first
	Sent []string // every text ever sent, for the leak scan
	// Delays are the delays EnqueueAfter was given, in order.
	Delays []time.Duration
}

// Enqueue implements pipeline.Queue.
func (q *MemQueue) Enqueue(_ context.Context, msgs []pipeline.ProvisionMessage) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		q.Msgs = append(q.Msgs, string(b))
		q.Sent = append(q.Sent, string(b))
	}
	return nil
}

// EnqueueAfter implements pipeline.Requeue: the message waits at the end of the queue, its
// delay recorded in Delays (the fake has no clock).
func (q *MemQueue) EnqueueAfter(ctx context.Context, m pipeline.ProvisionMessage, delay time.Duration) error {
	if err := q.Enqueue(ctx, []pipeline.ProvisionMessage{m}); err != nil {
		return err
	}
	q.mu.Lock()
	q.Delays = append(q.Delays, delay)
	q.mu.Unlock()
	return nil
}

// Take removes and returns the oldest waiting message.
func (q *MemQueue) Take() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.Msgs) == 0 {
		return "", false
	}
	m := q.Msgs[0]
	q.Msgs = q.Msgs[1:]
	return m, true
}

// MemBlobs is an in-memory blob store: the inbox, reports and the rejected container.
type MemBlobs struct {
	mu       sync.Mutex
	Inbox    map[string]InboxBlob // seed-inbox by name
	Reports  map[string][]byte    // seed-reports by name
	Rejected map[string][]byte    // seed-rejected by name
}

// InboxBlob is a file waiting in the in-memory inbox.
type InboxBlob struct {
	ETag    string
	Content []byte
}

// NewMemBlobs returns empty containers.
func NewMemBlobs() *MemBlobs {
	return &MemBlobs{Inbox: map[string]InboxBlob{}, Reports: map[string][]byte{}, Rejected: map[string][]byte{}}
}

// uploads counts MemBlobs uploads, for their ETags.
var uploads atomic.Int64

// Upload drops a file in the inbox with a fresh ETag and returns it as the blob trigger would.
func (b *MemBlobs) Upload(name string, content []byte) pipeline.InboxFile {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Every upload gets a new ETag, as in Azure (two files of one size under one name too).
	etag := fmt.Sprintf("\"0x%X\"", uploads.Add(1)*1_000_003+int64(len(content)))
	b.Inbox[name] = InboxBlob{ETag: etag, Content: content}
	return pipeline.InboxFile{Name: name, ETag: etag, Content: content}
}

// PutReport implements pipeline.Blobs.
func (b *MemBlobs) PutReport(_ context.Context, name string, js []byte, csv io.Reader) error {
	var fails []byte
	if csv != nil {
		var err error
		if fails, err = io.ReadAll(csv); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Reports[name+".json"] = append([]byte(nil), js...)
	if csv != nil {
		b.Reports[name+".failures.csv"] = fails
	} else {
		delete(b.Reports, name+".failures.csv")
	}
	return nil
}

// Reject implements pipeline.Blobs.
func (b *MemBlobs) Reject(_ context.Context, name, etag string, content io.Reader, target string) error {
	data, err := io.ReadAll(content)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.Rejected[target]; ok && string(cur) != string(data) {
		return token.Errorf(token.KindConflict, "a different file is already stored as seed-rejected/%s", target)
	}
	b.Rejected[target] = data
	if cur, ok := b.Inbox[name]; ok && cur.ETag == etag {
		delete(b.Inbox, name)
	}
	return nil
}

// DeleteInbox implements pipeline.Blobs.
func (b *MemBlobs) DeleteInbox(_ context.Context, name, etag string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.Inbox[name]; ok && cur.ETag == etag {
		delete(b.Inbox, name)
	}
	return nil
}

// Report returns seed-reports/{name}.
func (b *MemBlobs) Report(name string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.Reports[name]
	return r, ok
}

// All concatenates every report, for the leak scan.
func (b *MemBlobs) All() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sb strings.Builder
	for k, v := range b.Reports {
		sb.WriteString(k + "\n" + string(v) + "\n")
	}
	return sb.String()
}
