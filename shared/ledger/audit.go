package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/oathpipe/oathpipe/shared/pipeline"
)

type auditEntity struct {
	PartitionKey string
	RowKey       string
	Time         string
	Caller       string
	Action       string
	Serial       string
	FromUser     string
	ToUser       string
	ToUserID     string `json:",omitempty"`
	Outcome      string
	Reason       string
	HeldBy       string `json:",omitempty"` // after a failed change: who holds the token now
	TokenStatus  string `json:",omitempty"` // after a failed change: its Entra status now
}

// Audit appends one audit record to the audit table: partitioned by serial, newest first (the
// row key is an inverted timestamp plus a random suffix, so records never collide).
func (l *Ledger) Audit(ctx context.Context, a pipeline.AuditRecord) error {
	if a.Time.IsZero() {
		a.Time = l.now()
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	e := auditEntity{
		PartitionKey: keyFor(a.Serial),
		RowKey:       fmt.Sprintf("%019d-%s", math.MaxInt64-a.Time.UnixNano(), hex.EncodeToString(rnd[:])),
		Time:         formatTime(a.Time), Caller: a.Caller, Action: a.Action, Serial: a.Serial,
		FromUser: a.FromUser, ToUser: a.ToUser, ToUserID: a.ToUserID, Outcome: a.Outcome, Reason: clip(a.Reason),
		HeldBy: a.HeldBy, TokenStatus: a.TokenStatus,
	}
	if _, err := l.audit.AddEntity(ctx, mustJSON(e), nil); err != nil {
		return classify("ledger: audit "+a.Action+" of "+a.Serial, err)
	}
	return nil
}

// AuditTrail returns up to max audit records of a serial, newest first (max <= 0: all).
func (l *Ledger) AuditTrail(ctx context.Context, serial string, max int) ([]pipeline.AuditRecord, error) {
	op := "ledger: audit trail of " + serial
	filter := "PartitionKey eq " + odataString(keyFor(serial))
	pager := l.audit.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	var out []pipeline.AuditRecord
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, classify(op, err)
		}
		for _, raw := range page.Entities {
			var e auditEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, fmt.Errorf("%s: decode entity: %w", op, err)
			}
			if e.Serial != serial {
				continue
			}
			out = append(out, pipeline.AuditRecord{
				Time: parseTime(e.Time), Caller: e.Caller, Action: e.Action, Serial: e.Serial,
				FromUser: e.FromUser, ToUser: e.ToUser, ToUserID: e.ToUserID, Outcome: e.Outcome, Reason: e.Reason,
				HeldBy: e.HeldBy, TokenStatus: e.TokenStatus,
			})
			if max > 0 && len(out) == max {
				return out, nil
			}
		}
	}
	return out, nil
}
