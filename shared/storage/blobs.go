package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
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

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// MaxReadBlob is the largest blob Read returns whole (reports and tests). Seed files are never
// read whole: ReadInbox streams them.
const MaxReadBlob = 512 << 20

// streamBlock is the block size of a streamed upload (a rejected file, a failures CSV); with
// streamConcurrency blocks in flight it bounds the memory of the upload.
const (
	streamBlock       = 4 << 20
	streamConcurrency = 2
)

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
	for _, c := range []string{pipeline.InboxContainer, pipeline.ReportsContainer, pipeline.RejectedContainer, pipeline.ParkedContainer} {
		if _, err := b.client.CreateContainer(ctx, c, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return classify("storage: create container "+c, err)
		}
	}
	return nil
}

// ReadInbox reads the properties of seed-inbox/{name} — ETag, size and user metadata — and
// returns them with a Blob that streams the content pinned to that ETag (every download and
// ranged read carries If-Match, the SDK's retry reader included): the content read is always the
// bytes those properties describe, and a blob replaced since fails the read instead of mixing
// two uploads (KindNotFound when the blob is gone). It implements pipeline.Inbox.
// Metadata keys are case-insensitive in Blob storage and come back lower-cased.
func (b *Blobs) ReadInbox(ctx context.Context, name string) (pipeline.InboxFile, error) {
	op := "storage: read " + pipeline.InboxContainer + "/" + name
	props, err := b.client.ServiceClient().NewContainerClient(pipeline.InboxContainer).NewBlobClient(name).GetProperties(ctx, nil)
	if err != nil {
		return pipeline.InboxFile{}, classify(op, err)
	}
	f := pipeline.InboxFile{Name: name, Metadata: map[string]string{}}
	if props.ETag != nil {
		f.ETag = string(*props.ETag)
	}
	if props.ContentLength != nil {
		f.Size = *props.ContentLength
	}
	for k, v := range props.Metadata {
		if v != nil {
			f.Metadata[strings.ToLower(k)] = *v
		}
	}
	f.Blob = &blobReader{b: b, container: pipeline.InboxContainer, name: name, etag: azcore.ETag(f.ETag), size: f.Size}
	return f, nil
}

// blobReader reads one blob pinned to its ETag: pipeline.BlobReader.
type blobReader struct {
	b               *Blobs
	container, name string
	etag            azcore.ETag
	size            int64
}

func (r *blobReader) op() string { return "storage: read " + r.container + "/" + r.name }

func (r *blobReader) conditions() *blob.AccessConditions {
	e := r.etag
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &e}}
}

// Open streams the blob from its start; a broken connection is resumed by the SDK's retry
// reader with a ranged read, If-Match the same ETag.
func (r *blobReader) Open(ctx context.Context) (io.ReadCloser, error) {
	resp, err := r.b.client.DownloadStream(ctx, r.container, r.name, &azblob.DownloadStreamOptions{AccessConditions: r.conditions()})
	if err != nil {
		return nil, classify(r.op(), err)
	}
	return &classifiedBody{rc: resp.NewRetryReader(ctx, &azblob.RetryReaderOptions{MaxRetries: 5}), op: r.op()}, nil
}

