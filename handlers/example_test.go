package handlers

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
)

// The host POSTs each invocation to /<FunctionName>; an HTTP function's caller-facing answer
// is in Outputs.res, and the host itself always gets 200.
func ExampleServer() {
	srv := New(Options{Pipeline: &fakePipeline{}, RequiredRole: "Tokens.Assign"})

	invocation := `{"Data":{"req":{"Method":"PUT","Url":"https://app/api/tokens/1000001/assignment",
		"Params":{"serial":"1000001"},"Headers":{},
		"Body":"{\"userPrincipalName\":\"grace@contoso.com\"}"}},"Metadata":{}}`
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/TokenAssignment", strings.NewReader(invocation)))

	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	fmt.Println(strings.Contains(rec.Body.String(), `"statusCode":403`), strings.Contains(rec.Body.String(), `caller-unauthenticated`))
	// Output:
	// 200 application/json
	// true true
}
