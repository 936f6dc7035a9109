package handlers

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/seedfile"
)

// TestOneUPNRule: the seed file reader and the HTTP API take the same user principal names
// (token.ValidUPN is the one rule; issue 16 found a+b@contoso.com passing one and failing the
// other). Each name goes through a real Entra CSV row and a real PUT of the assignment API.
func TestOneUPNRule(t *testing.T) {
	for _, tc := range []struct {
		upn  string
		want bool // a user principal name both take
	}{
		// '+' is not in Entra's UPN alphabet ("Password policies and account restrictions in
		// Microsoft Entra ID": A–Z a–z 0–9 ' . - _ ! # ^ ~): both refuse it.
		{"a+b@contoso.com", false},
		{"grace.hopper@contoso.com", true},
		{"o'brien@contoso.com", true},
		{"first_last-2@sub.contoso.co.uk", true},
		{"pat_fabrikam.com#EXT#@contoso.onmicrosoft.com", true},
		{"x@contoso", false},
		{"a@" + strings.Repeat("d", 45) + ".com", false}, // 49 characters after the @
		{"grace at contoso", false},
		{"@contoso.com", false},
		{"grace@", false},
		{"a..b@contoso.com", false},
		{".grace@contoso.com", false},
		{"grace@@contoso.com", false},
		{"grace@contoso..com", false},
	} {
		t.Run(tc.upn, func(t *testing.T) {
			file := fileTakesUPN(t, tc.upn)
			api := apiTakesUPN(t, tc.upn)
			if file != api {
				t.Fatalf("the file reader takes %q: %v; the HTTP API: %v", tc.upn, file, api)
			}
			if file != tc.want {
				t.Errorf("both take %q: %v, want %v", tc.upn, file, tc.want)
			}
		})
	}
}

// fileTakesUPN reads one Entra CSV row with upn and reports whether the reader found nothing
// wrong with its upn cell.
func fileTakesUPN(t *testing.T, upn string) bool {
	t.Helper()
	csv := fmt.Sprintf("upn,serial number,secret key,time interval,manufacturer,model\n%s,1000001,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,30,Token2,C202\n", upn)
	var problems []seedfile.Problem
	_, err := seedfile.Read(bytes.NewReader([]byte(csv)), seedfile.Options{}, func(seedfile.Record) error { return nil },
		func(p seedfile.Problem) { problems = append(problems, p) })
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if p.Field != "upn" {
			t.Fatalf("problem with another field than the upn: %+v", p)
		}
	}
	return len(problems) == 0
}

// apiTakesUPN PUTs an assignment to upn and reports whether the API passed it to the pipeline
// (not a 400 invalid-upn).
func apiTakesUPN(t *testing.T, upn string) bool {
	t.Helper()
	fp := &fakePipeline{}
	s, _ := newTestServer(fp, "")
	body := fmt.Sprintf(`{"userPrincipalName":%q}`, upn)
	res := invoke(t, s, FuncTokenAssignment, httpPayload("PUT", assignURL, map[string]string{"serial": "1000001"}, map[string][]string{}, body)).res(t)
	switch res.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusBadRequest:
		return false
	}
	t.Fatalf("PUT %s: %d %s", upn, res.StatusCode, res.Body)
	return false
}
