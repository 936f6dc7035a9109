package handlers

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/seedfile"
)

// docOperations lists, per route and method, the problem codes the handler can answer with.
// TestAssignmentErrors and TestImportStatusErrors drive the handler into them; this test holds
// docs/openapi.yaml to the same list.
var docOperations = map[string]map[string][]problemCode{
	openAPIPath(TokenAssignmentRoute): {
		"get": {codeInvalidSerial, codeNotFound},
		"put": {codeUnknownField, codeInvalidUPN, codeInvalidSerial, codeInvalidCode, codeInvalidRequest, codeNotFound,
			codeGuest, codeDisabled, codeTooManyMethods, codeBadCode, codeAssignedElsewhere, codeConflict, codeBodyTooLarge,
			codeLengthRequired, codeUnsupportedMediaType},
		"delete": {codeInvalidSerial, codeNotFound, codeConflict},
	},
	openAPIPath(ImportStatusRoute): {
		"get": {codeInvalidName, codeInvalidRequest, codeNotFound},
	},
	openAPIPath(PGPKeyRoute): {
		"get": {codeNotFound},
	},
	openAPIPath(TokensRoute): {
		"get": {codeInvalidRequest, codeInvalidUPN, codeNotFound},
	},
	openAPIPath(TokenRoute): {
		"delete": {codeInvalidSerial, codeNotFound, codeConflict},
	},
	openAPIPath(ReconcileLatestRoute): {
		"get": {codeNotFound},
	},
	openAPIPath(UserTokensRoute): {
		"get": {codeInvalidUPN, codeNotFound},
	},
}

// commonCodes can come back from every operation: an undecodable invocation, the role check,
// and upstream failures.
var commonCodes = []problemCode{codeMalformedBody, codeNoPrincipal, codeRoleMissing, codeThrottled,
	codeUpstreamForbidden, codeUpstreamUnavailable, codeInternal}

