package graphstandin

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

func (s *Server) methodJSON(d *device) map[string]any {
	return map[string]any{
		"@odata.type": "#microsoft.graph.hardwareOathAuthenticationMethod",
		"id":          d.MethodID,
		"device":      s.deviceJSON(d),
	}
}

func (s *Server) methodCount(u *User) int {
	n := u.ExistingOathMethods
	for _, d := range s.devices {
		if d.AssignedUserID == u.ID {
			n++
		}
	}
	return n
}

func (s *Server) canAssign(u *User) *apiError {
	if strings.EqualFold(u.UserType, "Guest") {
		return errf(400, "BadRequest", "Hardware OATH tokens cannot be assigned to guest users.")
	}
	if s.methodCount(u) >= MaxOathMethods {
		return errf(400, "BadRequest", "The user already has the maximum number of %d OATH authentication methods.", MaxOathMethods)
	}
	return nil
}

func (s *Server) doAssign(u *User, d *device) {
	d.AssignedUserID, d.AssignedUPN = u.ID, u.UserPrincipalName
	d.Status = "assigned"
	d.MethodID = d.ID
	if s.opts.DistinctMethodIDs {
		d.MethodID = newID()
	}
	s.methods[d.MethodID] = d.ID
}

func (s *Server) listMethods(r *http.Request, userKey string) (answer, *apiError) {
	u := s.findUser(userKey)
	if u == nil {
		return answer{}, notFound(userKey)
	}
	ids := make([]string, 0)
	for _, id := range s.order {
		if s.devices[id].AssignedUserID == u.ID {
			ids = append(ids, s.devices[id].MethodID)
		}
	}
	sort.Strings(ids)
	skip := 0
	if t := r.URL.Query().Get("$skiptoken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return answer{}, errf(400, "BadRequest", "Invalid $skiptoken.")
		}
		skip = min(n, len(ids))
	}
	end := min(skip+s.opts.PageSize, len(ids))
	vals := []any{}
	for _, mid := range ids[skip:end] {
		vals = append(vals, s.methodJSON(s.devices[s.methods[mid]]))
	}
	res := map[string]any{"value": vals}
	if end < len(ids) {
		res["@odata.nextLink"] = "https://" + r.Host + r.URL.Path + "?$skiptoken=" + strconv.Itoa(end)
	}
	return answer{200, res}, nil
}

func (s *Server) userMethod(userKey, methodID string) (*User, *device, *apiError) {
	u := s.findUser(userKey)
	if u == nil {
		return nil, nil, notFound(userKey)
	}
	d := s.devices[s.methods[methodID]]
	if d == nil || d.AssignedUserID != u.ID || d.MethodID != methodID {
		return nil, nil, notFound(methodID)
	}
	return u, d, nil
}

func (s *Server) getMethod(userKey, methodID string) (answer, *apiError) {
	_, d, aerr := s.userMethod(userKey, methodID)
	if aerr != nil {
		return answer{}, aerr
	}
	return answer{200, s.methodJSON(d)}, nil
}

func (s *Server) assign(userKey string, body []byte) (answer, *apiError) {
	u := s.findUser(userKey)
	if u == nil {
		return answer{}, notFound(userKey)
	}
	var in struct {
		Device struct {
			ID string `json:"id"`
		} `json:"device"`
	}
	if aerr := s.decodeBody(body, &in); aerr != nil {
		return answer{}, aerr
	}
	if in.Device.ID == "" {
		return answer{}, errf(400, "BadRequest", "The request body needs device.id.")
	}
	d := s.devices[in.Device.ID]
	if d == nil {
		return answer{}, notFound(in.Device.ID)
	}
	if d.AssignedUserID == u.ID {
		return answer{}, errf(409, "conflictingObjects", "The hardware OATH token is already assigned to this user.")
	}
	if d.AssignedUserID != "" {
		return answer{}, errf(400, "BadRequest", "The hardware OATH token is already assigned to another user.")
	}
	if aerr := s.canAssign(u); aerr != nil {
		return answer{}, aerr
	}
	s.doAssign(u, d)
	return answer{201, s.methodJSON(d)}, nil
}

func (s *Server) activate(userKey, methodID string, body []byte) (answer, *apiError) {
	_, d, aerr := s.userMethod(userKey, methodID)
	if aerr != nil {
		return answer{}, aerr
	}
	var in struct {
		VerificationCode json.RawMessage `json:"verificationCode"`
		DisplayName      *string         `json:"displayName"`
	}
	if aerr := s.decodeBody(body, &in); aerr != nil {
		return answer{}, aerr
	}
	var code string
	if err := json.Unmarshal(in.VerificationCode, &code); err != nil {
		return answer{}, errf(400, "BadRequest", "verificationCode must be a string of 6 digits.")
	}
	if d.Status == "activated" && !s.opts.AllowReactivation {
		return answer{}, errf(400, "badRequest", "The hardware OATH token is already activated.")
	}
	step, ok := verifyCode(d, code, s.now())
	if ok && d.usedStep >= step && !s.opts.Lenient.ReusedCodes {
		// RFC 6238 §5.2: a code of a step that already activated the token is refused, and
		// Entra need not say why: it reads like a wrong code.
		s.stats.ReusedCodes++
		ok = false
	}
	if !ok {
		d.Status = "failedActivation"
		return answer{}, errf(400, "BadRequest", "The verification code is invalid or has expired.")
	}
	d.usedStep = step
	d.Status = "activated"
	d.Activations++
	s.stats.Activation++
	if in.DisplayName != nil {
		d.DisplayName = *in.DisplayName
	}
	return answer{204, nil}, nil
}

func (s *Server) deactivate(userKey, methodID string) (answer, *apiError) {
	_, d, aerr := s.userMethod(userKey, methodID)
	if aerr != nil {
		return answer{}, aerr
	}
	d.Status = "assigned"
	return answer{204, nil}, nil
}

func (s *Server) unassign(userKey, methodID string) (answer, *apiError) {
	_, d, aerr := s.userMethod(userKey, methodID)
	if aerr != nil {
		return answer{}, aerr
	}
	delete(s.methods, methodID)
	d.AssignedUserID, d.AssignedUPN, d.MethodID = "", "", ""
	d.Status = "available"
	return answer{204, nil}, nil
}
