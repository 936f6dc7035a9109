package entra

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/users"

	"github.com/oathpipe/oathpipe/shared/entra/internal/graphwire"
	"github.com/oathpipe/oathpipe/shared/logctx"
	"github.com/oathpipe/oathpipe/shared/token"
)

// maxPages bounds how many @odata.nextLink pages one listing follows.
const maxPages = 1000

func (c *Client) devicesURL() string {
	return c.beta + "/directory/authenticationMethodDevices/hardwareOathDevices"
}

// FindDevice finds a device in the tenant inventory by serial, following @odata.nextLink.
// Absent: KindNotFound. More than one device with the serial: KindConflict.
func (c *Client) FindDevice(ctx context.Context, serial string) (token.Device, error) {
	op := "find token " + serial
	if strings.TrimSpace(serial) == "" {
		return token.Device{}, &token.Error{Kind: token.KindInvalid, Op: op, Message: "the serial number is empty."}
	}
	next := c.devicesURL() + "?$filter=" + graphwire.QueryEscape(graphwire.SerialFilter(serial))
	var found []token.Device
	for page := 0; next != "" && page < maxPages; page++ {
		var p struct {
			Value    []json.RawMessage `json:"value"`
			NextLink string            `json:"@odata.nextLink"`
		}
		if err := c.send(ctx, abs.GET, next, nil, &p); err != nil {
			return token.Device{}, c.classify(ctx, graphwire.AreaInventory, op, err)
		}
		for _, raw := range p.Value {
			d, err := graphwire.ParseDevice(raw)
			if err != nil {
				return token.Device{}, &token.Error{Kind: token.KindInternal, Op: op, Message: "Graph's answer could not be read.", Err: err}
			}
			// Entra may compare serials case-insensitively (gp7001 = GP7001): match as it may,
			// and report the tenant's spelling (d.Serial).
			if strings.EqualFold(d.Serial, serial) {
				found = append(found, d)
			}
		}
		next = p.NextLink
	}
	switch len(found) {
	case 0:
		return token.Device{}, &token.Error{Kind: token.KindNotFound, Op: op,
			Message: fmt.Sprintf("no hardware token with serial number %s is in the Entra ID inventory.", serial)}
	case 1:
		return found[0], nil
	}
	return token.Device{}, &token.Error{Kind: token.KindConflict, Op: op,
		Message: fmt.Sprintf("%d hardware tokens with serial number %s are in the Entra ID inventory; delete the extra ones.", len(found), serial)}
}

// GetDevice reads one device of the inventory by id (any shape the docs show).
func (c *Client) GetDevice(ctx context.Context, id string) (token.Device, error) {
	op := "read token " + id
	var raw json.RawMessage
	if err := c.send(ctx, abs.GET, c.devicesURL()+"/"+pathEscape(id), nil, &raw); err != nil {
		return token.Device{}, c.classify(ctx, graphwire.AreaInventory, op, err)
	}
	d, err := graphwire.ParseDevice(raw)
	if err != nil {
		return token.Device{}, &token.Error{Kind: token.KindInternal, Op: op, Message: "Graph's answer could not be read.", Err: err}
	}
	return d, nil
}

