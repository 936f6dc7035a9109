package graphstandin

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
)

func (s *Server) findUser(upnOrID string) *User {
	if u := s.users[upnOrID]; u != nil {
		return u
	}
	if id, ok := s.byUPN[strings.ToLower(upnOrID)]; ok {
		return s.users[id]
	}
	return nil
}

// defaultUserProperties is the set v1.0 returns without $select (the user page's Properties
// section and the List users page: businessPhones, displayName, givenName, id, jobTitle, mail,
// mobilePhone, officeLocation, preferredLanguage, surname, userPrincipalName).
var defaultUserProperties = []string{"businessPhones", "displayName", "givenName", "id", "jobTitle",
	"mail", "mobilePhone", "officeLocation", "preferredLanguage", "surname", "userPrincipalName"}

// getUser answers GET /users/{id|upn}. v1.0 without $select returns only the default
// properties unless Lenient.AllUserProperties; with $select, only the selected ones.
func (s *Server) getUser(r *http.Request, beta bool, key string) (answer, *apiError) {
	u := s.findUser(key)
	if u == nil {
		return answer{}, notFound(key)
	}
	all := map[string]any{
		"id":                u.ID,
		"userPrincipalName": u.UserPrincipalName,
		"displayName":       u.DisplayName,
		"mail":              nullable(u.Mail),
		"userType":          u.UserType,
		"accountEnabled":    u.AccountEnabled,
		"businessPhones":    []string{},
		"givenName":         nil, "jobTitle": nil, "mobilePhone": nil, "officeLocation": nil,
		"preferredLanguage": nil, "surname": nil,
	}
	version := "v1.0"
	if beta {
		version = "beta"
	}
	out := map[string]any{"@odata.context": fmt.Sprintf("https://graph.microsoft.com/%s/$metadata#users/$entity", version)}
	sel := r.URL.Query().Get("$select")
	switch {
	case sel != "":
		for _, p := range strings.Split(sel, ",") {
			p = strings.TrimSpace(p)
			for k, v := range all {
				if strings.EqualFold(k, p) {
					out[k] = v
				}
			}
		}
	case beta || s.opts.Lenient.AllUserProperties:
		for k, v := range all {
			out[k] = v
		}
	default:
		for _, k := range defaultUserProperties {
			out[k] = all[k]
		}
	}
	return answer{200, out}, nil
}

// listAuthMethods answers GET /users/{id}/authentication/methods: a password method, the
// user's authenticator apps (ExistingOathMethods, as software OATH methods) and the hardware
// OATH tokens assigned to the user, each with its method id.
func (s *Server) listAuthMethods(userKey string) (answer, *apiError) {
	u := s.findUser(userKey)
	if u == nil {
		return answer{}, notFound(userKey)
	}
	vals := []any{map[string]any{
		"@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
		"id":          "28c10230-6103-485e-b985-444c60001490",
	}}
	for i := 0; i < u.ExistingOathMethods; i++ {
		vals = append(vals, map[string]any{
			"@odata.type": "#microsoft.graph.softwareOathAuthenticationMethod",
			"id":          fmt.Sprintf("b172893e-0000-4000-8000-%012d", i+1),
		})
	}
	var ids []string
	for _, id := range s.order {
		if d := s.devices[id]; d.AssignedUserID == u.ID {
			ids = append(ids, d.MethodID)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		vals = append(vals, map[string]any{"@odata.type": "#microsoft.graph.hardwareOathAuthenticationMethod", "id": id})
	}
	return answer{200, map[string]any{"value": vals}}, nil
}
