package graphstandin

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestStrictByDefault checks each behaviour the stand-in takes strictly where the docs are
// silent, and that its Lenient option turns it off (docs/graph.md lists the same table).
func TestStrictByDefault(t *testing.T) {
	create := func(serial string) map[string]any {
		return map[string]any{"serialNumber": serial, "manufacturer": "M", "model": "X", "secretKey": secret, "timeIntervalInSeconds": 30}
	}
	type check func(h *harness) int
	for _, tc := range []struct {
		name          string
		lenient       Lenient
		strict, loose int
		run           check
	}{
		{"duplicate serial answers 400 (409 leniently)", Lenient{Conflict409: true}, 400, 409, func(h *harness) int {
			h.do("POST", devices, create("D1"), false, true)
			return h.do("POST", devices, create("D1"), false, true).status
		}},
		{"serials compare case-insensitively", Lenient{ExactSerials: true}, 400, 201, func(h *harness) int {
			h.do("POST", devices, create("GP7001"), false, true)
			return h.do("POST", devices, create("gp7001"), false, true).status
		}},
		{"unknown body property refused", Lenient{UnknownProperties: true}, 400, 201, func(h *harness) int {
			m := create("U1")
			m["colour"] = "blue"
			return h.do("POST", devices, m, false, true).status
		}},
		{"interval a required integer", Lenient{LooseInterval: true}, 400, 201, func(h *harness) int {
			m := create("I1")
			m["timeIntervalInSeconds"] = "30"
			return h.do("POST", devices, m, false, true).status
		}},
		{"secret only A-Z 2-7", Lenient{LooseSecret: true}, 400, 201, func(h *harness) int {
			m := create("K1")
			m["secretKey"] = strings.ToLower(secret)
			return h.do("POST", devices, m, false, true).status
		}},
		{"Content-Type application/json required", Lenient{AnyContentType: true}, 415, 201, func(h *harness) int {
			req, _ := http.NewRequest("POST", h.r.URL+devices, bytes.NewReader([]byte(`{"serialNumber":"C1","manufacturer":"M","model":"X","secretKey":"`+secret+`","timeIntervalInSeconds":30}`)))
			req.Header.Set("Authorization", "Bearer "+DefaultToken)
			res, err := h.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res.StatusCode
		}},
		{"path segments case-insensitive (exact leniently)", Lenient{ExactPaths: true}, 201, 400, func(h *harness) int {
			return h.do("POST", "/beta/directory/authenticationmethoddevices/HARDWAREOATHDEVICES", create("P1"), false, true).status
		}},
		{"v1.0 user without $select: no accountEnabled", Lenient{AllUserProperties: true}, 0, 1, func(h *harness) int {
			if _, ok := h.do("GET", "/v1.0/users/"+adaID, nil, false, true).body["accountEnabled"]; ok {
				return 1
			}
			return 0
		}},
		{"list elements nested as in the docs' examples", Lenient{FlatLists: true}, 1, 0, func(h *harness) int {
			h.do("POST", devices, create("L1"), false, true)
			v := h.do("GET", devices, nil, false, true).body["value"].([]any)[0].(map[string]any)
			if _, ok := v["device"]; ok && v["@odata.type"] == "#microsoft.graph.hardwareOathAuthenticationMethod" {
				return 1
			}
			return 0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.run(newHarness(t, Options{WriteRate: -1})); got != tc.strict {
				t.Errorf("strict: %d, want %d", got, tc.strict)
			}
			if got := tc.run(newHarness(t, Options{WriteRate: -1, Lenient: tc.lenient})); got != tc.loose {
				t.Errorf("lenient: %d, want %d", got, tc.loose)
			}
		})
	}
}

func TestModes(t *testing.T) {
	h := newHarness(t, Options{WriteRate: -1, DistinctMethodIDs: true, OpaqueMessages: true})
	r := h.do("POST", devices, map[string]any{"serialNumber": "M1", "manufacturer": "M", "model": "X", "secretKey": secret, "timeIntervalInSeconds": 30}, false, true)
	id := r.body["id"].(string)
	r = h.do("POST", methods(adaID), map[string]any{"device": map[string]string{"id": id}}, false, true)
	if r.status != 201 || r.body["id"] == id {
		t.Fatalf("distinct method ids: %d %v", r.status, r.body)
	}
	r = h.do("POST", methods(guestID), map[string]any{"device": map[string]string{"id": id}}, false, true)
	if r.status != 400 || r.errMessage() != "Invalid request." {
		t.Fatalf("opaque: %d %v", r.status, r.body)
	}
	// v1.0 authentication/methods lists authenticator apps beside hardware tokens.
	r = h.do("GET", "/v1.0/users/"+collID+"/authentication/methods", nil, false, true)
	if n := len(r.body["value"].([]any)); r.status != 200 || n != 6 {
		t.Fatalf("methods: %d %d %v", r.status, n, r.body)
	}
}

func TestThrottleEachWriteAndEmptyBodies(t *testing.T) {
	h := newHarness(t, Options{WriteRate: -1, ThrottleEachWrite: 2})
	m := map[string]any{"serialNumber": "T1", "manufacturer": "M", "model": "X", "secretKey": secret, "timeIntervalInSeconds": 30}
	for i, want := range []int{429, 429, 201} {
		if r := h.do("POST", devices, m, false, true); r.status != want {
			t.Fatalf("try %d: %d", i+1, r.status)
		}
	}
	req, _ := http.NewRequest("POST", h.r.URL+methods(adaID), nil)
	req.Header.Set("Authorization", "Bearer "+DefaultToken)
	res, err := h.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 || h.r.Server.Stats().EmptyBodies != 1 {
		t.Fatalf("empty body: %d %+v", res.StatusCode, h.r.Server.Stats())
	}
}
