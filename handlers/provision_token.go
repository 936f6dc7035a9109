package handlers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/token"
)

// provisionToken handles one message of the token-provisioning queue. Permanent failures are
// recorded by the pipeline and answered 200; a non-nil error is worth retrying and answers 500,
// so the host redelivers it. A token still throttled (Graph or Key Vault 429) is re-queued by the
// pipeline with a delay and answered 200: throttling never spends a delivery. On the last delivery (maxDequeueCount) the token is recorded as
// failed with that last error and answered 200; only when even that fails does the message go
// to the poison queue (see ProvisionFailed).
func (s *Server) provisionToken(ctx context.Context, log *slog.Logger, in *Invocation) outcome {
	dq := in.MetaInt("DequeueCount")
	m, err := provisionMessage(in, "job")
	if err != nil {
		// Retrying cannot fix a message that does not decode, and dropping it could lose a token
		// (a message written by a newer or older version): park it at once for an operator.
		text, _ := in.DataString("job")
		log.ErrorContext(ctx, "undecodable provisioning message; parking it", logctx.MessageID, in.Meta("Id"), logctx.Error, err)
		return s.parkPoison(ctx, log, config.ProvisionQueue, "undecodable/"+digest(text)+".json", text, dq, "undecodable: "+err.Error())
	}
	ctx = logctx.WithSerial(logctx.WithImport(ctx, m.ImportID), m.SerialNumber)
	log = log.With(logctx.Line, m.Line, logctx.DequeueCount, dq, logctx.MessageID, in.Meta("Id"))
	out, err := s.p.Provision(ctx, m, dq)
	if err != nil && dq >= s.maxDQ {
		// The last delivery: the host would move the message to the poison queue, which does
		// not carry the error. Record the token as failed with this last error now; if that
		// fails too, ProvisionFailed records it from the poison queue.
		reason := fmt.Sprintf("%d deliveries failed; last error: %v", dq, err)
		rerr := s.p.RecordPoisoned(ctx, m, reason)
		if rerr == nil {
			log.ErrorContext(ctx, "provisioning failed on the last delivery; token recorded as failed", logctx.Error, err, logctx.RequestID, token.RequestIDOf(err))
			return outcome{status: http.StatusOK, resp: Response{Logs: []string{
				fmt.Sprintf("token %s (import %s, line %d) recorded as failed: %s", m.SerialNumber, m.ImportID, m.Line, reason)}}}
		}
		log.ErrorContext(ctx, "recording the failed token failed; leaving it to the poison queue", logctx.Error, rerr)
	}
	if err != nil {
		log.WarnContext(ctx, "provisioning failed; the host will retry", logctx.Error, err, logctx.RequestID, token.RequestIDOf(err))
		return outcome{status: http.StatusInternalServerError, resp: Response{
			Logs: []string{fmt.Sprintf("provision %s (import %s, line %d), delivery %d of %d failed (will be retried): %v", m.SerialNumber, m.ImportID, m.Line, dq, s.maxDQ, err)},
		}}
	}
	if out.Requeued {
		// Throttled: the pipeline put the token back on the queue with a delay. Answering 200
		// deletes this message, so throttling never spends a delivery.
		log.InfoContext(ctx, "token throttled; re-queued", "retryAfter", out.RetryAfter.String())
		return outcome{status: http.StatusOK, resp: Response{Logs: []string{
			fmt.Sprintf("token %s (import %s, line %d): throttled, re-queued to be tried again in %s", out.SerialNumber, out.ImportID, out.Line, out.RetryAfter.Round(time.Second))}}}
	}
	line := fmt.Sprintf("token %s (import %s, line %d): %s", out.SerialNumber, out.ImportID, out.Line, out.Status)
	if out.Reason != "" {
		line += ": " + out.Reason
	}
	if out.Repeat {
		line += " (already settled)"
	}
	log.InfoContext(ctx, "token settled", logctx.Status, out.Status, logctx.Reason, out.Reason, "repeat", out.Repeat)
	return outcome{status: http.StatusOK, resp: Response{Logs: []string{line}}}
}

// provisionMessage decodes Data[key] into a ProvisionMessage. The host hands the message text
// over as a string (messageEncoding "none"); it is also accepted as a JSON object, encoded twice,
// or base64-encoded (a message written with the SDK's default encoding by another tool).
func provisionMessage(in *Invocation, key string) (pipeline.ProvisionMessage, error) {
	var m pipeline.ProvisionMessage
	raw := bytes.TrimSpace(in.Data[key])
	if len(raw) == 0 || string(raw) == "null" {
		return m, fmt.Errorf("invocation has no Data.%s", key)
	}
	text := string(raw)
	if raw[0] == '"' {
		s, ok := in.DataString(key)
		if !ok {
			return m, fmt.Errorf("Data.%s is not a string", key)
		}
		text = strings.TrimSpace(s)
	}
	if !strings.HasPrefix(text, "{") {
		if b, err := base64.StdEncoding.DecodeString(text); err == nil {
			text = strings.TrimSpace(string(b))
		}
	}
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		return m, fmt.Errorf("message is not a provisioning job: %w", err)
	}
	var missing []string
	if m.ImportID == "" {
		missing = append(missing, "importId")
	}
	if m.SerialNumber == "" {
		missing = append(missing, "serialNumber")
	}
	if len(missing) > 0 {
		return m, errors.New("message lacks " + strings.Join(missing, ", "))
	}
	return m, nil
}
