package pipelinetest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// DecodeMessage reads a queue message text the way the ProvisionToken handler does.
func DecodeMessage(t testing.TB, text string) pipeline.ProvisionMessage {
	t.Helper()
	var m pipeline.ProvisionMessage
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		t.Fatalf("queue message is not a ProvisionMessage: %v: %q", err, text)
	}
	return m
}

// Drain plays the host for the in-memory queue: every message is handled twice (at-least-once
// delivery), and a message whose Provision fails is put back, like the host's retry.
func Drain(t testing.TB, ctx context.Context, p *pipeline.Pipeline, q *MemQueue) {
	t.Helper()
	tries := map[string]int{}
	for {
		text, ok := q.Take()
		if !ok {
			return
		}
		m := DecodeMessage(t, text)
		tries[text]++
		if tries[text] > 5 {
			if err := p.RecordPoisoned(ctx, m, "test: retries exhausted"); err != nil {
				t.Fatalf("RecordPoisoned: %v", err)
			}
			continue
		}
		_, err := p.Provision(ctx, m, tries[text])
		if err != nil {
			q.mu.Lock()
			q.Msgs = append(q.Msgs, text)
			q.mu.Unlock()
			continue
		}
		if _, err := p.Provision(ctx, m, tries[text]+1); err != nil {
			t.Fatalf("repeated Provision of %s: %v", m.SerialNumber, err)
		}
	}
}
