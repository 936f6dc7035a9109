package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

// provision is Provision: seed from the vault → ensure the device → resolve the user → refuse a
// device assigned elsewhere → assign → activate → read back → record. Every step is idempotent,
// so a repeated or retried message picks up where the last attempt stopped.
func (p *Pipeline) provision(ctx context.Context, m ProvisionMessage, dequeueCount int) (*TokenOutcome, error) {
	ctx = logctx.WithSerial(logctx.WithImport(ctx, m.ImportID), m.SerialNumber)
	log := p.log.With(slog.Int(logctx.Line, m.Line), slog.Int(logctx.DequeueCount, dequeueCount))
	out := &TokenOutcome{ImportID: m.ImportID, Line: m.Line, SerialNumber: m.SerialNumber, UserPrincipalName: m.UserPrincipalName}
	if m.ImportID == "" || m.SerialNumber == "" || m.Line < 1 {
		// Nothing to record against: a message no import wrote. Retrying cannot help.
		out.Status, out.Reason = StatusFailed, "malformed provisioning message (importId, serialNumber and line are required)"
		log.ErrorContext(ctx, "malformed provisioning message dropped")
		return out, nil
	}

	row, err := p.d.Ledger.GetToken(ctx, m.ImportID, m.Line)
	switch {
	case token.KindOf(err) == token.KindNotFound:
		out.Status, out.Reason = StatusFailed, "no ledger row for this message: not written by an import"
		log.ErrorContext(ctx, "provisioning message without a ledger row dropped")
		return out, nil
	case err != nil:
		return nil, fmt.Errorf("provision %s: read ledger row: %w", m.SerialNumber, err)
	case row.Serial != m.SerialNumber:
		out.Status, out.Reason = StatusFailed, fmt.Sprintf("message names serial %q, the ledger row of line %d holds %q", m.SerialNumber, m.Line, row.Serial)
		log.ErrorContext(ctx, "provisioning message does not match its ledger row")
		return out, nil
	case row.Status.Settled():
		out.Status, out.Reason, out.Repeat = row.Status, row.Reason, true
		log.InfoContext(ctx, "token already settled; repeated message ignored", slog.String(logctx.Status, string(row.Status)))
		// The attempt that settled it may have stopped before writing the final report.
		if err := p.ensureFinalReport(ctx, m.ImportID); err != nil {
			return nil, fmt.Errorf("provision %s: %w", m.SerialNumber, err)
		}
		return out, nil
	}

	o, err := p.provisionToken(ctx, m, row)
	if err != nil && token.KindOf(err) == token.KindThrottled && p.d.Requeue != nil {
		requeued, rerr := p.requeueThrottled(ctx, log, m, err, out)
		switch {
		case rerr != nil:
			return nil, fmt.Errorf("provision %s: %w", m.SerialNumber, rerr)
		case requeued:
			return out, nil
		}
		// Throttled past the total wait: recorded failed with that reason.
		o = Outcome{Status: StatusFailed, UserPrincipalName: m.UserPrincipalName, DeviceID: o.DeviceID,
			Reason: fmt.Sprintf("still throttled after %s of retries (OATHPIPE_THROTTLE_MAX_WAIT): %s", p.d.ThrottleMaxWait, reasonOf(err))}
		log.WarnContext(ctx, "provisioning failed", slog.String(logctx.Kind, string(token.KindThrottled)), slog.String(logctx.Reason, o.Reason))
		err = nil
	}
	if err != nil {
		if token.IsTransient(err) {
			log.WarnContext(ctx, "provisioning failed; will be retried", slog.String(logctx.Kind, string(token.KindOf(err))),
				slog.String(logctx.RequestID, token.RequestIDOf(err)), slog.String(logctx.Error, reasonOf(err)))
			return nil, fmt.Errorf("provision %s: %w", m.SerialNumber, err)
		}
		o = Outcome{Status: StatusFailed, Reason: reasonOf(err), UserPrincipalName: m.UserPrincipalName, DeviceID: o.DeviceID}
		log.WarnContext(ctx, "provisioning failed", slog.String(logctx.Kind, string(token.KindOf(err))),
			slog.String(logctx.RequestID, token.RequestIDOf(err)), slog.String(logctx.Reason, o.Reason))
	}
	o.Warnings = retiredWarning(m)
	if err := p.settle(ctx, m.ImportID, m.Line, o); err != nil {
		return nil, fmt.Errorf("provision %s: %w", m.SerialNumber, err)
	}
	out.Status, out.Reason = o.Status, o.Reason
	log.InfoContext(ctx, "token provisioned", slog.String(logctx.Status, string(o.Status)))
	return out, nil
}

