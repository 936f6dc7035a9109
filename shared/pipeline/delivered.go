package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/oathpipe/oathpipe/shared/envelope"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

// EnvelopeKeys gives what opens a file as vendors deliver it (Key Vault in production:
// vault.EnvelopeSecrets). Both may answer nothing (no key, no password configured).
type EnvelopeKeys interface {
	// PGPKeys returns the ASCII-armored private keys, newest first.
	PGPKeys(ctx context.Context) ([][]byte, error)
	// ZipPasswords returns the accepted zip passwords.
	ZipPasswords(ctx context.Context) ([]string, error)
}

// seedPart is one seed file inside a delivered file, read whole: its records (seeds, in
// memory only), problems and summary. A plain or PGP-encrypted file is one part under the
// blob's name; a zip archive is one part per file, named "archive.zip!inner.csv".
type seedPart struct {
	name     string
	records  []seedfile.Record
	problems []seedfile.Problem
	sum      seedfile.Summary
}

// isEnvelope reads the first bytes of f (one ranged read) and says whether it is a delivered
// envelope (PGP, zip). A file with a bad metadata hint is not opened at all: not an envelope.
func (p *Pipeline) isEnvelope(ctx context.Context, f InboxFile) (bool, error) {
	if _, bad := optionsFor(p.d.ReadOptions, f.Metadata); len(bad) > 0 {
		return false, nil
	}
	head := make([]byte, 64)
	n, err := f.ReaderAt(ctx).ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return false, fmt.Errorf("import %s: read the blob's first bytes: %w", f.Name, err)
	}
	_, delivered := envelope.Detect(head[:n])
	return delivered, nil
}

// readDelivered opens a delivered envelope (PGP, zip) in memory and reads each seed file
// inside: the blob streams through content (a zip's entries are read through at, by ranged
// reads). delivered reports whether the blob was an envelope (then a rejected blob is kept as
// delivered, still encrypted). A problem with the envelope (no key for it, a wrong password,
// damage, a bomb) is one part under the blob's name with the file-level problem, and nothing
// inside is imported. err is only for a failure worth retrying (the vault or storage did not
// answer). A plain file does not come here: importFile streams it through seedInput.
func (p *Pipeline) readDelivered(ctx context.Context, f InboxFile, content io.Reader, at io.ReaderAt, size int64) (parts []seedPart, delivered bool, err error) {
	opts, bad := optionsFor(p.d.ReadOptions, f.Metadata)
	if len(bad) > 0 {
		// The file is not read with a hint it did not mean: it is rejected whole.
		return []seedPart{{name: f.Name, problems: bad, sum: seedfile.Summary{Format: opts.Format}}}, false, nil
	}
	head := make([]byte, 64)
	n, _ := at.ReadAt(head, 0)
	_, delivered = envelope.Detect(head[:n])
	var keys envelope.Keys
	if delivered {
		if keys, err = p.envelopeKeys(ctx); err != nil {
			return nil, true, err
		}
	}
	src := envelope.Source{Name: f.Name, R: content, At: at, Size: size}
	err = envelope.Open(src, keys, p.d.EnvelopeLimits, func(in envelope.Inner) error {
		part := seedPart{name: in.Name}
		part.records, part.problems, part.sum, err = readPart(in.R, opts)
		if err != nil {
			return err
		}
		parts = append(parts, part)
		return nil
	})
	var ee *envelope.Error
	switch {
	case errors.As(err, &ee):
		for _, pt := range parts {
			clearRecords(pt.records)
		}
		return []seedPart{{name: f.Name, problems: []seedfile.Problem{{Field: "file", Code: ee.Code, Message: envelopeMessage(f.Name, ee)}}}}, delivered, nil
	case err != nil:
		return nil, delivered, fmt.Errorf("import %s: open: %w", f.Name, err)
	}
	return parts, delivered, nil
}

// envelopeMessage names the entry a problem is about when it is not the blob itself.
func envelopeMessage(blob string, e *envelope.Error) string {
	if e.Name != "" && e.Name != blob {
		return e.Name + ": " + e.Message
	}
	return e.Message
}

func clearRecords(rs []seedfile.Record) {
	for i := range rs {
		clear(rs[i].Seed.Secret)
	}
}

func (p *Pipeline) envelopeKeys(ctx context.Context) (envelope.Keys, error) {
	k, err := p.pgpKeys(ctx)
	if err != nil || p.d.Envelope == nil {
		return k, err
	}
	if k.ZipPasswords, err = p.d.Envelope.ZipPasswords(ctx); err != nil {
		return k, fmt.Errorf("read the zip passwords: %w", err)
	}
	return k, nil
}

