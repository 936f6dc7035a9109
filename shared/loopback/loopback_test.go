package loopback

import "testing"

func TestURL(t *testing.T) {
	for _, c := range []struct {
		u          string
		loop, http bool
	}{
		{"http://127.0.0.1:10000/devstoreaccount1", true, true},
		{"https://localhost:8443/", true, false},
		{"http://LOCALHOST/", true, true},
		{"http://[::1]:80/", true, true},
		{"https://kv.vault.azure.net/", false, false},
		{"http://st.blob.core.windows.net/", false, false},
		{"http://127.0.0.1.example.com/", false, false},
		{"not a url", false, false},
		{"", false, false},
	} {
		if got := URL(c.u); got != c.loop {
			t.Errorf("URL(%q) = %v, want %v", c.u, got, c.loop)
		}
		if got := PlainHTTP(c.u); got != c.http {
			t.Errorf("PlainHTTP(%q) = %v, want %v", c.u, got, c.http)
		}
	}
}
