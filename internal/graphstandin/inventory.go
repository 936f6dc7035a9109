package graphstandin

import (
	"bytes"
	"encoding/base32"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

func (s *Server) deviceJSON(d *device) map[string]any {
	m := map[string]any{
		"@odata.type":           "#microsoft.graph.hardwareOathTokenAuthenticationMethodDevice",
		"id":                    d.ID,
		"displayName":           nullable(d.DisplayName),
		"serialNumber":          d.Serial,
		"manufacturer":          d.Manufacturer,
		"model":                 d.Model,
		"secretKey":             nil,
		"timeIntervalInSeconds": d.Period,
		"hashFunction":          d.Hash,
		"status":                d.Status,
		"lastUsedDateTime":      nil,
		"assignedTo":            nil,
	}
	if d.AssignedUserID != "" {
		name := ""
		if u := s.users[d.AssignedUserID]; u != nil {
			name = u.DisplayName
		}
		m["assignedTo"] = map[string]any{"id": d.AssignedUserID, "displayName": name}
	}
	return m
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (s *Server) listDevices(r *http.Request) (answer, *apiError) {
	q := r.URL.Query()
	var serial string
	filtered := false
	if f := q.Get("$filter"); f != "" {
		v, ok := ParseSerialFilter(f)
		if !ok {
			return answer{}, errf(400, "BadRequest", "Invalid filter clause: only serialNumber eq '...' is supported.")
		}
		serial, filtered = v, true
	}
	top := s.opts.PageSize
	if t := q.Get("$top"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 1 || n > 999 {
			return answer{}, errf(400, "BadRequest", "Invalid $top value %q.", t)
		}
		top = n
	}
	skip := 0
	if t := q.Get("$skiptoken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return answer{}, errf(400, "BadRequest", "Invalid $skiptoken.")
		}
		skip = n
	}
	match := func(d *device) bool { return !filtered || s.serialKey(d.Serial) == s.serialKey(serial) }
	var all []*device
	for _, id := range s.order {
		if d := s.devices[id]; s.opts.SparsePages || match(d) {
			all = append(all, d)
		}
	}
	res := map[string]any{"@odata.context": "https://graph.microsoft.com/beta/$metadata#directory/authenticationMethodDevices/hardwareOathDevices"}
	vals := []any{}
	end := min(skip+top, len(all))
	for i := skip; i < end; i++ {
		if match(all[i]) {
			vals = append(vals, s.listElement(all[i]))
		}
	}
	res["value"] = vals
	if end < len(all) {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("$skiptoken", strconv.Itoa(end))
		nq.Set("$top", strconv.Itoa(top))
		res["@odata.nextLink"] = "https://" + r.Host + r.URL.Path + "?" + nq.Encode()
	}
	return answer{200, res}, nil
}

// deviceInput is a create or update body. The interval stays raw: strictly a required integer,
// leniently also a string (the bulk example writes "30") or absent.
type deviceInput struct {
	ContentID    string          `json:"@contentId"`
	DisplayName  *string         `json:"displayName"`
	SerialNumber *string         `json:"serialNumber"`
	Manufacturer *string         `json:"manufacturer"`
	Model        *string         `json:"model"`
	SecretKey    *string         `json:"secretKey"`
	Interval     json.RawMessage `json:"timeIntervalInSeconds"`
	HashFunction *string         `json:"hashFunction"`
	AssignTo     *struct {
		ID string `json:"id"`
	} `json:"assignTo"`
}

// decodeBody decodes a JSON body into v. Unless Lenient.UnknownProperties, a property v does
// not define is refused: the resources are openType false.
func (s *Server) decodeBody(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	if !s.opts.Lenient.UnknownProperties {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return errf(400, "BadRequest", "Invalid request body: the property %s does not exist on this type.", f)
		}
		return errf(400, "BadRequest", "Invalid JSON body: %v.", err)
	}
	return nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// listElement is one element of an inventory listing: a bare device with Lenient.FlatLists,
// else the shape every example of the List page shows.
func (s *Server) listElement(d *device) map[string]any {
	if s.opts.Lenient.FlatLists {
		return s.deviceJSON(d)
	}
	id := d.MethodID
	if id == "" {
		id = d.ID
	}
	return map[string]any{"@odata.type": "#microsoft.graph.hardwareOathAuthenticationMethod", "id": id, "device": s.deviceJSON(d)}
}

func (s *Server) createDevice(body []byte) (answer, *apiError) {
	var in deviceInput
	if aerr := s.decodeBody(body, &in); aerr != nil {
		return answer{}, aerr
	}
	d, aerr := s.create(in)
	if aerr != nil {
		return answer{}, aerr
	}
	return answer{201, s.deviceJSON(d)}, nil
}

func (s *Server) create(in deviceInput) (*device, *apiError) {
	serial, man, model := strings.TrimSpace(str(in.SerialNumber)), str(in.Manufacturer), str(in.Model)
	switch {
	case serial == "":
		return nil, errf(400, "BadRequest", "The property 'serialNumber' is required.")
	case man == "":
		return nil, errf(400, "BadRequest", "The property 'manufacturer' is required.")
	case model == "":
		return nil, errf(400, "BadRequest", "The property 'model' is required.")
	case in.SecretKey == nil || *in.SecretKey == "":
		return nil, errf(400, "BadRequest", "The property 'secretKey' is required.")
	}
	key := *in.SecretKey
	if s.opts.Lenient.LooseSecret {
		key = strings.TrimRight(strings.ToUpper(strings.ReplaceAll(key, " ", "")), "=")
	}
	secret, err := b32.DecodeString(key)
	if err != nil || len(key) > 128 || len(secret) == 0 || strings.Trim(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
		return nil, errf(400, "BadRequest", "The secret key must be Base32 (A-Z, 2-7) of at most 128 characters.")
	}
	period, aerr := s.interval(in.Interval)
	if aerr != nil {
		return nil, aerr
	}
	h := "hmacsha1"
	if in.HashFunction != nil && *in.HashFunction != "" {
		h = *in.HashFunction
		if h != "hmacsha1" && h != "hmacsha256" {
			return nil, errf(400, "BadRequest", "hashFunction must be hmacsha1 or hmacsha256.")
		}
	}
	if _, dup := s.serials[s.serialKey(serial)]; dup {
		if s.opts.Lenient.Conflict409 {
			return nil, errf(409, "conflictingObjects", "A hardware OATH token with serial number '%s' already exists in the tenant.", serial)
		}
		return nil, errf(400, "BadRequest", "A hardware OATH token with serial number '%s' already exists in the tenant.", serial)
	}
	var assignee *User
	if in.AssignTo != nil && in.AssignTo.ID != "" {
		assignee = s.findUser(in.AssignTo.ID)
		if assignee == nil {
			return nil, notFound(in.AssignTo.ID)
		}
		if aerr := s.canAssign(assignee); aerr != nil {
			return nil, aerr
		}
	}
	d := &device{DeviceState: DeviceState{
		ID: newID(), Serial: serial, Manufacturer: man, Model: model, DisplayName: str(in.DisplayName),
		Status: "available", Hash: h, Period: period,
	}, secret: secret, usedStep: -1}
	s.devices[d.ID] = d
	s.serials[s.serialKey(serial)] = d.ID
	s.order = append(s.order, d.ID)
	if assignee != nil {
		s.doAssign(assignee, d)
	}
	return d, nil
}

// bulkCreate handles PATCH on the collection with {"@context":"#$delta","value":[...]}.
// Results come back per item in "value", each with its @contentId and either the device or an error.
func (s *Server) bulkCreate(body []byte) (answer, *apiError) {
	var in struct {
		Context string        `json:"@context"`
		Value   []deviceInput `json:"value"`
	}
	if aerr := s.decodeBody(body, &in); aerr != nil {
		return answer{}, aerr
	}
	if in.Context != "#$delta" {
		return answer{}, errf(400, "BadRequest", "A bulk request needs \"@context\": \"#$delta\".")
	}
	var out []any
	for _, item := range in.Value {
		d, aerr := s.create(item)
		if aerr != nil {
			out = append(out, map[string]any{"@contentId": item.ContentID, "error": map[string]any{"code": aerr.code, "message": aerr.msg}})
			continue
		}
		m := s.deviceJSON(d)
		m["@contentId"] = item.ContentID
		out = append(out, m)
	}
	return answer{201, map[string]any{"value": out}}, nil
}

func (s *Server) updateDevice(id string, body []byte) (answer, *apiError) {
	d := s.devices[id]
	if d == nil {
		return answer{}, notFound(id)
	}
	if d.Status != "available" {
		return answer{}, errf(400, "BadRequest", "The hardware OATH token is assigned to a user; unassign it before updating it.")
	}
	var in deviceInput
	if aerr := s.decodeBody(body, &in); aerr != nil {
		return answer{}, aerr
	}
	if in.SecretKey != nil {
		return answer{}, errf(400, "BadRequest", "The secret key of a hardware OATH token cannot be updated.")
	}
	if in.SerialNumber != nil && *in.SerialNumber != d.Serial {
		return answer{}, errf(400, "BadRequest", "The serial number of a hardware OATH token cannot be updated.")
	}
	if in.DisplayName != nil {
		d.DisplayName = *in.DisplayName
	}
	if in.Manufacturer != nil {
		d.Manufacturer = *in.Manufacturer
	}
	if in.Model != nil {
		d.Model = *in.Model
	}
	return answer{204, nil}, nil
}

func (s *Server) deleteDevice(id string) (answer, *apiError) {
	d := s.devices[id]
	if d == nil {
		return answer{}, notFound(id)
	}
	if d.Status != "available" {
		return answer{}, errf(400, "BadRequest", "The hardware OATH token is assigned to a user; unassign it before deleting it.")
	}
	delete(s.devices, id)
	delete(s.serials, s.serialKey(d.Serial))
	for i, v := range s.order {
		if v == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	return answer{204, nil}, nil
}

// interval reads timeIntervalInSeconds: strictly a required JSON integer, 30 or 60; with
// Lenient.LooseInterval also a string or absent (30).
func (s *Server) interval(raw json.RawMessage) (int, *apiError) {
	v := strings.TrimSpace(string(raw))
	if v == "" || v == "null" {
		if s.opts.Lenient.LooseInterval {
			return 30, nil
		}
		return 0, errf(400, "BadRequest", "The property 'timeIntervalInSeconds' is required.")
	}
	if strings.HasPrefix(v, `"`) {
		if !s.opts.Lenient.LooseInterval {
			return 0, errf(400, "BadRequest", "timeIntervalInSeconds must be an integer, not a string.")
		}
		v = strings.Trim(v, `"`)
	}
	n, err := strconv.Atoi(v)
	if err != nil || (n != 30 && n != 60) {
		return 0, errf(400, "BadRequest", "timeIntervalInSeconds must be 30 or 60.")
	}
	return n, nil
}
