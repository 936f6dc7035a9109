package entra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"

	"github.com/oathpipe/oathpipe/shared/entra/internal/graphwire"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/otp"
	"github.com/oathpipe/oathpipe/shared/token"
)

// MinCodeLife is how long an activation code must still be valid when it is sent; with less
// left in the time step, Activate waits for the next step.
const MinCodeLife = 3 * time.Second

// maxActivateTries bounds Activate's own retries (each with a fresh code) on what token.IsTransient retries:
// throttling, 5xx and unclassified failures.
const maxActivateTries = 6

// setMessage rewords the *token.Error in err.
func setMessage(err error, msg string) {
	var te *token.Error
	if errors.As(err, &te) {
		te.Message = msg
	}
}

func (c *Client) methodsURL(userID string) string {
	return c.beta + "/users/" + pathEscape(userID) + "/authentication/hardwareOathMethods"
}

// ListUserMethods lists the user's hardware OATH methods, following @odata.nextLink.
func (c *Client) ListUserMethods(ctx context.Context, userID string) ([]token.Method, error) {
	op := "list hardware tokens of user " + userID
	next := c.methodsURL(userID)
	var out []token.Method
	for page := 0; next != "" && page < maxPages; page++ {
		var p struct {
			Value    []json.RawMessage `json:"value"`
			NextLink string            `json:"@odata.nextLink"`
		}
		if err := c.send(ctx, abs.GET, next, nil, &p); err != nil {
			err = c.classify(ctx, graphwire.AreaMethods, op, err)
			if token.KindOf(err) == token.KindNotFound {
				setMessage(err, fmt.Sprintf("there is no user %s in Entra ID.", userID))
			}
			return nil, err
		}
		for _, raw := range p.Value {
			m, err := graphwire.ParseMethod(raw)
			if err != nil {
				return nil, &token.Error{Kind: token.KindInternal, Op: op, Message: "Graph's answer could not be read.", Err: err}
			}
			out = append(out, m)
		}
		next = p.NextLink
	}
	return out, nil
}

// never assumed to be the device id). A device the user already holds returns its existing
// method id; so does an assignment that an earlier, ambiguous try already made.
func (c *Client) Assign(ctx context.Context, userID, deviceID string) (string, error) {
	op := fmt.Sprintf("assign token %s to user %s", deviceID, userID)
	methods, err := c.ListUserMethods(ctx, userID)
	if err != nil {
		return "", err
	}
	if m, ok := graphwire.Held(methods, deviceID); ok {
		return m.ID, nil
	}
	var raw json.RawMessage
	body := map[string]any{"device": map[string]string{"id": deviceID}}
	if err := c.send(ctx, abs.POST, c.methodsURL(userID), body, &raw); err != nil {
		err = c.classify(ctx, graphwire.AreaMethods, op, err)
		// A retried POST may find its first try done; look before reporting.
		if again, lerr := c.ListUserMethods(ctx, userID); lerr == nil {
			if m, ok := graphwire.Held(again, deviceID); ok {
				return m.ID, nil
			}
		}
		if token.KindOf(err) == token.KindNotFound {
			setMessage(err, "the user or the token does not exist in Entra ID.")
		}
		if token.KindOf(err) == token.KindInvalid || token.KindOf(err) == token.KindConflict ||
			token.KindOf(err) == token.KindGuest || token.KindOf(err) == token.KindTooManyMethods || token.KindOf(err) == token.KindAssignedElsewhere {
			return "", c.assignRefusal(ctx, op, userID, deviceID, err)
		}
		return "", err
	}
	if m, err := graphwire.ParseMethod(raw); err == nil && m.ID != "" {
		c.log.InfoContext(ctx, "token assigned", logctx.DeviceID, deviceID, logctx.UserID, userID, logctx.MethodID, m.ID)
		return m.ID, nil
	}
	again, err := c.ListUserMethods(ctx, userID)
	if err != nil {
		return "", err
	}
	if m, ok := graphwire.Held(again, deviceID); ok {
		return m.ID, nil
	}
	return "", &token.Error{Kind: token.KindInternal, Op: op, Message: "Graph accepted the assignment but the user's methods do not show it."}
}

// Unassign removes the user's method; the device returns to available. A method that is
// already gone (a redelivered request) is not an error, as long as the user exists.
func (c *Client) Unassign(ctx context.Context, userID, methodID string) error {
	op := fmt.Sprintf("unassign method %s from user %s", methodID, userID)
	err := c.send(ctx, abs.DELETE, c.methodsURL(userID)+"/"+pathEscape(methodID), nil, nil)
	if err == nil {
		c.log.InfoContext(ctx, "token unassigned", logctx.UserID, userID, logctx.MethodID, methodID)
		return nil
	}
	err = c.classify(ctx, graphwire.AreaMethods, op, err)
	if token.KindOf(err) == token.KindNotFound {
		if methods, lerr := c.ListUserMethods(ctx, userID); lerr == nil {
			for _, m := range methods {
				if m.ID == methodID {
					return err
				}
			}
			return nil
		}
	}
	return err
}

