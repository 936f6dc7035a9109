package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

// serialLocks serialises the HTTP API's changes to one serial inside this instance, so two
// concurrent PUTs for the same token run one after the other: the second sees the first's result.
// Across instances Entra itself refuses the loser's assignment (or the winner takes the token on
// before the loser activates it), which is answered as a conflict naming the holder (lostRace).
type serialLocks [64]sync.Mutex

func (l *serialLocks) lock(serial string) func() {
	h := fnv.New32a()
	h.Write([]byte(strings.ToUpper(serial))) // Entra may match serials case-insensitively: gp7001 = GP7001
	m := &l[h.Sum32()%uint32(len(l))]
	m.Lock()
	return m.Unlock
}

// assignToken is AssignToken: find the device → resolve the user → unassign from another user
// first (the reassignment) → the shared assign + activate core → ledger row → audit record.
func (p *Pipeline) assignToken(ctx context.Context, r AssignRequest) (*Assignment, error) {
	r, err := cleanAssignRequest(r)
	if err != nil {
		return nil, err
	}
	ctx, log := logctx.WithSerial(ctx, r.Serial), p.log.With(slog.String(logctx.Caller, r.Caller))
	defer p.locks.lock(r.Serial)()

	c := &assignCall{log: log, a: &Assignment{SerialNumber: r.Serial, UserPrincipalName: r.UserPrincipalName},
		audit: AuditRecord{Caller: r.Caller, Action: "assign", Serial: r.Serial, ToUser: r.UserPrincipalName}}
	if err := p.assignSteps(ctx, c, r); err != nil {
		return nil, p.assignFailed(ctx, c, err)
	}
	if err := p.audit(ctx, log, c.audit, nil, c.a.Changed); err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "token assignment", slog.String("to", c.a.UserPrincipalName), slog.Bool("changed", c.a.Changed), slog.String(logctx.Status, string(c.a.Status)))
	return c.a, nil
}

// assignCall is one AssignToken request in progress: its answer and its audit record, filled
// in step by step.
type assignCall struct {
	log   *slog.Logger
	a     *Assignment
	audit AuditRecord
	found bool // once the device is found, a failure reports who holds it now
}

// cleanAssignRequest trims r and refuses a request that cannot be carried out as sent.
func cleanAssignRequest(r AssignRequest) (AssignRequest, error) {
	r.Serial = strings.TrimSpace(r.Serial)
	r.UserPrincipalName = strings.TrimSpace(r.UserPrincipalName)
	r.VerificationCode = strings.TrimSpace(r.VerificationCode)
	switch {
	case r.Serial == "":
		return r, token.Errorf(token.KindInvalid, "the serial number is empty")
	case r.UserPrincipalName == "":
		return r, token.Errorf(token.KindInvalid, "userPrincipalName is required")
	case r.VerificationCode != "" && !isCode(r.VerificationCode):
		return r, token.Errorf(token.KindInvalid, "verificationCode must be the 6 digits shown on the token")
	case r.VerificationCode != "" && !r.Activate:
		return r, token.Errorf(token.KindInvalid, "verificationCode is only used to activate; drop it or set activate")
	}
	return r, nil
}

// assignFailed answers a failed assignment: with the token's state read back from Entra once
// the device was found, and audited.
func (p *Pipeline) assignFailed(ctx context.Context, c *assignCall, err error) error {
	if c.found {
		err = p.withState(ctx, c.audit.Serial, err)
		var se *StateError
		if errors.As(err, &se) {
			c.audit.HeldBy, c.audit.TokenStatus = se.HeldBy, se.TokenStatus
		}
	}
	p.audit(ctx, c.log, c.audit, err)
	return err
}

