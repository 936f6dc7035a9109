package graphstandin

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type harness struct {
	t  *testing.T
	r  *Running
	hc *http.Client
}

func newHarness(t *testing.T, o Options) *harness {
	t.Helper()
	if o.Users == nil {
		u, err := LoadUsers("../../testdata/users.json")
		if err != nil {
			t.Fatal(err)
		}
		o.Users = u
	}
	r, err := StartTLS(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return &harness{t: t, r: r, hc: r.HTTPClient()}
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

func (r reply) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (r reply) errMessage() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

// do sends body as JSON (gzipped when zip), with the default token unless auth is false.
func (h *harness) do(method, path string, body any, zip, auth bool) reply {
	h.t.Helper()
	var rd io.Reader
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
		if zip {
			var b bytes.Buffer
			z := gzip.NewWriter(&b)
			_, _ = z.Write(raw)
			_ = z.Close()
			raw = b.Bytes()
		}
		rd = bytes.NewReader(raw)
	}
	u := path
	if !strings.HasPrefix(path, "https://") {
		u = h.r.URL + path
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if zip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+DefaultToken)
	}
	res, err := h.hc.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	out := reply{status: res.StatusCode, header: res.Header}
	b, _ := io.ReadAll(res.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out.body); err != nil {
			h.t.Fatalf("%s %s: answer is not JSON: %s", method, path, b)
		}
	}
	return out
}

const (
	devices = "/beta/directory/authenticationMethodDevices/hardwareOathDevices"
	adaID   = "9ef40d07-18b0-545a-82a5-8f7f3b2b638a"
	guestID = "0f9233b1-7390-515d-9787-175006338642"
	collID  = "5bb35868-43b9-5452-956d-cd6d908d5ded"
	secret  = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" // "12345678901234567890", the RFC 6238 key
)

func methods(user string) string {
	return "/beta/users/" + user + "/authentication/hardwareOathMethods"
}

func TestTOTPVectors(t *testing.T) {
	key := []byte("12345678901234567890")
	// RFC 6238 appendix B, last 6 digits.
	for _, tc := range []struct {
		unix int64
		want string
	}{{59, "287082"}, {1111111109, "081804"}, {1234567890, "005924"}, {2000000000, "279037"}} {
		if got := totp(key, "hmacsha1", uint64(tc.unix/30)); got != tc.want {
			t.Errorf("t=%d: %s, want %s", tc.unix, got, tc.want)
		}
	}
}