// Activate activates the user's method with a code computed from seed right before sending,
// from a time step later than after's (the step of the token's last successful activation, or
// zero): a verifier must not accept a second code of one step (RFC 6238 §5.2), so Activate
// waits for the next step when needed. With fewer than MinCodeLife left in the step it waits
// for the next one too. It returns the time the accepted code was computed for (its step is
// the token's last activation step now). Graph's retry middleware is off for this call;
// Activate retries itself (activateLoop): after an ambiguous failure (throttling, 5xx, timeout:
// Graph may have applied the activation and lost the answer) it waits (Retry-After), looks at
// the user's method and, if it is already activated, returns success without sending again;
// otherwise it sends a fresh code, up to maxActivateTries times, unless the wait would end
// after ctx's deadline: then Graph's answer is returned (KindThrottled with RetryAfter for a
// 429). A rejected code is KindBadCode.
func (c *Client) Activate(ctx context.Context, userID, methodID string, seed token.Seed, after time.Time) (time.Time, error) {
	op := fmt.Sprintf("activate method %s of user %s", methodID, userID)
	// Entra's defaults for what a seed leaves unset: 30 s, hmacsha1, 6 digits.
	if seed.Period <= 0 {
		seed.Period = 30
	}
	if seed.Hash == "" {
		seed.Hash = token.SHA1
	}
	if seed.Digits == 0 {
		seed.Digits = 6
	}
	step := time.Duration(seed.Period) * time.Second
	var used time.Time
	code := func() (string, error) {
		t := c.now()
		if wait := StepWait(t, after, seed.Period); wait > 0 {
			c.log.InfoContext(ctx, "waiting for a time step later than the token's last activation",
				logctx.UserID, userID, logctx.MethodID, methodID, "wait", wait)
			if err := c.sleep(ctx, wait); err != nil {
				return "", &token.Error{Kind: token.KindTransient, Op: op, Message: "cancelled while waiting for a time step later than the token's last activation.", Err: err}
			}
			t = t.Add(wait)
		}
		// Time left in t's step, to the nanosecond.
		left := step - time.Duration(t.UnixNano()%int64(step))
		if left < MinCodeLife {
			if err := c.sleep(ctx, left); err != nil {
				return "", &token.Error{Kind: token.KindTransient, Op: op, Message: "cancelled while waiting for the next time step.", Err: err}
			}
			t = t.Add(left)
		}
		code, err := otp.Code(seed, t)
		if err != nil {
			return "", fmt.Errorf("%s: compute code: %w", op, err)
		}
		used = t
		return code, nil
	}
	err := c.activateLoop(ctx, op, userID, methodID, "seed", code)
	if token.KindOf(err) == token.KindBadCode && !used.IsZero() {
		// A code computed from the seed was refused. Its step may have been used already by an
		// activation this client did not know of (another instance moved the token in the same
		// step): try once more from the next step, if that fits in the deadline. A device whose
		// seed differs is refused again.
		wait := StepWait(c.now(), used, seed.Period) + MinCodeLife
		if !waitOutlastsDeadline(ctx, wait) {
			c.log.InfoContext(ctx, "computed code refused; trying once more from the next time step",
				logctx.UserID, userID, logctx.MethodID, methodID, "wait", wait, logctx.RequestID, token.RequestIDOf(err))
			after = used
			err = c.activateLoop(ctx, op, userID, methodID, "seed", code)
		}
	}
	if err != nil {
		return time.Time{}, err
	}
	return used, nil
}

// StepWait is how long to wait from now until a time step (of period seconds) later than
// the step of last begins; 0 when now's step is already later, or last is zero.
func StepWait(now, last time.Time, period int) time.Duration {
	if last.IsZero() {
		return 0
	}
	if period <= 0 {
		period = 30
	}
	p := int64(period)
	if now.Unix()/p > last.Unix()/p {
		return 0
	}
	next := time.Unix((last.Unix()/p+1)*p, 0)
	return next.Sub(now)
}

// ActivateWithCode activates with a code read from the device, sent as is (a string: leading
// zeros matter). It retries like Activate (look first, then resend), with the same code: the
// caller has no other.
func (c *Client) ActivateWithCode(ctx context.Context, userID, methodID, code string) error {
	op := fmt.Sprintf("activate method %s of user %s", methodID, userID)
	code = strings.TrimSpace(code)
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return &token.Error{Kind: token.KindInvalid, Op: op, Message: "the verification code must be the 6 digits shown on the token."}
	}
	return c.activateLoop(ctx, op, userID, methodID, "verificationCode", func() (string, error) { return code, nil })
}

