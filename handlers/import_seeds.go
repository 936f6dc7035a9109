package handlers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// importSeeds handles a message of the seed-imports queue (queue trigger, Data.event): an Event
// Grid Microsoft.Storage.BlobCreated event for a blob in seed-inbox, written there by the
// system topic's subscription (EventGridSchema; CloudEvents 1.0 is accepted too), or a
// continuation an import left when its time budget ended. The payload only names the blob: the
// pipeline reads its content, ETag and metadata from storage. A non-nil error from the pipeline
// is worth retrying: answer 500 and the host makes the message visible again after
// visibilityTimeout (after maxDequeueCount deliveries it goes to seed-imports-poison).
func (s *Server) importSeeds(ctx context.Context, log *slog.Logger, in *Invocation) outcome {
	text, ok := in.DataString("event")
	if !ok {
		log.ErrorContext(ctx, "seed-imports message has no Data.event")
		return outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{"seed-imports message has no Data.event"}}}
	}
	reqs, skipped, err := importRequests(text)
	if err != nil {
		// Retrying cannot fix it; the host's poison queue keeps it for an operator.
		log.ErrorContext(ctx, "undecodable seed-imports message", logctx.Error, err)
		return outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{"undecodable seed-imports message: " + err.Error()}}}
	}
	var lines []string
	for _, sk := range skipped {
		log.InfoContext(ctx, "event ignored", logctx.Reason, sk)
		lines = append(lines, "event ignored: "+sk)
	}
	for _, r := range reqs {
		ctx := ctx // narrowed to this request's import
		l := log.With(logctx.File, r.Name, "continuation", r.Continuation)
		if r.ImportID != "" {
			ctx = logctx.WithImport(ctx, r.ImportID)
			l = l.With("part", r.Part)
		}
		l.InfoContext(ctx, "import started")
		res, err := s.p.ImportFromInbox(ctx, r)
		if err != nil {
			l.ErrorContext(ctx, "import failed; the host will retry the message", logctx.Error, err)
			return outcome{status: http.StatusInternalServerError, resp: Response{
				Logs: append(lines, fmt.Sprintf("import of %s failed (will be retried): %v", r.Name, err)),
			}}
		}
		lines = append(lines, importLine(res))
		l.InfoContext(ctx, "import answered", logctx.ImportID, res.ImportID, "rows", res.Rows, "valid", res.Valid,
			"invalid", res.Invalid, "queued", res.Queued, "failed", res.Failed, "disposition", res.Disposition,
			"repeat", res.Repeat, "continued", res.Continued, "checkpoint", res.Checkpoint, "gone", res.Gone, "replaced", res.Replaced)
	}
	return outcome{status: http.StatusOK, resp: Response{Logs: lines}}
}

// importLine is one Logs line for an import's answer.
func importLine(res *pipeline.ImportResult) string {
	switch {
	case res.Gone:
		return fmt.Sprintf("%s is no longer in %s: nothing to import", res.FileName, config.InboxContainer)
	case res.Replaced:
		return fmt.Sprintf("import %s of %s stopped: the file was replaced by a new upload", res.ImportID, res.FileName)
	case res.Continued:
		return fmt.Sprintf("import %s of %s: time budget used at line %d; continued in a new message", res.ImportID, res.FileName, res.Checkpoint)
	}
	line := fmt.Sprintf("import %s of %s: %d rows, %d valid, %d invalid, %d queued, %d failed, source %s",
		res.ImportID, res.FileName, res.Rows, res.Valid, res.Invalid, res.Queued, res.Failed, res.Disposition)
	if res.Repeat {
		line += " (repeated delivery)"
	}
	return line
}

// BlobCreatedEvent is the event type an import starts from.
const BlobCreatedEvent = "Microsoft.Storage.BlobCreated"