// openAPI is the part of an OpenAPI 3.1 document this test reads. docs/openapi.yaml is kept as
// JSON-compatible YAML so the standard library parses it.
type openAPI struct {
	OpenAPI string                                `json:"openapi"`
	Servers []struct{ URL string }                `json:"servers"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
	Comps   struct {
		Schemas         map[string]schema          `json:"schemas"`
		SecuritySchemes map[string]json.RawMessage `json:"securitySchemes"`
	} `json:"components"`
}

type schema struct {
	Properties map[string]struct {
		Enum []string `json:"enum"`
	} `json:"properties"`
}

type operation struct {
	OperationID string `json:"operationId"`
	Responses   map[string]struct {
		ProblemCodes []string `json:"x-problem-codes"`
		Headers      map[string]json.RawMessage
	} `json:"responses"`
}

func loadOpenAPI(t *testing.T) openAPI {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPI
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml is not JSON-compatible YAML: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	return doc
}

func TestOpenAPIMatchesHandlers(t *testing.T) {
	doc := loadOpenAPI(t)
	for _, s := range doc.Servers {
		if !strings.HasSuffix(s.URL, "/api") {
			t.Errorf("server %s: the Functions route prefix is /api", s.URL)
		}
	}
	handlerMethods := map[string][]string{openAPIPath(TokenAssignmentRoute): tokenAssignmentMethods, openAPIPath(ImportStatusRoute): importStatusMethods, openAPIPath(PGPKeyRoute): pgpKeyMethods,
		openAPIPath(TokensRoute): tokensMethods, openAPIPath(TokenRoute): tokenMethods, openAPIPath(UserTokensRoute): userTokensMethods,
		openAPIPath(ReconcileLatestRoute): reconcileLatestMethods}
	if got, want := slices.Sorted(maps.Keys(doc.Paths)), slices.Sorted(maps.Keys(handlerMethods)); !slices.Equal(got, want) {
		t.Fatalf("paths %v, handlers serve %v", got, want)
	}
	for path, item := range doc.Paths {
		var methods []string
		for k := range item {
			if k != "parameters" {
				methods = append(methods, k)
			}
		}
		sort.Strings(methods)
		if want := sortedCopy(lower(handlerMethods[path])); !slices.Equal(methods, want) {
			t.Errorf("%s: methods %v, handler allows %v", path, methods, want)
		}
		for _, m := range methods {
			var op operation
			if err := json.Unmarshal(item[m], &op); err != nil {
				t.Fatalf("%s %s: %v", m, path, err)
			}
			want := append(append([]problemCode{}, docOperations[path][m]...), commonCodes...)
			wantStatus := map[string][]string{"200": nil}
			for _, c := range want {
				s := strconv.Itoa(c.Status)
				wantStatus[s] = append(wantStatus[s], c.Code)
			}
			if got, w := slices.Sorted(maps.Keys(op.Responses)), slices.Sorted(maps.Keys(wantStatus)); !slices.Equal(got, w) {
				t.Errorf("%s %s: response statuses %v, want %v", m, path, got, w)
			}
			for status, codes := range wantStatus {
				got := sortedCopy(op.Responses[status].ProblemCodes)
				if w := sortedCopy(codes); !slices.Equal(got, w) {
					t.Errorf("%s %s %s: x-problem-codes %v, want %v", m, path, status, got, w)
				}
			}
			if _, ok := op.Responses["429"].Headers["Retry-After"]; !ok {
				t.Errorf("%s %s: 429 does not document Retry-After", m, path)
			}
		}
	}
	// Every code the handlers know is documented, with its status.
	var all []string
	for _, c := range problemCodes {
		all = append(all, c.Code)
	}
	if got := sortedCopy(doc.Comps.Schemas["Problem"].Properties["code"].Enum); !slices.Equal(got, sortedCopy(all)) {
		t.Errorf("Problem.code enum %v, handlers use %v", got, sortedCopy(all))
	}
	for _, name := range []string{"functionKey", "entraBearer"} {
		if _, ok := doc.Comps.SecuritySchemes[name]; !ok {
			t.Errorf("security scheme %s missing", name)
		}
	}
}

func TestOpenAPISchemasMatchTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	for name, v := range map[string]any{
		"AssignBody":      AssignBody{},
		"Assignment":      pipeline.Assignment{},
		"ImportStatus":    pipeline.ImportStatus{},
		"TokenLine":       pipeline.TokenLine{},
		"FileProblem":     seedfile.Problem{},
		"Problem":         Problem{},
		"InventoryToken":  pipeline.InventoryToken{},
		"TokenImport":     pipeline.TokenImport{},
		"TokenPage":       pipeline.TokenPage{},
		"UserTokens":      pipeline.UserTokens{},
		"Retirement":      pipeline.Retirement{},
		"ReconcileReport": pipeline.ReconcileReport{},
		"Finding":         pipeline.Finding{},
	} {
		s, ok := doc.Comps.Schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			continue
		}
		if got, want := slices.Sorted(maps.Keys(s.Properties)), jsonFields(reflect.TypeOf(v)); !slices.Equal(got, want) {
			t.Errorf("schema %s properties %v, Go type answers %v", name, got, want)
		}
	}
}

// TestAPIDocMentionsEveryCode keeps docs/api.md's anchors (the problem type URIs) in step.
func TestAPIDocMentionsEveryCode(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, c := range problemCodes {
		if !strings.Contains(doc, "\n### "+c.Code+"\n") {
			t.Errorf("docs/api.md has no heading \"### %s\" (the anchor its problem type points at)", c.Code)
		}
		if !strings.Contains(doc, strconv.Itoa(c.Status)) {
			t.Errorf("docs/api.md does not mention status %d", c.Status)
		}
	}
	for _, route := range []string{"/api/tokens/", "/api/imports/", "GET /api/tokens", "GET /api/users/{upn}/tokens", "DELETE /api/tokens/{serial}", "continuation", "seedInVault", "X-MS-CLIENT-PRINCIPAL", "OATHPIPE_REQUIRED_ROLE", "Retry-After", "curl "} {
		if !strings.Contains(doc, route) {
			t.Errorf("docs/api.md does not mention %s", route)
		}
	}
}

// openAPIPath is a Functions route as an OpenAPI path: "/" in front, and a catch-all
// parameter ({*name}) written as a plain one (OpenAPI has none; the docs say it may hold "/").
func openAPIPath(route string) string { return "/" + strings.ReplaceAll(route, "{*", "{") }

func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !t.Field(i).IsExported() {
			continue
		}
		if name == "" {
			name = t.Field(i).Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// sortedCopy returns a sorted copy of list.
func sortedCopy(list []string) []string {
	out := append([]string(nil), list...)
	sort.Strings(out)
	return out
}