func TestStateMachine(t *testing.T) {
	clk := &clock{t: time.Unix(1111111109, 0)}
	h := newHarness(t, Options{Now: clk.Now, WriteRate: -1})
	create := map[string]any{"serialNumber": "S1", "manufacturer": "Token2", "model": "C302", "secretKey": secret, "timeIntervalInSeconds": 30, "hashFunction": "hmacsha1"}

	r := h.do("POST", devices, create, true, true)
	if r.status != 201 || r.body["status"] != "available" || r.body["secretKey"] != nil {
		t.Fatalf("create: %d %v", r.status, r.body)
	}
	if r.header.Get("request-id") == "" {
		t.Fatal("no request-id header")
	}
	id := r.body["id"].(string)
	if r := h.do("POST", devices, create, false, true); r.status != 400 || !strings.Contains(r.errMessage(), "already exists") {
		t.Fatalf("duplicate serial: %d", r.status)
	}
	if r := h.do("POST", methods(guestID), map[string]any{"device": map[string]string{"id": id}}, true, true); r.status != 400 || !strings.Contains(r.errMessage(), "guest") {
		t.Fatalf("guest: %d %v", r.status, r.body)
	}
	if r := h.do("POST", methods(collID), map[string]any{"device": map[string]string{"id": id}}, true, true); r.status != 400 || !strings.Contains(r.errMessage(), "maximum") {
		t.Fatalf("5 methods: %d %v", r.status, r.body)
	}
	r = h.do("POST", methods("ada.lovelace@contoso.example"), map[string]any{"device": map[string]string{"id": id}}, true, true)
	if r.status != 201 {
		t.Fatalf("assign: %d %v", r.status, r.body)
	}
	mid := r.body["id"].(string)
	if mid != id {
		t.Fatal("by default the method id is the device id, as in the doc examples")
	}
	if d, _ := h.r.Server.DeviceBySerial("S1"); d.Status != "assigned" || d.AssignedUserID != adaID {
		t.Fatalf("%+v", d)
	}
	if r := h.do("POST", methods("grace.hopper@contoso.example"), map[string]any{"device": map[string]string{"id": id}}, false, true); r.status != 400 || !strings.Contains(r.errMessage(), "another user") {
		t.Fatalf("assigned elsewhere: %d %v", r.status, r.body)
	}
	if r := h.do("PATCH", devices+"/"+id, map[string]any{"displayName": "x"}, false, true); r.status != 400 {
		t.Fatalf("update while assigned: %d", r.status)
	}
	if r := h.do("DELETE", devices+"/"+id, nil, false, true); r.status != 400 {
		t.Fatalf("delete while assigned: %d", r.status)
	}
	act := methods(adaID) + "/" + mid + "/activate"
	if r := h.do("POST", act, map[string]any{"verificationCode": 81804}, false, true); r.status != 400 {
		t.Fatalf("numeric code: %d", r.status)
	}
	if r := h.do("POST", act, map[string]any{"verificationCode": "123456"}, true, true); r.status != 400 {
		t.Fatalf("wrong code: %d", r.status)
	}
	if d, _ := h.r.Server.DeviceBySerial("S1"); d.Status != "failedActivation" {
		t.Fatalf("status %s", d.Status)
	}
	// The code of the previous step is still accepted (±1 step); two steps back is not.
	clk.Advance(30 * time.Second)
	if r := h.do("POST", act, map[string]any{"verificationCode": totp([]byte("12345678901234567890"), "hmacsha1", 1111111109/30-1)}, true, true); r.status != 400 {
		t.Fatalf("code two steps old: %d", r.status)
	}
	if r := h.do("POST", act, map[string]any{"verificationCode": "081804"}, true, true); r.status != 204 {
		t.Fatalf("right code: %d %v", r.status, r.body)
	}
	if d, _ := h.r.Server.DeviceBySerial("S1"); d.Status != "activated" || d.Activations != 1 {
		t.Fatalf("%+v", d)
	}
	// Activating an activated method again is refused (Entra's behaviour is undocumented; the
	// client must look before resending), even with a right code, and counts nothing.
	if r := h.do("POST", act, map[string]any{"verificationCode": "081804"}, true, true); r.status != 400 || r.errMessage() != "The hardware OATH token is already activated." {
		t.Fatalf("reactivation: %d %v", r.status, r.body)
	}
	if d, _ := h.r.Server.DeviceBySerial("S1"); d.Status != "activated" || d.Activations != 1 {
		t.Fatalf("after refused reactivation %+v", d)
	}
	h.r.Server.mu.Lock()
	h.r.Server.opts.AllowReactivation = true
	h.r.Server.mu.Unlock()
	// Reactivation allowed, the code of the step that activated it is still refused (RFC 6238 §5.2)...
	if r := h.do("POST", act, map[string]any{"verificationCode": "081804"}, true, true); r.status != 400 || h.r.Server.Stats().ReusedCodes != 1 {
		t.Fatalf("reused code: %d %v", r.status, r.body)
	}
	// ... unless Lenient.ReusedCodes.
	h.r.Server.mu.Lock()
	h.r.Server.opts.Lenient.ReusedCodes = true
	h.r.Server.mu.Unlock()
	if r := h.do("POST", act, map[string]any{"verificationCode": "081804"}, true, true); r.status != 204 {
		t.Fatalf("reactivation allowed: %d %v", r.status, r.body)
	}
	if d, _ := h.r.Server.DeviceBySerial("S1"); d.Activations != 2 {
		t.Fatalf("allowed reactivation counts: %+v", d)
	}
	h.r.Server.mu.Lock()
	h.r.Server.opts.AllowReactivation = false
	h.r.Server.mu.Unlock()
	if r := h.do("DELETE", methods(adaID)+"/"+mid, nil, false, true); r.status != 204 {
		t.Fatalf("unassign: %d", r.status)
	}
	if d, _ := h.r.Server.DeviceBySerial("S1"); d.Status != "available" || d.AssignedUserID != "" {
		t.Fatalf("%+v", d)
	}
	if r := h.do("PATCH", devices+"/"+id, map[string]any{"secretKey": secret}, false, true); r.status != 400 {
		t.Fatalf("secret update: %d", r.status)
	}
	if r := h.do("PATCH", devices+"/"+id, map[string]any{"displayName": "Desk fob"}, true, true); r.status != 204 {
		t.Fatalf("update: %d", r.status)
	}
	if r := h.do("DELETE", devices+"/"+id, nil, false, true); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	if st := h.r.Server.Stats(); st.Gzipped == 0 || st.Writes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCreateValidation(t *testing.T) {
	h := newHarness(t, Options{WriteRate: -1})
	base := func() map[string]any {
		return map[string]any{"serialNumber": "V1", "manufacturer": "M", "model": "X", "secretKey": secret, "timeIntervalInSeconds": 30}
	}
	for _, tc := range []struct {
		name string
		set  func(m map[string]any)
		want int
	}{
		{"defaults", func(map[string]any) {}, 201},
		{"interval as string", func(m map[string]any) { m["serialNumber"] = "V2"; m["timeIntervalInSeconds"] = "60" }, 400},
		{"no interval", func(m map[string]any) { m["serialNumber"] = "V2"; delete(m, "timeIntervalInSeconds") }, 400},
		{"interval 60", func(m map[string]any) { m["serialNumber"] = "V2"; m["timeIntervalInSeconds"] = 60 }, 201},
		{"interval 45", func(m map[string]any) { m["serialNumber"] = "V3"; m["timeIntervalInSeconds"] = 45 }, 400},
		{"sha512", func(m map[string]any) { m["serialNumber"] = "V4"; m["hashFunction"] = "hmacsha512" }, 400},
		{"not base32", func(m map[string]any) { m["serialNumber"] = "V5"; m["secretKey"] = "189!" }, 400},
		{"no secret", func(m map[string]any) { m["serialNumber"] = "V6"; delete(m, "secretKey") }, 400},
		{"no serial", func(m map[string]any) { delete(m, "serialNumber") }, 400},
		{"assignTo guest", func(m map[string]any) { m["serialNumber"] = "V7"; m["assignTo"] = map[string]string{"id": guestID} }, 400},
		{"assignTo member", func(m map[string]any) { m["serialNumber"] = "V8"; m["assignTo"] = map[string]string{"id": adaID} }, 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.set(m)
			if r := h.do("POST", devices, m, true, true); r.status != tc.want {
				t.Fatalf("%d, want %d: %v", r.status, tc.want, r.body)
			}
		})
	}
	if d, _ := h.r.Server.DeviceBySerial("V8"); d.Status != "assigned" || d.AssignedUserID != adaID {
		t.Fatalf("%+v", d)
	}
}