// createDeviceBody is the create request. It holds the secret: it is only ever marshalled into
// the request body, never logged or put in an error.
type createDeviceBody struct {
	DisplayName  string `json:"displayName,omitempty"`
	SerialNumber string `json:"serialNumber"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	SecretKey    string `json:"secretKey"`
	Interval     int    `json:"timeIntervalInSeconds"`
	HashFunction string `json:"hashFunction"`
	// AssignTo creates the device assigned to this user (documented on the create page:
	// "Create and assign a hardware token to a user in the same request"), saving the assign write.
	AssignTo *userRef `json:"assignTo,omitempty"`
}

// userRef is the create body's assignTo: {"id": "<user object id>"}, the documented shape.
type userRef struct {
	ID string `json:"id"`
}

// checkSeed says why Entra ID would refuse seed, or returns its period and hash with defaults filled.
func checkSeed(op string, seed token.Seed) (int, token.Hash, error) {
	period, h := seed.Period, seed.Hash
	if period == 0 {
		period = 30
	}
	if h == "" {
		h = token.SHA1
	}
	switch {
	case len(seed.Secret) == 0:
		return 0, "", &token.Error{Kind: token.KindInvalid, Op: op, Message: "the seed is empty."}
	case period != 30 && period != 60:
		return 0, "", &token.Error{Kind: token.KindInvalid, Op: op, Message: fmt.Sprintf("Entra ID accepts 30 or 60 second tokens, not %d.", period)}
	case h != token.SHA1 && h != token.SHA256:
		return 0, "", &token.Error{Kind: token.KindInvalid, Op: op, Message: fmt.Sprintf("Entra ID accepts hmacsha1 or hmacsha256 tokens, not %s.", h)}
	case seed.Digits != 0 && seed.Digits != 6:
		return 0, "", &token.Error{Kind: token.KindInvalid, Op: op, Message: fmt.Sprintf("Entra ID accepts 6-digit tokens, not %d.", seed.Digits)}
	case len(seed.Base32()) > 128:
		return 0, "", &token.Error{Kind: token.KindInvalid, Op: op, Message: "the seed is longer than Entra ID's 128 Base32 characters."}
	}
	return period, h, nil
}

// CreateDevice creates a device in the inventory, assigned to t.AssignTo when set (one write for
// create + assign), else unassigned. A serial that already exists is KindConflict.
func (c *Client) CreateDevice(ctx context.Context, t token.Token, seed token.Seed) (token.Device, error) {
	op := "create token " + t.Serial
	switch {
	case strings.TrimSpace(t.Serial) == "":
		return token.Device{}, &token.Error{Kind: token.KindInvalid, Op: op, Message: "the serial number is empty."}
	case t.Manufacturer == "" || t.Model == "":
		return token.Device{}, &token.Error{Kind: token.KindInvalid, Op: op, Message: "Entra ID needs a manufacturer and a model."}
	}
	period, h, err := checkSeed(op, seed)
	if err != nil {
		return token.Device{}, err
	}
	body := &createDeviceBody{
		SerialNumber: t.Serial, Manufacturer: t.Manufacturer, Model: t.Model,
		SecretKey: seed.Base32(), Interval: period, HashFunction: string(h),
	}
	if t.AssignTo != "" {
		body.AssignTo = &userRef{ID: t.AssignTo}
	}
	var raw json.RawMessage
	err = c.send(ctx, abs.POST, c.devicesURL(), body, &raw)
	body.SecretKey = ""
	if err != nil {
		err = c.classify(ctx, graphwire.AreaInventory, op, err)
		// The create may have been applied and its answer lost (a 504 kiota resent, which Graph
		// may refuse as a duplicate with a 400, not a 409), or refused for a serial that is
		// there already: after any refusal but an authorisation one, look the serial up. A
		// device with this serial and the same parameters is this create's.
		switch k := token.KindOf(err); k {
		case token.KindForbidden, token.KindThrottled, token.KindTransient:
			// not applied (401/403/429), or ambiguous (5xx): EnsureDevice looks again for those
		default:
			if d, ferr := c.FindDevice(ctx, t.Serial); ferr == nil {
				if sameParameters(d, t, period, h) {
					c.log.InfoContext(ctx, "token found after a refused or lost create", logctx.Serial, d.Serial,
						logctx.DeviceID, d.ID, logctx.Kind, k, logctx.RequestID, token.RequestIDOf(err))
					return d, nil
				}
				return token.Device{}, &token.Error{Kind: token.KindConflict, Op: op, RequestID: token.RequestIDOf(err), Err: err,
					Message: fmt.Sprintf("this serial is already in Entra with another seed: serial number %s is in the Entra ID inventory with other parameters (%s); delete it or fix the file.", d.Serial, differences(d, t, period, h))}
			}
		}
		return token.Device{}, err
	}
	d, perr := graphwire.ParseDevice(raw)
	if perr != nil || d.ID == "" {
		// Created, but the answer is unreadable: read it back.
		return c.FindDevice(ctx, t.Serial)
	}
	c.log.InfoContext(ctx, "token created in Entra ID", logctx.Serial, t.Serial, logctx.DeviceID, d.ID, logctx.AssignedTo, t.AssignTo)
	return d, nil
}

// sameParameters reports whether d is the device t and its seed's period and hash describe
// (the secret cannot be read back, so it cannot be compared).
func sameParameters(d token.Device, t token.Token, period int, h token.Hash) bool {
	return differences(d, t, period, h) == ""
}

// differences names how d differs from t, period and h ("" when it does not).
func differences(d token.Device, t token.Token, period int, h token.Hash) string {
	var out []string
	if d.Period != 0 && d.Period != period {
		out = append(out, fmt.Sprintf("a %d-second token, the file says %d", d.Period, period))
	}
	if d.Hash != "" && !strings.EqualFold(string(d.Hash), string(h)) {
		out = append(out, fmt.Sprintf("%s, the file says %s", d.Hash, h))
	}
	if d.Manufacturer != "" && !strings.EqualFold(d.Manufacturer, t.Manufacturer) {
		out = append(out, fmt.Sprintf("manufacturer %q, the file says %q", d.Manufacturer, t.Manufacturer))
	}
	if d.Model != "" && !strings.EqualFold(d.Model, t.Model) {
		out = append(out, fmt.Sprintf("model %q, the file says %q", d.Model, t.Model))
	}
	return strings.Join(out, "; ")
}

// EnsureDevice finds the device by serial, else creates it (assigned to t.AssignTo when set,
// else unassigned; a found device is returned as it is, whoever holds it). After a failure that
// leaves it unknown whether the create happened (a timeout, 5xx, throttling after retries, or
// a duplicate refused because an earlier try did create it), it looks again before giving up,
// so a redelivered message never creates a second device.
func (c *Client) EnsureDevice(ctx context.Context, t token.Token, seed token.Seed) (token.Device, bool, error) {
	d, err := c.FindDevice(ctx, t.Serial)
	if err == nil {
		if p := seed.Period; p != 0 && d.Period != 0 && d.Period != p {
			return d, false, &token.Error{Kind: token.KindConflict, Op: "ensure token " + t.Serial,
				Message: fmt.Sprintf("this serial is already in Entra with another seed: the Entra ID inventory holds serial number %s as a %d-second token, the file says %d seconds; delete the device or fix the file.", d.Serial, d.Period, p)}
		}
		return d, false, nil
	}
	if token.KindOf(err) != token.KindNotFound {
		return token.Device{}, false, err
	}
	d, err = c.CreateDevice(ctx, t, seed)
	if err == nil {
		return d, true, nil
	}
	switch token.KindOf(err) {
	case token.KindTransient, token.KindThrottled:
		if again, ferr := c.FindDevice(ctx, t.Serial); ferr == nil {
			c.log.InfoContext(ctx, "token found after an ambiguous create", logctx.Serial, t.Serial, logctx.DeviceID, again.ID)
			return again, false, nil
		}
	}
	return token.Device{}, false, err
}

// ResolveUser finds a user by UPN or object id (v1.0, typed builder). Guests are KindGuest and
// disabled accounts KindDisabled; the user is returned with those errors too.
func (c *Client) ResolveUser(ctx context.Context, upnOrID string) (token.User, error) {
	op := "resolve user " + upnOrID
	if strings.TrimSpace(upnOrID) == "" {
		return token.User{}, &token.Error{Kind: token.KindInvalid, Op: op, Message: "the user principal name is empty."}
	}
	u, err := c.graph.Users().ByUserId(upnOrID).Get(ctx, &users.UserItemRequestBuilderGetRequestConfiguration{
		QueryParameters: &users.UserItemRequestBuilderGetQueryParameters{
			Select: []string{"id", "userPrincipalName", "displayName", "userType", "accountEnabled"},
		},
	})
	if err != nil {
		err = c.classify(ctx, graphwire.AreaUsers, op, err)
		if token.KindOf(err) == token.KindNotFound {
			setMessage(err, fmt.Sprintf("there is no user %s in Entra ID; check the UPN in the file.", upnOrID))
		}
		return token.User{}, err
	}
	out := token.User{Enabled: true}
	if p := u.GetId(); p != nil {
		out.ID = *p
	}
	if p := u.GetUserPrincipalName(); p != nil {
		out.UserPrincipalName = *p
	}
	if p := u.GetDisplayName(); p != nil {
		out.DisplayName = *p
	}
	if p := u.GetUserType(); p != nil {
		out.Guest = strings.EqualFold(*p, "Guest")
	}
	if p := u.GetAccountEnabled(); p != nil {
		out.Enabled = *p
	}
	switch {
	case out.ID == "":
		return out, &token.Error{Kind: token.KindInternal, Op: op, Message: "Graph returned the user without an id."}
	case out.Guest:
		return out, &token.Error{Kind: token.KindGuest, Op: op,
			Message: fmt.Sprintf("%s is a guest account; Entra ID does not allow hardware tokens for guests, so assign the token to a member account.", out.UserPrincipalName)}
	case !out.Enabled:
		return out, &token.Error{Kind: token.KindDisabled, Op: op,
			Message: fmt.Sprintf("the account %s is disabled; enable it or give the token to someone else.", out.UserPrincipalName)}
	}
	return out, nil
}
