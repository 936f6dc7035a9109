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
// middleware is off for this call: on throttling or a 5xx it waits (Retry-After) and tries
// again with a fresh code, up to maxActivateTries times, unless the wait would end after ctx's
// deadline: then Graph's answer is returned (KindThrottled with RetryAfter for a 429). A
// rejected code is KindBadCode.
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
	for try := 1; ; try++ {
		t := c.now()
		// Time left in t's step, to the nanosecond.
		left := step - time.Duration(t.UnixNano()%int64(step))
		if left < MinCodeLife {
			if err := c.sleep(ctx, left); err != nil {
				return &token.Error{Kind: token.KindTransient, Op: op, Message: "cancelled while waiting for the next time step.", Err: err}
			}
			t = t.Add(left)
		}
		code, err := otp.Code(seed, t)
		if err != nil {
			return fmt.Errorf("%s: compute code: %w", op, err)
		}
		err = c.postActivate(ctx, op, userID, methodID, code, noRetry)
		if err == nil {
			c.log.InfoContext(ctx, "token activated", "user_id", userID, "method_id", methodID, "tries", try)
			return nil
		}
		if !token.IsTransient(err) || try >= maxActivateTries {
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
		c.log.InfoContext(ctx, "activation will be retried with a fresh code", "user_id", userID, "method_id", methodID, "wait", wait, "request_id", token.RequestIDOf(err))
		if err := c.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// ActivateWithCode activates with a code read from the device, sent as is (a string: leading
// zeros matter). Graph's retry middleware may resend the same code after a short Retry-After.
func (c *Client) ActivateWithCode(ctx context.Context, userID, methodID, code string) error {
	op := fmt.Sprintf("activate method %s of user %s", methodID, userID)
	code = strings.TrimSpace(code)
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return &token.Error{Kind: token.KindInvalid, Op: op, Message: "the verification code must be the 6 digits shown on the token."}
	}
	if err := c.postActivate(ctx, op, userID, methodID, code); err != nil {
		return err
	}
	c.log.InfoContext(ctx, "token activated with a device code", "user_id", userID, "method_id", methodID)
	return nil
}

func (c *Client) postActivate(ctx context.Context, op, userID, methodID, code string, opts ...abs.RequestOption) error {
	u := c.methodsURL(userID) + "/" + pathEscape(methodID) + "/activate"
	err := c.send(ctx, abs.POST, u, map[string]string{"verificationCode": code}, nil, opts...)
	return c.classify(ctx, graphwire.AreaActivate, op, err)
}
