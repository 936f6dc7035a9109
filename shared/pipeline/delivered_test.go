package pipeline_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/testkit"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

// TestDeliveredFilesOnAzurite drops files as vendors send them — PGP-encrypted by GnuPG
// (binary and armored), a WinZip AES-256 zip of two files made by 7-Zip, a file encrypted to a
// key the vault does not hold, a zip under a password the vault does not hold — into the
// Azurite inbox; imports each twice; drains the queue; then checks every token, the reports,
// seed-rejected (files kept exactly as delivered), and scans all storage and logs for seeds.
func TestDeliveredFilesOnAzurite(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := testkit.NewStack(t, testkit.Options{})
	p := s.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)
	ss := &testkit.SeedSet{}
	csv := func(rows ...testkit.Row) []byte { return testkit.EntraCSV(rows) }

	unknown := testkit.GPGEncrypt(t, csv(ss.Row("DLX-1", ada)), "key-other.asc", false)
	wrongPassword := testkit.SevenZipAES(t, map[string][]byte{"x.csv": csv(ss.Row("DLX-2", ada))}, "a password nobody configured")
	files := []struct {
		name    string
		content []byte
	}{
		{"dl/token2.csv.gpg", testkit.GPGEncrypt(t, csv(ss.Row("DLG-1", ada), ss.Row("DLG-2", "")), "key-cv25519.pub.asc", false)},
		{"dl/token2 armored.asc", testkit.GPGEncrypt(t, csv(ss.Row("DLA-1", grace)), "key-cv25519.pub.asc", true)},
		{"dl/batch.zip", testkit.SevenZipAES(t, map[string][]byte{
			"a.csv": csv(ss.Row("DLZ-1", alan), ss.Row("DLZ-2", "")),
			"b.csv": csv(ss.Row("DLZ-3", "")),
		}, testkit.ZipPassword)},
		{"dl/unknown.csv.gpg", unknown},
		{"dl/wrong.zip", wrongPassword},
	}
	results := map[string]*pipeline.ImportResult{}
	var ids []string
	for _, f := range files {
		in := upload(t, ctx, a, f.name, f.content)
		for i := range 2 {
			res, err := p.Import(ctx, in)
			if err != nil {
				t.Fatalf("Import %s #%d: %v", f.name, i+1, err)
			}
			// The repeat of an archive whose blob is gone answers Gone (its files are imports of
			// their own names; the archive is only read again while it is in the inbox).
			if i == 1 && (!(res.Repeat || res.Gone) || res.Queued != 0) {
				t.Fatalf("repeated Import %s: %+v", f.name, res)
			}
			if i == 0 {
				results[f.name] = res
			}
		}
		if _, err := a.Blobs.ReadInbox(ctx, f.name); token.KindOf(err) != token.KindNotFound {
			t.Errorf("%s is still in the inbox: %v", f.name, err)
		}
		res := results[f.name]
		if len(res.Parts) == 0 {
			ids = append(ids, res.ImportID)
		}
		for _, pt := range res.Parts {
			ids = append(ids, pt.ImportID)
		}
	}
	h := &host{p: p, q: a.ProvisionClient, workers: 4, twice: true}
	h.drain(t, ctx, settled(ctx, a.Ledger, ids...))

	want := map[string]struct{ status, upn string }{
		"DLG-1": {"activated", ada}, "DLG-2": {"available", ""}, "DLA-1": {"activated", grace},
		"DLZ-1": {"activated", alan}, "DLZ-2": {"available", ""}, "DLZ-3": {"available", ""},
	}
	devs := s.Graph.Server.Devices()
	if len(devs) != len(want) {
		t.Errorf("Graph holds %d devices, want %d", len(devs), len(want))
	}
	for _, d := range devs {
		w := want[d.Serial]
		if d.Status != w.status || !strings.EqualFold(d.AssignedUPN, w.upn) || d.Activations > 1 {
			t.Errorf("%s: %s for %q (%d activations), want %+v", d.Serial, d.Status, d.AssignedUPN, d.Activations, w)
		}
	}

	// Each file of the archive is an import of its own, with its own report.
	zr := results["dl/batch.zip"]
	if len(zr.Parts) != 2 || zr.Parts[0].FileName != "dl/batch.zip!a.csv" || zr.Parts[1].FileName != "dl/batch.zip!b.csv" || zr.Valid != 3 || zr.Disposition != pipeline.DispositionDeleted {
		t.Errorf("archive import: %+v", zr)
	}
	for name, valid := range map[string]int{"dl/token2.csv.gpg": 2, "dl/token2 armored.asc": 1, "dl/batch.zip!a.csv": 2, "dl/batch.zip!b.csv": 1} {
		rep := report(t, ctx, a, name)
		if !rep.Settled || rep.Valid != valid || len(rep.Problems) != 0 || rep.Disposition != pipeline.DispositionDeleted {
			t.Errorf("report %s: %+v", name, rep)
		}
	}

	// Files that cannot be opened: rejected whole, kept exactly as delivered, with a report
	// that says why.
	for name, c := range map[string]struct {
		code    string
		content []byte
	}{"dl/unknown.csv.gpg": {"file.pgp-no-key", unknown}, "dl/wrong.zip": {"file.zip-password", wrongPassword}} {
		res := results[name]
		if res.Disposition != pipeline.DispositionRejected || len(res.Problems) != 1 || res.Problems[0].Code != c.code {
			t.Errorf("%s: %+v", name, res)
		}
		rep := report(t, ctx, a, name)
		if len(rep.Problems) != 1 || rep.Problems[0].Code != c.code || rep.Disposition != pipeline.DispositionRejected {
			t.Errorf("report %s: %+v", name, rep)
		}
		kept, err := a.Blobs.Read(ctx, pipeline.RejectedContainer, pipeline.RejectedName(res.ImportID, name))
		if err != nil || !bytes.Equal(kept, c.content) {
			t.Errorf("%s was not kept in seed-rejected exactly as delivered: %v", name, err)
		}
	}

	stored := testkit.StoredOutsideVault(t, ctx, azServer.ConnectionString())
	var leaks []string
	leaks = append(leaks, ss.Leaks("logs", s.Logs.String())...)
	leaks = append(leaks, ss.Leaks("queue messages", strings.Join(h.texts, "\n"))...)
	leaks = append(leaks, ss.Leaks("storage", stored)...)
	for _, lk := range leaks {
		t.Error("seed leaked: " + lk)
	}
	if !strings.Contains(stored, "DLZ-3") || !strings.Contains(stored, "seed-rejected/") {
		t.Fatal("the leak scan did not see the stored data")
	}
}