// pgpKeys reads the PGP keys only (no zip passwords).
func (p *Pipeline) pgpKeys(ctx context.Context) (envelope.Keys, error) {
	var k envelope.Keys
	if p.d.Envelope == nil {
		return k, nil
	}
	armored, err := p.d.Envelope.PGPKeys(ctx)
	if err != nil {
		return k, fmt.Errorf("read the PGP keys: %w", err)
	}
	if len(armored) > 0 {
		// A version that is not a usable key is skipped (and logged), not fatal: the others
		// may still open the file.
		for _, a := range armored {
			keys, err := envelope.ParsePGPKeys([][]byte{a}, nil)
			if err != nil {
				p.log.WarnContext(ctx, "a PGP key version in the vault cannot be read; skipped", slog.String(logctx.Error, err.Error()))
				continue
			}
			k.PGP = k.PGP.Append(keys)
		}
	}
	return k, nil
}

// readPart reads one seed file of an envelope whole. A file-level failure (not a seed file, wrong PSKC key,
// an envelope integrity check at the end) becomes a Line 0 problem: it is the file's outcome,
// not a reason to retry. An *envelope.Error is returned for the caller to reject the whole
// delivered file.
func readPart(r io.Reader, opts seedfile.Options) ([]seedfile.Record, []seedfile.Problem, seedfile.Summary, error) {
	var records []seedfile.Record
	var problems []seedfile.Problem
	sum, err := seedfile.Read(r, opts,
		func(r seedfile.Record) error { records = append(records, r); return nil },
		func(pr seedfile.Problem) { problems = append(problems, pr) })
	var fe *seedfile.FileError
	var ee *envelope.Error
	switch {
	case errors.As(err, &ee):
		clearRecords(records)
		return nil, nil, sum, ee
	case err != nil && !errors.As(err, &fe):
		// A *FileError's problem was already delivered through onProblem.
		problems = append(problems, seedfile.Problem{Field: "file", Code: CodeFileUnreadable, Message: err.Error()})
	}
	return records, problems, sum, nil
}

// rejectedCopy is what seed-rejected keeps of a rejected blob, as a stream (the blob's download,
// pinned to its ETag, opened on the first read; never held whole): a delivered envelope exactly
// as delivered (still encrypted); a plain file encrypted to the deployment's newest PGP public
// key as it streams, under the name with ".gpg" added (`oathpipe rejected download` decrypts
// it). Without a PGP key keep is false: the plain file is not copied anywhere and stays in
// seed-inbox. The caller closes content.
func (p *Pipeline) rejectedCopy(ctx context.Context, f InboxFile, delivered bool, target string) (content io.ReadCloser, name string, keep bool, err error) {
	body := &lazyBody{open: func() (io.ReadCloser, error) { return f.Open(ctx) }}
	if delivered {
		return body, target, true, nil
	}
	k, err := p.pgpKeys(ctx)
	if err != nil {
		return nil, "", false, err
	}
	if k.PGP.Len() == 0 {
		return nil, "", false, nil
	}
	pr, pw := io.Pipe()
	go func() {
		defer body.Close()
		w, err := envelope.Encrypt(pw, k.PGP, f.Name, []byte(ImportID(f.Name, f.ETag)))
		if err == nil {
			if _, err = io.Copy(w, body); err == nil {
				err = w.Close()
			}
		}
		pw.CloseWithError(err) // a read failure of the blob reaches the upload as is
	}()
	return pr, target + ".gpg", true, nil
}

