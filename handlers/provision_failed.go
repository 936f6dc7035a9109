package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/logctx"
)

// provisionFailed handles a message of token-provisioning-poison: the host gave up on it after
// maxDequeueCount deliveries. The pipeline records the token as failed, keeping the last error
// it saw, so the token does not vanish. A failure to record is retried (500) — but the host
// gives a queue whose name ends in "-poison" no poison queue of its own: past maxDequeueCount it
// would only skip the message until it expires. So on the last delivery a message that still
// cannot be recorded (or that does not decode) is parked as a blob in token-parked, and the
// answer is 200. Only a failure to park is answered 500 then.
func (s *Server) provisionFailed(ctx context.Context, log *slog.Logger, in *Invocation) outcome {
	dq := in.MetaInt("DequeueCount")
	text, _ := in.DataString("job")
	log = log.With(logctx.DequeueCount, dq)
	m, err := provisionMessage(in, "job")
	if err != nil {
		// Retrying cannot fix it: park it at once for an operator.
		log.ErrorContext(ctx, "undecodable poison message; parking it", logctx.Error, err)
		return s.parkPoison(ctx, log, config.PoisonQueue, "undecodable/"+digest(text)+".json", text, dq, "undecodable: "+err.Error())
	}
	ctx = logctx.WithSerial(logctx.WithImport(ctx, m.ImportID), m.SerialNumber)
	log = log.With(logctx.Line, m.Line)
	reason := fmt.Sprintf("provisioning gave up after %d deliveries; the message was moved to %s", s.maxDQ, config.PoisonQueue)
	err = s.p.RecordPoisoned(ctx, m, reason)
	if err == nil {
		log.WarnContext(ctx, "token recorded as failed after exhausting its retries")
		return outcome{status: http.StatusOK, resp: Response{Logs: []string{
			fmt.Sprintf("token %s (import %s, line %d) recorded as failed: %s", m.SerialNumber, m.ImportID, m.Line, reason),
		}}}
	}
	if dq < s.maxDQ {
		log.ErrorContext(ctx, "recording the poisoned token failed; the host will retry", logctx.Error, err)
		return outcome{status: http.StatusInternalServerError, resp: Response{
			Logs: []string{fmt.Sprintf("record failed token %s (import %s, line %d) failed (will be retried): %v", m.SerialNumber, m.ImportID, m.Line, err)},
		}}
	}
	log.ErrorContext(ctx, "recording the poisoned token failed on its last delivery; parking the message", logctx.Error, err)
	name := fmt.Sprintf("%s/%010d.json", url.PathEscape(m.ImportID), m.Line)
	return s.parkPoison(ctx, log, config.PoisonQueue, name, text, dq, err.Error())
}

// parkPoison writes the message text, read from queue source, as token-parked/{name} and answers
// 200, or 500 when even that fails (the host then redelivers it while its dequeue count allows).
func (s *Server) parkPoison(ctx context.Context, log *slog.Logger, source, name, text string, dq int, lastErr string) outcome {
	if s.park == nil {
		log.ErrorContext(ctx, "no token-parked container configured; the host will retry the message")
		return outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{"cannot park the message: no parking configured"}}}
	}
	if len(lastErr) > 1000 {
		lastErr = lastErr[:1000]
	}
	err := s.park.Park(ctx, name, []byte(text),
		"sourcequeue", source,
		"dequeuecount", strconv.Itoa(dq),
		"lasterror", url.QueryEscape(lastErr), // metadata values are ASCII
		"parkedat", time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		log.ErrorContext(ctx, "parking the message failed; the host will retry it", "blob", config.ParkedContainer+"/"+name, logctx.Error, err)
		return outcome{status: http.StatusInternalServerError, resp: Response{Logs: []string{
			fmt.Sprintf("park %s/%s failed (will be retried): %v", config.ParkedContainer, name, err)}}}
	}
	log.ErrorContext(ctx, "message parked; re-enqueue it to "+source+" once the cause is fixed (docs/operations.md)",
		"blob", config.ParkedContainer+"/"+name)
	return outcome{status: http.StatusOK, resp: Response{Logs: []string{
		fmt.Sprintf("message parked as %s/%s: %s", config.ParkedContainer, name, lastErr)}}}
}

// digest names a message that carries no usable name.
func digest(text string) string {
	h := sha256.Sum256([]byte(text))
	return hex.EncodeToString(h[:12])
}
