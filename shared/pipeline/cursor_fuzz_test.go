package pipeline

import "testing"

// FuzzDecodeCursor: a caller's continuation is decoded without panicking; a cursor this API
// gave out decodes to itself; anything else is refused or decodes to a cursor that encodes back
// to a continuation that decodes the same.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(cursor{}.encode())
	f.Add(cursor{Link: "https://graph.microsoft.com/beta/directory/authenticationMethodDevices/hardwareOathDevices?$skiptoken=X", Skip: 7}.encode())
	f.Add("bm90IGEgY3Vyc29y")
	f.Add("eyJzIjotMX0")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeCursor(s)
		if err != nil {
			return
		}
		if c.Skip < 0 {
			t.Fatalf("negative skip accepted: %+v", c)
		}
		again, err := decodeCursor(c.encode())
		if err != nil || again != c {
			t.Fatalf("round trip: %+v -> %+v %v", c, again, err)
		}
	})
}
