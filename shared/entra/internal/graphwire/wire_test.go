package graphwire

import (
	"strings"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/internal/graphstandin"
	"github.com/oathpipe/oathpipe/shared/token"
)

func TestParseDeviceShapes(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     token.Device
	}{
		{"plain", `{"id":"d1","serialNumber":"S1","manufacturer":"M","model":"X","timeIntervalInSeconds":30,"hashFunction":"hmacsha1","status":"available","secretKey":null}`,
			token.Device{ID: "d1", Serial: "S1", Manufacturer: "M", Model: "X", Period: 30, Hash: token.SHA1, Status: token.StatusAvailable}},
		{"interval as string", `{"id":"d1","serialNumber":"S1","timeIntervalInSeconds":"60"}`,
			token.Device{ID: "d1", Serial: "S1", Period: 60}},
		{"wrapped in value", `{"value":{"id":"d2","serialNumber":"S2","assignedTo":{"id":"u1","displayName":"Ada"}}}`,
			token.Device{ID: "d2", Serial: "S2", AssignedToID: "u1", AssignedToName: "Ada"}},
		{"wrapped in a one-item list", `{"value":[{"id":"d3","serialNumber":"S3","status":"activated"}]}`,
			token.Device{ID: "d3", Serial: "S3", Status: token.StatusActivated}},
		// The List page's examples: each element a method wrapping the device.
		{"list element of the docs", `{"@odata.type":"#microsoft.graph.hardwareOathAuthenticationMethod","id":"aad49556","device":{"id":"aad49556","serialNumber":"TOTP123456","manufacturer":"Contoso","model":"Hardware Token 1000","secretKey":null,"timeIntervalInSeconds":30,"status":"activated","hashFunction":"hmacsha1","assignedTo":{"id":"0cadbf92","displayName":"Amy Masters"}}}`,
			token.Device{ID: "aad49556", Serial: "TOTP123456", Manufacturer: "Contoso", Model: "Hardware Token 1000", Period: 30, Hash: token.SHA1, Status: token.StatusActivated, AssignedToID: "0cadbf92", AssignedToName: "Amy Masters"}},
		{"list element whose id is a method id", `{"@odata.type":"#microsoft.graph.hardwareOathAuthenticationMethod","id":"m9","device":{"id":"d9","serialNumber":"S9"}}`,
			token.Device{ID: "d9", Serial: "S9"}},
		{"list element in value", `{"value":[{"id":"m9","device":{"id":"d9","serialNumber":"S9"}}]}`,
			token.Device{ID: "d9", Serial: "S9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDevice([]byte(tc.in))
			if err != nil || got != tc.want {
				t.Fatalf("%+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseMethodShapes(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     token.Method
	}{
		{"nested device", `{"id":"m1","device":{"id":"d1","serialNumber":"S1","status":"assigned"}}`,
			token.Method{ID: "m1", DeviceID: "d1", Serial: "S1", Status: token.StatusAssigned}},
		{"flat", `{"id":"d1","serialNumber":"S1","status":"activated"}`,
			token.Method{ID: "d1", Serial: "S1", Status: token.StatusActivated}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMethod([]byte(tc.in))
			if err != nil || got != tc.want {
				t.Fatalf("%+v %v, want %+v", got, err, tc.want)
			}
		})
	}
	// Without the nested device, the docs' convention (method id = device id) finds it.
	if m, ok := Held([]token.Method{{ID: "d1"}}, "d1"); !ok || m.ID != "d1" {
		t.Fatal("flat method not matched")
	}
}

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		a      Area
		status int
		msg    string
		want   token.Kind
	}{
		{AreaInventory, 403, "Insufficient privileges", token.KindForbidden},
		{AreaMethods, 401, "", token.KindForbidden},
		{AreaMethods, 429, "", token.KindThrottled},
		{AreaMethods, 503, "", token.KindTransient},
		{AreaMethods, 504, "", token.KindTransient},
		{AreaMethods, 408, "", token.KindTransient},
		{AreaUsers, 404, "", token.KindNotFound},
		{AreaMethods, 400, "Hardware OATH tokens cannot be assigned to guest users.", token.KindGuest},
		{AreaMethods, 400, "The user already has the maximum number of 5 OATH authentication methods.", token.KindTooManyMethods},
		{AreaMethods, 400, "The hardware OATH token is already assigned to another user.", token.KindAssignedElsewhere},
		{AreaActivate, 400, "The verification code is invalid or has expired.", token.KindBadCode},
		{AreaActivate, 400, "The hardware OATH token is already activated.", token.KindConflict},
		{AreaInventory, 409, "exists", token.KindConflict},
		{AreaInventory, 400, "unassign it before deleting it", token.KindConflict},
		{AreaInventory, 400, "bad property", token.KindInvalid},
		{AreaInventory, 418, "", token.KindInternal},
	} {
		k, msg := Classify(tc.a, Failure{Status: tc.status, Message: tc.msg})
		if k != tc.want || msg == "" {
			t.Errorf("%d %q: %s (%q), want %s", tc.status, tc.msg, k, msg, tc.want)
		}
	}
	if _, msg := Classify(AreaMethods, Failure{Status: 403}); !strings.Contains(msg, "UserAuthenticationMethod.ReadWrite.All") {
		t.Errorf("403 message %q does not name the permission", msg)
	}
}