// ReadAt reads len(p) bytes at off with one ranged download (io.ReaderAt's contract: fewer
// bytes only at the end of the blob, with io.EOF).
func (r *blobReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &token.Error{Kind: token.KindInvalid, Op: r.op(), Message: "negative offset"}
	}
	if off >= r.size {
		return 0, io.EOF
	}
	count := min(int64(len(p)), r.size-off)
	if count == 0 {
		return 0, nil
	}
	resp, err := r.b.client.DownloadStream(ctx, r.container, r.name, &azblob.DownloadStreamOptions{
		Range: blob.HTTPRange{Offset: off, Count: count}, AccessConditions: r.conditions()})
	if err != nil {
		return 0, classify(r.op(), err)
	}
	body := resp.NewRetryReader(ctx, &azblob.RetryReaderOptions{MaxRetries: 5})
	defer body.Close()
	n, err := io.ReadFull(body, p[:count])
	if err != nil {
		return n, classify(r.op(), err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// classifiedBody classifies a failure of a download body (io.EOF passes as is).
type classifiedBody struct {
	rc io.ReadCloser
	op string
}

func (c *classifiedBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if err != nil && err != io.EOF {
		err = classify(c.op, err)
	}
	return n, err
}

func (c *classifiedBody) Close() error { return c.rc.Close() }

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
	content, _, err := b.read(ctx, container, name, MaxReadBlob)
	if err != nil {
		return nil, classify("storage: read "+container+"/"+name, err)
	}
	return content, nil
}

// ReportsURL is the URL of the seed-reports container (no trailing slash), for links to the
// reports in notifications: an admin opens them with Storage Explorer, the portal or
// `az storage blob download --blob-url URL --auth-mode login` (the container is private).
func (b *Blobs) ReportsURL() string {
	return strings.TrimSuffix(b.client.URL(), "/") + "/" + pipeline.ReportsContainer
}

// Park keeps a queue message that could not be handled as token-parked/{name}, never over an
// existing blob (If-None-Match: *): an earlier copy under the name is the same message, parked
// by an earlier delivery, and is fine. metadata pairs are stored as blob metadata.
func (b *Blobs) Park(ctx context.Context, name string, content []byte, metadata ...string) error {
	err := b.upload(ctx, pipeline.ParkedContainer, name, content, "application/json",
		&blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
		metadata...)
	if err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return classify("storage: park "+pipeline.ParkedContainer+"/"+name, err)
	}
	return nil
}

// PutReport writes seed-reports/{name}.json and, when failuresCSV is not nil,
// seed-reports/{name}.failures.csv; with failuresCSV nil it deletes any earlier failures file.
// Both are overwritten on every call (the final report replaces the first one).
func (b *Blobs) PutReport(ctx context.Context, name string, reportJSON []byte, failuresCSV io.Reader) error {
	if err := b.upload(ctx, pipeline.ReportsContainer, name+ReportSuffix, reportJSON, "application/json", nil); err != nil {
		return classify("storage: write report "+name+ReportSuffix, err)
	}
	if failuresCSV == nil {
		_, err := b.client.DeleteBlob(ctx, pipeline.ReportsContainer, name+FailuresSuffix, nil)
		if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
			return classify("storage: delete old "+name+FailuresSuffix, err)
		}
		return nil
	}
	if _, err := b.uploadStream(ctx, pipeline.ReportsContainer, name+FailuresSuffix, failuresCSV, "text/csv; charset=utf-8", nil); err != nil {
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

// uploadStream writes what r streams (to its end) as one block blob, in blocks of streamBlock,
// and returns the SHA-256 of every byte read from r (all of r is read, even when the upload
// fails, so the hash is the content's). A failure to read r is returned as a *sourceError, not
// classified as storage's.
func (b *Blobs) uploadStream(ctx context.Context, container, name string, r io.Reader, contentType string, cond *blob.AccessConditions, metadata ...string) (sum []byte, err error) {
	md := map[string]*string{}
	for i := 0; i+1 < len(metadata); i += 2 {
		md[metadata[i]] = to.Ptr(metadata[i+1])
	}
	h := sha256.New()
	src := &sourceReader{r: io.TeeReader(r, h)}
	bc := b.client.ServiceClient().NewContainerClient(container).NewBlockBlobClient(name)
	_, err = bc.UploadStream(ctx, src, &blockblob.UploadStreamOptions{
		BlockSize: streamBlock, Concurrency: streamConcurrency,
		HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: to.Ptr(contentType)},
		Metadata:         md,
		AccessConditions: cond,
	})
	if src.err != nil {
		return nil, &sourceError{err: src.err}
	}
	if _, cerr := io.Copy(io.Discard, src); cerr != nil {
		return nil, &sourceError{err: cerr}
	}
	return h.Sum(nil), err
}