func report(t *testing.T, ctx context.Context, a *testkit.Account, name string) pipeline.ImportStatus {
	t.Helper()
	js, err := a.Blobs.Read(ctx, pipeline.ReportsContainer, name+".json")
	if err != nil {
		t.Fatalf("report %s: %v", name, err)
	}
	var rep pipeline.ImportStatus
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestPGPPublicKey(t *testing.T) {
	ctx := context.Background()
	s := testkit.NewStack(t, testkit.Options{})
	p := s.Pipeline(pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs(), nil)
	key, err := p.PGPPublicKey(ctx)
	if err != nil || !strings.HasPrefix(key, "-----BEGIN PGP PUBLIC KEY BLOCK-----") || strings.Contains(key, "PRIVATE") {
		t.Fatalf("public key %q, %v", key, err)
	}
	// Without a key source, there is no key.
	none := s.Pipeline(pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs(), func(d *pipeline.Deps) { d.Envelope = nil })
	if _, err := none.PGPPublicKey(ctx); token.KindOf(err) != token.KindNotFound {
		t.Errorf("no key: %v, want not found", err)
	}
}

// Feitian's PSKC has no <Model>: the blob metadata hint fills it in, and each row carries a
// warning in the report, not a problem; without a hint the model is the fallback.
func TestFeitianImportWithHints(t *testing.T) {
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "seedfiles", "feitian-no-model.xml"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	for _, tc := range []struct {
		name, model, warning string
		metadata             map[string]string
	}{
		{"feitian-hinted.xml", "c200", seedfile.WarnModelHint, map[string]string{"model": "c200"}},
		{"feitian-plain.xml", seedfile.FallbackModel, seedfile.WarnModelFallback, nil},
	} {
		s := testkit.NewStack(t, testkit.Options{})
		l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
		p := s.Pipeline(l, q, b, func(d *pipeline.Deps) { d.ReadOptions.PSKCKey = key })
		f := b.Upload(tc.name, raw)
		f.Metadata = tc.metadata
		res, err := p.Import(ctx, f)
		if err != nil || res.Valid != 3 || res.Disposition != pipeline.DispositionDeleted {
			t.Fatalf("%s: %+v %v", tc.name, res, err)
		}
		pipelinetest.Drain(t, ctx, p, q)
		var rep pipeline.ImportStatus
		if err := json.Unmarshal(b.Reports[tc.name+".json"], &rep); err != nil {
			t.Fatal(err)
		}
		for _, tl := range rep.Tokens {
			if tl.Model != tc.model || len(tl.Problems) != 0 || len(tl.Warnings) == 0 || tl.Warnings[0].Code != tc.warning || tl.Status != pipeline.StatusAvailable {
				t.Errorf("%s line %d: %+v", tc.name, tl.Line, tl)
			}
		}
		if d, ok := s.Graph.Server.DeviceBySerial("2600000001"); !ok || d.Model != tc.model {
			t.Errorf("%s: device %+v", tc.name, d)
		}
	}
}

// TestDeliveredArchiveResumes: an AES zip of two files read from the Azurite inbox under a
// time budget hands itself on (continuations name the archive), resumes inside the file it was
// in, skips the file already done, and queues every line exactly once; the archive leaves the
// inbox after both.
func TestDeliveredArchiveResumes(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := testkit.NewStack(t, testkit.Options{Latency: 40 * time.Millisecond})
	q := &pipelinetest.MemQueue{}
	cq := &contQueue{}
	p := s.Pipeline(a.Ledger, q, a.Blobs, func(d *pipeline.Deps) {
		d.Inbox, d.Imports, d.ImportBudget, d.VaultConcurrency = a.Blobs, cq, 400*time.Millisecond, 2
	})
	ss := &testkit.SeedSet{}
	stamp := time.Now().UnixNano() % 1000000
	file := func(pre string) []byte {
		var rows []testkit.Row
		for i := range 25 {
			rows = append(rows, ss.Row(fmt.Sprintf("%s-%d-%02d", pre, stamp, i), ""))
		}
		return testkit.EntraCSV(rows)
	}
	name := fmt.Sprintf("resume-%d.zip", stamp)
	zipped := testkit.SevenZipAES(t, map[string][]byte{"a.csv": file("RZA"), "b.csv": file("RZB")}, testkit.ZipPassword)
	if _, err := a.PutInbox(ctx, name, zipped, nil); err != nil {
		t.Fatal(err)
	}
	req := pipeline.ImportRequest{Name: name}
	parts := 0
	var last *pipeline.ImportResult
	for {
		parts++
		res, err := p.ImportFromInbox(ctx, req)
		if err != nil {
			t.Fatalf("part %d: %v", parts, err)
		}
		last = res
		if !res.Continued {
			break
		}
		c, ok := cq.take()
		if !ok || c.BlobName != name {
			t.Fatalf("part %d: continuation %+v (%v); it must name the archive", parts, c, ok)
		}
		req = pipeline.ImportRequest{Name: c.BlobName, ETag: c.BlobETag, Continuation: true, ImportID: c.ImportID, Part: c.Part}
		if parts > 60 {
			t.Fatal("the import never finished")
		}
	}
	if parts < 3 {
		t.Fatalf("finished in %d parts; the budget did not cut it off", parts)
	}
	if last.Disposition != pipeline.DispositionDeleted || len(last.Parts) != 2 || last.Valid != 50 {
		t.Fatalf("final part %+v", last)
	}
	if _, err := a.Blobs.ReadInbox(ctx, name); token.KindOf(err) != token.KindNotFound {
		t.Errorf("the archive is still in the inbox: %v", err)
	}
	queued := 0
	for {
		text, ok := q.Take()
		if !ok {
			break
		}
		queued++
		m := pipelinetest.DecodeMessage(t, text)
		if _, err := p.Provision(ctx, m, 1); err != nil {
			t.Fatalf("provision %s: %v", m.SerialNumber, err)
		}
	}
	if queued != 50 {
		t.Errorf("%d messages queued, want 50 (each line once)", queued)
	}
	for _, inner := range []string{name + "!a.csv", name + "!b.csv"} {
		st, err := p.ImportStatus(ctx, inner)
		if err != nil || !st.Settled || st.Counts[pipeline.StatusAvailable] != 25 {
			t.Errorf("%s: %+v, %v", inner, st, err)
		}
	}
	t.Logf("imported in %d parts", parts)
}

// With an RSA deployment key the encrypted copy of a rejected plain file differs on every
// delivery (Go's RSA encryption draws its own randomness), so storage refuses to overwrite the
// copy an interrupted earlier delivery stored: that copy is kept and the inbox blob goes.
func TestRejectedCopyKeptWithRSAKey(t *testing.T) {
	ctx := context.Background()
	a := storageAccount(t)
	s := testkit.NewStack(t, testkit.Options{})
	rsa := testkit.EnvelopeFixture(t, "key-rsa.asc")
	if err := s.Vault.PutPGPKey(ctx, "oathpipe-pgp-key", string(rsa), "RSA"); err != nil {
		t.Fatal(err)
	}
	p := s.Pipeline(a.Ledger, a.Provision, a.Blobs, nil)
	ss := &testkit.SeedSet{}
	name := fmt.Sprintf("rsa-%d.csv", time.Now().UnixNano())
	content := mixedFileWith(ss, fmt.Sprintf("RSA%d", time.Now().UnixNano()%100000))
	f := upload(t, ctx, a, name, content)
	target := pipeline.RejectedName(pipeline.ImportID(name, f.ETag), name) + ".gpg"
	earlier := []byte("the copy an interrupted earlier delivery stored")
	if err := a.Blobs.Reject(ctx, "not-in-the-inbox.csv", `"0x0"`, bytes.NewReader(earlier), target); err != nil {
		t.Fatal(err)
	}
	res, err := p.Import(ctx, f)
	if err != nil || res.Disposition != pipeline.DispositionRejected {
		t.Fatalf("Import: %+v %v", res, err)
	}
	if _, err := a.Blobs.ReadInbox(ctx, name); token.KindOf(err) != token.KindNotFound {
		t.Errorf("the file is still in the inbox: %v", err)
	}
	if kept, err := a.Blobs.Read(ctx, pipeline.RejectedContainer, target); err != nil || !bytes.Equal(kept, earlier) {
		t.Errorf("the earlier copy was not kept: %v", err)
	}
}