func TestParseRetryAfter(t *testing.T) {
	for in, want := range map[string]time.Duration{"1": time.Second, "2.5": 2500 * time.Millisecond, "": 0, "soon": 0, "-3": 0} {
		if got := ParseRetryAfter(in); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
	if d := ParseRetryAfter(time.Now().Add(10 * time.Second).UTC().Format(time.RFC1123)); d < 8*time.Second || d > 11*time.Second {
		t.Errorf("date form: %v", d)
	}
}

// FuzzSerialFilter: whatever the serial, the filter the client builds reads back as that
// serial in the stand-in's OData parser (quotes doubled, nothing else special).
func FuzzSerialFilter(f *testing.F) {
	for _, s := range []string{"ABC", "O'Brien", "''", "a b", "x' or '1'='1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, serial string) {
		got, ok := graphstandin.ParseSerialFilter(SerialFilter(serial))
		if !ok || got != serial {
			// ParseSerialFilter trims surrounding space of the whole clause, never inside quotes.
			t.Fatalf("%q → %q → %q %v", serial, SerialFilter(serial), got, ok)
		}
	})
}

// FuzzParseGraphAnswers: Graph's device and method answers never panic the parsers.
func FuzzParseGraphAnswers(f *testing.F) {
	for _, s := range []string{
		`{"id":"d1","serialNumber":"S1","timeIntervalInSeconds":30}`,
		`{"value":[{"id":"d3"}]}`, `{"value":{"id":"d2"}}`, `{"value":"x"}`, `{"value":[]}`,
		`{"id":"m1","device":{"id":"d1"}}`, `null`, `[]`, `{"timeIntervalInSeconds":"6x"}`,
		`{"value":{"value":{"value":[{"device":{"id":"d"}}]}}}`, `{"device":null,"serialNumber":"S"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseDevice(b)
		_, _ = ParseMethod(b)
	})
}

// FuzzKindOf: every Graph failure gets a kind and a sentence; 429 and 5xx stay retryable.
func FuzzKindOf(f *testing.F) {
	f.Add(400, "guest", uint8(0))
	f.Add(429, "", uint8(1))
	f.Add(503, "The service is temporarily unavailable.", uint8(2))
	f.Fuzz(func(t *testing.T, status int, msg string, a uint8) {
		k, sentence := Classify(Area(a%4), Failure{Status: status, Message: msg})
		if k == "" || sentence == "" {
			t.Fatalf("%d %q: empty kind or message", status, msg)
		}
		if (status == 429 || (status >= 500 && status < 600)) && !token.IsTransient(&token.Error{Kind: k}) {
			t.Fatalf("%d classified %s", status, k)
		}
	})
}