// requeueThrottled puts a throttled token back on the queue, visible again after Graph's (or
// Key Vault's) Retry-After, else an exponential backoff, with a jitter so the tokens throttled
// together do not come back together. It returns false (and no error) when the token has been
// throttled for longer than ThrottleMaxWait: the caller records it failed. The delivery answers
// success either way, so 429s never spend the message's dequeue count.
func (p *Pipeline) requeueThrottled(ctx context.Context, log *slog.Logger, m ProvisionMessage, cause error, out *TokenOutcome) (bool, error) {
	now := p.now()
	since := m.ThrottledSince
	if since.IsZero() || since.After(now) {
		since = now
	}
	left := p.d.ThrottleMaxWait - now.Sub(since)
	if left <= 0 {
		return false, nil
	}
	delay := throttleDelay(token.RetryAfterOf(cause), m.Throttles)
	if delay > left {
		delay = left
	}
	next := m
	next.ThrottledSince, next.Throttles = since, m.Throttles+1
	if err := p.d.Requeue.EnqueueAfter(ctx, next, delay); err != nil {
		return false, fmt.Errorf("re-queue throttled token: %w", err)
	}
	out.Requeued, out.RetryAfter = true, delay
	log.InfoContext(ctx, "throttled; token re-queued", slog.Duration("delay", delay), slog.Int("throttles", next.Throttles),
		slog.Time("throttledSince", since), slog.String(logctx.RequestID, token.RequestIDOf(cause)))
	return true, nil
}

// Bounds of a re-queued token's delay. Queue storage allows up to 7 days of invisibility.
const (
	minThrottleDelay = time.Second
	maxThrottleDelay = 15 * time.Minute
)

// throttleDelay is how long a throttled token stays invisible: Retry-After when the service gave
// one (plus up to half of it again as jitter), else 2 s·2ⁿ capped at 15 minutes, jittered the
// same way.
func throttleDelay(retryAfter time.Duration, throttles int) time.Duration {
	d := retryAfter
	if d <= 0 {
		d = 2 * time.Second << min(throttles, 10)
	}
	d = max(d, minThrottleDelay)
	d += time.Duration(rand.Int64N(int64(d)/2 + 1))
	return min(d, maxThrottleDelay)
}