// assignSteps does the work of AssignToken, recording what it did in c.
func (p *Pipeline) assignSteps(ctx context.Context, c *assignCall, r AssignRequest) error {
	dev, err := p.d.Directory.FindDevice(ctx, r.Serial)
	if err != nil {
		return fmt.Errorf("find token %s: %w", r.Serial, err)
	}
	c.found = true
	// Report the serial as the tenant spells it (Entra may match gp7001 to GP7001).
	r.Serial, c.a.SerialNumber, c.audit.Serial = dev.Serial, dev.Serial, dev.Serial
	c.a.Manufacturer, c.a.Model = dev.Manufacturer, dev.Model
	holder := "" // the holder at the time, for the audit record of a refused request too
	if dev.AssignedToID != "" {
		holder = p.upnOf(ctx, dev.AssignedToID, dev.AssignedToName)
		c.audit.FromUser = holder
	}
	user, err := p.resolveAssignee(ctx, r)
	if err != nil {
		return err
	}
	c.a.UserPrincipalName = user.UserPrincipalName
	// An object-id request is audited with the UPN it resolved to (and the id).
	c.audit.ToUser, c.audit.ToUserID = cmp.Or(user.UserPrincipalName, r.UserPrincipalName), user.ID

	row, rowErr := p.d.Ledger.TokenBySerial(ctx, r.Serial)
	if rowErr != nil && token.KindOf(rowErr) != token.KindNotFound {
		return fmt.Errorf("ledger row of %s: %w", r.Serial, rowErr)
	}
	hasRow := rowErr == nil
	how, err := p.activationFor(ctx, r, dev, row, hasRow)
	if err != nil {
		return err
	}
	dev, before, err := p.takeFromHolder(ctx, c, dev, user, holder)
	if err != nil {
		return err
	}

	res, err := p.assignActivate(ctx, dev, user, how)
	if err != nil {
		err = p.lostRace(ctx, r.Serial, res.methodID != "", err)
		if before.AssignedToID != "" && res.methodID == "" {
			// The new user could not take it (e.g. 5 methods already): give it back.
			p.restore(ctx, c.log, before, how)
		}
		if hasRow {
			p.recordRow(ctx, c.log, row, p.outcomeNow(ctx, r.Serial, reasonOf(err)))
		}
		return err
	}
	c.a.Changed = c.a.Changed || res.changed
	c.a.Status, c.a.ActivatedWith = res.status, res.activatedWith
	if hasRow {
		p.recordRow(ctx, c.log, row, Outcome{Status: res.status, Reason: res.reason, UserPrincipalName: user.UserPrincipalName, DeviceID: dev.ID, UserID: user.ID})
	}
	return nil
}

// resolveAssignee resolves the user a request names; a user Entra does not know is worded for
// the API's caller, not for a file's uploader.
func (p *Pipeline) resolveAssignee(ctx context.Context, r AssignRequest) (token.User, error) {
	user, err := p.d.Directory.ResolveUser(ctx, r.UserPrincipalName)
	if err != nil {
		if token.KindOf(err) == token.KindNotFound {
			err = &token.Error{Kind: token.KindNotFound, Op: "assign " + r.Serial, RequestID: token.RequestIDOf(err), Err: err,
				Message: fmt.Sprintf("there is no user %s in Entra ID; check userPrincipalName in the request", r.UserPrincipalName)}
		}
		return token.User{}, fmt.Errorf("resolve %s: %w", r.UserPrincipalName, err)
	}
	return user, nil
}

// activationFor says how the request activates the token: with the caller's code, else (when
// it asks to activate) with the seed from the vault, found under the manufacturer the ledger
// row names (the import's spelling) or else Entra's.
func (p *Pipeline) activationFor(ctx context.Context, r AssignRequest, dev token.Device, row TokenRecord, hasRow bool) (activation, error) {
	how := activation{code: r.VerificationCode, lastKnown: lastActivation(row, hasRow)}
	if !r.Activate || how.code != "" {
		return how, nil
	}
	manufacturer := dev.Manufacturer
	if hasRow && row.Manufacturer != "" {
		manufacturer = row.Manufacturer
	}
	seed, err := p.d.Vault.GetSeed(ctx, manufacturer, r.Serial)
	if err != nil {
		return how, fmt.Errorf("seed of %s (needed to activate; or send the code shown on the token): %w", r.Serial, err)
	}
	how.auto, how.seed = true, seed
	return how, nil
}

// takeFromHolder is the first half of a reassignment: when another user holds dev, it checks
// that user can take one more OATH method and unassigns dev from its holder. It returns the
// device as it is now, to assign to user, and as it was before (to give back if the new
// assignment fails; a zero Device when nobody else held it).
func (p *Pipeline) takeFromHolder(ctx context.Context, c *assignCall, dev token.Device, user token.User, holder string) (now, before token.Device, err error) {
	if dev.AssignedToID == "" || dev.AssignedToID == user.ID {
		if dev.AssignedToID == user.ID {
			c.audit.FromUser = user.UserPrincipalName
			c.a.PreviousUserPrincipalName = user.UserPrincipalName
		}
		return dev, token.Device{}, nil
	}
	// Check the new holder can take the token before taking it from the old one: Entra
	// allows five OATH methods per user, authenticator apps included.
	if n, err := p.d.Directory.CountOathMethods(ctx, user.ID); err != nil {
		return dev, token.Device{}, fmt.Errorf("count the OATH methods of %s: %w", user.UserPrincipalName, err)
	} else if n >= maxOathMethods {
		return dev, token.Device{}, &token.Error{Kind: token.KindTooManyMethods, Op: "assign " + dev.Serial,
			Message: fmt.Sprintf("%s already holds %d OATH methods (hardware tokens and authenticator apps together; Entra allows %d), so the token was left with its current holder; remove one of the user's methods first", user.UserPrincipalName, n, maxOathMethods)}
	}
	c.a.PreviousUserPrincipalName = holder
	if err := p.unassign(ctx, dev); err != nil {
		return dev, token.Device{}, fmt.Errorf("unassign %s from %s: %w", dev.Serial, holder, err)
	}
	c.a.Changed = true
	c.log.InfoContext(ctx, "token unassigned for reassignment", slog.String("from", holder))
	before = dev
	dev.AssignedToID, dev.AssignedToName, dev.Status = "", "", token.StatusAvailable
	return dev, before, nil
}

