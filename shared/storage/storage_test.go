package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/internal/azurite"
	"github.com/oathpipe/oathpipe/shared/azauth"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

var server *azurite.Server

func TestMain(m *testing.M) {
	if strings.Contains(strings.Join(os.Args, " "), "-test.list") {
		os.Exit(m.Run())
	}
	s, err := azurite.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "storage tests need Azurite:", err)
		os.Exit(1)
	}
	server = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

// testAccount is the blob and queue clients of the Azurite account.
type testAccount struct {
	Blobs                      *Blobs
	Provision, Poison, Imports *Queue
}

// account opens the Azurite account and creates the containers and queues (twice: creating
// them is idempotent).
func account(t *testing.T) *testAccount {
	t.Helper()
	o := Options{ConnectionString: server.ConnectionString()}
	a := &testAccount{Blobs: must(NewBlobs(o))(t), Provision: must(NewQueue(o, pipeline.ProvisionQueue))(t),
		Poison: must(NewQueue(o, pipeline.PoisonQueue))(t), Imports: must(NewQueue(o, pipeline.ImportsQueue))(t)}
	for i := 0; i < 2; i++ {
		if err := a.Blobs.EnsureContainers(context.Background()); err != nil {
			t.Fatalf("EnsureContainers #%d: %v", i+1, err)
		}
		for _, q := range []*Queue{a.Provision, a.Poison, a.Imports} {
			if err := q.Ensure(context.Background()); err != nil {
				t.Fatalf("Ensure %s #%d: %v", q.Name(), i+1, err)
			}
		}
	}
	return a
}

func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestIdentityBased(t *testing.T) {
	o := Options{
		BlobServiceURL:  "https://st.blob.core.windows.net/",
		QueueServiceURL: "https://st.queue.core.windows.net/",
		Credential:      azauth.StaticToken("t"),
	}
	if _, err := NewBlobs(o); err != nil {
		t.Fatal(err)
	}
	if q, err := NewQueue(o, pipeline.PoisonQueue); err != nil || q.Name() != pipeline.PoisonQueue {
		t.Fatalf("NewQueue = %v, %v", q, err)
	}
	if _, err := NewBlobs(Options{}); err == nil {
		t.Fatal("NewBlobs with neither a connection string nor a URL succeeded")
	}
	if _, err := NewQueue(Options{BlobServiceURL: o.BlobServiceURL, Credential: o.Credential}, pipeline.ProvisionQueue); err == nil {
		t.Fatal("NewQueue without a queue URL succeeded")
	}
}

func TestReports(t *testing.T) {
	a := account(t)
	ctx := context.Background()
	for _, name := range []string{"tokens.csv", "vendor/2026/batch 7 (Ω) #1?.csv", "100% sure; ü.xml"} {
		if err := a.Blobs.PutReport(ctx, name, []byte(`{"first":true}`), strings.NewReader("line,field\n3,upn\n")); err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if err := a.Blobs.PutReport(ctx, name, []byte(`{"final":true}`), nil); err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		js, err := a.Blobs.Read(ctx, pipeline.ReportsContainer, name+ReportSuffix)
		if err != nil || string(js) != `{"final":true}` {
			t.Errorf("%q report = %s, %v; want the final one", name, js, err)
		}
		if _, err := a.Blobs.Read(ctx, pipeline.ReportsContainer, name+FailuresSuffix); token.KindOf(err) != token.KindNotFound {
			t.Errorf("%q failures file after a report without failures: %v, want not found", name, err)
		}
		if err := a.Blobs.PutReport(ctx, name, []byte(`{}`), strings.NewReader("x\n")); err != nil {
			t.Fatal(err)
		}
		if csv, err := a.Blobs.Read(ctx, pipeline.ReportsContainer, name+FailuresSuffix); err != nil || string(csv) != "x\n" {
			t.Errorf("%q failures = %q, %v", name, csv, err)
		}
	}
}

