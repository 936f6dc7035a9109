package runner

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

// Names the host uses for blob trigger bookkeeping.
const (
	ReceiptsContainer = "azure-webjobs-hosts"        // receipts: blobreceipts/{hostId}/{function}/{etag}/{container}/{blob}
	BlobPoisonQueue   = "webjobs-blobtrigger-poison" // blobs whose function failed 5 times
)

// blobWatch delivers each new (name, ETag) in one container to one blobTrigger function, once
// successfully, as the Storage 5.x blob trigger does. A failed try is retried at once (the
// shared blob queue listener's visibility timeout is zero), up to poisonBlobThreshold tries
// (SharedBlobQueueListenerFactory.cs), then the blob goes to webjobs-blobtrigger-poison. In
// scan mode success is remembered in a receipt blob (BlobTriggerExecutor.cs), so a restarted
// runner does not deliver the same upload again; with source EventGrid there are no receipts
// (BlobListenerFactory.cs), and a restarted runner delivers what it finds again.
type blobWatch struct {
	r       *Runner
	fn      Function
	trig    Binding
	pat     *blobPattern
	blobs   *azblob.Client
	queues  *azqueue.ServiceClient
	slots   chan struct{}
	wg      sync.WaitGroup
	missing bool // the container did not exist at the last listing (logged once)

	mu       sync.Mutex
	done     map[string]bool      // name NUL etag: delivered, or poisoned
	inflight map[string]bool      // being delivered now
	failures map[string]int       // failed tries so far
	notTill  map[string]time.Time // retry no earlier than
}

func newBlobWatch(r *Runner, fn Function, t Binding, pat *blobPattern, bc *azblob.Client, qc *azqueue.ServiceClient) *blobWatch {
	n := r.host.BlobParallelism
	if n < 1 {
		n = 1
	}
	return &blobWatch{r: r, fn: fn, trig: t, pat: pat, blobs: bc, queues: qc, slots: make(chan struct{}, n),
		done: map[string]bool{}, inflight: map[string]bool{}, failures: map[string]int{}, notTill: map[string]time.Time{}}
}

func (w *blobWatch) run(ctx context.Context) {
	defer w.wg.Wait()
	for {
		turn := Poll{Function: w.fn.Name, Source: w.pat.container, Began: time.Now()}
		var err error
		if turn.Started, err = w.scan(ctx); err != nil && ctx.Err() == nil {
			w.r.log.Warn("list blobs", logctx.Function, w.fn.Name, "container", w.pat.container, logctx.Error, err)
		}
		w.mu.Lock()
		turn.Err, turn.InFlight = err, len(w.inflight)
		w.mu.Unlock()
		w.r.reportPoll(turn)
		if !sleep(ctx, w.r.poll) {
			return
		}
	}
}

// scan lists the container and starts a delivery for every blob not yet handled; it returns
// how many it started.
func (w *blobWatch) scan(ctx context.Context) (int, error) {
	started := 0
	pager := w.blobs.NewListBlobsFlatPager(w.pat.container, &azblob.ListBlobsFlatOptions{
		Include: container.ListBlobsInclude{Metadata: true},
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			if !w.missing {
				w.r.log.Info("container does not exist yet; waiting", "container", w.pat.container)
			}
			w.missing = true
			return started, nil
		}
		if err != nil {
			return started, err
		}
		w.missing = false
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || it.Properties == nil || it.Properties.ETag == nil {
				continue
			}
			params, ok := w.pat.match(*it.Name)
			if !ok {
				continue
			}
			if !w.claim(ctx, *it.Name, string(*it.Properties.ETag)) {
				continue
			}
			select {
			case w.slots <- struct{}{}:
			case <-ctx.Done():
				w.release(*it.Name, string(*it.Properties.ETag))
				return started, nil
			}
			w.wg.Add(1)
			started++
			go func(it *container.BlobItem) {
				defer w.wg.Done()
				defer func() { <-w.slots }()
				w.deliver(ctx, it, params)
			}(it)
		}
	}
	return started, nil
}

func blobKey(name, etag string) string { return name + "\x00" + etag }

// claim marks (name, etag) in flight unless it is done, in flight, waiting for its retry time,
// or has a receipt from an earlier run.
func (w *blobWatch) claim(ctx context.Context, name, etag string) bool {
	k := blobKey(name, etag)
	w.mu.Lock()
	if w.done[k] || w.inflight[k] || time.Now().Before(w.notTill[k]) {
		w.mu.Unlock()
		return false
	}
	w.inflight[k] = true
	w.mu.Unlock()
	if w.receipts() && w.hasReceipt(ctx, name, etag) {
		w.mu.Lock()
		w.done[k] = true
		delete(w.inflight, k)
		w.mu.Unlock()
		return false
	}
	return true
}

