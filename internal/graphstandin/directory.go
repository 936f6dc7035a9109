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
