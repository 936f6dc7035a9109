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
	"github.com/oathpipe/oathpipe/shared/otp"
	"github.com/oathpipe/oathpipe/shared/token"
)

// MinCodeLife is how long an activation code must still be valid when it is sent; with less
// left in the time step, Activate waits for the next step.
const MinCodeLife = 3 * time.Second

// maxActivateTries bounds Activate's own retries (each with a fresh code) on throttling and 5xx.
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
		return "", err
	}
	if m, err := graphwire.ParseMethod(raw); err == nil && m.ID != "" {
		c.log.InfoContext(ctx, "token assigned", "device_id", deviceID, "user_id", userID, "method_id", m.ID)
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
		c.log.InfoContext(ctx, "token unassigned", "user_id", userID, "method_id", methodID)
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

// Activate activates the user's method with a code computed from seed right before sending.
// With fewer than MinCodeLife left in the time step it waits for the next step. Graph's retry
// middleware is off for this call; Activate retries itself (activateLoop): after an ambiguous
// failure (throttling, 5xx, timeout: Graph may have applied the activation and lost the answer)
// it waits (Retry-After), looks at the user's method and, if it is already activated, returns
// success without sending again; otherwise it sends a fresh code, up to maxActivateTries times,
// unless the wait would end after ctx's deadline: then Graph's answer is returned
// (KindThrottled with RetryAfter for a 429). A rejected code is KindBadCode.
func (c *Client) Activate(ctx context.Context, userID, methodID string, seed token.Seed) error {
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
	code := func() (string, error) {
		t := c.now()
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
		return code, nil
	}
	return c.activateLoop(ctx, op, userID, methodID, "seed", code)
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
		var err error
		if try > 1 {
			activated, lerr := c.methodActivated(ctx, userID, methodID)
			switch {
			case lerr == nil && activated:
				c.log.InfoContext(ctx, "token found activated after an ambiguous failure; not sent again",
					"user_id", userID, "method_id", methodID, "with", with, "tries", try-1)
				return nil
			case lerr != nil && !token.IsTransient(lerr):
				return lerr
			case lerr != nil:
				err = lerr // the look failed too: this try fails without sending
			}
		}
		if err == nil {
			cd, cerr := code()
			if cerr != nil {
				return cerr
			}
			err = c.postActivate(ctx, op, userID, methodID, cd, noRetry)
			if err == nil {
				c.log.InfoContext(ctx, "token activated", "user_id", userID, "method_id", methodID, "with", with, "tries", try)
				return nil
			}
			if !token.IsTransient(err) {
				k := token.KindOf(err)
				if k == token.KindConflict || (try > 1 && k == token.KindBadCode) {
					// An earlier try may have activated it (its answer lost, the look too early).
					if activated, lerr := c.methodActivated(ctx, userID, methodID); lerr == nil && activated {
						return nil
					}
				}
				return err
			}
		}
		if try >= maxActivateTries {
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
		c.log.InfoContext(ctx, "activation will be retried after looking at the method", "user_id", userID,
			"method_id", methodID, "with", with, "wait", wait, "request_id", token.RequestIDOf(err))
		if err := c.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// methodActivated reads the user's methods and reports whether methodID is activated.
func (c *Client) methodActivated(ctx context.Context, userID, methodID string) (bool, error) {
	methods, err := c.ListUserMethods(ctx, userID)
	if err != nil {
		return false, err
	}
	for _, m := range methods {
		if m.ID == methodID {
			return m.Status == token.StatusActivated, nil
		}
	}
	return false, nil
}

func (c *Client) postActivate(ctx context.Context, op, userID, methodID, code string, opts ...abs.RequestOption) error {
	u := c.methodsURL(userID) + "/" + pathEscape(methodID) + "/activate"
	err := c.send(ctx, abs.POST, u, map[string]string{"verificationCode": code}, nil, opts...)
	return c.classify(ctx, graphwire.AreaActivate, op, err)
}