func (w *blobWatch) release(name, etag string) {
	w.mu.Lock()
	delete(w.inflight, blobKey(name, etag))
	w.mu.Unlock()
}

// receipts reports whether the trigger keeps blob receipts: only in scan mode.
func (w *blobWatch) receipts() bool { return !strings.EqualFold(w.trig.Source, "EventGrid") }

func (w *blobWatch) receiptName(name, etag string) string {
	return fmt.Sprintf("blobreceipts/%s/Host.Functions.%s/%s/%s/%s", w.r.hostID, w.fn.Name,
		strings.Trim(etag, `"`), w.pat.container, name)
}

func (w *blobWatch) hasReceipt(ctx context.Context, name, etag string) bool {
	_, err := w.blobs.ServiceClient().NewContainerClient(ReceiptsContainer).
		NewBlobClient(w.receiptName(name, etag)).GetProperties(ctx, nil)
	return err == nil
}

func (w *blobWatch) writeReceipt(ctx context.Context, name, etag string) error {
	_, err := w.blobs.UploadBuffer(ctx, ReceiptsContainer, w.receiptName(name, etag), nil, nil)
	if bloberror.HasCode(err, bloberror.ContainerNotFound) {
		if _, err = w.blobs.CreateContainer(ctx, ReceiptsContainer, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return fmt.Errorf("create %s: %w", ReceiptsContainer, err)
		}
		_, err = w.blobs.UploadBuffer(ctx, ReceiptsContainer, w.receiptName(name, etag), nil, nil)
	}
	if err != nil {
		return fmt.Errorf("write receipt for %s: %w", name, err)
	}
	return nil
}

// deliver downloads the blob at the listed ETag and invokes the function with it.
func (w *blobWatch) deliver(ctx context.Context, it *container.BlobItem, params map[string]string) {
	name, etag := *it.Name, string(*it.Properties.ETag)
	defer w.release(name, etag)
	start := time.Now()
	content, dl, ok := w.download(ctx, name, etag)
	if !ok {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, w.r.host.FunctionTimeout) // the host's functionTimeout
	_, err := w.r.Invoke(ictx, w.fn.Name, w.payload(it, dl, content, params))
	cancel()
	if err != nil && ctx.Err() != nil {
		return // shutting down: not a failed try; the next run delivers it again
	}
	d := w.settle(ctx, name, etag, err)
	d.Duration = time.Since(start)
	w.r.report(d)
}

// download reads the blob at etag. It reports false, having logged any failure worth a line,
// when the blob is gone or replaced since the listing (the next listing sees the new state)
// or could not be read.
func (w *blobWatch) download(ctx context.Context, name, etag string) ([]byte, azblob.DownloadStreamResponse, bool) {
	ifMatch := azcore.ETag(etag)
	dl, err := w.blobs.DownloadStream(ctx, w.pat.container, name, &azblob.DownloadStreamOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &ifMatch}},
	})
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ConditionNotMet) {
		return nil, dl, false
	}
	var content []byte
	if err == nil {
		content, err = io.ReadAll(dl.Body)
		dl.Body.Close()
	}
	if err != nil {
		if ctx.Err() == nil {
			w.r.log.Warn("download blob", "container", w.pat.container, "blob", name, logctx.Error, err)
		}
		return nil, dl, false
	}
	return content, dl, true
}

// payload is the invocation of one blob: its content as base64 text (binary and string blob
// inputs alike), the path parameters, Uri, Properties and Metadata as the host sends them.
func (w *blobWatch) payload(it *container.BlobItem, dl azblob.DownloadStreamResponse, content []byte, params map[string]string) Payload {
	p := Payload{Data: map[string]any{}, Metadata: map[string]any{}}
	p.Data[w.trig.Name] = base64.StdEncoding.EncodeToString(content)
	for k, v := range params {
		p.Metadata[k] = hostString(v)
	}
	p.Metadata["Uri"] = hostString(w.blobURL(*it.Name))
	p.Metadata["Properties"] = blobProperties(it, dl, len(content))
	p.Metadata["Metadata"] = blobMetadata(it) // IDictionary<string,string>: an object
	p.Metadata["sys"] = sysData(w.fn.Name, time.Now())
	return p
}