// lostRace rewords the failure of a request that a concurrent one beat to the token (on
// another instance: Entra is the only lock between instances), so its caller hears who holds
// the token now: Entra refused the assignment as assigned elsewhere, or the method this request
// had assigned (assigned) was not found when it came to activate it (the other request took the
// token on to its user). When nobody holds the token now, err is the answer.
func (p *Pipeline) lostRace(ctx context.Context, serial string, assigned bool, err error) error {
	if k := token.KindOf(err); k != token.KindAssignedElsewhere && (k != token.KindNotFound || !assigned) {
		return err
	}
	cur, ferr := p.d.Directory.FindDevice(ctx, serial)
	if ferr != nil || cur.AssignedToID == "" {
		return err
	}
	return p.concurrentHolder(ctx, cur, err)
}

// concurrentHolder is the conflict answered to the request that lost a race for the token to
// a concurrent request: it names who holds the token now (cur).
func (p *Pipeline) concurrentHolder(ctx context.Context, cur token.Device, err error) error {
	return &token.Error{Kind: token.KindConflict, Op: "assign " + cur.Serial,
		Message: fmt.Sprintf("the token was assigned to %s by a concurrent request", p.upnOf(ctx, cur.AssignedToID, cur.AssignedToName)), Err: err}
}

// unassignToken is UnassignToken.
func (p *Pipeline) unassignToken(ctx context.Context, serial, caller string) (*Assignment, error) {
	serial = strings.TrimSpace(serial)
	if serial == "" {
		return nil, token.Errorf(token.KindInvalid, "the serial number is empty")
	}
	ctx, log := logctx.WithSerial(ctx, serial), p.log.With(slog.String(logctx.Caller, caller))
	defer p.locks.lock(serial)()
	audit := AuditRecord{Caller: caller, Action: "unassign", Serial: serial}
	fail := func(err error) (*Assignment, error) {
		p.audit(ctx, log, audit, err)
		return nil, err
	}
	dev, err := p.d.Directory.FindDevice(ctx, serial)
	if err != nil {
		return fail(fmt.Errorf("find token %s: %w", serial, err))
	}
	a := &Assignment{SerialNumber: serial, Status: StatusAvailable, Manufacturer: dev.Manufacturer, Model: dev.Model}
	if dev.AssignedToID != "" {
		prev := p.upnOf(ctx, dev.AssignedToID, dev.AssignedToName)
		a.PreviousUserPrincipalName, audit.FromUser = prev, prev
		if err := p.unassign(ctx, dev); err != nil {
			return fail(fmt.Errorf("unassign %s from %s: %w", serial, prev, err))
		}
		a.Changed = true
	}
	if row, err := p.d.Ledger.TokenBySerial(ctx, serial); err == nil {
		if a.Changed || row.Status != StatusAvailable {
			p.recordRow(ctx, log, row, Outcome{Status: StatusAvailable, DeviceID: dev.ID})
		}
	} else if token.KindOf(err) != token.KindNotFound {
		log.WarnContext(ctx, "ledger row not updated", slog.String(logctx.Error, reasonOf(err)))
	}
	if err := p.audit(ctx, log, audit, nil, a.Changed); err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "token unassigned", slog.String("from", a.PreviousUserPrincipalName), slog.Bool("changed", a.Changed))
	return a, nil
}