// importDelivered opens f and imports each seed file inside: a plain or PGP-encrypted file as
// one import under the blob's name (as before envelopes existed), each file of a zip archive
// as an import of its own, after which the archive leaves the inbox once: deleted when every
// file's rows were imported, else moved to seed-rejected as delivered.
func (p *Pipeline) importDelivered(ctx context.Context, f InboxFile, part int) (*ImportResult, error) {
	if f.Name == "" {
		return nil, token.Errorf(token.KindInvalid, "import: the blob name is empty")
	}
	if f.ETag == "" {
		return p.importFile(ctx, f, part) // refused there
	}
	wrapped, err := p.isEnvelope(ctx, f)
	if err != nil {
		// The blob may be gone because this import is done (a repeated delivery with an
		// InboxFile read before): importFile answers from the ledger without reading it.
		if _, gerr := p.d.Ledger.GetImport(ctx, ImportID(f.Name, f.ETag)); gerr == nil {
			return p.importFile(ctx, f, part)
		}
		if k := token.KindOf(err); k == token.KindNotFound || k == token.KindConflict {
			// Gone, or replaced by a new upload (If-Match): as ImportFromInbox answers it. (An
			// archive's files are imports of their own names: a repeat of a finished archive
			// whose blob is gone lands here.)
			p.log.InfoContext(ctx, "the blob is no longer in the inbox as delivered; nothing to import",
				slog.String(logctx.File, f.Name), slog.String(logctx.ImportID, ImportID(f.Name, f.ETag)))
			return &ImportResult{ImportID: ImportID(f.Name, f.ETag), FileName: f.Name, Gone: true}, nil
		}
		return nil, err
	}
	if !wrapped {
		// A plain seed file: streamed, a chunk at a time (importFile), never held.
		return p.importFile(ctx, f, part)
	}
	body, err := f.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("import %s: read the blob: %w", f.Name, err)
	}
	parts, delivered, err := p.readDelivered(ctx, f, body, f.ReaderAt(ctx), f.ContentSize())
	body.Close()
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, pt := range parts {
			clearRecords(pt.records)
		}
	}()
	if len(parts) == 1 && parts[0].name == f.Name {
		f.part, f.delivered = &parts[0], delivered
		return p.importFile(ctx, f, part)
	}
	id := ImportID(f.Name, f.ETag)
	ctx, log := logctx.WithImport(ctx, id), p.log.With(slog.String(logctx.File, f.Name))
	all := &ImportResult{ImportID: id, FileName: f.Name, Format: "zip", Disposition: DispositionDeleted, Repeat: true}
	for i := range parts {
		res, err := p.importFile(ctx, InboxFile{Name: parts[i].name, ETag: f.ETag, Metadata: f.Metadata,
			part: &parts[i], delivered: true, outer: f.Name}, part)
		if err != nil {
			return nil, err
		}
		if res.Continued {
			// The time budget ended inside this file: its continuation names the archive, and
			// the next invocation skips the files already done.
			return res, nil
		}
		all.Rows, all.Valid, all.Invalid = all.Rows+res.Rows, all.Valid+res.Valid, all.Invalid+res.Invalid
		all.Queued, all.Failed = all.Queued+res.Queued, all.Failed+res.Failed
		all.Repeat = all.Repeat && res.Repeat
		if res.Disposition == DispositionRejected {
			all.Disposition = DispositionRejected
		}
		all.Parts = append(all.Parts, *res)
	}
	if all.Disposition == DispositionRejected {
		f.delivered = true
		if err := p.reject(ctx, log, f, RejectedName(id, f.Name)); err != nil {
			return nil, err
		}
	} else if err := p.d.Blobs.DeleteInbox(ctx, f.Name, f.ETag); err != nil {
		return nil, fmt.Errorf("import %s: delete from inbox: %w", f.Name, err)
	}
	log.InfoContext(ctx, "archive imported", slog.Int("files", len(parts)), slog.Int("rows", all.Rows), slog.Int("valid", all.Valid),
		slog.String("disposition", all.Disposition))
	return all, nil
}

// reject moves f to seed-rejected/target (see rejectedCopy for what is kept).
func (p *Pipeline) reject(ctx context.Context, log *slog.Logger, f InboxFile, target string) error {
	content, name, keep, err := p.rejectedCopy(ctx, f, f.delivered, target)
	if err != nil {
		return fmt.Errorf("import %s: %w", f.Name, err)
	}
	if !keep {
		log.WarnContext(ctx, "rejected plain file left in seed-inbox: no PGP key in the vault to store it encrypted (run oathpipe pgp-keygen)")
		return nil
	}
	err = p.d.Blobs.Reject(ctx, f.Name, f.ETag, content, name)
	content.Close()
	if err != nil {
		if f.delivered || token.KindOf(err) != token.KindConflict {
			return fmt.Errorf("import %s: move to seed-rejected/%s: %w", f.Name, name, err)
		}
		// An earlier delivery of this import stored its encrypted copy, which differs byte for
		// byte when the key is RSA (Go's RSA encryption draws its own randomness): the same
		// plain file is kept; the inbox blob may go.
		if err := p.d.Blobs.DeleteInbox(ctx, f.Name, f.ETag); err != nil {
			return fmt.Errorf("import %s: delete from inbox: %w", f.Name, err)
		}
	}
	log.WarnContext(ctx, "file moved to seed-rejected: some rows failed", slog.String("target", name), slog.Bool("asDelivered", f.delivered))
	return nil
}

// PGPPublicKey returns the ASCII-armored public key of the newest PGP key in the vault: what a
// vendor encrypts seed files to (GET /api/pgp-key). KindNotFound when there is none.
func (p *Pipeline) PGPPublicKey(ctx context.Context) (string, error) {
	k, err := p.pgpKeys(ctx)
	if err != nil {
		return "", err
	}
	if k.PGP.Len() == 0 {
		return "", token.Errorf(token.KindNotFound, "no PGP key in the vault; run oathpipe pgp-keygen")
	}
	return k.PGP.PublicKey()
}
