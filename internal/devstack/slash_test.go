package devstack

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSlashesThroughTheFront: a serial and an import name with "/" work end to end through the
// runner's HTTP front, URL-encoded as docs/api.md says (%2F), for GET, PUT and DELETE of the
// token and GET of the import (also with the "/" sent as is: the route is imports/{*name}).
func TestSlashesThroughTheFront(t *testing.T) {
	s := startStack(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	seed := make([]byte, 20)
	_, _ = rand.Read(seed)
	csv := "upn,serial number,secret key,time interval,manufacturer,model\n" +
		"ada.lovelace@contoso.example,SL/1," + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(seed) + ",30,Token2,C202\n"
	const name = "vendor/slash batch.csv"
	if _, err := s.uploadInbox(ctx, name, []byte(csv)); err != nil {
		t.Fatal(err)
	}
	imports, err := s.waitSettled(ctx, []string{name}, 60*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if imports[0].FileName != name || imports[0].Counts["activated"] != 1 {
		t.Fatalf("import %+v", imports[0])
	}
	if status, body, err := s.api(ctx, http.MethodGet, "imports/vendor/slash%20batch.csv?importId="+imports[0].ImportID, nil); err != nil || status != 200 ||
		!strings.Contains(string(body), imports[0].ImportID) {
		t.Errorf("GET imports with a plain /: %d %s %v", status, body, err)
	}
	for _, step := range []struct {
		method string
		body   any
		want   string // the answer's status field
	}{
		{http.MethodGet, nil, "activated"},
		{http.MethodPut, map[string]string{"userPrincipalName": "grace.hopper@contoso.example"}, "activated"},
		{http.MethodDelete, nil, "available"},
	} {
		status, body, err := s.api(ctx, step.method, "tokens/SL%2F1/assignment", step.body)
		var a struct{ SerialNumber, Status string }
		_ = json.Unmarshal(body, &a)
		if err != nil || status != 200 || a.SerialNumber != "SL/1" || a.Status != step.want {
			t.Errorf("%s tokens/SL%%2F1: %d %s %v", step.method, status, body, err)
		}
	}
	if status, body, _ := s.api(ctx, http.MethodPatch, "tokens/SL%2F1/assignment", nil); status != 405 || !strings.Contains(string(body), "method-not-allowed") {
		t.Errorf("PATCH: %d %s (want the handler's 405, not the host's 404)", status, body)
	}
}
