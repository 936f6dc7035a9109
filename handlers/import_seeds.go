package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// importSeeds handles the blob trigger on seed-inbox/{name}: Data.seedFile is the file's bytes
// (base64), Metadata.name its name, Metadata.Properties.ETag its version. The pipeline does the
// rest, including removing the blob from the inbox once every seed is in the vault. A non-nil
// error from it is worth retrying: answer 500 and the host redelivers (after 5 tries the blob
// lands in webjobs-blobtrigger-poison).
func (s *Server) importSeeds(ctx context.Context, log *slog.Logger, in *Invocation) outcome {
	f, err := inboxFile(in)
	if err != nil {
		log.Error("bad blob trigger payload", "err", err)
		return outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{err.Error()}}}
	}
	log = log.With("file", f.Name, "etag", f.ETag, "bytes", len(f.Content))
	log.Info("import started")
	res, err := s.p.Import(ctx, f)
	if err != nil {
		log.Error("import failed; the host will retry", "importId", pipeline.ImportID(f.Name, f.ETag), "err", err)
		return outcome{status: http.StatusInternalServerError, resp: Response{
			Logs: []string{fmt.Sprintf("import of %s failed (will be retried): %v", f.Name, err)},
		}}
	}
	line := fmt.Sprintf("import %s of %s: %d rows, %d valid, %d invalid, %d queued, %d failed, source %s",
		res.ImportID, res.FileName, res.Rows, res.Valid, res.Invalid, res.Queued, res.Failed, res.Disposition)
	if res.Repeat {
		line += " (repeated delivery)"
	}
	log.Info("import done", "importId", res.ImportID, "rows", res.Rows, "valid", res.Valid,
		"invalid", res.Invalid, "queued", res.Queued, "failed", res.Failed, "disposition", res.Disposition, "repeat", res.Repeat)
	return outcome{status: http.StatusOK, resp: Response{Logs: []string{line}}}
}

// inboxFile decodes the blob trigger's payload into the pipeline's InboxFile.
func inboxFile(in *Invocation) (pipeline.InboxFile, error) {
	content, err := in.DataBytes("seedFile")
	if err != nil {
		return pipeline.InboxFile{}, fmt.Errorf("blob content: %w", err)
	}
	name := in.Meta("name")
	if name == "" {
		name = blobNameFromURI(in.Meta("Uri"))
	}
	if name == "" {
		name = blobNameFromPath(in.Meta("BlobTrigger"))
	}
	if name == "" {
		return pipeline.InboxFile{}, fmt.Errorf("blob trigger payload names no blob (Metadata.name, Uri, BlobTrigger)")
	}
	etag := in.MetaProperty("ETag")
	if etag == "" {
		etag = in.Meta("ETag")
	}
	etag = quoteETag(etag)
	var md map[string]string
	if err := in.MetaObject("Metadata", &md); err != nil {
		md = nil // user metadata is optional; hints only
	}
	return pipeline.InboxFile{Name: name, ETag: etag, Content: content, Metadata: md}, nil
}

// blobNameFromURI returns the blob name inside the inbox container from the blob's URL
// (https://acct.blob.core.windows.net/seed-inbox/dir/a.csv, or Azurite's /devstoreaccount1/seed-inbox/...).
func blobNameFromURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return ""
	}
	return blobNameFromPath(u.Path)
}

// blobNameFromPath returns what follows "seed-inbox/" in p.
func blobNameFromPath(p string) string {
	marker := config.InboxContainer + "/"
	if i := strings.Index(p, marker); i >= 0 {
		return p[i+len(marker):]
	}
	return ""
}

// quoteETag returns etag in its HTTP form, "0x8D...", as Azure Storage and azblob report it. The
// host's payload cannot tell a quoted ETag from a string encoded twice, so the quotes may or may
// not survive decoding; normalising keeps the import id and the conditional delete stable.
func quoteETag(etag string) string {
	etag = strings.Trim(strings.TrimSpace(etag), `"`)
	if etag == "" {
		return ""
	}
	return `"` + etag + `"`
}
