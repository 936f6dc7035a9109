// Package graphwire holds the Graph wire format oathpipe's entra package speaks, without the
// Graph SDK: the JSON of hardware OATH devices and methods (parsed defensively, as the doc
// examples disagree), the serial-number $filter, Retry-After, and the classification of
// Graph's failures into token.Error kinds with sentences an admin can act on. Keeping it apart
// lets its parsers be fuzzed without building the SDK with fuzz instrumentation.
package graphwire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/oathpipe/oathpipe/shared/token"
)

// DeviceJSON is a hardwareOathTokenAuthenticationMethodDevice as Graph returns it.
type DeviceJSON struct {
	ID               string          `json:"id"`
	DisplayName      *string         `json:"displayName"`
	SerialNumber     string          `json:"serialNumber"`
	Manufacturer     string          `json:"manufacturer"`
	Model            string          `json:"model"`
	Interval         json.RawMessage `json:"timeIntervalInSeconds"` // a number, or a string in some doc examples
	HashFunction     string          `json:"hashFunction"`
	Status           string          `json:"status"`
	LastUsedDateTime *string         `json:"lastUsedDateTime"`
	AssignedTo       *struct {
		ID          string `json:"id"`
		DisplayName string `json:"displayName"`
	} `json:"assignedTo"`
}

// Device converts the wire form to the domain type.
func (d DeviceJSON) Device() token.Device {
	out := token.Device{
		ID:           d.ID,
		Serial:       d.SerialNumber,
		Manufacturer: d.Manufacturer,
		Model:        d.Model,
		Status:       token.Status(d.Status),
		Hash:         token.Hash(d.HashFunction),
	}
	if n, err := strconv.Atoi(strings.Trim(string(d.Interval), `"`)); err == nil {
		out.Period = n
	}
	if d.DisplayName != nil {
		out.DisplayName = *d.DisplayName
	}
	if d.LastUsedDateTime != nil {
		out.LastUsedDateTime = *d.LastUsedDateTime
	}
	if d.AssignedTo != nil {
		out.AssignedToID, out.AssignedToName = d.AssignedTo.ID, d.AssignedTo.DisplayName
	}
	return out
}

// ParseDevice reads one device in any of the shapes the docs show: a bare device; a list
// element {"@odata.type":"#microsoft.graph.hardwareOathAuthenticationMethod","id":...,
// "device":{...}} (the List page's examples), whose device is read; or a device wrapped in
// "value" (the Get page's example).
func ParseDevice(b []byte) (token.Device, error) {
	var w struct {
		DeviceJSON
		Device *DeviceJSON     `json:"device"`
		Value  json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return token.Device{}, fmt.Errorf("decode device: %w", err)
	}
	switch {
	case w.Device != nil:
		return w.Device.Device(), nil
	case w.SerialNumber == "" && len(w.Value) > 0:
		v := bytes.TrimSpace(w.Value)
		if len(v) > 0 && v[0] == '[' {
			var list []json.RawMessage
			if err := json.Unmarshal(v, &list); err != nil || len(list) != 1 {
				return token.Device{}, fmt.Errorf("decode device: want one device in value")
			}
			return ParseDevice(list[0])
		}
		return ParseDevice(v)
	}
	return w.DeviceJSON.Device(), nil
}

// SerialFilter returns the OData $filter that finds serial, with quotes doubled as OData escapes them.
func SerialFilter(serial string) string {
	return "serialNumber eq '" + strings.ReplaceAll(serial, "'", "''") + "'"
}

// QueryEscape escapes a query value with %20 for spaces (Graph does not read + as a space everywhere).
func QueryEscape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

// Area says which Graph permission an operation needs, so a 403 can name it.
type Area int

const (
	AreaUsers     Area = iota // reading users
	AreaInventory             // the tenant's hardware OATH token inventory
	AreaMethods               // a user's authentication methods
	AreaActivate              // activation (a 400 means a bad code)
)

// Permission names the application permission an area of Graph needs.
func (a Area) Permission() string {
	switch a {
	case AreaUsers:
		return "User.Read.All"
	case AreaInventory:
		return "Policy.ReadWrite.AuthenticationMethod"
	default:
		return "UserAuthenticationMethod.ReadWrite.All (or the narrower UserAuthMethod-HardwareOATH.ReadWrite.All)"
	}
}

// Failure is what a failed Graph call told us.
type Failure struct {
	Status     int
	Code       string // Graph's error code
	Message    string // Graph's error message
	RequestID  string
	RetryAfter time.Duration
}

