package graphstandin

import "strings"

// SetAccountEnabled enables or disables a user's account, as an admin does when someone leaves;
// the tokens the user holds stay assigned (Entra does not take them back). It reports whether
// the user exists.
func (s *Server) SetAccountEnabled(upnOrID string, enabled bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUser(upnOrID)
	if u == nil {
		return false
	}
	u.AccountEnabled = enabled
	return true
}

// DeleteUser removes a user from the directory. Devices assigned to the user keep the user's id
// in assignedTo, which no longer resolves: how a deleted account's tokens look from Graph
// until Entra cleans them up (undocumented; the least convenient case). It reports whether the
// user existed.
func (s *Server) DeleteUser(upnOrID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUser(upnOrID)
	if u == nil {
		return false
	}
	delete(s.users, u.ID)
	delete(s.byUPN, strings.ToLower(u.UserPrincipalName))
	return true
}

// Preload puts devices straight into the inventory, without requests, throttling or
// latency: a benchmark's tenant of 50,000 tokens in a moment. Each is held by the user
// named in AssignedUserID (which need not exist: a deleted account), with Status as given
// (default available), period 30 s, SHA-1 and no usable secret. Serials must be new.
func (s *Server) Preload(devs []DeviceState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range devs {
		d := &device{DeviceState: in, usedStep: -1}
		d.ID = newID()
		if d.Status == "" {
			d.Status = "available"
		}
		if d.Period == 0 {
			d.Period = 30
		}
		if d.Hash == "" {
			d.Hash = "hmacsha1"
		}
		if d.AssignedUserID != "" && d.MethodID == "" {
			d.MethodID = d.ID
		}
		s.devices[d.ID] = d
		s.serials[s.serialKey(d.Serial)] = d.ID
		s.order = append(s.order, d.ID)
	}
}

// AddUsers adds users to the directory.
func (s *Server) AddUsers(us []User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range us {
		u := u
		s.users[u.ID] = &u
		s.byUPN[strings.ToLower(u.UserPrincipalName)] = u.ID
	}
}