// sourceReader remembers the first failure of the reader an upload streams from.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// sourceError is a failure to read what was being uploaded (not the upload's).
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "read the content: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// hashBlob streams container/name and returns its SHA-256 and size.
func (b *Blobs) hashBlob(ctx context.Context, container, name string) ([]byte, int64, error) {
	resp, err := b.client.DownloadStream(ctx, container, name, nil)
	if err != nil {
		return nil, 0, err
	}
	body := resp.NewRetryReader(ctx, &azblob.RetryReaderOptions{MaxRetries: 5})
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return nil, n, fmt.Errorf("read body: %w", err)
	}
	return h.Sum(nil), n, nil
}

// Reject keeps a file whole in the private seed-rejected container as {target}, then deletes
// seed-inbox/{name} if its ETag is still etag. The order is the point — the file holds seeds and
// must never be lost: the copy is streamed from content (the inbox blob's download, pinned to its
// ETag) block by block, never over a different existing blob, then read back and compared by
// SHA-256 with the bytes streamed, and only then is the inbox blob deleted. Memory stays flat
// in the file's size (streamConcurrency blocks of streamBlock). A failure at any step leaves
// the inbox blob in place, and the call is safe to repeat: a rejected copy with the same
// content is accepted as done, and an inbox blob that is already gone is fine.
func (b *Blobs) Reject(ctx context.Context, name, etag string, content io.Reader, target string) error {
	op := fmt.Sprintf("storage: move %s/%s to %s/%s", pipeline.InboxContainer, name, pipeline.RejectedContainer, target)
	want, err := b.uploadStream(ctx, pipeline.RejectedContainer, target, content, "application/octet-stream",
		&blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
		"sourcename", url.PathEscape(name), "sourceetag", etag, "rejectedat", time.Now().UTC().Format(time.RFC3339))
	var se *sourceError
	switch {
	case errors.As(err, &se) && bloberror.HasCode(se.err, bloberror.BlobNotFound, bloberror.ConditionNotMet):
		// The inbox blob is gone or replaced: an earlier attempt may have moved it (the copy is
		// verified before the inbox blob is deleted). Done when that copy is there.
		props, perr := b.client.ServiceClient().NewContainerClient(pipeline.RejectedContainer).NewBlobClient(target).GetProperties(ctx, nil)
		if perr == nil && props.Metadata != nil {
			for k, v := range props.Metadata {
				if strings.EqualFold(k, "sourceetag") && v != nil && *v == etag {
					b.log.InfoContext(ctx, "seed file already moved to the rejected container", logctx.File, name, "target", target)
					return nil
				}
			}
		}
		return classify(op+": read the inbox blob", se.err)
	case errors.As(err, &se):
		var te *token.Error
		if errors.As(se.err, &te) {
			return fmt.Errorf("%s: read the inbox blob: %w", op, se.err)
		}
		return classify(op+": read the inbox blob", se.err)
	case err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet):
		return classify(op+": store the copy", err)
	}
	// Read the copy back: whether just written or left by an earlier attempt, it must be this
	// file, byte for byte, before the inbox blob may go.
	got, size, err := b.hashBlob(ctx, pipeline.RejectedContainer, target)
	if err != nil {
		return classify(op+": verify the copy", err)
	}
	if !bytes.Equal(got, want) {
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
	b.log.InfoContext(ctx, "seed file moved to the rejected container", logctx.File, name, "target", target, "bytes", size)
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
	_, err := b.client.DeleteBlob(ctx, pipeline.InboxContainer, name, opts)
	switch {
	case err == nil:
		b.log.InfoContext(ctx, "seed file deleted from the inbox", logctx.File, name)
		return nil
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return nil
	case bloberror.HasCode(err, bloberror.ConditionNotMet):
		b.log.InfoContext(ctx, "inbox blob was replaced by a new upload; left for its own import", logctx.File, name, "etag", etag)
		return nil
	}
	return classify("storage: delete "+pipeline.InboxContainer+"/"+name, err)
}
