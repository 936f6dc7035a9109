package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// MaxInboxFile is the largest seed file ReadInbox reads (a file of 1,000,000 tokens is ~90 MB).
const MaxInboxFile = 512 << 20

// Report blob name suffixes in seed-reports.
const (
	ReportSuffix   = ".json"
	FailuresSuffix = ".failures.csv"
)

// Blobs reads and removes seed files in seed-inbox, writes reports to seed-reports and keeps
// files with failed rows whole in seed-rejected. It implements pipeline.Blobs.
type Blobs struct {
	client *azblob.Client
	log    *slog.Logger
	// afterStore runs between storing and verifying the rejected copy and deleting the inbox
	// blob; tests inject failures there.
	afterStore func(ctx context.Context) error
}

var (
	_ pipeline.Blobs = (*Blobs)(nil)
	_ pipeline.Inbox = (*Blobs)(nil)
)

// NewBlobs builds the blob adapter. It makes no request.
func NewBlobs(o Options) (*Blobs, error) {
	c, err := newBlobClient(o)
	if err != nil {
		return nil, fmt.Errorf("storage: blob client: %w", err)
	}
	return &Blobs{client: c, log: logger(o)}, nil
}

// EnsureContainers creates seed-inbox, seed-reports, seed-rejected and token-parked (private)
// when missing.
func (b *Blobs) EnsureContainers(ctx context.Context) error {
	for _, c := range []string{config.InboxContainer, config.ReportsContainer, config.RejectedContainer, config.ParkedContainer} {
		if _, err := b.client.CreateContainer(ctx, c, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return classify("storage: create container "+c, err)
		}
	}
	return nil
}

// PutInbox uploads a seed file to seed-inbox, the way an admin or a vendor portal drops one,
// and returns its ETag. For the local runner, the demo and tests.
func (b *Blobs) PutInbox(ctx context.Context, name string, content []byte, metadata map[string]string) (string, error) {
	md := make(map[string]*string, len(metadata))
	for k, v := range metadata {
		md[k] = to.Ptr(v)
	}
	resp, err := b.client.UploadBuffer(ctx, config.InboxContainer, name, content, &azblob.UploadBufferOptions{Metadata: md})
	if err != nil {
		return "", classify("storage: upload "+name+" to "+config.InboxContainer, err)
	}
	return string(*resp.ETag), nil
}

// ReadInbox reads seed-inbox/{name} whole, with its ETag and metadata, in one download
// (KindNotFound when gone): the ETag and metadata are those of the bytes read. It implements
// pipeline.Inbox.
// Metadata keys are case-insensitive in Blob storage and come back lower-cased.
func (b *Blobs) ReadInbox(ctx context.Context, name string) (pipeline.InboxFile, error) {
	op := "storage: read " + config.InboxContainer + "/" + name
	content, props, err := b.read(ctx, config.InboxContainer, name, MaxInboxFile)
	if err != nil {
		return pipeline.InboxFile{}, classify(op, err)
	}
	f := pipeline.InboxFile{Name: name, Content: content, Metadata: map[string]string{}}
	if props.ETag != nil {
		f.ETag = string(*props.ETag)
	}
	for k, v := range props.Metadata {
		if v != nil {
			f.Metadata[strings.ToLower(k)] = *v
		}
	}
	return f, nil
}

// read downloads one blob whole (at most limit bytes).
func (b *Blobs) read(ctx context.Context, container, name string, limit int64) ([]byte, azblob.DownloadStreamResponse, error) {
	resp, err := b.client.DownloadStream(ctx, container, name, nil)
	if err != nil {
		return nil, resp, err
	}
	body := resp.NewRetryReader(ctx, nil)
	defer body.Close()
	// One buffer of the blob's size: io.ReadAll's doubling would peak at twice a big file.
	var buf bytes.Buffer
	if resp.ContentLength != nil && *resp.ContentLength >= 0 && *resp.ContentLength <= limit {
		buf.Grow(int(*resp.ContentLength) + 1)
	}
	if _, err := buf.ReadFrom(io.LimitReader(body, limit+1)); err != nil {
		return nil, resp, fmt.Errorf("read body: %w", err)
	}
	content := buf.Bytes()
	if int64(len(content)) > limit {
		return nil, resp, &token.Error{Kind: token.KindInvalid, Message: fmt.Sprintf("larger than %d bytes", limit)}
	}
	return content, resp, nil
}

// Read returns the content of container/name (KindNotFound when absent). For reports and tests.
func (b *Blobs) Read(ctx context.Context, container, name string) ([]byte, error) {
	content, _, err := b.read(ctx, container, name, MaxInboxFile)
	if err != nil {
		return nil, classify("storage: read "+container+"/"+name, err)
	}
	return content, nil
}

// Park keeps a queue message that could not be handled as token-parked/{name}, never over an
// existing blob (If-None-Match: *): an earlier copy under the name is the same message, parked
// by an earlier delivery, and is fine. metadata pairs are stored as blob metadata.
func (b *Blobs) Park(ctx context.Context, name string, content []byte, metadata ...string) error {
	err := b.upload(ctx, config.ParkedContainer, name, content, "application/json",
		&blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
		metadata...)
	if err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return classify("storage: park "+config.ParkedContainer+"/"+name, err)
	}
	return nil
}

