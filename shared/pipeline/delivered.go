package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/oathpipe/oathpipe/shared/envelope"
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

// readDelivered is where the delivered blob becomes seed-file input: it opens the envelope
// (PGP, zip, or none) in memory and reads each seed file inside. delivered reports whether
// the blob was an envelope (then a rejected blob is kept as delivered, still encrypted). A
// problem with the envelope (no key for it, a wrong password, damage, a bomb) is one part
// under the blob's name with the file-level problem, and nothing inside is imported. err is
// only for a failure worth retrying (the vault did not answer).
func (p *Pipeline) readDelivered(ctx context.Context, f InboxFile, content io.ReaderAt, size int64) (parts []seedPart, delivered bool, err error) {
	opts, bad := optionsFor(p.d.ReadOptions, f.Metadata)
	if len(bad) > 0 {
		// The file is not read with a hint it did not mean: it is rejected whole.
		return []seedPart{{name: f.Name, problems: bad, sum: seedfile.Summary{Format: opts.Format}}}, false, nil
	}
	head := make([]byte, 64)
	n, _ := content.ReadAt(head, 0)
	_, delivered = envelope.Detect(head[:n])
	var keys envelope.Keys
	if delivered {
		if keys, err = p.envelopeKeys(ctx); err != nil {
			return nil, true, err
		}
	}
	src := envelope.Source{Name: f.Name, R: io.NewSectionReader(content, 0, size), At: content, Size: size}
	err = envelope.Open(src, keys, p.d.EnvelopeLimits, func(in envelope.Inner) error {
		part := seedPart{name: in.Name}
		part.records, part.problems, part.sum, err = readSeeds(in.R, opts)
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
				p.log.Warn("a PGP key version in the vault cannot be read; skipped", slog.String("error", err.Error()))
				continue
			}
			k.PGP = k.PGP.Append(keys)
		}
	}
	return k, nil
}

// readSeeds reads one seed file whole. A file-level failure (not a seed file, wrong PSKC key,
// an envelope integrity check at the end) becomes a Line 0 problem: it is the file's outcome,
// not a reason to retry. An *envelope.Error is returned for the caller to reject the whole
// delivered file.
func readSeeds(r io.Reader, opts seedfile.Options) ([]seedfile.Record, []seedfile.Problem, seedfile.Summary, error) {
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

// rejectedCopy is what seed-rejected keeps of a rejected blob: a delivered envelope exactly
// as delivered (still encrypted); a plain file encrypted to the deployment's newest PGP public
// key, under the name with ".gpg" added (`oathpipe rejected download` decrypts it). Without a
// PGP key keep is false: the plain file is not copied anywhere and stays in seed-inbox.
func (p *Pipeline) rejectedCopy(ctx context.Context, f InboxFile, delivered bool, target string) (content []byte, name string, keep bool, err error) {
	if delivered {
		return f.Content, target, true, nil
	}
	k, err := p.pgpKeys(ctx)
	if err != nil {
		return nil, "", false, err
	}
	if k.PGP.Len() == 0 {
		return nil, "", false, nil
	}
	var buf bytes.Buffer
	w, err := envelope.Encrypt(&buf, k.PGP, f.Name, []byte(ImportID(f.Name, f.ETag)))
	if err == nil {
		_, err = w.Write(f.Content)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return nil, "", false, fmt.Errorf("encrypt the rejected file: %w", err)
	}
	return buf.Bytes(), target + ".gpg", true, nil
}

// importDelivered opens f and imports each seed file inside: a plain or PGP-encrypted file as
// one import under the blob's name (as before envelopes existed), each file of a zip archive
// as an import of its own, after which the archive leaves the inbox once: deleted when every
// file's rows were imported, else moved to seed-rejected as delivered.
func (p *Pipeline) importDelivered(ctx context.Context, f InboxFile, part int) (*ImportResult, error) {
	if f.Name == "" {
		return nil, token.Errorf(token.KindInvalid, "import: the blob name is empty")
	}
	parts, delivered, err := p.readDelivered(ctx, f, bytes.NewReader(f.Content), int64(len(f.Content)))
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
	log := p.log.With(slog.String("importId", id), slog.String("file", f.Name))
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
	log.Info("archive imported", slog.Int("files", len(parts)), slog.Int("rows", all.Rows), slog.Int("valid", all.Valid),
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
		log.Warn("rejected plain file left in seed-inbox: no PGP key in the vault to store it encrypted (run oathpipe pgp-keygen)")
		return nil
	}
	if err := p.d.Blobs.Reject(ctx, f.Name, f.ETag, content, name); err != nil {
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
	log.Warn("file moved to seed-rejected: some rows failed", slog.String("target", name), slog.Bool("asDelivered", f.delivered))
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