func TestAuthRequired(t *testing.T) {
	h := newHarness(t, Options{})
	if r := h.do("GET", "/v1.0/users/"+adaID, nil, false, false); r.status != 401 || r.errCode() != "InvalidAuthenticationToken" {
		t.Fatalf("%d %v", r.status, r.body)
	}
	if st := h.r.Server.Stats(); st.NoAuth != 1 {
		t.Fatalf("%+v", st)
	}
	if r := h.do("GET", "/v1.0/users/"+adaID+"?$select=id,userType", nil, false, true); r.status != 200 || r.body["userType"] != "Member" {
		t.Fatalf("%d %v", r.status, r.body)
	}
	if r := h.do("GET", "/beta/users/nobody@x", nil, false, true); r.status != 404 || r.errCode() != "Request_ResourceNotFound" {
		t.Fatalf("%d %v", r.status, r.body)
	}
	if r := h.do("GET", "/v1.0/directory/authenticationMethodDevices/hardwareOathDevices", nil, false, true); r.status != 400 {
		t.Fatalf("the inventory is beta only: %d", r.status)
	}
}

func TestThrottle(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	// 3,000 per 150 s sped up 10×: 200 writes/s, bucket of 200.
	h := newHarness(t, Options{Now: clk.Now, TimeScale: 10})
	bulk := func(prefix string, n int) map[string]any {
		var items []any
		for i := range n {
			items = append(items, map[string]any{"@contentId": prefix + string(rune('a'+i%26)) + strings.Repeat("x", i/26), "serialNumber": prefix + "-" + strings.Repeat("9", i+1), "manufacturer": "M", "model": "X", "secretKey": secret, "timeIntervalInSeconds": 30})
		}
		return map[string]any{"@context": "#$delta", "value": items}
	}
	r := h.do("PATCH", devices, bulk("A", 150), true, true)
	if r.status != 201 || len(r.body["value"].([]any)) != 150 {
		t.Fatalf("bulk: %d", r.status)
	}
	if st := h.r.Server.Stats(); st.Writes != 150 {
		t.Fatalf("each bulk item is a write: %+v", st)
	}
	r = h.do("PATCH", devices, bulk("B", 100), true, true)
	if r.status != 429 || r.header.Get("Retry-After") != "1" || r.errCode() != "TooManyRequests" {
		t.Fatalf("over the limit: %d %v %v", r.status, r.header, r.body)
	}
	clk.Advance(500 * time.Millisecond) // +100 writes
	if r := h.do("PATCH", devices, bulk("B", 100), true, true); r.status != 201 {
		t.Fatalf("after refill: %d %v", r.status, r.body)
	}
	if r := h.do("GET", devices+"?$top=5", nil, false, true); r.status != 200 {
		t.Fatalf("reads are not throttled here: %d", r.status)
	}
	if st := h.r.Server.Stats(); st.Throttled != 1 || st.Writes != 250 {
		t.Fatalf("%+v", st)
	}
}

