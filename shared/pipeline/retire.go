package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/seedfile"
	"github.com/oathpipe/oathpipe/shared/token"
)

// Retirement is the answer of DELETE /api/tokens/{serial}.
type Retirement struct {
	SerialNumber              string    `json:"serialNumber"`
	Manufacturer              string    `json:"manufacturer,omitempty"`
	Model                     string    `json:"model,omitempty"`
	Status                    RowStatus `json:"status"` // always StatusRetired
	PreviousUserPrincipalName string    `json:"previousUserPrincipalName"`
	DeviceDeleted             bool      `json:"deviceDeleted"` // this request deleted the device from Entra
	SeedDeleted               bool      `json:"seedDeleted"`   // this request soft-deleted the seed
	Changed                   bool      `json:"changed"`       // false: it was retired already
}

// RetireToken retires a lost, broken or worn-out token: it takes the token from its holder,
// deletes the device from Entra, soft-deletes its seed in the vault (recoverable for the
// vault's retention, then gone), and records it in the ledger row and the audit table. Each
// step looks first and skips what is done, in that order, so a retried or redelivered retire
// after a crash between steps finishes the job; a retire of a retired token changes nothing.
func (l *Lifecycle) RetireToken(ctx context.Context, serial, caller string) (*Retirement, error) {
	serial = strings.TrimSpace(serial)
	if serial == "" {
		return nil, token.Errorf(token.KindInvalid, "the serial number is empty")
	}
	p := l.p
	ctx, log := logctx.WithSerial(ctx, serial), l.logger(slog.String(logctx.Caller, caller))
	defer p.locks.lock(serial)()
	audit := AuditRecord{Caller: caller, Action: "retire", Serial: serial}
	fail := func(err error) (*Retirement, error) {
		p.audit(ctx, log, audit, err)
		return nil, err
	}
	r := &Retirement{SerialNumber: serial, Status: StatusRetired}

	row, rowErr := p.d.Ledger.TokenBySerial(ctx, serial)
	hasRow := rowErr == nil
	if rowErr != nil && token.KindOf(rowErr) != token.KindNotFound {
		return fail(fmt.Errorf("retire %s: read its ledger row: %w", serial, rowErr))
	}
	if hasRow {
		r.Manufacturer, r.Model = row.Manufacturer, row.Model
	}

	dev, err := p.d.Directory.FindDevice(ctx, serial)
	switch {
	case err == nil:
		r.Manufacturer, r.Model, r.SerialNumber = dev.Manufacturer, dev.Model, dev.Serial
		if dev.AssignedToID != "" {
			prev := p.upnOf(ctx, dev.AssignedToID, dev.AssignedToName)
			r.PreviousUserPrincipalName, audit.FromUser = prev, prev
			if err := p.unassign(ctx, dev); err != nil && token.KindOf(err) != token.KindNotFound {
				return fail(fmt.Errorf("retire %s: take it from %s: %w", serial, prev, err))
			}
		}
		if err := l.inv.DeleteDevice(ctx, dev.ID); err != nil && token.KindOf(err) != token.KindNotFound {
			return fail(fmt.Errorf("retire %s: delete it from Entra ID: %w", serial, err))
		}
		r.DeviceDeleted = true
		log.InfoContext(ctx, "token deleted from Entra", slog.String(logctx.DeviceID, dev.ID))
	case token.KindOf(err) == token.KindNotFound:
		if !hasRow {
			return fail(fmt.Errorf("retire %s: %w", serial, err))
		}
		// Deleted already (an earlier retire stopped after this step, or an admin deleted it).
	default:
		return fail(fmt.Errorf("retire %s: find it: %w", serial, err))
	}

	if r.Manufacturer != "" {
		switch err := l.vs.Retire(ctx, r.Manufacturer, serial); {
		case err == nil:
			r.SeedDeleted = true
			log.InfoContext(ctx, "seed soft-deleted")
		case token.KindOf(err) == token.KindNotFound:
		default:
			return fail(fmt.Errorf("retire %s: soft-delete its seed: %w", serial, err))
		}
	}

	if hasRow && row.Status != StatusRetired {
		o := Outcome{Status: StatusRetired, Reason: "retired by " + caller}
		if err := p.settle(ctx, row.ImportID, row.Line, o); err != nil {
			return fail(fmt.Errorf("retire %s: record it in the ledger: %w", serial, err))
		}
	}
	r.Changed = r.DeviceDeleted || r.SeedDeleted || (hasRow && row.Status != StatusRetired)
	if err := p.audit(ctx, log, audit, nil, r.Changed); err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "token retired", slog.Bool("changed", r.Changed), slog.String("from", r.PreviousUserPrincipalName))
	return r, nil
}

// CodeRetiredBefore is the row warning of a serial imported again after it was retired: a new
// token with its own seed, whatever the file calls it.
const CodeRetiredBefore = "token.retired-before"

// retiredWarning is the CodeRetiredBefore warning for m's row, when the vault found the serial
// retired before (nil otherwise).
func retiredWarning(m ProvisionMessage) []seedfile.Problem {
	if m.RetiredBefore.IsZero() {
		return nil
	}
	when := "before"
	if m.RetiredBefore.Unix() != 0 {
		when = "on " + m.RetiredBefore.UTC().Format("2006-01-02")
	}
	return []seedfile.Problem{{Line: m.Line, Field: "serial number", Code: CodeRetiredBefore,
		Message: fmt.Sprintf("serial %s was retired %s: this import makes it a new token with its own seed (the retired seed stays in Key Vault's history)", m.SerialNumber, when)}}
}
