package handlers

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// The function key is the first gate: the Functions host checks it before the handler sees the
// request (authLevel "function"). App Service authentication, when enabled, validates the
// caller's Entra ID token, strips any client-supplied X-MS-CLIENT-PRINCIPAL* headers and sets
// its own; only then can these headers be trusted. OATHPIPE_REQUIRED_ROLE therefore needs App
// Service authentication turned on (docs/operations.md).

// FunctionKeyCaller is the caller recorded in audit records when no principal is present.
const FunctionKeyCaller = "function-key"

// defaultRoleClaim is the claim type App Service uses for app roles when role_typ is absent.
const defaultRoleClaim = "roles"

// ClientPrincipal is App Service authentication's X-MS-CLIENT-PRINCIPAL header, decoded.
type ClientPrincipal struct {
	AuthType string  `json:"auth_typ"`
	NameType string  `json:"name_typ"`
	RoleType string  `json:"role_typ"`
	Claims   []Claim `json:"claims"`
}

// Claim is one claim of a ClientPrincipal.
type Claim struct {
	Type  string `json:"typ"`
	Value string `json:"val"`
}

// ParseClientPrincipal decodes the base64 JSON header value. It accepts standard and URL-safe
// base64, padded or not.
func ParseClientPrincipal(header string) (*ClientPrincipal, bool) {
	header = strings.TrimSpace(header)
	if header == "" || len(header) > 64<<10 {
		return nil, false
	}
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(header); err == nil {
			break
		}
	}
	if err != nil {
		return nil, false
	}
	var p ClientPrincipal
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, false
	}
	return &p, true
}

// HasRole reports whether the principal carries role as an app role claim.
func (p *ClientPrincipal) HasRole(role string) bool {
	for _, c := range p.Claims {
		if p.isRoleClaim(c.Type) && c.Value == role {
			return true
		}
	}
	return false
}

func (p *ClientPrincipal) isRoleClaim(typ string) bool {
	return typ == defaultRoleClaim || (p.RoleType != "" && typ == p.RoleType) ||
		typ == "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
}

// Name returns the principal's name claim (name_typ), falling back to the usual name claims.
func (p *ClientPrincipal) Name() string {
	for _, typ := range []string{p.NameType, "preferred_username", "name", "appid", "azp", "oid"} {
		if typ == "" {
			continue
		}
		for _, c := range p.Claims {
			if c.Type == typ && c.Value != "" {
				return c.Value
			}
		}
	}
	return ""
}

// authorize checks the caller against requiredRole and returns the caller's identity for the
// audit record. A nil problem means the caller may proceed.
func authorize(req *HTTPRequest, requiredRole string) (caller string, p *Problem) {
	principal, havePrincipal := ParseClientPrincipal(req.Header("X-MS-CLIENT-PRINCIPAL"))
	caller = strings.TrimSpace(req.Header("X-MS-CLIENT-PRINCIPAL-NAME"))
	if caller == "" && havePrincipal {
		caller = principal.Name()
	}
	if caller == "" {
		caller = FunctionKeyCaller
	}
	if len(caller) > 256 {
		caller = caller[:256]
	}
	if requiredRole == "" {
		return caller, nil
	}
	if !havePrincipal {
		return caller, newProblem(codeNoPrincipal, "Call this API with an Entra ID token (App Service authentication); the function key alone is not enough.")
	}
	if !principal.HasRole(requiredRole) {
		return caller, newProblem(codeRoleMissing, "The caller must hold the app role "+requiredRole+".")
	}
	return caller, nil
}