// blobMetadata is a listed blob's metadata as plain strings.
func blobMetadata(it *container.BlobItem) map[string]string {
	md := map[string]string{}
	for k, v := range it.Metadata {
		if v != nil {
			md[k] = *v
		}
	}
	return md
}

// settle counts one try of (name, etag) that ended with err and does the bookkeeping: on
// success a receipt (in scan mode); after poisonBlobThreshold failed tries a poison message
// and a receipt; otherwise nothing, so the next listing retries it at once (host.json's
// queues.visibilityTimeout does not apply to blob triggers). It finishes even when shutdown
// began during the invocation.
func (w *blobWatch) settle(ctx context.Context, name, etag string, err error) Delivery {
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	k := blobKey(name, etag)
	d := Delivery{Function: w.fn.Name, Trigger: BlobTrigger, Key: name, Err: err}
	w.mu.Lock()
	if err != nil {
		w.failures[k]++
		d.DequeueCount = w.failures[k]
	} else {
		d.DequeueCount = w.failures[k] + 1
	}
	w.mu.Unlock()
	if err != nil && d.DequeueCount < w.r.host.PoisonBlobThreshold {
		return d
	}
	if err != nil {
		if perr := w.poison(bg, name, etag); perr != nil {
			w.r.log.Error("blob poison message", "blob", name, logctx.Error, perr)
		}
		d.Poisoned = true
	}
	if w.receipts() {
		if rerr := w.writeReceipt(bg, name, etag); rerr != nil {
			w.r.log.Warn("blob receipt", "blob", name, logctx.Error, rerr)
		}
	}
	w.markDone(k)
	return d
}

func (w *blobWatch) markDone(k string) {
	w.mu.Lock()
	w.done[k] = true
	delete(w.failures, k)
	delete(w.notTill, k)
	w.mu.Unlock()
}

// poison writes the host's poison message for a blob whose function failed every try.
func (w *blobWatch) poison(ctx context.Context, name, etag string) error {
	msg, _ := json.Marshal(map[string]string{
		"Type": "BlobTrigger", "FunctionId": "Host.Functions." + w.fn.Name, "BlobType": "BlockBlob",
		"ContainerName": w.pat.container, "BlobName": name, "ETag": etag,
	})
	q := w.queues.NewQueueClient(BlobPoisonQueue)
	if _, err := q.Create(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		return fmt.Errorf("create %s: %w", BlobPoisonQueue, err)
	}
	if _, err := q.EnqueueMessage(ctx, string(msg), nil); err != nil {
		return fmt.Errorf("enqueue to %s: %w", BlobPoisonQueue, err)
	}
	return nil
}

// blobURL is the blob's URL with the slashes of its name kept, as the host gives it.
func (w *blobWatch) blobURL(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return w.blobs.ServiceClient().NewContainerClient(w.pat.container).URL() + "/" + strings.Join(segs, "/")
}

// blobProperties is Metadata.Properties as the host sends it: Azure.Storage.Blobs.Models.
// BlobProperties (v12, BlobTriggerBinding.cs) through JObject.FromObject
// (ScriptInvocationContextExtensions.cs). Azure.ETag has only private fields, so ETag is {};
// BlobType is an enum, written as its number; CreatedOn (not Created); ContentHash base64.
func blobProperties(it *container.BlobItem, dl azblob.DownloadStreamResponse, size int) map[string]any {
	pr := it.Properties
	out := map[string]any{"ContentLength": size, "ETag": map[string]any{}, "BlobType": blobTypeNumber("BlockBlob"),
		"Metadata": map[string]string{}}
	if dl.ContentType != nil {
		out["ContentType"] = *dl.ContentType
	}
	if dl.LastModified != nil {
		out["LastModified"] = hostTime(*dl.LastModified)
	}
	if pr.CreationTime != nil {
		out["CreatedOn"] = hostTime(*pr.CreationTime)
	}
	if len(pr.ContentMD5) > 0 {
		out["ContentHash"] = base64.StdEncoding.EncodeToString(pr.ContentMD5)
	}
	if pr.BlobType != nil {
		out["BlobType"] = blobTypeNumber(string(*pr.BlobType))
	}
	out["Metadata"] = blobMetadata(it)
	return out
}

// blobTypeNumber is Azure.Storage.Blobs.Models.BlobType as a number: Block 0, Page 1, Append 2.
func blobTypeNumber(t string) int {
	switch strings.ToLower(t) {
	case "pageblob":
		return 1
	case "appendblob":
		return 2
	}
	return 0
}