// restore gives a token back to the holder it had before a reassignment that failed at the
// assignment step, activating it again when it was activated and a seed is at hand. Failures
// are logged: the answer is the reassignment's own error either way.
func (p *Pipeline) restore(ctx context.Context, log *slog.Logger, before token.Device, how activation) {
	// The request's budget may be spent by now; giving the token back must not be cut short,
	// including a wait of up to one 60 s step for a code later than the last activation's.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Second)
	defer cancel()
	holder, err := p.d.Directory.ResolveUser(ctx, before.AssignedToID)
	if err == nil {
		back := activation{lastKnown: how.lastKnown}
		if before.Status == token.StatusActivated && how.auto {
			back = activation{auto: true, seed: how.seed, lastKnown: how.lastKnown}
		}
		before.AssignedToID, before.AssignedToName = "", ""
		_, err = p.assignActivate(ctx, before, holder, back)
	}
	if err != nil {
		log.ErrorContext(ctx, "token left unassigned: giving it back to its previous holder failed", slog.String(logctx.Error, reasonOf(err)))
		return
	}
	log.WarnContext(ctx, "reassignment failed; token given back to its previous holder", slog.String("to", holder.UserPrincipalName))
}

// outcomeNow reads the token's state from Entra for the ledger after a failed API change.
func (p *Pipeline) outcomeNow(ctx context.Context, serial, reason string) Outcome {
	o := Outcome{Status: StatusFailed, Reason: reason}
	dev, err := p.d.Directory.FindDevice(ctx, serial)
	if err != nil {
		return o
	}
	o.DeviceID = dev.ID
	switch dev.Status {
	case token.StatusAvailable:
		o.Status = StatusAvailable
	case token.StatusActivated:
		o.Status = StatusActivated
	case token.StatusAssigned, token.StatusFailedActivation:
		o.Status = StatusAssigned
	}
	if dev.AssignedToID != "" {
		o.UserID = dev.AssignedToID
		o.UserPrincipalName = p.upnOf(ctx, dev.AssignedToID, dev.AssignedToName)
	}
	return o
}

// unassign removes dev from its current holder, looking the method id up in the holder's list.
func (p *Pipeline) unassign(ctx context.Context, dev token.Device) error {
	m, err := p.findMethod(ctx, dev.AssignedToID, dev)
	if err != nil {
		return fmt.Errorf("list methods: %w", err)
	}
	methodID := dev.ID
	if m != nil {
		methodID = m.ID
	}
	return p.d.Directory.Unassign(ctx, dev.AssignedToID, methodID)
}

// tokenState is TokenState.
func (p *Pipeline) tokenState(ctx context.Context, serial string) (*Assignment, error) {
	serial = strings.TrimSpace(serial)
	if serial == "" {
		return nil, token.Errorf(token.KindInvalid, "the serial number is empty")
	}
	dev, err := p.d.Directory.FindDevice(ctx, serial)
	if token.KindOf(err) == token.KindNotFound {
		// Imported but not (yet) in Entra: answer what the ledger knows.
		row, rerr := p.d.Ledger.TokenBySerial(ctx, serial)
		if rerr != nil {
			return nil, fmt.Errorf("find token %s: %w", serial, err)
		}
		a := &Assignment{SerialNumber: serial, Status: row.Status, Manufacturer: row.Manufacturer, Model: row.Model}
		in, verr := p.seedInVault(ctx, row.Manufacturer, serial)
		if verr != nil {
			return nil, fmt.Errorf("token %s: look for its seed: %w", serial, verr)
		}
		a.SeedInVault = &in
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find token %s: %w", serial, err)
	}
	a := &Assignment{SerialNumber: serial, Status: RowStatus(dev.Status), Manufacturer: dev.Manufacturer, Model: dev.Model}
	if dev.AssignedToID != "" {
		a.UserPrincipalName = p.upnOf(ctx, dev.AssignedToID, dev.AssignedToName)
	}
	in, err := p.seedInVault(ctx, dev.Manufacturer, serial)
	if err != nil {
		return nil, fmt.Errorf("token %s: look for its seed: %w", serial, err)
	}
	a.SeedInVault = &in
	return a, nil
}

// seedInVault asks the vault whether it holds the seed, without reading it when the vault can
// answer that directly.
func (p *Pipeline) seedInVault(ctx context.Context, manufacturer, serial string) (bool, error) {
	if h, ok := p.d.Vault.(interface {
		Has(ctx context.Context, manufacturer, serial string) (bool, error)
	}); ok {
		return h.Has(ctx, manufacturer, serial)
	}
	_, err := p.d.Vault.GetSeed(ctx, manufacturer, serial)
	if token.KindOf(err) == token.KindNotFound {
		return false, nil
	}
	return err == nil, err
}