// provisionToken does the Entra part of Provision and returns what to record.
func (p *Pipeline) provisionToken(ctx context.Context, m ProvisionMessage, row TokenRecord) (Outcome, error) {
	seed, err := p.d.Vault.GetSeed(ctx, m.Manufacturer, m.SerialNumber)
	if err != nil {
		return Outcome{}, fmt.Errorf("read seed: %w", err)
	}
	tok := token.Token{Serial: m.SerialNumber, Manufacturer: m.Manufacturer, Model: row.Model}
	if m.UserPrincipalName == "" {
		dev, _, err := p.d.Directory.EnsureDevice(ctx, tok, seed)
		if err != nil {
			return Outcome{}, fmt.Errorf("ensure device: %w", err)
		}
		if dev.AssignedToID != "" {
			return Outcome{DeviceID: dev.ID}, token.Errorf(token.KindAssignedElsewhere,
				"the file names no user for %s, but the token is assigned to %s in Entra", tok.Serial, p.upnOf(ctx, dev.AssignedToID, dev.AssignedToName))
		}
		return Outcome{Status: StatusAvailable, DeviceID: dev.ID}, nil
	}
	// The user is checked before the device is created, so a new device can be created already
	// assigned (two writes a token: create with assignTo, activate; docs/graph.md).
	user, err := p.d.Directory.ResolveUser(ctx, m.UserPrincipalName)
	if err != nil {
		if token.IsTransient(err) {
			return Outcome{}, fmt.Errorf("resolve user: %w", err)
		}
		// The user cannot take it (guest, disabled, missing): the token still goes into the
		// inventory, unassigned, and the report says so.
		dev, _, derr := p.d.Directory.EnsureDevice(ctx, tok, seed)
		if derr != nil {
			return Outcome{}, fmt.Errorf("ensure device: %w", derr)
		}
		return Outcome{DeviceID: dev.ID}, inInventory(dev, fmt.Errorf("resolve user: %w", err))
	}
	dev, created, err := p.ensureDeviceFor(ctx, tok, seed, user)
	if err != nil {
		return Outcome{}, fmt.Errorf("ensure device: %w", err)
	}
	if dev.AssignedToID != "" && dev.AssignedToID != user.ID {
		return Outcome{DeviceID: dev.ID}, token.Errorf(token.KindAssignedElsewhere,
			"token %s is assigned to %s, not %s; use the reassignment API to move it", tok.Serial, p.upnOf(ctx, dev.AssignedToID, dev.AssignedToName), m.UserPrincipalName)
	}
	res, err := p.assignActivate(ctx, dev, user, activation{auto: !p.d.AssignOnly, seed: seed, fresh: created})
	if err != nil {
		switch {
		case res.methodID == "":
			err = inInventory(dev, err) // the user could not take it: say what exists in Entra
		case !created && token.KindOf(err) == token.KindBadCode && res.activatedWith == "seed":
			// A code computed from the file's seed was refused by a device this import did not
			// create: the device in Entra holds another seed.
			err = &token.Error{Kind: token.KindConflict, Op: "activate " + dev.Serial, RequestID: token.RequestIDOf(err), Err: err,
				Message: fmt.Sprintf("this serial is already in Entra with another seed: the code computed from the file's seed was refused; the token is assigned to %s, not activated", user.UserPrincipalName)}
		}
		return Outcome{DeviceID: dev.ID, UserPrincipalName: upnIfHeld(res, user)}, err
	}
	return Outcome{Status: res.status, Reason: res.reason, UserPrincipalName: user.UserPrincipalName, DeviceID: dev.ID, UserID: user.ID}, nil
}

// ensureDeviceFor finds the token's device, else creates it assigned to user when the user can
// take it: a member account (ResolveUser checked guest and disabled) with fewer than five OATH
// methods. Otherwise, or when Graph refuses the assigned create for a reason of its own (a
// refusal that is not throttling or an outage), it creates the device unassigned, so the
// assign step that follows finds and words the cause from state as before.
func (p *Pipeline) ensureDeviceFor(ctx context.Context, tok token.Token, seed token.Seed, user token.User) (token.Device, bool, error) {
	dev, err := p.d.Directory.FindDevice(ctx, tok.Serial)
	switch {
	case err == nil:
		return dev, false, nil
	case token.KindOf(err) != token.KindNotFound:
		return token.Device{}, false, err
	}
	n, err := p.d.Directory.CountOathMethods(ctx, user.ID)
	if err != nil {
		return token.Device{}, false, fmt.Errorf("count %s's OATH methods: %w", user.UserPrincipalName, err)
	}
	if n < maxOathMethods {
		assigned := tok
		assigned.AssignTo = user.ID
		dev, created, err := p.d.Directory.EnsureDevice(ctx, assigned, seed)
		if err == nil || token.IsTransient(err) || token.KindOf(err) == token.KindConflict {
			return dev, created, err
		}
		p.log.InfoContext(ctx, "create with assignTo refused; creating the token unassigned", slog.String(logctx.Serial, tok.Serial),
			slog.String(logctx.Kind, string(token.KindOf(err))), slog.String(logctx.RequestID, token.RequestIDOf(err)))
	}
	return p.d.Directory.EnsureDevice(ctx, tok, seed)
}