func TestInboxReadAndDelete(t *testing.T) {
	a := account(t)
	ctx := context.Background()
	name := "in/ü #1?.csv"
	etag, err := a.Blobs.PutInbox(ctx, name, []byte("v1"), map[string]string{"format": "entra-csv"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := a.Blobs.ReadInbox(ctx, name)
	if err != nil || f.Content != nil || f.Size != 2 || inboxContent(t, f) != "v1" || f.ETag != etag || f.Metadata["format"] != "entra-csv" {
		t.Fatalf("ReadInbox = %+v, %v", f, err)
	}
	old := f
	// A new upload under the same name: deleting with the old ETag leaves the new file alone.
	etag2, err := a.Blobs.PutInbox(ctx, name, []byte("v2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Blobs.DeleteInbox(ctx, name, etag); err != nil {
		t.Fatalf("DeleteInbox with a stale ETag: %v, want nil", err)
	}
	if f, err := a.Blobs.ReadInbox(ctx, name); err != nil || inboxContent(t, f) != "v2" {
		t.Fatalf("after a stale delete: %+v, %v; want v2 kept", f, err)
	}
	// The old file's reader is pinned to its ETag: it never reads the new upload.
	if _, err := old.Open(ctx); err == nil {
		t.Errorf("Open of a replaced blob succeeded; want If-Match to fail it")
	}
	if _, err := old.ReaderAt(ctx).ReadAt(make([]byte, 1), 0); err == nil || err == io.EOF {
		t.Errorf("ReadAt of a replaced blob = %v; want If-Match to fail it", err)
	}
	if err := a.Blobs.DeleteInbox(ctx, name, etag2); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Blobs.ReadInbox(ctx, name); token.KindOf(err) != token.KindNotFound {
		t.Fatalf("after delete: %v, want not found", err)
	}
	if err := a.Blobs.DeleteInbox(ctx, name, etag2); err != nil {
		t.Fatalf("deleting again: %v, want nil", err)
	}
}

// TestRejectNeverLosesFile injects failures between each step of the move and checks that the
// file always exists somewhere, whole, and that repeating the move finishes it.
func TestRejectNeverLosesFile(t *testing.T) {
	a := account(t)
	ctx := context.Background()
	content := []byte("upn,serial number,secret key\nada@contoso.com,1001,JBSWY3DPEHPK3PXP\n")
	name := "batch/7 ü.csv"
	target := "imp-0123/" + name
	etag, err := a.Blobs.PutInbox(ctx, name, content, nil)
	if err != nil {
		t.Fatal(err)
	}

	boom := errors.New("injected: the instance died between copy and delete")
	a.Blobs.afterStore = func(context.Context) error { return boom }
	if err := a.Blobs.Reject(ctx, name, etag, bytes.NewReader(content), target); !errors.Is(err, boom) {
		t.Fatalf("Reject with a failure after the copy = %v, want the injected failure", err)
	}
	if f, err := a.Blobs.ReadInbox(ctx, name); err != nil || inboxContent(t, f) != string(content) {
		t.Fatalf("inbox after a failed move: %v; the file must still be there", err)
	}
	if got, err := a.Blobs.Read(ctx, pipeline.RejectedContainer, target); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("rejected copy after a failed move: %v", err)
	}

	a.Blobs.afterStore = nil
	if err := a.Blobs.Reject(ctx, name, etag, bytes.NewReader(content), target); err != nil {
		t.Fatalf("repeated Reject: %v", err)
	}
	if _, err := a.Blobs.ReadInbox(ctx, name); token.KindOf(err) != token.KindNotFound {
		t.Fatalf("inbox after the move: %v, want gone", err)
	}
	if got, err := a.Blobs.Read(ctx, pipeline.RejectedContainer, target); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("rejected copy: %q, %v", got, err)
	}
	if err := a.Blobs.Reject(ctx, name, etag, bytes.NewReader(content), target); err != nil {
		t.Fatalf("Reject once more after done: %v", err)
	}
}

func TestRejectRefusesToOverwrite(t *testing.T) {
	a := account(t)
	ctx := context.Background()
	for _, other := range [][]byte{[]byte("a different file"), []byte("short"), []byte("same length!")} {
		name := fmt.Sprintf("clash-%d.csv", len(other))
		content := []byte("same length?")
		if _, err := a.Blobs.PutInbox(ctx, name, content, nil); err != nil {
			t.Fatal(err)
		}
		f, _ := a.Blobs.ReadInbox(ctx, name)
		target := "imp-x/" + name
		if err := a.Blobs.upload(ctx, pipeline.RejectedContainer, target, other, "text/plain", nil); err != nil {
			t.Fatal(err)
		}
		err := a.Blobs.Reject(ctx, name, f.ETag, bytes.NewReader(content), target)
		if token.KindOf(err) != token.KindConflict {
			t.Errorf("Reject onto a different file = %v, want KindConflict", err)
		}
		if got, _ := a.Blobs.Read(ctx, pipeline.RejectedContainer, target); !bytes.Equal(got, other) {
			t.Errorf("the earlier rejected file was overwritten")
		}
		if g, err := a.Blobs.ReadInbox(ctx, name); err != nil || inboxContent(t, g) != string(content) {
			t.Errorf("inbox blob gone after a refused move: %v", err)
		}
	}
}

func TestRejectFailureBeforeCopyKeepsInbox(t *testing.T) {
	a := account(t)
	ctx := context.Background()
	name := "no-container.csv"
	etag, _ := a.Blobs.PutInbox(ctx, name, []byte("seeds"), nil)
	if _, err := a.Blobs.client.DeleteContainer(ctx, pipeline.RejectedContainer, nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Azurite frees a deleted container's name at once; recreate it for the other tests.
		for i := 0; i < 50; i++ {
			if a.Blobs.EnsureContainers(ctx) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if err := a.Blobs.Reject(ctx, name, etag, strings.NewReader("seeds"), "t/"+name); err == nil {
		t.Fatal("Reject without a rejected container succeeded")
	}
	if f, err := a.Blobs.ReadInbox(ctx, name); err != nil || inboxContent(t, f) != "seeds" {
		t.Fatalf("inbox after a failed copy: %v", err)
	}
}

func TestEnqueuePlainText(t *testing.T) {
	a := account(t)
	ctx := context.Background()
	q, err := NewQueue(Options{ConnectionString: server.ConnectionString()}, "plaintext-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	var msgs []pipeline.ProvisionMessage
	for i := 0; i < 40; i++ {
		msgs = append(msgs, pipeline.ProvisionMessage{
			ImportID: "imp-1", FileName: "dir/ü <&> 'q\".csv", Line: i + 2, SerialNumber: fmt.Sprintf("S%03d", i),
			Manufacturer: "Token2", UserPrincipalName: "o'brien+ü@contoso.com",
		})
	}
	if err := q.Enqueue(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if n, err := q.ApproximateCount(ctx); err != nil || n != 40 {
		t.Fatalf("ApproximateCount = %d, %v", n, err)
	}
	seen := map[int]bool{}
	for len(seen) < 40 {
		resp, err := q.client.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Messages) == 0 {
			t.Fatalf("only %d of 40 messages arrived", len(seen))
		}
		for _, m := range resp.Messages {
			var got pipeline.ProvisionMessage
			// Plain JSON text, as host.json's messageEncoding "none" reads it: not Base64.
			if err := json.Unmarshal([]byte(*m.MessageText), &got); err != nil {
				t.Fatalf("message is not plain JSON: %q", *m.MessageText)
			}
			want := msgs[got.Line-2]
			if got != want {
				t.Fatalf("message = %+v, want %+v", got, want)
			}
			if m.ExpirationTime == nil || m.ExpirationTime.Before(time.Now().AddDate(1, 0, 0)) {
				t.Errorf("message expires %v; want never (TTL -1)", m.ExpirationTime)
			}
			seen[got.Line] = true
		}
	}
	if err := q.enqueueText(ctx, strings.Repeat("x", MaxMessage+1)); token.KindOf(err) != token.KindInvalid {
		t.Fatalf("oversized message: %v, want KindInvalid", err)
	}
	_ = a
}

// BenchmarkEnqueue measures sending provisioning messages (one per token of a file).
func BenchmarkEnqueue(b *testing.B) {
	q, err := NewQueue(Options{ConnectionString: server.ConnectionString()}, "bench-enqueue")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := q.Ensure(ctx); err != nil {
		b.Fatal(err)
	}
	msgs := make([]pipeline.ProvisionMessage, b.N)
	for i := range msgs {
		msgs[i] = pipeline.ProvisionMessage{ImportID: "imp-b", FileName: "b.csv", Line: i + 2, SerialNumber: fmt.Sprint(i), UserPrincipalName: "a@b"}
	}
	b.ResetTimer()
	if err := q.Enqueue(ctx, msgs); err != nil {
		b.Fatal(err)
	}
}

// inboxContent streams an inbox file's content.
func inboxContent(t *testing.T, f pipeline.InboxFile) string {
	t.Helper()
	body, err := f.Open(context.Background())
	if err != nil {
		t.Fatalf("open %s: %v", f.Name, err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read %s: %v", f.Name, err)
	}
	return string(b)
}

// TestInboxRangedReads reads an inbox blob by ranges, as a zip reader does (its central
// directory at the end first), and checks io.ReaderAt's contract at the end of the blob.
func TestInboxRangedReads(t *testing.T) {
	a := account(t)
	ctx := context.Background()
	name := "in/ranged.bin"
	content := make([]byte, 3<<20+17) // beyond one download chunk
	for i := range content {
		content[i] = byte(i * 7)
	}
	if _, err := a.Blobs.PutInbox(ctx, name, content, nil); err != nil {
		t.Fatal(err)
	}
	f, err := a.Blobs.ReadInbox(ctx, name)
	if err != nil || f.ContentSize() != int64(len(content)) {
		t.Fatalf("ReadInbox = %+v, %v", f, err)
	}
	ra := f.ReaderAt(ctx)
	for _, c := range []struct {
		off, n int
		eof    bool
	}{{0, 10, false}, {len(content) - 22, 22, false}, {1 << 20, 1 << 20, false}, {len(content) - 5, 10, true}, {len(content), 4, true}} {
		buf := make([]byte, c.n)
		n, err := ra.ReadAt(buf, int64(c.off))
		want := content[c.off:min(c.off+c.n, len(content))]
		if !bytes.Equal(buf[:n], want) || (err == io.EOF) != c.eof || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d bytes, EOF %v", c.n, c.off, n, err, len(want), c.eof)
		}
	}
	if s := inboxContent(t, f); s != string(content) {
		t.Errorf("streamed %d bytes, want %d", len(s), len(content))
	}
}

// A repeated Reject after the move finished (the inbox blob is gone, so its content cannot be
// streamed again) accepts the copy whose sourceetag is the file's ETag; another ETag's copy is
// not taken for it.
func TestRejectRepeatAfterInboxGone(t *testing.T) {
	a := account(t)
	ctx := context.Background()
	name := "gone/after-move.csv"
	content := []byte("serial,secret\nG-1,JBSWY3DPEHPK3PXP\n")
	etag, err := a.Blobs.PutInbox(ctx, name, content, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := a.Blobs.ReadInbox(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	open := func() io.Reader {
		body, err := f.Open(ctx)
		if err != nil {
			return &failReader{err}
		}
		return body
	}
	target := "imp-gone/" + name
	if err := a.Blobs.Reject(ctx, name, etag, open(), target); err != nil {
		t.Fatal(err)
	}
	if err := a.Blobs.Reject(ctx, name, etag, open(), target); err != nil {
		t.Fatalf("repeated Reject after the move: %v", err)
	}
	if err := a.Blobs.Reject(ctx, name, `"0xOTHER"`, open(), target); err == nil {
		t.Fatal("Reject of another upload whose blob is gone took the earlier copy for its own")
	}
	if got, err := a.Blobs.Read(ctx, pipeline.RejectedContainer, target); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("rejected copy: %q, %v", got, err)
	}
}

type failReader struct{ err error }

func (r *failReader) Read([]byte) (int, error) { return 0, r.err }

// PutInbox uploads a seed file to seed-inbox, the way an admin or a vendor portal drops one,
// and returns its ETag. (Tests only: nothing in
// the app writes to the inbox.)
func (b *Blobs) PutInbox(ctx context.Context, name string, content []byte, metadata map[string]string) (string, error) {
	md := make(map[string]*string, len(metadata))
	for k, v := range metadata {
		md[k] = to.Ptr(v)
	}
	resp, err := b.client.UploadBuffer(ctx, pipeline.InboxContainer, name, content, &azblob.UploadBufferOptions{Metadata: md})
	if err != nil {
		return "", classify("storage: upload "+name+" to "+pipeline.InboxContainer, err)
	}
	return string(*resp.ETag), nil
}

// ApproximateCount is the queue's approximate message count.
func (q *Queue) ApproximateCount(ctx context.Context) (int, error) {
	p, err := q.client.GetProperties(ctx, nil)
	if err != nil {
		return 0, classify("storage: properties of queue "+q.name, err)
	}
	if p.ApproximateMessagesCount == nil {
		return 0, nil
	}
	return int(*p.ApproximateMessagesCount), nil
}