// upnOf returns a user's UPN for an answer or audit record, falling back to what is known.
func (p *Pipeline) upnOf(ctx context.Context, userID, name string) string {
	if u, err := p.d.Directory.ResolveUser(ctx, userID); err == nil && u.UserPrincipalName != "" {
		return u.UserPrincipalName
	}
	if name != "" {
		return name
	}
	return userID
}

// recordRow records an HTTP API change on the token's ledger row. The change is done in Entra
// already, so a ledger failure is logged, not answered.
func (p *Pipeline) recordRow(ctx context.Context, log *slog.Logger, row TokenRecord, o Outcome) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := p.settle(ctx, row.ImportID, row.Line, o); err != nil {
		log.WarnContext(ctx, "ledger row not updated", slog.String(logctx.ImportID, row.ImportID), slog.String(logctx.Error, reasonOf(err)))
	}
}

// audit writes one audit record. For a failed request (err != nil) a failure to audit is only
// logged; for a change it is retried briefly and then answered as a transient error, because a
// change must not go unaudited (a retried request is idempotent and audits again).
func (p *Pipeline) audit(ctx context.Context, log *slog.Logger, a AuditRecord, failure error, changed ...bool) error {
	a.Time = p.now()
	// A request that ran out of time is audited all the same.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	switch {
	case failure != nil:
		a.Outcome, a.Reason = string(token.KindOf(failure)), reasonOf(failure)
	case len(changed) > 0 && changed[0]:
		a.Outcome = "changed"
	default:
		a.Outcome = "unchanged"
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = p.d.Ledger.Audit(ctx, a); err == nil || !token.IsTransient(err) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	if err != nil {
		log.ErrorContext(ctx, "audit record not written", slog.String("action", a.Action), slog.String(logctx.Outcome, a.Outcome), slog.String(logctx.Error, reasonOf(err)))
		if failure == nil {
			return &token.Error{Kind: token.KindTransient, Op: a.Action + " " + a.Serial, Message: "the change was made but its audit record could not be written; retry the request", Err: err}
		}
	}
	return nil
}

func isCode(s string) bool {
	if len(s) != 6 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// maxOathMethods is Entra's limit of OATH methods per user (hardware tokens and authenticator apps).
const maxOathMethods = 5

// StateError is a failed HTTP API change with the token's state read back from Entra after
// it: who holds the token now and in what status, so the caller and the audit record never
// have to guess whether a failed move left it with the old holder, the new one or nobody.
type StateError struct {
	Err         error
	HeldBy      string // UPN of the holder now; "" when nobody holds it (in the inventory)
	TokenStatus string // Entra's status now: available, assigned, activated, failedActivation; "unknown" when it could not be read
}

func (e *StateError) Error() string {
	holder := e.HeldBy
	if holder == "" {
		holder = "nobody"
	}
	return fmt.Sprintf("%v (the token is now held by %s, %s)", e.Err, holder, e.TokenStatus)
}

func (e *StateError) Unwrap() error { return e.Err }

// withState wraps err with the token's state in Entra now (read with a fresh budget: the
// request's may be spent), and adds that state to its message for people.
func (p *Pipeline) withState(ctx context.Context, serial string, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	se := &StateError{Err: err, TokenStatus: "unknown"}
	dev, ferr := p.d.Directory.FindDevice(ctx, serial)
	if ferr == nil {
		se.TokenStatus = string(dev.Status)
		if dev.AssignedToID != "" {
			se.HeldBy = p.upnOf(ctx, dev.AssignedToID, dev.AssignedToName)
		}
	}
	var te *token.Error
	if errors.As(err, &te) {
		now := "it is now in the inventory, held by nobody (" + se.TokenStatus + ")"
		switch {
		case se.TokenStatus == "unknown":
			now = "who holds it now could not be read back from Entra ID"
		case se.HeldBy != "":
			now = "it is now held by " + se.HeldBy + " (" + se.TokenStatus + ")"
		}
		cp := *te
		cp.Message = strings.TrimSuffix(te.Message, ".") + "; " + now + "."
		cp.Err = te
		se.Err = wrapKeeping(err, te, &cp)
	}
	return se
}

// wrapKeeping returns err with its *token.Error old replaced by repl when err is old itself,
// else err wrapped so that errors.As finds repl first.
func wrapKeeping(err error, old, repl *token.Error) error {
	if err == error(old) {
		return repl
	}
	return &rewordedError{err: err, te: repl}
}

// rewordedError is err whose *token.Error, as errors.As finds it, is te.
type rewordedError struct {
	err error
	te  *token.Error
}

func (e *rewordedError) Error() string { return e.err.Error() }
func (e *rewordedError) Unwrap() []error {
	return []error{e.te, e.err}
}