// inInventory rewords a failure that left the device in the Entra inventory, unassigned (the
// row's user cannot take it: guest, disabled, missing, five methods), so the report says what
// exists in Entra.
func inInventory(dev token.Device, err error) error {
	var te *token.Error
	if token.IsTransient(err) || !errors.As(err, &te) {
		return err
	}
	cp := *te
	cp.Message = fmt.Sprintf("the token %s is in the Entra ID inventory, unassigned: %s", dev.Serial, te.Message)
	cp.Err = err
	return &cp
}

// upnIfHeld is the user's UPN when assignActivate got as far as assigning the token.
func upnIfHeld(res assignResult, user token.User) string {
	if res.methodID != "" {
		return user.UserPrincipalName
	}
	return ""
}

// settle records o on the row and, when that settled the import's last token, rewrites the report.
//
// The ledger counts settled tokens with conditional updates of one entity per import; workers
// of this instance take turns on it (importLocks), so they queue briefly instead of losing
// optimistic races to each other, which under 64 workers cost seconds per update.
func (p *Pipeline) settle(ctx context.Context, importID string, line int, o Outcome) error {
	unlock := p.importLocks.lock(importID)
	last, err := p.d.Ledger.SetTokenOutcome(ctx, importID, line, o)
	unlock()
	if err != nil {
		return fmt.Errorf("record outcome: %w", err)
	}
	if last {
		if err := p.writeReport(ctx, importID, ""); err != nil {
			return err
		}
	}
	return nil
}

// ensureFinalReport rewrites the report when the import has settled. A repeated message calls
// it: the delivery that settled the last token may have failed before its report was written.
func (p *Pipeline) ensureFinalReport(ctx context.Context, importID string) error {
	imp, err := p.d.Ledger.GetImport(ctx, importID)
	if err != nil {
		return fmt.Errorf("read import: %w", err)
	}
	if imp.Pending > 0 || imp.Stage.Before(StageVaulted) {
		return nil
	}
	return p.writeReport(ctx, importID, "")
}

// recordPoisoned is RecordPoisoned.
func (p *Pipeline) recordPoisoned(ctx context.Context, m ProvisionMessage, reason string) error {
	ctx = logctx.WithSerial(logctx.WithImport(ctx, m.ImportID), m.SerialNumber)
	log := p.log.With(slog.Int(logctx.Line, m.Line))
	if m.ImportID == "" || m.Line < 1 {
		log.ErrorContext(ctx, "malformed poison message dropped")
		return nil
	}
	row, err := p.d.Ledger.GetToken(ctx, m.ImportID, m.Line)
	if token.KindOf(err) == token.KindNotFound {
		log.ErrorContext(ctx, "poison message without a ledger row dropped")
		return nil
	}
	if err != nil {
		return fmt.Errorf("record poisoned %s: %w", m.SerialNumber, err)
	}
	if row.Status.Settled() {
		return p.ensureFinalReport(ctx, m.ImportID) // an earlier delivery settled it after all
	}
	if reason = strings.TrimSpace(reason); reason == "" {
		reason = "provisioning kept failing with transient errors"
	}
	reason = "gave up after repeated attempts: " + reason
	log.ErrorContext(ctx, "token provisioning abandoned", slog.String(logctx.Reason, reason))
	return p.settle(ctx, m.ImportID, m.Line, Outcome{Status: StatusFailed, Reason: reason, UserPrincipalName: m.UserPrincipalName, DeviceID: row.DeviceID,
		Warnings: retiredWarning(m)})
}

// activation says how assignActivate activates a token.
type activation struct {
	auto bool       // activate with a code computed from seed
	code string     // a code read from the device, sent as is (wins over auto)
	seed token.Seed // for auto
	// fresh says the device was created just now: no user can hold a method for it yet, so
	// the lookup before assigning is skipped (one Graph read per token less on import).
	fresh bool
	// lastKnown is when the token was last activated as far as the ledger knows (zero when it
	// does not): no code of that time step may be sent again (RFC 6238 §5.2).
	lastKnown time.Time
}

func (a activation) wanted() bool { return a.auto || a.code != "" }

// assignResult is what assignActivate did.
type assignResult struct {
	methodID      string
	status        RowStatus // assigned or activated
	reason        string
	changed       bool
	activatedWith string // "seed", "verificationCode" or ""
}