func TestPagingAndFilter(t *testing.T) {
	h := newHarness(t, Options{WriteRate: -1, PageSize: 2})
	for _, s := range []string{"P1", "P'2", "P3", "P4", "P5"} {
		if r := h.do("POST", devices, map[string]any{"serialNumber": s, "manufacturer": "M", "model": "X", "secretKey": secret, "timeIntervalInSeconds": 30}, false, true); r.status != 201 {
			t.Fatal(r.status)
		}
	}
	var got []string
	next := devices
	for next != "" {
		r := h.do("GET", next, nil, false, true)
		for _, v := range r.body["value"].([]any) {
			got = append(got, v.(map[string]any)["device"].(map[string]any)["serialNumber"].(string))
		}
		next, _ = r.body["@odata.nextLink"].(string)
	}
	if strings.Join(got, ",") != "P1,P'2,P3,P4,P5" {
		t.Fatalf("paged: %v", got)
	}
	r := h.do("GET", devices+"?$filter=serialNumber%20eq%20'P''2'", nil, false, true)
	if v := r.body["value"].([]any); len(v) != 1 || v[0].(map[string]any)["device"].(map[string]any)["serialNumber"] != "P'2" {
		t.Fatalf("filter: %v", r.body)
	}
	if r := h.do("GET", devices+"?$filter=serialNumber%20eq%20'P'2'", nil, false, true); r.status != 400 {
		t.Fatalf("unescaped quote: %d", r.status)
	}
}

func TestParseSerialFilter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"serialNumber eq 'ABC'", "ABC", true},
		{"serialNumber eq ''", "", true},
		{"serialNumber eq 'O''Brien'", "O'Brien", true},
		{"serialNumber eq ''''", "'", true},
		{"  serialnumber EQ 'x'  ", "x", true},
		{"serialNumber eq 'a'b'", "", false},
		{"serialNumber eq 'abc", "", false},
		{"displayName eq 'x'", "", false},
		{"serialNumber eq '", "", false},
	} {
		got, ok := ParseSerialFilter(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: %q %v, want %q %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParseSerialFilter(f *testing.F) {
	for _, s := range []string{"serialNumber eq 'A'", "serialNumber eq 'O''B'", "serialNumber eq '", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := ParseSerialFilter(s)
		if !ok {
			return
		}
		back := "serialNumber eq '" + strings.ReplaceAll(v, "'", "''") + "'"
		if v2, ok := ParseSerialFilter(back); !ok || v2 != v {
			t.Fatalf("%q → %q → %q", s, v, v2)
		}
	})
}

func TestLoadUsers(t *testing.T) {
	u, err := LoadUsers("../../testdata/users.json")
	if err != nil || len(u) < 15 {
		t.Fatalf("%d users, %v", len(u), err)
	}
	if _, err := LoadUsers("/nonexistent"); err == nil {
		t.Fatal("missing file accepted")
	}
}