// activateLoop sends activations (code gives each try's code) with Graph's retry middleware
// off. After an ambiguous failure it never resends blindly: it waits (Retry-After, else
// 1 s·2ⁿ⁻¹, not past ctx's deadline), reads the user's method and returns success if Graph
// already activated it. A refusal (400) that follows an ambiguous failure, or that says the
// method is already activated, is checked the same way before it is reported.
func (c *Client) activateLoop(ctx context.Context, op, userID, methodID, with string, code func() (string, error)) error {
	for try := 1; ; try++ {
		done, err := c.activateTry(ctx, op, userID, methodID, with, try, code)
		if done || try >= maxActivateTries {
			return err
		}
		wait := token.RetryAfterOf(err)
		if wait <= 0 {
			wait = time.Duration(1<<(try-1)) * time.Second
		}
		if waitOutlastsDeadline(ctx, wait) {
			// Waiting would outlast the caller's deadline: return Graph's answer (throttled,
			// with its Retry-After and request-id) instead of a cancelled wait.
			return err
		}
		c.log.InfoContext(ctx, "activation will be retried after looking at the method", logctx.UserID, userID,
			logctx.MethodID, methodID, "with", with, "wait", wait, logctx.RequestID, token.RequestIDOf(err))
		if err := c.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// activateTry is activateLoop's try number try. After the first it looks at the method before
// sending: found activated is success; a failed look fails the try without sending. done
// reports whether err (nil: activated) is the answer; otherwise err is an ambiguous failure
// (throttling, 5xx, timeout) to retry after.
func (c *Client) activateTry(ctx context.Context, op, userID, methodID, with string, try int, code func() (string, error)) (done bool, err error) {
	if try > 1 {
		activated, lerr := c.methodActivated(ctx, userID, methodID)
		switch {
		case lerr == nil && activated:
			c.log.InfoContext(ctx, "token found activated after an ambiguous failure; not sent again",
				logctx.UserID, userID, logctx.MethodID, methodID, "with", with, "tries", try-1)
			return true, nil
		case lerr != nil:
			return !token.IsTransient(lerr), lerr // a transient look fails the try without sending
		}
	}
	cd, err := code()
	if err != nil {
		return true, err
	}
	err = c.postActivate(ctx, op, userID, methodID, cd, noRetry)
	if err == nil {
		c.log.InfoContext(ctx, "token activated", logctx.UserID, userID, logctx.MethodID, methodID, "with", with, "tries", try)
		return true, nil
	}
	if token.IsTransient(err) {
		return false, err
	}
	return true, c.activateRefused(ctx, op, userID, methodID, try, err)
}

// activateRefused settles a refused (not ambiguous) activation of try: a conflict, or a code
// refused after an earlier try, may mean that try activated it (its answer lost, the look too
// early), so the method is looked at; a refusal whose words we do not know is settled by the
// method's status (activateRefusal).
func (c *Client) activateRefused(ctx context.Context, op, userID, methodID string, try int, err error) error {
	k := token.KindOf(err)
	if k == token.KindConflict || (try > 1 && k == token.KindBadCode) {
		if activated, lerr := c.methodActivated(ctx, userID, methodID); lerr == nil && activated {
			return nil
		}
	}
	if k == token.KindInvalid {
		return c.activateRefusal(ctx, op, userID, methodID, err)
	}
	return err
}

// methodActivated reads the user's methods and reports whether methodID is activated.
func (c *Client) methodActivated(ctx context.Context, userID, methodID string) (bool, error) {
	st, err := c.methodStatus(ctx, userID, methodID)
	return st == token.StatusActivated, err
}

// methodStatus reads the user's methods and returns methodID's status ("" when the user
// holds no such method).
func (c *Client) methodStatus(ctx context.Context, userID, methodID string) (token.Status, error) {
	methods, err := c.ListUserMethods(ctx, userID)
	if err != nil {
		return "", err
	}
	for _, m := range methods {
		if m.ID == methodID {
			return m.Status, nil
		}
	}
	return "", nil
}

// activateRefusal finds the cause of an activation refusal Graph's words did not tell: the
// method activated after all is success; failedActivation means the code was refused;
// otherwise Graph's words are reported as they are (KindInvalid).
func (c *Client) activateRefusal(ctx context.Context, op, userID, methodID string, refusal error) error {
	st, err := c.methodStatus(ctx, userID, methodID)
	if err != nil {
		return refusal
	}
	switch st {
	case token.StatusActivated:
		c.log.InfoContext(ctx, "activation refused in words we do not know, but the method is activated", logctx.UserID, userID, logctx.MethodID, methodID)
		return nil
	case token.StatusFailedActivation:
		return &token.Error{Kind: token.KindBadCode, Op: op, Message: graphwire.BadCodeMessage + graphSays(refusal),
			RequestID: token.RequestIDOf(refusal), Err: refusal}
	case "":
		return &token.Error{Kind: token.KindNotFound, Op: op, Message: "the user does not hold this hardware token method." + graphSays(refusal),
			RequestID: token.RequestIDOf(refusal), Err: refusal}
	}
	return refusal
}

// assignRefusal finds the cause of a refused assignment from state, not from Graph's words
// alone (Graph documents no error codes here and its messages may change): the device held by
// someone else, the user a guest or disabled, or already holding five OATH methods
// (authenticator apps count). When state shows none of these, the kind Graph's words gave
// stands, and an unrecognised refusal is reported with Graph's words.
func (c *Client) assignRefusal(ctx context.Context, op, userID, deviceID string, refusal error) error {
	wrap := func(k token.Kind, msg string) error {
		return &token.Error{Kind: k, Op: op, Message: msg + graphSays(refusal), RequestID: token.RequestIDOf(refusal), Err: refusal}
	}
	if d, err := c.GetDevice(ctx, deviceID); err == nil && d.AssignedToID != "" && d.AssignedToID != userID {
		return wrap(token.KindAssignedElsewhere, "the token is assigned to another user; unassign it there first (or use the reassignment API).")
	}
	if u, err := c.ResolveUser(ctx, userID); err != nil && (token.KindOf(err) == token.KindGuest || token.KindOf(err) == token.KindDisabled) {
		var te *token.Error
		errors.As(err, &te)
		return wrap(te.Kind, te.Message)
	} else if err == nil {
		if n, err := c.CountOathMethods(ctx, u.ID); err == nil && n >= MaxOathMethods {
			return wrap(token.KindTooManyMethods, fmt.Sprintf("the user already holds %d OATH methods (hardware tokens and authenticator apps together; Entra allows %d); remove one before assigning another.", n, MaxOathMethods))
		}
	}
	return refusal
}

// graphSays quotes Graph's own words from err's message, if it holds any.
func graphSays(err error) string {
	var te *token.Error
	if errors.As(err, &te) {
		if i := strings.Index(te.Message, " Graph says: "); i >= 0 {
			return te.Message[i:]
		}
	}
	return ""
}

// MaxOathMethods is Entra's limit of OATH methods per user: "up to five OATH hardware tokens
// or authenticator applications".
const MaxOathMethods = 5

// oathMethodTypes are the method types that count against MaxOathMethods.
var oathMethodTypes = map[string]bool{
	"#microsoft.graph.hardwareOathAuthenticationMethod":           true,
	"#microsoft.graph.softwareOathAuthenticationMethod":           true,
	"#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": true,
}

// CountOathMethods counts the user's OATH methods as Entra's limit of five counts them:
// hardware tokens and authenticator apps together. Apps appear only in v1.0
// GET /users/{id}/authentication/methods; hardware tokens are read from the beta
// hardwareOathMethods too, and a method listed in both counts once.
func (c *Client) CountOathMethods(ctx context.Context, userID string) (int, error) {
	op := "count the OATH methods of user " + userID
	ids := map[string]bool{}
	next := c.v1 + "/users/" + pathEscape(userID) + "/authentication/methods"
	for page := 0; next != "" && page < maxPages; page++ {
		var p struct {
			Value []struct {
				Type string `json:"@odata.type"`
				ID   string `json:"id"`
			} `json:"value"`
			NextLink string `json:"@odata.nextLink"`
		}
		if err := c.send(ctx, abs.GET, next, nil, &p); err != nil {
			return 0, c.classify(ctx, graphwire.AreaMethods, op, err)
		}
		for _, m := range p.Value {
			if oathMethodTypes[m.Type] {
				ids[m.ID] = true
			}
		}
		next = p.NextLink
	}
	hw, err := c.ListUserMethods(ctx, userID)
	if err != nil {
		return 0, err
	}
	for _, m := range hw {
		ids[m.ID] = true
	}
	return len(ids), nil
}

func (c *Client) postActivate(ctx context.Context, op, userID, methodID, code string, opts ...abs.RequestOption) error {
	u := c.methodsURL(userID) + "/" + pathEscape(methodID) + "/activate"
	err := c.send(ctx, abs.POST, u, map[string]string{"verificationCode": code}, nil, opts...)
	return c.classify(ctx, graphwire.AreaActivate, op, err)
}