// assignActivate is the one "assign + activate" core shared by Provision and AssignToken: it
// makes dev assigned to user (who must not be assigned elsewhere: callers check or unassign
// first) and activated when a wants it, doing only the steps not already done, then reads the
// result back from Entra.
func (p *Pipeline) assignActivate(ctx context.Context, dev token.Device, user token.User, a activation) (assignResult, error) {
	var res assignResult
	op := fmt.Sprintf("assign %s to %s", dev.Serial, user.UserPrincipalName)
	var method *token.Method
	if !a.fresh {
		m, err := p.findMethod(ctx, user.ID, dev)
		if err != nil {
			return res, fmt.Errorf("%s: list methods: %w", op, err)
		}
		method = m
	}
	if method == nil {
		id, err := p.d.Directory.Assign(ctx, user.ID, dev.ID)
		if err != nil {
			return res, fmt.Errorf("%s: %w", op, err)
		}
		method = &token.Method{ID: id, DeviceID: dev.ID, Serial: dev.Serial, Status: token.StatusAssigned}
		res.changed = true
	}
	res.methodID = method.ID
	if a.wanted() && method.Status != token.StatusActivated {
		var err error
		after := p.activations.last(dev.ID, a.lastKnown)
		if a.code != "" {
			err = p.d.Directory.ActivateWithCode(ctx, user.ID, method.ID, a.code)
			res.activatedWith = "verificationCode"
			if err == nil {
				p.activations.record(dev.ID, p.codeTime(ctx, dev, a, p.now()))
			} else if token.KindOf(err) == token.KindBadCode {
				err = p.usedCode(ctx, dev, a.code, after, err)
			}
		} else {
			var used time.Time
			used, err = p.d.Directory.Activate(ctx, user.ID, method.ID, a.seed, after)
			res.activatedWith = "seed"
			if err == nil {
				p.activations.record(dev.ID, used)
			}
		}
		if err != nil {
			return res, fmt.Errorf("activate %s for %s: %w", dev.Serial, user.UserPrincipalName, err)
		}
		res.changed = true
	}
	want := token.StatusAssigned
	if a.wanted() {
		want = token.StatusActivated
	}
	got, err := p.readBack(ctx, user.ID, dev, want, res.changed)
	if err != nil {
		return res, fmt.Errorf("%s: read back: %w", op, err)
	}
	switch got {
	case token.StatusActivated:
		res.status = StatusActivated
	case token.StatusAssigned:
		res.status = StatusAssigned
		if a.wanted() {
			res.reason = "activation sent, but Entra still reads the token as assigned"
		}
	case token.StatusFailedActivation:
		return res, &token.Error{Kind: token.KindBadCode, Op: op, Message: "Entra reads the token as failedActivation: the code was refused"}
	default:
		return res, &token.Error{Kind: token.KindTransient, Op: op, Message: fmt.Sprintf("Entra reads the token as %q after assigning it", got)}
	}
	return res, nil
}

// findMethod returns the user's method for dev, or nil. It looks the method id up instead of
// assuming it equals the device id.
func (p *Pipeline) findMethod(ctx context.Context, userID string, dev token.Device) (*token.Method, error) {
	ms, err := p.d.Directory.ListUserMethods(ctx, userID)
	if err != nil {
		return nil, err
	}
	for i := range ms {
		if (ms[i].DeviceID != "" && ms[i].DeviceID == dev.ID) || (ms[i].DeviceID == "" && ms[i].Serial == dev.Serial) {
			return &ms[i], nil
		}
	}
	return nil, nil
}

// readBack reads the token's status as the user's method list shows it. Entra may lag a moment
// behind a write, so a status short of want is read again a few times before it is believed.
func (p *Pipeline) readBack(ctx context.Context, userID string, dev token.Device, want token.Status, wrote bool) (token.Status, error) {
	delay := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		m, err := p.findMethod(ctx, userID, dev)
		if err != nil {
			return "", err
		}
		var got token.Status
		if m != nil {
			got = m.Status
		}
		if got == want || got == token.StatusFailedActivation || !wrote || attempt == 3 {
			if got == "" {
				return token.StatusAvailable, nil
			}
			return got, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
}