// gridEvent is the part of an Event Grid event (EventGridSchema, or CloudEvents 1.0) oathpipe
// reads, or of an import continuation (field "oathpipe").
type gridEvent struct {
	// EventGridSchema
	EventType string `json:"eventType"`
	// CloudEvents 1.0
	SpecVersion string `json:"specversion"`
	Type        string `json:"type"`
	// Both
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Data    struct {
		URL  string `json:"url"`
		ETag string `json:"eTag"`
		API  string `json:"api"`
	} `json:"data"`
	// An import continuation.
	pipeline.ImportContinuation
}

// importRequests decodes a seed-imports message into the imports it asks for. The message is
// one event as plain JSON (Event Grid writes one event per message); an array of events and a
// Base64-encoded message are accepted too. Events of another type or container are skipped
// (with the reason).
func importRequests(text string) (reqs []pipeline.ImportRequest, skipped []string, err error) {
	raw := bytes.TrimSpace([]byte(text))
	if len(raw) > 0 && raw[0] != '{' && raw[0] != '[' {
		// Lenient: a subscription or tool that Base64-encodes queue messages.
		dec, derr := base64.StdEncoding.DecodeString(string(raw))
		if derr != nil {
			return nil, nil, fmt.Errorf("the message is neither JSON nor Base64-encoded JSON")
		}
		raw = bytes.TrimSpace(dec)
	}
	var events []gridEvent
	if len(raw) > 0 && raw[0] == '[' {
		err = json.Unmarshal(raw, &events)
	} else {
		var e gridEvent
		err = json.Unmarshal(raw, &e)
		events = []gridEvent{e}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("decode the message: %w", err)
	}
	for _, e := range events {
		if e.Kind == pipeline.ContinuationKind {
			if e.BlobName == "" || e.BlobETag == "" {
				return nil, nil, fmt.Errorf("a continuation without blobName or blobETag")
			}
			reqs = append(reqs, pipeline.ImportRequest{Name: e.BlobName, ETag: e.BlobETag, Continuation: true,
				ImportID: e.ImportID, Part: e.Part})
			continue
		}
		typ := e.EventType
		if e.SpecVersion != "" {
			typ = e.Type
		}
		if typ == "" {
			return nil, nil, fmt.Errorf("not an Event Grid event (no eventType or type) and not a continuation")
		}
		if typ != BlobCreatedEvent {
			skipped = append(skipped, fmt.Sprintf("event %s is %s, not %s", e.ID, typ, BlobCreatedEvent))
			continue
		}
		name, ok := blobNameFromSubject(e.Subject)
		if !ok {
			name, ok = blobNameFromURL(e.Data.URL)
		}
		if !ok {
			skipped = append(skipped, fmt.Sprintf("event %s is for a blob outside %s (subject %q)", e.ID, config.InboxContainer, e.Subject))
			continue
		}
		reqs = append(reqs, pipeline.ImportRequest{Name: name, ETag: quoteETag(e.Data.ETag)})
	}
	return reqs, skipped, nil
}

// subjectPrefix starts the subject of a seed-inbox blob event.
const subjectPrefix = "/blobServices/default/containers/" + config.InboxContainer + "/blobs/"

// blobNameFromSubject returns the blob name of an event subject
// (/blobServices/default/containers/seed-inbox/blobs/dir/a.csv → dir/a.csv).
func blobNameFromSubject(subject string) (string, bool) {
	name, ok := strings.CutPrefix(subject, subjectPrefix)
	return name, ok && name != ""
}

// blobNameFromURL returns the blob name inside the inbox container from the blob's URL
// (https://acct.blob.core.windows.net/seed-inbox/dir/a.csv, or Azurite's /devstoreaccount1/seed-inbox/...).
func blobNameFromURL(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", false
	}
	segs := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	for i, s := range segs {
		if s == config.InboxContainer && i+1 < len(segs) {
			name := strings.Join(segs[i+1:], "/")
			return name, name != ""
		}
	}
	return "", false
}

// quoteETag returns etag in its HTTP form, "0x8D...", as Azure Storage and azblob report it
// (Event Grid's data.eTag has no quotes).
func quoteETag(etag string) string {
	etag = strings.Trim(strings.TrimSpace(etag), `"`)
	if etag == "" {
		return ""
	}
	return `"` + etag + `"`
}
