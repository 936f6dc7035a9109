package pipeline

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/oathpipe/oathpipe/shared/otp"
	"github.com/oathpipe/oathpipe/shared/token"
)

// activationTimes remembers, per device id, when this process last activated the token (the
// time its accepted code was computed for). A verifier must not accept a second code of one
// time step (RFC 6238 §5.2), so a reassignment or give-back within the step of the token's
// last activation waits for the next step. The ledger knows the time too (the row's Updated
// time when it reads activated): the later of the two is used. The zero value is ready to use.
type activationTimes struct {
	mu sync.Mutex
	at map[string]time.Time
}

// last returns the later of what this process remembers for deviceID and known.
func (a *activationTimes) last(deviceID string, known time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t := a.at[deviceID]; t.After(known) {
		return t
	}
	return known
}

// record remembers t as deviceID's last activation when it is later than what is known.
func (a *activationTimes) record(deviceID string, t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at == nil {
		a.at = map[string]time.Time{}
	}
	if t.After(a.at[deviceID]) {
		a.at[deviceID] = t
	}
	if len(a.at) > 100_000 { // bounded: forget the oldest half's worth at once
		cut := time.Now().Add(-10 * time.Minute)
		for k, v := range a.at {
			if v.Before(cut) {
				delete(a.at, k)
			}
		}
	}
}

// lastActivation is the ledger's knowledge of a token's last activation: the time its row was
// last updated when the row reads activated (an upper bound of the activation's time).
func lastActivation(row TokenRecord, hasRow bool) time.Time {
	if hasRow && row.Status == StatusActivated {
		return row.Updated
	}
	return time.Time{}
}

// periodOf is the device's time step in seconds (30 when Entra leaves it out).
func periodOf(d token.Device) int {
	if d.Period > 0 {
		return d.Period
	}
	return 30
}

// usedCode rewords a refused caller's code when it is (or may be) the code of the step that
// last activated the token: a code is accepted once, so the caller must send the next one.
// With the seed at hand it compares exactly; without it, a code sent within one step of the
// last activation is reported as possibly used.
func (p *Pipeline) usedCode(ctx context.Context, dev token.Device, code string, last time.Time, refusal error) error {
	if last.IsZero() {
		return refusal
	}
	period := time.Duration(periodOf(dev)) * time.Second
	now := p.now()
	if now.Sub(last) > 2*period {
		return refusal
	}
	certain := false
	if seed, err := p.d.Vault.GetSeed(ctx, dev.Manufacturer, dev.Serial); err == nil {
		if used, err := otp.Code(seed, last); err == nil {
			if used != code {
				return refusal
			}
			certain = true
		}
	}
	msg := fmt.Sprintf("Entra ID refused the code: it may be the code that last activated this token (at %s UTC), and a code is accepted only once; wait for the token to show its next code and send that.", last.UTC().Format("15:04:05"))
	if certain {
		msg = fmt.Sprintf("Entra ID refused the code: it is the code that last activated this token (at %s UTC), and a code is accepted only once; wait for the token to show its next code and send that.", last.UTC().Format("15:04:05"))
	}
	return &token.Error{Kind: token.KindBadCode, Op: "activate " + dev.Serial, Message: msg, RequestID: token.RequestIDOf(refusal), Err: refusal}
}

// codeTime is the time of the step a caller's accepted code belongs to. Entra accepts a code
// of the step before or after now too, so without the seed to tell which, the next step is
// counted as used (the later bound: a give-back then waits one step more than it might need).
func (p *Pipeline) codeTime(ctx context.Context, dev token.Device, a activation, now time.Time) time.Time {
	period := time.Duration(periodOf(dev)) * time.Second
	seed, ok := a.seed, a.auto
	if !ok {
		s, err := p.d.Vault.GetSeed(ctx, dev.Manufacturer, dev.Serial)
		seed, ok = s, err == nil
	}
	if ok {
		for _, t := range []time.Time{now, now.Add(-period), now.Add(period)} {
			if c, err := otp.Code(seed, t); err == nil && c == a.code {
				return t
			}
		}
	}
	return now.Add(period)
}