// PutReport writes seed-reports/{name}.json and, when failuresCSV is not nil,
// seed-reports/{name}.failures.csv; with failuresCSV nil it deletes any earlier failures file.
// Both are overwritten on every call (the final report replaces the first one).
func (b *Blobs) PutReport(ctx context.Context, name string, reportJSON, failuresCSV []byte) error {
	if err := b.upload(ctx, config.ReportsContainer, name+ReportSuffix, reportJSON, "application/json", nil); err != nil {
		return classify("storage: write report "+name+ReportSuffix, err)
	}
	if failuresCSV == nil {
		_, err := b.client.DeleteBlob(ctx, config.ReportsContainer, name+FailuresSuffix, nil)
		if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
			return classify("storage: delete old "+name+FailuresSuffix, err)
		}
		return nil
	}
	if err := b.upload(ctx, config.ReportsContainer, name+FailuresSuffix, failuresCSV, "text/csv; charset=utf-8", nil); err != nil {
		return classify("storage: write report "+name+FailuresSuffix, err)
	}
	return nil
}

// upload writes content as one block blob, asking the service to check its MD5 on arrival.
// cond, when set, is the access condition (e.g. If-None-Match: * to never overwrite).
func (b *Blobs) upload(ctx context.Context, container, name string, content []byte, contentType string, cond *blob.AccessConditions, metadata ...string) error {
	sum := md5.Sum(content)
	md := map[string]*string{}
	for i := 0; i+1 < len(metadata); i += 2 {
		md[metadata[i]] = to.Ptr(metadata[i+1])
	}
	bc := b.client.ServiceClient().NewContainerClient(container).NewBlockBlobClient(name)
	_, err := bc.Upload(ctx, streamingBody(content), &blockblob.UploadOptions{
		TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
		HTTPHeaders:             &blob.HTTPHeaders{BlobContentType: to.Ptr(contentType), BlobContentMD5: sum[:]},
		Metadata:                md,
		AccessConditions:        cond,
	})
	return err
}

type readSeekNopCloser struct{ *bytes.Reader }

func (readSeekNopCloser) Close() error { return nil }

func streamingBody(b []byte) io.ReadSeekCloser { return readSeekNopCloser{bytes.NewReader(b)} }

// Reject keeps a file whole in the private seed-rejected container as {target}, then deletes
// seed-inbox/{name} if its ETag is still etag. The order is the point — the file holds seeds and
// must never be lost: the copy is written (never over a different existing blob), read back and
// compared byte for byte, and only then is the inbox blob deleted. A failure at any step leaves
// the inbox blob in place, and the call is safe to repeat: a rejected copy with the same
// content is accepted as done, and an inbox blob that is already gone is fine.
func (b *Blobs) Reject(ctx context.Context, name, etag string, content []byte, target string) error {
	op := fmt.Sprintf("storage: move %s/%s to %s/%s", config.InboxContainer, name, config.RejectedContainer, target)
	err := b.upload(ctx, config.RejectedContainer, target, content, "application/octet-stream",
		&blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
		"sourcename", url.PathEscape(name), "sourceetag", etag, "rejectedat", time.Now().UTC().Format(time.RFC3339))
	if err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return classify(op+": store the copy", err)
	}
	// Read the copy back: whether just written or left by an earlier attempt, it must be this
	// file, byte for byte, before the inbox blob may go.
	stored, _, err := b.read(ctx, config.RejectedContainer, target, int64(len(content)))
	if err != nil {
		var te *token.Error
		if errors.As(err, &te) && te.Kind == token.KindInvalid { // longer than content
			return &token.Error{Kind: token.KindConflict, Op: op, Message: "a different file is already stored under this name; the inbox blob is kept"}
		}
		return classify(op+": verify the copy", err)
	}
	if !bytes.Equal(stored, content) {
		return &token.Error{Kind: token.KindConflict, Op: op, Message: "a different file is already stored under this name; the inbox blob is kept"}
	}
	if b.afterStore != nil {
		if err := b.afterStore(ctx); err != nil {
			return classify(op, err)
		}
	}
	if err := b.DeleteInbox(ctx, name, etag); err != nil {
		return err
	}
	b.log.InfoContext(ctx, "seed file moved to the rejected container", "file", name, "target", target, "bytes", len(content))
	return nil
}

// DeleteInbox deletes seed-inbox/{name} (and any snapshots: they hold seeds too) if its ETag is
// still etag. A blob that is already gone, or that was replaced by a new upload (another ETag:
// a new import), is left alone and is not an error.
func (b *Blobs) DeleteInbox(ctx context.Context, name, etag string) error {
	opts := &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)}
	if etag != "" {
		e := azcore.ETag(etag)
		opts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &e}}
	}
	_, err := b.client.DeleteBlob(ctx, config.InboxContainer, name, opts)
	switch {
	case err == nil:
		b.log.InfoContext(ctx, "seed file deleted from the inbox", "file", name)
		return nil
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return nil
	case bloberror.HasCode(err, bloberror.ConditionNotMet):
		b.log.InfoContext(ctx, "inbox blob was replaced by a new upload; left for its own import", "file", name, "etag", etag)
		return nil
	}
	return classify("storage: delete "+config.InboxContainer+"/"+name, err)
}