// ParseRetryAfter reads Retry-After as seconds or an HTTP date.
func ParseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 && n < 86400 {
		return time.Duration(n * float64(time.Second))
	}
	if t, err := time.Parse(time.RFC1123, v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// BadCodeMessage says Entra refused a verification code.
const BadCodeMessage = "Entra ID rejected the verification code (wrong or expired); activate again with a fresh code, or check the token's clock."

// Unrecognised begins the message of a refusal Classify could not tell apart by its words;
// callers find the cause from state, and report Graph's words when state does not tell.
const Unrecognised = "Microsoft Graph refused the request."

// Recognised reports whether Classify told the refusal apart (a kind other than KindInvalid).
func Recognised(f Failure, a Area) bool {
	k, _ := Classify(a, f)
	return k != token.KindInvalid
}

// Classify decides the kind of a Graph failure and words it. Graph documents no error codes for
// the hardware OATH endpoints, so 400s are told apart by their message (see docs/graph.md).
func Classify(a Area, f Failure) (token.Kind, string) {
	msg := strings.ToLower(f.Message)
	graphSays := ""
	if f.Message != "" {
		graphSays = " Graph says: " + strings.TrimSuffix(f.Message, ".") + "."
	}
	switch {
	case f.Status == 401:
		return token.KindForbidden, "Microsoft Graph refused the app's access token; check the managed identity (OATHPIPE_MANAGED_IDENTITY_CLIENT_ID) and that OATHPIPE_GRAPH_URL is the Graph root of the tenant's cloud." + graphSays
	case f.Status == 403:
		return token.KindForbidden, "the app is missing the Microsoft Graph permission " + a.Permission() +
			"; grant it to the managed identity (admin consent) and retry." + graphSays
	case f.Status == 429:
		return token.KindThrottled, "Microsoft Graph is throttling the app (HTTP 429)." + graphSays
	case f.Status == 408 || f.Status >= 500:
		return token.KindTransient, fmt.Sprintf("Microsoft Graph answered %d.%s", f.Status, graphSays)
	case f.Status == 404:
		switch a {
		case AreaUsers:
			return token.KindNotFound, "no such user in Entra ID." + graphSays
		case AreaInventory:
			return token.KindNotFound, "no such hardware token in the Entra ID inventory." + graphSays
		default:
			return token.KindNotFound, "the user or the user's hardware token method does not exist." + graphSays
		}
	case strings.Contains(msg, "guest"):
		return token.KindGuest, "hardware tokens cannot be assigned to guest users; assign the token to a member account." + graphSays
	case strings.Contains(msg, "maximum") || strings.Contains(msg, "too many") || (strings.Contains(msg, "limit") && strings.Contains(msg, "method")):
		return token.KindTooManyMethods, "the user already holds 5 OATH methods (hardware tokens and authenticator apps together); remove one before assigning another." + graphSays
	case strings.Contains(msg, "another user") || strings.Contains(msg, "assigned to a different"):
		return token.KindAssignedElsewhere, "the token is assigned to another user; unassign it there first (or use the reassignment API)." + graphSays
	case a == AreaActivate && f.Status == 400 && strings.Contains(msg, "already activated"):
		return token.KindConflict, "the token is already activated for this user." + graphSays
	case a == AreaActivate && f.Status == 400 && (strings.Contains(msg, "verification code") || strings.Contains(msg, "expired") || strings.Contains(msg, "invalid code")):
		return token.KindBadCode, BadCodeMessage + graphSays
	case f.Status == 409:
		return token.KindConflict, "it already exists." + graphSays
	case strings.Contains(msg, "unassign it") || strings.Contains(msg, "is assigned"):
		return token.KindConflict, "the token is assigned to a user; unassign it first." + graphSays
	case f.Status == 400 || f.Status == 422:
		return token.KindInvalid, Unrecognised + graphSays
	}
	return token.KindInternal, fmt.Sprintf("Microsoft Graph answered %d (%s).%s", f.Status, f.Code, graphSays)
}

// MethodJSON is a hardwareOathAuthenticationMethod. Doc examples differ on whether the device
// comes nested, so the device's fields are also read from the top level.
type MethodJSON struct {
	DeviceJSON
	Device *DeviceJSON `json:"device"`
}

func ParseMethod(b []byte) (token.Method, error) {
	var m MethodJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return token.Method{}, fmt.Errorf("decode method: %w", err)
	}
	out := token.Method{ID: m.ID, Serial: m.SerialNumber, Status: token.Status(m.Status)}
	if m.Device != nil {
		out.DeviceID = m.Device.ID
		if m.Device.SerialNumber != "" {
			out.Serial = m.Device.SerialNumber
		}
		if m.Device.Status != "" {
			out.Status = token.Status(m.Device.Status)
		}
	}
	return out, nil
}

// Held returns the user's method for deviceID. When Graph leaves the device out of the
// method, the docs' convention (method id = device id) is the fallback.
func Held(methods []token.Method, deviceID string) (token.Method, bool) {
	for _, m := range methods {
		if m.DeviceID == deviceID || (m.DeviceID == "" && m.ID == deviceID) {
			return m, true
		}
	}
	return token.Method{}, false
}
