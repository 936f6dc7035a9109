package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

func odataString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// get reads one entity into v and returns its ETag.
func get(ctx context.Context, c *aztables.Client, pk, rk string, v any) (azcore.ETag, error) {
	resp, err := c.GetEntity(ctx, pk, rk, nil)
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(resp.Value, v); err != nil {
		return "", fmt.Errorf("decode entity %s/%s: %w", pk, rk, err)
	}
	return resp.ETag, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Entities hold plain strings, ints and bools only: cannot fail.
		panic(fmt.Sprintf("ledger: marshal entity: %v", err))
	}
	return b
}

func notFound(op, msg string, err error) error {
	return &token.Error{Kind: token.KindNotFound, Op: op, Message: msg, Err: err}
}

// retryRace runs attempt until it does not lose a race (412/409), with a short jittered pause
// between tries. Contention is per import, among the workers of that import only.
func (l *Ledger) retryRace(ctx context.Context, op string, attempt func() error) error {
	const maxTries = 200
	for i := 0; ; i++ {
		err := attempt()
		if err == nil || !isLostRace(err) {
			return err
		}
		if i+1 >= maxTries {
			return &token.Error{Kind: token.KindTransient, Op: op, Message: fmt.Sprintf("still contended after %d conditional updates", maxTries), Err: err}
		}
		l.log.DebugContext(ctx, "ledger: conditional update lost a race, retrying", logctx.Op, op, "try", i+1)
		pause := time.Duration(1+mrand.IntN(4*min(i+1, 10))) * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// batches splits rows into entity group transactions: at most 100 operations and about
// maxBatchBytes of payload each.
func batches[T any](rows []T, size func(T) int) [][]T {
	var out [][]T
	start, bytes := 0, 0
	for i, r := range rows {
		n := size(r)
		if i > start && (i-start == 100 || bytes+n > maxBatchBytes) {
			out = append(out, rows[start:i])
			start, bytes = i, 0
		}
		bytes += n
	}
	if start < len(rows) {
		out = append(out, rows[start:])
	}
	return out
}
