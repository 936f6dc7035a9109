package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/oathpipe/oathpipe/shared/config"
)

// provisionFailed handles a message of token-provisioning-poison: the host gave up on it after
// maxDequeueCount deliveries. The pipeline records the token as failed, keeping the last error
// it saw, so the token does not vanish. A failure to record is retried (500).
func (s *Server) provisionFailed(ctx context.Context, log *slog.Logger, in *Invocation) outcome {
	m, err := provisionMessage(in, "job")
	if err != nil {
		log.Error("dropped undecodable poison message", "messageId", in.Meta("Id"), "err", err)
		return outcome{status: http.StatusOK, resp: Response{Logs: []string{"dropped undecodable poison message " + in.Meta("Id") + ": " + err.Error()}}}
	}
	log = log.With("importId", m.ImportID, "serial", m.SerialNumber, "line", m.Line, "messageId", in.Meta("Id"))
	reason := fmt.Sprintf("provisioning gave up after %d deliveries; the message was moved to %s", s.maxDQ, config.PoisonQueue)
	if err := s.p.RecordPoisoned(ctx, m, reason); err != nil {
		log.Error("recording the poisoned token failed; the host will retry", "err", err)
		return outcome{status: http.StatusInternalServerError, resp: Response{
			Logs: []string{fmt.Sprintf("record failed token %s (import %s, line %d) failed (will be retried): %v", m.SerialNumber, m.ImportID, m.Line, err)},
		}}
	}
	log.Warn("token recorded as failed after exhausting its retries")
	return outcome{status: http.StatusOK, resp: Response{Logs: []string{
		fmt.Sprintf("token %s (import %s, line %d) recorded as failed: %s", m.SerialNumber, m.ImportID, m.Line, reason),
	}}}
}
