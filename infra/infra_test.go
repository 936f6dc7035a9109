// Package infra holds no Go code, only tests: they read the Bicep templates, the parameters file
// and post-deploy.sh as text and check that they agree with the Go code (shared/config) and with
// functions/*/function.json, so a setting, container, queue, table or role that the app needs and
// infra/ forgot fails `go test` with its name.
package infra

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// binding is the part of a function.json binding that infra/ must provide for.
type binding struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Direction  string `json:"direction"`
	Path       string `json:"path"`
	Source     string `json:"source"`
	Connection string `json:"connection"`
	QueueName  string `json:"queueName"`
	TableName  string `json:"tableName"`
}

// function is one functions/<Name>/function.json.
type function struct {
	Name     string
	Bindings []binding `json:"bindings"`
}

// estate is everything under infra/ that the checks read, plus the functions it must serve.
type estate struct {
	Bicep      []bicepFile
	Params     string // main.parameters.json
	PostDeploy string // post-deploy.sh
	Functions  []function

	parsed []resource // resources(), read once
}

func loadEstate(t *testing.T) *estate {
	t.Helper()
	e := &estate{}
	files, _ := filepath.Glob("*.bicep")
	mods, _ := filepath.Glob("modules/*.bicep")
	for _, p := range append(files, mods...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		e.Bicep = append(e.Bicep, newBicepFile(filepath.ToSlash(p), string(b)))
	}
	if len(e.Bicep) == 0 {
		t.Fatal("no infra/*.bicep found")
	}
	for name, dst := range map[string]*string{"main.parameters.json": &e.Params, "post-deploy.sh": &e.PostDeploy} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		*dst = string(b)
	}
	fns, _ := filepath.Glob("../functions/*/function.json")
	if len(fns) == 0 {
		t.Fatal("no functions/*/function.json found: infra/ cannot be checked against the functions")
	}
	for _, p := range fns {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f := function{Name: filepath.Base(filepath.Dir(p))}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		e.Functions = append(e.Functions, f)
	}
	return e
}

// clone returns a deep enough copy for a test to change one file.
func (e *estate) clone() *estate {
	c := *e
	c.Bicep = slices.Clone(e.Bicep)
	c.Functions = slices.Clone(e.Functions)
	c.parsed = nil
	return &c
}

func (e *estate) resources() []resource {
	if e.parsed == nil {
		for _, f := range e.Bicep {
			e.parsed = append(e.parsed, f.resources()...)
		}
	}
	return e.parsed
}

func (e *estate) file(path string) (bicepFile, bool) {
	for _, f := range e.Bicep {
		if f.Path == path {
			return f, true
		}
	}
	return bicepFile{}, false
}

// ofType lists the resources of one type that this deployment creates (not `existing` ones).
func (e *estate) ofType(typ string) []resource {
	var out []resource
	for _, r := range e.resources() {
		if strings.EqualFold(r.Type, typ) && !r.Existing {
			out = append(out, r)
		}
	}
	return out
}

// problems runs every check and returns what is wrong, one line each, naming the thing.
func (e *estate) problems(settings []config.Setting) []string {
	var p []string
	for _, check := range []func() []string{
		func() []string { return e.checkSettings(settings) },
		e.checkStorage,
		e.checkRoles,
		e.checkKeyVault,
		e.checkMonitoring,
		e.checkFunctionApp,
		e.checkEventGrid,
		e.checkImportTrigger,
		e.checkNames,
		e.checkPostDeploy,
		e.checkNoSecrets,
		e.checkWiring,
	} {
		p = append(p, check()...)
	}
	return p
}

// hostProvided are settings the Functions host sets itself; setting them in infra/ is wrong.
var hostProvided = map[string]bool{"FUNCTIONS_CUSTOMHANDLER_PORT": true}

// flexForbidden are settings Flex Consumption rejects or ignores, or that would put a key in
// the app's configuration.
var flexForbidden = []string{
	"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
	"WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "AzureWebJobsStorage",
	"APPINSIGHTS_INSTRUMENTATIONKEY", "FUNCTIONS_CUSTOMHANDLER_PORT",
	// Flex Consumption's list of settings it no longer uses (flex-consumption-plan.md,
	// "Deprecated properties and settings").
	"FUNCTIONS_WORKER_RUNTIME_VERSION", "WEBSITE_NODE_DEFAULT_VERSION", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
	"WEBSITE_SKIP_CONTENTSHARE_VALIDATION", "WEBSITE_CONTENTOVERVNET", "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
}

// flexRejectedSiteConfig are siteConfig properties ARM refuses on a Flex Consumption site with
// error 51021 (Azure/azure-cli#31414 quotes the first five; linuxFxVersion:
// Azure/terraform-azurerm-avm-res-web-site#283; functionAppScaleLimit: Azure/azure-functions-host#10643).
var flexRejectedSiteConfig = []string{
	"ftpsState", "use32BitWorkerProcess", "netFrameworkVersion", "preWarmedInstanceCount",
	"functionsRuntimeScaleMonitoringEnabled", "linuxFxVersion", "functionAppScaleLimit",
}

// Names fixed by the brief's decisions (1 and 2) that shared/config does not name (yet).
const (
	importQueue               = "seed-imports"           // Event Grid delivers BlobCreated here; ImportSeeds reads it
	eventsDeadLetterContainer = "seed-events-deadletter" // events Event Grid could not deliver
	parkedContainer           = "token-parked"           // ProvisionFailed parks what it cannot record
	inboxSubjectPrefix        = "/blobServices/default/containers/" + pipeline.InboxContainer + "/"
)

// appSettings finds the function app's settings object: the `properties` of the
// Microsoft.Web/sites/config resource named 'appsettings', written inline or as a variable.
func (e *estate) appSettings() (map[string]string, string, error) {
	for _, r := range e.ofType("Microsoft.Web/sites/config") {
		n, _ := lookup(r.Body, "name")
		if name, _ := literal(n); name != "appsettings" {
			continue
		}
		v, ok := lookup(r.Body, "properties")
		if !ok {
			return nil, r.File, fmt.Errorf("%s has no properties", r)
		}
		v = strings.TrimSpace(v)
		if regexp.MustCompile(`^\w+$`).MatchString(v) {
			f, _ := e.file(r.File)
			if v, ok = f.variable(v); !ok {
				return nil, r.File, fmt.Errorf("%s: properties refers to an unknown variable", r)
			}
		}
		if !strings.HasPrefix(v, "{") {
			return nil, r.File, fmt.Errorf("%s: properties must be an object literal (or a variable holding one) for the tests to read it", r)
		}
		out := map[string]string{}
		for _, en := range entries(v[1 : len(v)-1]) {
			out[en.Key] = en.Value
		}
		return out, r.File, nil
	}
	return nil, "infra/", fmt.Errorf("no Microsoft.Web/sites/config resource named 'appsettings': the function app's settings are not set")
}

func (e *estate) checkSettings(settings []config.Setting) []string {
	app, file, err := e.appSettings()
	if err != nil {
		return []string{err.Error()}
	}
	var p []string
	known := map[string]bool{}
	for _, s := range settings {
		known[s.Name] = true
		_, set := app[s.Name]
		switch {
		case s.DevOnly && set:
			p = append(p, fmt.Sprintf("setting %s is development-only (config.Settings DevOnly) but %s sets it on the function app", s.Name, file))
		case s.Name == config.StorageConnection && set:
			p = append(p, fmt.Sprintf("setting %s is a storage connection string; in Azure use the identity-based %s__* settings (%s)", s.Name, s.Name, file))
		case hostProvided[s.Name] || s.DevOnly || s.Name == config.StorageConnection:
		case !set:
			req := ""
			if s.Required {
				req = " (required)"
			}
			p = append(p, fmt.Sprintf("setting %s%s from config.Settings is not set on the function app in %s", s.Name, req, file))
		}
	}
	// An OATHPIPE_ setting the code does not read is a typo or a leftover.
	for name := range app {
		if strings.HasPrefix(name, "OATHPIPE_") && !known[name] {
			p = append(p, fmt.Sprintf("setting %s in %s is not read by the code (not in config.Settings)", name, file))
		}
	}
	for _, name := range flexForbidden {
		if _, set := app[name]; set {
			p = append(p, fmt.Sprintf("setting %s must not be set on a Flex Consumption app that uses identity-based storage (%s)", name, file))
		}
	}
	// Every storage connection the host or a function uses must be identity-based.
	conns := map[string]bool{"AzureWebJobsStorage": true, config.StorageConnection: true}
	for _, f := range e.Functions {
		for _, b := range f.Bindings {
			if b.Connection != "" {
				conns[b.Connection] = true
			}
		}
	}
	for _, c := range slices.Sorted(maps.Keys(conns)) {
		if _, set := app[c]; set && c != "AzureWebJobsStorage" && c != config.StorageConnection {
			p = append(p, fmt.Sprintf("connection %s is set as a connection string in %s; use %s__* with the managed identity", c, file, c))
		}
		for _, suffix := range []string{"__blobServiceUri", "__queueServiceUri", "__tableServiceUri", "__credential", "__clientId"} {
			if _, set := app[c+suffix]; !set {
				p = append(p, fmt.Sprintf("setting %s%s (identity-based connection %s) is not set on the function app in %s", c, suffix, c, file))
			}
		}
		if v, ok := literal(app[c+"__credential"]); ok && v != "managedidentity" {
			p = append(p, fmt.Sprintf("setting %s__credential is %q, want 'managedidentity' (%s)", c, v, file))
		}
	}
	return p
}

// neededStorage lists the containers, queues and tables the code and the functions use, each
// with where the need comes from.
func (e *estate) neededStorage() (containers, queues, tables map[string]string) {
	containers = map[string]string{
		pipeline.InboxContainer:    "pipeline.InboxContainer",
		pipeline.ReportsContainer:  "pipeline.ReportsContainer",
		pipeline.RejectedContainer: "pipeline.RejectedContainer",
		eventsDeadLetterContainer:  "decision 1 (Event Grid dead-letter)",
		parkedContainer:            "decision 2 (ProvisionFailed parks messages)",
	}
	queues = map[string]string{
		pipeline.ProvisionQueue: "pipeline.ProvisionQueue",
		pipeline.PoisonQueue:    "pipeline.PoisonQueue",
		importQueue:             "decision 1 (ImportSeeds queue trigger)",
		importQueue + "-poison": "decision 1 (the host's poison queue for seed-imports)",
	}
	tables = map[string]string{
		pipeline.LedgerTable: "pipeline.LedgerTable",
		pipeline.AuditTable:  "pipeline.AuditTable",
	}
	for _, f := range e.Functions {
		for _, b := range f.Bindings {
			from := fmt.Sprintf("functions/%s/function.json", f.Name)
			switch {
			case strings.HasPrefix(b.Type, "blob") && b.Path != "":
				containers[strings.SplitN(b.Path, "/", 2)[0]] = from
			case strings.HasPrefix(b.Type, "queue") && b.QueueName != "":
				queues[b.QueueName] = from
				if b.Type == "queueTrigger" && !strings.HasSuffix(b.QueueName, "-poison") {
					queues[b.QueueName+"-poison"] = from + " (its poison queue)"
				}
			case strings.HasPrefix(b.Type, "table") && b.TableName != "":
				tables[b.TableName] = from
			}
		}
	}
	return containers, queues, tables
}

func (e *estate) createdNames(typ string) map[string]bool {
	out := map[string]bool{}
	for _, r := range e.ofType(typ) {
		v, _ := lookup(r.Body, "name")
		if n, ok := literal(v); ok {
			out[n] = true
		}
	}
	return out
}

func (e *estate) checkStorage() []string {
	var p []string
	containers, queues, tables := e.neededStorage()
	for _, kind := range []struct {
		what, typ string
		need      map[string]string
	}{
		{"container", "Microsoft.Storage/storageAccounts/blobServices/containers", containers},
		{"queue", "Microsoft.Storage/storageAccounts/queueServices/queues", queues},
		{"table", "Microsoft.Storage/storageAccounts/tableServices/tables", tables},
	} {
		have := e.createdNames(kind.typ)
		for _, name := range slices.Sorted(maps.Keys(kind.need)) {
			if !have[name] {
				p = append(p, fmt.Sprintf("%s %s (needed by %s) is not created in infra/ (a %s resource with name: '%s')", kind.what, name, kind.need[name], kind.typ, name))
			}
		}
	}

	accounts := e.ofType("Microsoft.Storage/storageAccounts")
	if len(accounts) != 1 {
		return append(p, fmt.Sprintf("want exactly one storage account in infra/, found %d", len(accounts)))
	}
	a := accounts[0]
	p = append(p, want(a, "kind", "'StorageV2'")...)
	p = append(p, want(a, "properties.allowSharedKeyAccess", "false")...)
	p = append(p, want(a, "properties.minimumTlsVersion", "'TLS1_2'")...)
	p = append(p, want(a, "properties.supportsHttpsTrafficOnly", "true")...)
	p = append(p, want(a, "properties.allowBlobPublicAccess", "false")...)
	for _, b := range e.ofType("Microsoft.Storage/storageAccounts/blobServices") {
		p = append(p, want(b, "properties.deleteRetentionPolicy.enabled", "true")...)
	}
	if len(e.ofType("Microsoft.Storage/storageAccounts/blobServices")) == 0 {
		p = append(p, "no blobServices resource: blob soft delete is not configured")
	}

	// Lifecycle: each container that can hold seeds (the inbox and rejected files) and the
	// reports must be covered by a delete rule.
	policies := e.ofType("Microsoft.Storage/storageAccounts/managementPolicies")
	covered := ""
	for _, r := range policies {
		covered += r.Body
	}
	for _, c := range []string{pipeline.InboxContainer, pipeline.RejectedContainer, pipeline.ReportsContainer} {
		sym := ""
		for _, r := range e.ofType("Microsoft.Storage/storageAccounts/blobServices/containers") {
			if v, _ := lookup(r.Body, "name"); v == "'"+c+"'" {
				sym = r.Symbol
			}
		}
		if !strings.Contains(covered, "'"+c+"/'") && (sym == "" || !strings.Contains(covered, "${"+sym+".name}/")) {
			p = append(p, fmt.Sprintf("container %s has no lifecycle delete rule (managementPolicies prefixMatch)", c))
		}
	}
	if !strings.Contains(covered, "daysAfterModificationGreaterThan") {
		p = append(p, "the lifecycle policy deletes nothing (no daysAfterModificationGreaterThan)")
	}
	// Decision 3: seed-rejected is deleted after rejectedRetentionDays (default 30).
	if days, ok := e.lifecycleDays(pipeline.RejectedContainer); !ok || days != "rejectedRetentionDays" {
		p = append(p, fmt.Sprintf("the lifecycle rule for %s deletes after %q, want the parameter rejectedRetentionDays (decision 3)", pipeline.RejectedContainer, days))
	}
	if main, ok := e.file("main.bicep"); ok && !regexp.MustCompile(`(?m)^param rejectedRetentionDays int = 30\s*$`).MatchString(main.Stripped) {
		p = append(p, "main.bicep: want `param rejectedRetentionDays int = 30` (decision 3)")
	}
	for _, r := range e.ofType("Microsoft.Storage/storageAccounts/blobServices/containers") {
		p = append(p, want(r, "properties.publicAccess", "'None'")...)
	}
	return p
}

// lifecycleDays returns the daysAfterModificationGreaterThan expression of the lifecycle rule
// whose prefixMatch covers container.
func (e *estate) lifecycleDays(container string) (string, bool) {
	for _, r := range e.ofType("Microsoft.Storage/storageAccounts/managementPolicies") {
		rules, _ := lookup(r.Body, "properties.policy.rules")
		for _, rule := range elements(rules) {
			body := strings.TrimSpace(rule)
			if !strings.HasPrefix(body, "{") {
				continue
			}
			body = body[1 : len(body)-1]
			prefixes, _ := lookup(body, "definition.filters.prefixMatch")
			for _, pm := range elements(prefixes) {
				if v, ok := e.expand(r.File, pm); ok && v == container+"/" {
					d, ok := lookup(body, "definition.actions.baseBlob.delete.daysAfterModificationGreaterThan")
					return strings.TrimSpace(d), ok
				}
			}
		}
	}
	return "", false
}

// expand evaluates a string literal in file, replacing each ${sym.name} with the literal name of
// the resource sym declared there.
func (e *estate) expand(file, v string) (string, bool) {
	v = strings.TrimSpace(v)
	if s, ok := literal(v); ok {
		return s, true
	}
	if len(v) < 2 || v[0] != '\'' || skipString(v, 0) != len(v) {
		return "", false
	}
	ok := true
	out := regexp.MustCompile(`\$\{(\w+)\.name\}`).ReplaceAllStringFunc(v[1:len(v)-1], func(m string) string {
		sym := m[2 : len(m)-len(".name}")]
		for _, r := range e.resources() {
			if r.File == file && r.Symbol == sym {
				n, _ := lookup(r.Body, "name")
				if name, lit := literal(n); lit {
					return name
				}
			}
		}
		ok = false
		return m
	})
	if strings.Contains(out, "${") {
		return "", false
	}
	return out, ok
}

// want reports a problem unless the value at path in r is exactly v.
func want(r resource, path, v string) []string {
	got, ok := lookup(r.Body, path)
	if !ok {
		return []string{fmt.Sprintf("%s: %s is not set, want %s", r, path, v)}
	}
	if strings.TrimSpace(got) != v {
		return []string{fmt.Sprintf("%s: %s is %s, want %s", r, path, got, v)}
	}
	return nil
}

// neededRole is an Azure role the app's identity (Principal "app") or the Event Grid system
// topic's identity (Principal "topic") must hold, with its id (a built-in role's GUID, or
// "custom" for the Key Vault role infra/ defines) and the kind of resource it must be scoped to,
// no broader (ScopeName, when set, is the one resource of that kind).
type neededRole struct {
	Name, ID, Scope, ScopeName, Principal string
}

var neededRoles = []neededRole{
	{"Storage Blob Data Owner", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "Microsoft.Storage/storageAccounts", "", "app"},
	{"Storage Queue Data Contributor", "974c5e8b-45b9-4653-ba55-5f855dd0fb88", "Microsoft.Storage/storageAccounts", "", "app"},
	{"Storage Table Data Contributor", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "Microsoft.Storage/storageAccounts", "", "app"},
	{"oathpipe secrets", "custom", "Microsoft.KeyVault/vaults", "", "app"},
	{"Monitoring Metrics Publisher", "3913510d-42f4-4e42-8a64-420c390055eb", "Microsoft.Insights/components", "", "app"},
	// Event Grid delivery and dead-lettering with the topic's identity (event-grid/add-identity-roles.md).
	{"Storage Queue Data Message Sender", "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a", "Microsoft.Storage/storageAccounts", "", "topic"},
	{"Storage Blob Data Contributor", "ba92f5b4-2d11-453d-a403-e96b0029c9fe", "Microsoft.Storage/storageAccounts/blobServices/containers", eventsDeadLetterContainer, "topic"},
}

// keyVaultDataActions are exactly the data actions the app's custom Key Vault role holds
// (brief decision 4: get, set, list versions, recover). Anything more is a problem.
var keyVaultDataActions = []string{
	"Microsoft.KeyVault/vaults/secrets/getSecret/action",
	"Microsoft.KeyVault/vaults/secrets/setSecret/action",
	"Microsoft.KeyVault/vaults/secrets/readMetadata/action",
	"Microsoft.KeyVault/vaults/secrets/recover/action",
	"Microsoft.KeyVault/vaults/secrets/delete", // retire soft-deletes a token's seed (issue 17)
}

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// roleID resolves a roleAssignment's role definition to a GUID (a literal, or var.member), or
// to "custom" when it is the id of a roleDefinitions resource in the same file (returned too).
func (e *estate) roleID(r resource) (string, *resource, error) {
	v, ok := lookup(r.Body, "properties.roleDefinitionId")
	if !ok {
		return "", nil, fmt.Errorf("%s has no properties.roleDefinitionId", r)
	}
	v = strings.TrimSpace(v)
	if m := regexp.MustCompile(`^(\w+)\.id$`).FindStringSubmatch(v); m != nil {
		for _, d := range e.ofType("Microsoft.Authorization/roleDefinitions") {
			if d.File == r.File && d.Symbol == m[1] {
				return "custom", &d, nil
			}
		}
		return "", nil, fmt.Errorf("%s: roleDefinitionId %s is not a role definition declared in %s", r, v, r.File)
	}
	m := regexp.MustCompile(`roleDefinitions'\s*,\s*(.+?)\s*\)$`).FindStringSubmatch(v)
	if m == nil {
		return "", nil, fmt.Errorf("%s: roleDefinitionId %s: want subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <id>) or <customRole>.id", r, v)
	}
	arg := m[1]
	if s, ok := literal(arg); ok {
		return s, nil, nil
	}
	if parts := strings.Split(arg, "."); len(parts) == 2 {
		f, _ := e.file(r.File)
		if obj, ok := f.variable(parts[0]); ok && strings.HasPrefix(obj, "{") {
			for _, en := range entries(obj[1 : len(obj)-1]) {
				if en.Key == parts[1] {
					if s, ok := literal(en.Value); ok {
						return s, nil, nil
					}
				}
			}
		}
	}
	return "", nil, fmt.Errorf("%s: cannot resolve role id %s to a literal GUID", r, arg)
}

// principalOf names whose identity a role assignment is for: "app" (the principalId parameter,
// the app's user-assigned identity) or "topic" (an Event Grid system topic's own identity).
func (e *estate) principalOf(r resource) string {
	v, _ := lookup(r.Body, "properties.principalId")
	v = strings.TrimSpace(v)
	if v == "principalId" {
		return "app"
	}
	if m := regexp.MustCompile(`^(\w+)\.identity\.principalId$`).FindStringSubmatch(v); m != nil {
		for _, t := range e.ofType("Microsoft.EventGrid/systemTopics") {
			if t.File == r.File && t.Symbol == m[1] {
				return "topic"
			}
		}
	}
	return v
}

func (e *estate) checkRoles() []string {
	var p []string
	granted := map[string]bool{}
	for _, r := range e.ofType("Microsoft.Authorization/roleAssignments") {
		id, def, err := e.roleID(r)
		if err != nil {
			p = append(p, err.Error())
			continue
		}
		if id != "custom" && !guidRE.MatchString(id) {
			p = append(p, fmt.Sprintf("%s: role id %q is not a GUID", r, id))
			continue
		}
		principal := e.principalOf(r)
		var need neededRole
		found := false
		for _, n := range neededRoles {
			if strings.EqualFold(n.ID, id) && n.Principal == principal {
				need, found = n, true
			}
		}
		if !found {
			p = append(p, fmt.Sprintf("%s grants role %s to %s, which is not one of the roles it needs (%s)", r, id, principal, roleNames()))
			continue
		}
		granted[need.Name] = true
		if def != nil {
			p = append(p, e.checkCustomRole(*def)...)
		}
		if r.Comment == "" {
			p = append(p, fmt.Sprintf("%s (%s) has no comment above it saying why it is needed", r, need.Name))
		}
		p = append(p, want(r, "properties.principalType", "'ServicePrincipal'")...)
		if n, _ := lookup(r.Body, "name"); !strings.HasPrefix(strings.TrimSpace(n), "guid(") {
			p = append(p, fmt.Sprintf("%s: name should be guid(scope.id, principalId, roleId) so redeploys are idempotent", r))
		}
		scope, ok := lookup(r.Body, "scope")
		if !ok {
			p = append(p, fmt.Sprintf("%s (%s) has no scope: it would apply to the whole resource group; scope it to the %s", r, need.Name, need.Scope))
			continue
		}
		var scoped resource
		for _, s := range e.resources() {
			if s.File == r.File && s.Symbol == strings.TrimSpace(scope) {
				scoped = s
			}
		}
		if !strings.EqualFold(scoped.Type, need.Scope) {
			p = append(p, fmt.Sprintf("%s (%s) is scoped to %s (%s), want a %s", r, need.Name, scope, scoped.Type, need.Scope))
		} else if need.ScopeName != "" {
			if n, _ := lookup(scoped.Body, "name"); n != "'"+need.ScopeName+"'" {
				p = append(p, fmt.Sprintf("%s (%s) is scoped to %s (name %s), want the %s %s only", r, need.Name, scope, n, need.Scope, need.ScopeName))
			}
		}
	}
	for _, n := range neededRoles {
		if !granted[n.Name] {
			p = append(p, fmt.Sprintf("role %s (%s) is not granted to the %s identity in infra/", n.Name, n.ID, n.Principal))
		}
	}
	return p
}

// checkCustomRole holds the Key Vault role to exactly keyVaultDataActions, no control-plane
// action, a name unique per vault (custom role names are unique per tenant) and the narrowest
// assignable scope ARM allows (a resource group).
func (e *estate) checkCustomRole(d resource) []string {
	var p []string
	p = append(p, want(d, "properties.type", "'CustomRole'")...)
	if n, _ := lookup(d.Body, "properties.roleName"); !strings.Contains(n, "${") {
		p = append(p, fmt.Sprintf("%s: roleName %s is the same in every deployment; custom role names are unique per tenant, so put the vault's name in it", d, n))
	}
	perms, _ := lookup(d.Body, "properties.permissions")
	els := elements(perms)
	if len(els) != 1 {
		return append(p, fmt.Sprintf("%s: want one permissions entry, found %d", d, len(els)))
	}
	body := strings.TrimSpace(els[0])
	body = body[1 : len(body)-1]
	var got []string
	da, _ := lookup(body, "dataActions")
	for _, a := range elements(da) {
		s, _ := literal(a)
		got = append(got, s)
	}
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(keyVaultDataActions))) {
		p = append(p, fmt.Sprintf("%s: dataActions are %v, want exactly %v (get, set, list versions, recover, delete; no purge, backup, restore or wildcard)", d, got, keyVaultDataActions))
	}
	for _, k := range []string{"actions", "notActions", "notDataActions"} {
		if v, ok := lookup(body, k); ok && len(elements(v)) > 0 {
			p = append(p, fmt.Sprintf("%s: %s must be empty, got %s", d, k, strings.Join(strings.Fields(v), " ")))
		}
	}
	scopes, _ := lookup(d.Body, "properties.assignableScopes")
	if el := elements(scopes); len(el) != 1 || el[0] != "resourceGroup().id" {
		p = append(p, fmt.Sprintf("%s: assignableScopes %s, want [resourceGroup().id] (the narrowest ARM allows)", d, strings.Join(strings.Fields(scopes), " ")))
	}
	return p
}

func roleNames() string {
	var s []string
	for _, n := range neededRoles {
		s = append(s, n.Name+" ("+n.Principal+")")
	}
	return strings.Join(s, ", ")
}

func (e *estate) checkKeyVault() []string {
	vaults := e.ofType("Microsoft.KeyVault/vaults")
	if len(vaults) != 1 {
		return []string{fmt.Sprintf("want exactly one Key Vault in infra/, found %d", len(vaults))}
	}
	v := vaults[0]
	var p []string
	p = append(p, want(v, "properties.enableRbacAuthorization", "true")...)
	p = append(p, want(v, "properties.enableSoftDelete", "true")...)
	p = append(p, want(v, "properties.enablePurgeProtection", "true")...)
	if got, ok := lookup(v.Body, "properties.publicNetworkAccess"); !ok || strings.HasPrefix(strings.TrimSpace(got), "'") {
		p = append(p, fmt.Sprintf("%s: properties.publicNetworkAccess should come from a parameter, got %q", v, got))
	}
	if _, ok := lookup(v.Body, "properties.accessPolicies"); ok {
		p = append(p, fmt.Sprintf("%s: access policies are set; the vault uses Azure RBAC only", v))
	}
	// Issue 14.6: a redeploy into a re-created group must be able to recover the soft-deleted vault.
	if got, ok := lookup(v.Body, "properties.createMode"); !ok || strings.HasPrefix(strings.TrimSpace(got), "'") {
		p = append(p, fmt.Sprintf("%s: properties.createMode should come from the keyVaultCreateMode parameter, got %q", v, got))
	}
	if main, ok := e.file("main.bicep"); ok {
		d := main.decorators("keyVaultCreateMode")
		if !strings.Contains(d.allowed, "'recover'") || !regexp.MustCompile(`(?m)^param keyVaultCreateMode string = 'default'\s*$`).MatchString(main.Stripped) {
			p = append(p, "main.bicep: want `param keyVaultCreateMode string = 'default'` allowing 'default' and 'recover'")
		}
	}
	return p
}

// paramDecorators are the decorators written above one parameter.
type paramDecorators struct {
	minValue, maxValue, minLength, maxLength int // -1 when absent
	allowed                                  string
}

// decorators reads the @minValue/@maxValue/@minLength/@maxLength/@allowed decorators of param.
func (f bicepFile) decorators(param string) paramDecorators {
	d := paramDecorators{-1, -1, -1, -1, ""}
	loc := regexp.MustCompile(`(?m)^param[ \t]+` + regexp.QuoteMeta(param) + `\b`).FindStringIndex(f.Stripped)
	if loc == nil {
		return d
	}
	lines := strings.Split(f.Stripped[:loc[0]], "\n")
	block := ""
	for i := len(lines) - 2; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "param ") || strings.HasPrefix(l, "var ") || strings.HasPrefix(l, "resource ") {
			break
		}
		block = lines[i] + "\n" + block
	}
	num := func(name string) int {
		m := regexp.MustCompile(`@` + name + `\((-?\d+)\)`).FindStringSubmatch(block)
		if m == nil {
			return -1
		}
		var n int
		fmt.Sscan(m[1], &n)
		return n
	}
	d.minValue, d.maxValue, d.minLength, d.maxLength = num("minValue"), num("maxValue"), num("minLength"), num("maxLength")
	if i := strings.Index(block, "@allowed("); i >= 0 {
		d.allowed = block[i:]
	}
	return d
}

func (e *estate) checkMonitoring() []string {
	var p []string
	comps := e.ofType("Microsoft.Insights/components")
	ws := e.ofType("Microsoft.OperationalInsights/workspaces")
	if len(comps) != 1 || len(ws) != 1 {
		return []string{fmt.Sprintf("want one Application Insights component and one Log Analytics workspace, found %d and %d", len(comps), len(ws))}
	}
	p = append(p, want(comps[0], "properties.DisableLocalAuth", "true")...)
	p = append(p, want(ws[0], "properties.features.disableLocalAuth", "true")...)
	if _, ok := lookup(comps[0].Body, "properties.WorkspaceResourceId"); !ok {
		p = append(p, fmt.Sprintf("%s: not workspace-based (no WorkspaceResourceId)", comps[0]))
	}
	return p
}

func (e *estate) checkFunctionApp() []string {
	var p []string
	plans := e.ofType("Microsoft.Web/serverfarms")
	sites := e.ofType("Microsoft.Web/sites")
	if len(plans) != 1 || len(sites) != 1 {
		return []string{fmt.Sprintf("want one plan and one function app, found %d and %d", len(plans), len(sites))}
	}
	p = append(p, want(plans[0], "sku.tier", "'FlexConsumption'")...)
	p = append(p, want(plans[0], "sku.name", "'FC1'")...)
	p = append(p, want(plans[0], "properties.reserved", "true")...)
	s := sites[0]
	p = append(p, want(s, "kind", "'functionapp,linux'")...)
	p = append(p, want(s, "identity.type", "'UserAssigned'")...)
	p = append(p, want(s, "properties.httpsOnly", "true")...)
	p = append(p, want(s, "properties.functionAppConfig.runtime.name", "'custom'")...)
	p = append(p, want(s, "properties.functionAppConfig.deployment.storage.authentication.type", "'UserAssignedIdentity'")...)
	// Issue 14.1: ARM 51021 for these on a Flex Consumption site.
	if sc, ok := lookup(s.Body, "properties.siteConfig"); ok && strings.HasPrefix(strings.TrimSpace(sc), "{") {
		sc = strings.TrimSpace(sc)
		for _, en := range entries(sc[1 : len(sc)-1]) {
			if slices.Contains(flexRejectedSiteConfig, en.Key) {
				p = append(p, fmt.Sprintf("%s: siteConfig.%s is rejected on Flex Consumption sites (ARM 51021); remove it", s, en.Key))
			}
		}
	}
	if n := len(e.ofType("Microsoft.ManagedIdentity/userAssignedIdentities")); n != 1 {
		p = append(p, fmt.Sprintf("want exactly one user-assigned identity (the app's only identity), found %d", n))
	}
	// The app's resources use the user-assigned identity only; a system-assigned identity is
	// right only for the Event Grid topic (its delivery identity).
	for _, r := range e.resources() {
		if strings.HasPrefix(r.Type, "Microsoft.EventGrid/") {
			continue
		}
		if strings.Contains(r.Body, "SystemAssigned") {
			p = append(p, fmt.Sprintf("%s mentions SystemAssigned: the user-assigned identity is the only one the app uses", r))
		}
	}
	// Issue 14.5: Flex's lowest maximum is 40.
	if main, ok := e.file("main.bicep"); ok {
		d := main.decorators("maximumInstanceCount")
		if d.minValue < 40 || d.maxValue > 1000 || d.maxValue < 40 {
			p = append(p, fmt.Sprintf("main.bicep: maximumInstanceCount allows %d to %d, want @minValue(40) @maxValue(1000) (Flex Consumption's range)", d.minValue, d.maxValue))
		}
	}
	return append(p, e.checkAuth()...)
}

// checkAuth (issue 14.8): OATHPIPE_REQUIRED_ROLE trusts X-MS-CLIENT-PRINCIPAL, which only App
// Service authentication makes trustworthy; so authsettingsV2 is deployed exactly when the role
// is set, lets unauthenticated requests through (the function key guards the routes), and the
// deployment refuses a role without the app registration's client id.
func (e *estate) checkAuth() []string {
	app, file, err := e.appSettings()
	if err != nil {
		return nil // checkSettings reports it
	}
	role := strings.TrimSpace(app["OATHPIPE_REQUIRED_ROLE"])
	if role == "" || role == "''" {
		return nil
	}
	var auth *resource
	for _, r := range e.ofType("Microsoft.Web/sites/config") {
		if n, _ := lookup(r.Body, "name"); n == "'authsettingsV2'" {
			auth = &r
		}
	}
	if auth == nil {
		return []string{fmt.Sprintf("%s sets OATHPIPE_REQUIRED_ROLE but deploys no authsettingsV2: without App Service authentication a caller can forge X-MS-CLIENT-PRINCIPAL", file)}
	}
	var p []string
	if !strings.Contains(strings.ReplaceAll(auth.Cond, " ", ""), "!empty("+role+")") {
		p = append(p, fmt.Sprintf("%s: deploy it exactly when %s is set: `= if (!empty(%s))`, got condition %q", auth, role, role, auth.Cond))
	}
	p = append(p, want(*auth, "properties.platform.enabled", "true")...)
	p = append(p, want(*auth, "properties.identityProviders.azureActiveDirectory.enabled", "true")...)
	p = append(p, want(*auth, "properties.identityProviders.azureActiveDirectory.registration.clientId", "authClientId")...)
	p = append(p, want(*auth, "properties.globalValidation.unauthenticatedClientAction", "'AllowAnonymous'")...)
	p = append(p, want(*auth, "properties.globalValidation.requireAuthentication", "false")...)
	if main, ok := e.file("main.bicep"); ok {
		passed := ""
		for _, m := range moduleDecl.FindAllStringSubmatchIndex(main.Stripped, -1) {
			if main.Stripped[m[4]:m[5]] == "modules/functionapp.bicep" {
				body := main.Stripped[m[1] : skipBalanced(main.Stripped, m[1]-1)-1]
				passed, _ = lookup(body, "params.authClientId")
			}
		}
		guard, _ := main.variable(strings.TrimSpace(passed))
		if !strings.Contains(guard, "fail(") || !strings.Contains(guard, "requiredRole") {
			p = append(p, fmt.Sprintf("main.bicep passes authClientId: %s to the function app; pass a variable that fail()s when requiredRole is set and authClientId is empty", passed))
		}
	}
	return p
}

// checkNames (issue 14.7): namePrefix goes into every resource name only through a variable
// that fail()s unless it is lower-case letters and digits, and with the prefix's length limits
// the storage and vault names built in `names` are legal for every allowed length.
func (e *estate) checkNames() []string {
	main, ok := e.file("main.bicep")
	if !ok {
		return nil
	}
	var p []string
	alphabet, _ := main.variable("prefixAlphabet")
	if a, _ := literal(alphabet); a != "abcdefghijklmnopqrstuvwxyz0123456789" {
		p = append(p, fmt.Sprintf("main.bicep: prefixAlphabet is %s, want 'abcdefghijklmnopqrstuvwxyz0123456789' (storage names allow nothing else)", alphabet))
	}
	guard, _ := main.variable("prefix")
	if !strings.Contains(guard, "fail(") || !strings.Contains(guard, "prefixBadChars") {
		p = append(p, fmt.Sprintf("main.bicep: var prefix = %s; want namePrefix checked against prefixAlphabet with fail()", guard))
	}
	bad, _ := main.variable("prefixBadChars")
	if !strings.Contains(bad, "prefixAlphabet") || !strings.Contains(bad, "namePrefix") {
		p = append(p, fmt.Sprintf("main.bicep: var prefixBadChars = %s does not check every character of namePrefix against prefixAlphabet", bad))
	}
	names, _ := main.variable("names")
	if strings.Contains(names, "namePrefix") {
		p = append(p, "main.bicep: `names` uses namePrefix directly; use the checked `prefix`")
	}
	if tok, _ := main.variable("token"); !strings.Contains(tok, "prefix") {
		p = append(p, "main.bicep: var token does not hash the prefix")
	}
	d := main.decorators("namePrefix")
	if d.minLength < 1 || d.maxLength < d.minLength {
		return append(p, fmt.Sprintf("main.bicep: namePrefix needs @minLength and @maxLength, got %d and %d", d.minLength, d.maxLength))
	}
	rules := map[string]*regexp.Regexp{
		"storage":  regexp.MustCompile(`^[a-z0-9]{3,24}$`),
		"keyVault": regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$`),
	}
	if !strings.HasPrefix(names, "{") {
		return append(p, "main.bicep: no `var names = {...}`")
	}
	exprs := map[string]string{}
	for _, en := range entries(names[1 : len(names)-1]) {
		exprs[en.Key] = en.Value
	}
	for _, kind := range []string{"storage", "keyVault"} {
		for n := d.minLength; n <= d.maxLength; n++ {
			name, err := evalName(exprs[kind], strings.Repeat("a", n-1)+"9", "abcdefghijklm")
			if err != nil {
				p = append(p, fmt.Sprintf("main.bicep: names.%s = %s: %v", kind, exprs[kind], err))
				break
			}
			if !rules[kind].MatchString(name) || strings.Contains(name, "--") {
				p = append(p, fmt.Sprintf("main.bicep: names.%s is %q for a %d-character namePrefix, which Azure refuses", kind, name, n))
				break
			}
		}
	}
	return p
}

// evalName evaluates the name expressions main.bicep uses: a string with ${prefix} and ${token},
// optionally inside take(..., N).
func evalName(expr, prefix, token string) (string, error) {
	expr = strings.TrimSpace(expr)
	limit := -1
	if m := regexp.MustCompile(`^take\((.*),\s*(\d+)\)$`).FindStringSubmatch(expr); m != nil {
		expr = strings.TrimSpace(m[1])
		fmt.Sscan(m[2], &limit)
	}
	if len(expr) < 2 || expr[0] != '\'' || expr[len(expr)-1] != '\'' {
		return "", fmt.Errorf("not a string the test can evaluate")
	}
	s := strings.NewReplacer("${prefix}", prefix, "${token}", token).Replace(expr[1 : len(expr)-1])
	if strings.Contains(s, "${") {
		return "", fmt.Errorf("uses something other than ${prefix} and ${token}")
	}
	if limit >= 0 && len(s) > limit {
		s = s[:limit]
	}
	return s, nil
}

func (e *estate) checkEventGrid() []string {
	topics := e.ofType("Microsoft.EventGrid/systemTopics")
	if len(topics) != 1 {
		return []string{fmt.Sprintf("want one Event Grid system topic on the storage account, found %d", len(topics))}
	}
	t := topics[0]
	var p []string
	p = append(p, want(t, "properties.topicType", "'Microsoft.Storage.StorageAccounts'")...)
	p = append(p, want(t, "identity.type", "'SystemAssigned'")...)
	subs := e.ofType("Microsoft.EventGrid/systemTopics/eventSubscriptions")
	if len(subs) != 1 {
		return append(p, fmt.Sprintf("want one event subscription on the system topic (BlobCreated under seed-inbox/ to queue %s), found %d", importQueue, len(subs)))
	}
	s := subs[0]
	if par, _ := lookup(s.Body, "parent"); strings.TrimSpace(par) != t.Symbol {
		p = append(p, fmt.Sprintf("%s: parent is %s, want the system topic %s", s, par, t.Symbol))
	}
	p = append(p, want(s, "properties.eventDeliverySchema", "'EventGridSchema'")...)
	types, _ := lookup(s.Body, "properties.filter.includedEventTypes")
	if el := elements(types); len(el) != 1 || el[0] != "'Microsoft.Storage.BlobCreated'" {
		p = append(p, fmt.Sprintf("%s: filter.includedEventTypes is %s, want only 'Microsoft.Storage.BlobCreated'", s, strings.Join(el, " ")))
	}
	subj, _ := lookup(s.Body, "properties.filter.subjectBeginsWith")
	if v, _ := e.expand(s.File, subj); v != inboxSubjectPrefix {
		p = append(p, fmt.Sprintf("%s: filter.subjectBeginsWith is %q, want %q", s, v, inboxSubjectPrefix))
	}
	for _, k := range []string{"properties.destination", "properties.deadLetterDestination"} {
		if _, ok := lookup(s.Body, k); ok {
			p = append(p, fmt.Sprintf("%s: %s uses Event Grid's own credentials; the storage account takes Entra ID only: use deliveryWithResourceIdentity and deadLetterWithResourceIdentity", s, k))
		}
	}
	p = append(p, want(s, "properties.deliveryWithResourceIdentity.identity.type", "'SystemAssigned'")...)
	p = append(p, want(s, "properties.deliveryWithResourceIdentity.destination.endpointType", "'StorageQueue'")...)
	q, _ := lookup(s.Body, "properties.deliveryWithResourceIdentity.destination.properties.queueName")
	if v, ok := e.expandRef(s.File, q); !ok || v != importQueue {
		p = append(p, fmt.Sprintf("%s: events go to queue %q, want %s", s, v, importQueue))
	}
	p = append(p, e.wantAccountID(s, "properties.deliveryWithResourceIdentity.destination.properties.resourceId")...)
	p = append(p, want(s, "properties.deadLetterWithResourceIdentity.identity.type", "'SystemAssigned'")...)
	p = append(p, want(s, "properties.deadLetterWithResourceIdentity.deadLetterDestination.endpointType", "'StorageBlob'")...)
	c, _ := lookup(s.Body, "properties.deadLetterWithResourceIdentity.deadLetterDestination.properties.blobContainerName")
	if v, ok := e.expandRef(s.File, c); !ok || v != eventsDeadLetterContainer {
		p = append(p, fmt.Sprintf("%s: dead-letters to container %q, want %s", s, v, eventsDeadLetterContainer))
	}
	p = append(p, e.wantAccountID(s, "properties.deadLetterWithResourceIdentity.deadLetterDestination.properties.resourceId")...)
	// Event Grid's limits: 1-30 attempts, 1-1440 minutes.
	for _, lim := range []struct {
		path     string
		min, max int
	}{{"properties.retryPolicy.maxDeliveryAttempts", 1, 30}, {"properties.retryPolicy.eventTimeToLiveInMinutes", 1, 1440}} {
		v, _ := lookup(s.Body, lim.path)
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(v), &n); err != nil || n < lim.min || n > lim.max {
			p = append(p, fmt.Sprintf("%s: %s is %q, want a number from %d to %d", s, lim.path, v, lim.min, lim.max))
		}
	}
	// The subscription needs the topic's roles in place first.
	deps, _ := lookup(s.Body, "dependsOn")
	for _, r := range e.ofType("Microsoft.Authorization/roleAssignments") {
		if r.File == s.File && e.principalOf(r) == "topic" && !slices.Contains(elements(deps), r.Symbol) {
			p = append(p, fmt.Sprintf("%s does not depend on %s: events would be delivered before the topic may write", s, r.Symbol))
		}
	}
	return p
}

// expandRef resolves `sym.name` or a string literal to a resource name.
func (e *estate) expandRef(file, v string) (string, bool) {
	v = strings.TrimSpace(v)
	if m := regexp.MustCompile(`^(\w+)\.name$`).FindStringSubmatch(v); m != nil {
		return e.expand(file, "'${"+m[1]+".name}'")
	}
	return e.expand(file, v)
}

// wantAccountID reports a problem unless the value at path is the storage account's id.
func (e *estate) wantAccountID(r resource, path string) []string {
	v, _ := lookup(r.Body, path)
	for _, a := range e.ofType("Microsoft.Storage/storageAccounts") {
		if a.File == r.File && strings.TrimSpace(v) == a.Symbol+".id" {
			return nil
		}
	}
	return []string{fmt.Sprintf("%s: %s is %q, want the seed storage account's id", r, path, v)}
}

// checkImportTrigger: the events Event Grid puts on seed-imports must be read by ImportSeeds'
// queue trigger (decision 1). pendingImportTrigger marks the one problem the tree has until
// functions/ImportSeeds/function.json becomes that queue trigger (the host helper's issue 11).
const pendingImportTrigger = "functions/ImportSeeds/function.json is still a blob trigger"

func (e *estate) checkImportTrigger() []string {
	var p []string
	listened := false
	for _, f := range e.Functions {
		for _, b := range f.Bindings {
			switch {
			case b.Type == "blobTrigger" && strings.EqualFold(b.Source, "EventGrid"):
				p = append(p, fmt.Sprintf("%s (source EventGrid, path %s) in functions/%s: infra/ creates no webhook subscription any more; Event Grid delivers BlobCreated to queue %s (decision 1), so it must be a queueTrigger on %s", strings.Replace(pendingImportTrigger, "ImportSeeds", f.Name, 1), b.Path, f.Name, importQueue, importQueue))
			case b.Type == "queueTrigger" && b.QueueName == importQueue:
				listened = true
				if f.Name != "ImportSeeds" {
					p = append(p, fmt.Sprintf("functions/%s listens on %s; decision 1 keeps that for ImportSeeds", f.Name, importQueue))
				}
				if b.Connection != config.StorageConnection {
					p = append(p, fmt.Sprintf("functions/%s reads %s through connection %q, want %s (the account the events go to)", f.Name, importQueue, b.Connection, config.StorageConnection))
				}
			}
		}
	}
	if !listened && len(p) == 0 {
		p = append(p, fmt.Sprintf("no function has a queueTrigger on %s: the upload events Event Grid delivers there are never read", importQueue))
	}
	return p
}

// graphPermissions are the application permissions post-deploy.sh must grant.
var graphPermissions = []string{"Policy.ReadWrite.AuthenticationMethod", "User.Read.All", "UserAuthenticationMethod.ReadWrite.All", "UserAuthMethod-HardwareOATH.ReadWrite.All"}

func (e *estate) checkPostDeploy() []string {
	var p []string
	// Only commands count: comments and messages (log, warn, die) may name things the script does not do.
	var code []string
	for _, l := range strings.Split(e.PostDeploy, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") || strings.HasPrefix(t, "log ") || strings.HasPrefix(t, "die ") || strings.HasPrefix(t, "warn ") {
			continue
		}
		code = append(code, l)
	}
	s := strings.Join(code, "\n")
	// Every deployment output the script reads must exist in main.bicep.
	outs := map[string]bool{}
	if f, ok := e.file("main.bicep"); ok {
		for _, o := range f.outputs() {
			outs[o.Name] = true
		}
	}
	for _, m := range regexp.MustCompile(`\$\(output (\w+)\)`).FindAllStringSubmatch(e.PostDeploy, -1) {
		if !outs[m[1]] {
			p = append(p, fmt.Sprintf("post-deploy.sh reads deployment output %s, which main.bicep does not declare", m[1]))
		}
	}
	for _, want := range append([]string{"set -euo pipefail", "config-zip", "hardwareOath", "--graph-only) GRAPH_ONLY=1",
		"pgp-keygen --vault", "--if-missing", "MIN_AZ_VERSION=2.60.0", "az version", "--method delete"}, graphPermissions...) {
		if !strings.Contains(s, want) {
			p = append(p, fmt.Sprintf("post-deploy.sh does not mention %s", want))
		}
	}
	// The Event Grid subscription is in the Bicep now; the script must not read function keys
	// (they would be on a command line) or write subscriptions behind the template's back.
	for _, bad := range []string{"event-subscription", "functionapp keys", "blobs_extension", "/runtime/webhooks/"} {
		if strings.Contains(s, bad) {
			p = append(p, fmt.Sprintf("post-deploy.sh still uses %s: the Event Grid subscription is defined in Bicep (decision 1), no key is needed", bad))
		}
	}
	// Issue 14.11: the broad permission only when asked for.
	if m := regexp.MustCompile(`(?m)^ASSIGN_PERMISSION=\$\{ASSIGN_PERMISSION:-(.*)\}$`).FindStringSubmatch(s); m == nil || m[1] != "$NARROW_PERMISSION" {
		p = append(p, "post-deploy.sh: ASSIGN_PERMISSION must default to $NARROW_PERMISSION (UserAuthMethod-HardwareOATH.ReadWrite.All)")
	}
	// Issue 14.2: the policy PATCH must not end the script under set -e.
	for _, l := range code {
		if strings.Contains(l, "--method patch") && !strings.Contains(l, "if ") {
			p = append(p, "post-deploy.sh: the hardwareOath PATCH runs outside an `if`, so its 403 ends the script under set -e")
		}
	}
	if strings.Contains(s, "echo unknown") {
		p = append(p, "post-deploy.sh prints `unknown` as if it were the policy's state")
	}
	return p
}

// secretPatterns must appear in no template, parameter file or script: each is a key, a
// connection string with a key, a SAS, or a way of reading one.
var secretPatterns = []struct{ re, what string }{
	{`(?i)listKeys\s*\(`, "listKeys() (reads an account key)"},
	{`(?i)\.list\w*\s*\(`, "a list*() function (reads keys or secrets)"},
	{`(?i)getSecret\s*\(`, "getSecret() (passes a secret value)"},
	{`(?i)AccountKey\s*=`, "a storage account key"},
	{`(?i)SharedAccessSignature\s*=|[?&]sig=`, "a SAS token"},
	{`(?i)DefaultEndpointsProtocol\s*=`, "a storage connection string"},
	{`(?i)InstrumentationKey\s*=`, "an Application Insights instrumentation key"},
	{`(?i)SharedAccessKey\s*=`, "a shared access key"},
	{`-----BEGIN`, "a PEM key or certificate"},
	{`[A-Za-z0-9+/]{30,}==`, "a long padded base64 string (a key?)"},
}

func (e *estate) checkNoSecrets() []string {
	var p []string
	texts := map[string]string{"main.parameters.json": e.Params}
	for _, f := range e.Bicep {
		texts[f.Path] = f.Text
	}
	for _, name := range slices.Sorted(maps.Keys(texts)) {
		for _, sp := range secretPatterns {
			if m := regexp.MustCompile(sp.re).FindString(texts[name]); m != "" {
				p = append(p, fmt.Sprintf("%s contains %s: %.20q", name, sp.what, m))
			}
		}
	}
	// The script may read the blobs_extension key at run time, but must not print or store keys.
	for _, sp := range secretPatterns[2:] {
		if m := regexp.MustCompile(sp.re).FindString(e.PostDeploy); m != "" {
			p = append(p, fmt.Sprintf("post-deploy.sh contains %s: %.20q", sp.what, m))
		}
	}
	for _, f := range e.Bicep {
		for _, o := range f.outputs() {
			if o.Secure {
				p = append(p, fmt.Sprintf("%s: output %s is @secure(): outputs are names and URLs only", f.Path, o.Name))
			}
			// A parameter holding a secret's name (…SecretName) is a name, not a secret.
			if regexp.MustCompile(`^\w+SecretName$`).MatchString(o.Value) {
				continue
			}
			if regexp.MustCompile(`(?i)connectionstring|key[s]?\(|secret|password|primaryKey|token\b`).MatchString(o.Value) {
				p = append(p, fmt.Sprintf("%s: output %s = %s may expose a secret: outputs are names and URLs only", f.Path, o.Name, o.Value))
			}
		}
	}
	// Parameters whose names suggest a secret must carry no value in the parameters file; they
	// name Key Vault secrets instead.
	var params struct {
		Parameters map[string]struct {
			Value any `json:"value"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal([]byte(e.Params), &params); err != nil {
		p = append(p, fmt.Sprintf("main.parameters.json: %v", err))
	}
	for name, v := range params.Parameters {
		lname := strings.ToLower(name)
		if strings.HasSuffix(lname, "secretname") {
			continue
		}
		if regexp.MustCompile(`(key|keys|secret|password|token)$`).MatchString(lname) && v.Value != nil && v.Value != "" {
			p = append(p, fmt.Sprintf("main.parameters.json: parameter %s holds a value; keep secrets in Key Vault and pass their names", name))
		}
	}
	return p
}

// TestInfraAgreesWithCode is the check that matters: the templates as committed create every
// setting, container, queue, table and role the code and the functions need, and hold no key.
func TestInfraAgreesWithCode(t *testing.T) {
	e := loadEstate(t)
	pending := ""
	for _, p := range e.problems(config.Settings) {
		if strings.HasPrefix(p, pendingImportTrigger) {
			pending = p
			continue
		}
		t.Error(p)
	}
	if pending != "" {
		// Everything else was checked above; this one waits for the host helper's function.json.
		t.Skip("pending the other half of decision 1: " + pending)
	}
}

// decisionImportSeeds is functions/ImportSeeds/function.json as decision 1 describes it.
var decisionImportSeeds = function{Name: "ImportSeeds", Bindings: []binding{{Name: "message", Type: "queueTrigger", Direction: "in", QueueName: importQueue, Connection: config.StorageConnection}}}

// withDecisionImportSeeds replaces a pre-decision ImportSeeds (blob trigger) by decisionImportSeeds,
// so the mutation cases run against the estate as it will be once both halves are merged.
func withDecisionImportSeeds(t *testing.T, e *estate) {
	for i, f := range e.Functions {
		if f.Name == "ImportSeeds" && len(f.Bindings) > 0 && f.Bindings[0].Type == "blobTrigger" {
			t.Logf("functions/ImportSeeds/function.json is still the blob trigger: checking against decision 1's queue trigger on %s", importQueue)
			e.Functions[i] = decisionImportSeeds
		}
	}
}

// TestChecksCatchMistakes proves each check can fail: it feeds the checks the real templates
// with one thing removed or changed, and wants a problem that names that thing.
func TestChecksCatchMistakes(t *testing.T) {
	base := loadEstate(t)
	withDecisionImportSeeds(t, base)
	if p := base.problems(config.Settings); len(p) > 0 {
		t.Skip("the real templates already fail TestInfraAgreesWithCode")
	}
	type edit struct{ file, old, new string }
	cases := []struct {
		name  string
		edits []edit
		// settings, when set, replaces config.Settings (a setting the code starts to read).
		settings []config.Setting
		// fn, when set, is added to the functions (a binding infra/ does not know yet).
		fn   *function
		want string
	}{
		{name: "required setting removed", edits: []edit{{"modules/functionapp.bicep", "  OATHPIPE_KEYVAULT_URL: keyVaultUri\n", ""}}, want: "setting OATHPIPE_KEYVAULT_URL (required)"},
		{name: "optional setting removed", edits: []edit{{"modules/functionapp.bicep", "  OATHPIPE_HTTP_BUDGET: httpBudget\n", ""}}, want: "setting OATHPIPE_HTTP_BUDGET from config.Settings is not set"},
		{name: "new setting in the code", settings: append(slices.Clone(config.Settings), config.Setting{Name: "OATHPIPE_NEW_THING", Required: true}), want: "setting OATHPIPE_NEW_THING (required)"},
		{name: "setting the code does not read", edits: []edit{{"modules/functionapp.bicep", "  OATHPIPE_LOG_LEVEL: logLevel\n", "  OATHPIPE_LOG_LEVEL: logLevel\n  OATHPIPE_LOGLEVEL: logLevel\n"}}, want: "OATHPIPE_LOGLEVEL in modules/functionapp.bicep is not read"},
		{name: "dev-only setting set", edits: []edit{{"modules/functionapp.bicep", "  OATHPIPE_LOG_LEVEL: logLevel\n", "  OATHPIPE_LOG_LEVEL: logLevel\n  OATHPIPE_OFFLINE_TOKEN: 'x'\n"}}, want: "setting OATHPIPE_OFFLINE_TOKEN is development-only"},
		{name: "identity-based storage setting removed", edits: []edit{{"modules/functionapp.bicep", "  SeedStorage__queueServiceUri: storage.properties.primaryEndpoints.queue\n", ""}}, want: "SeedStorage__queueServiceUri"},
		{name: "host storage credential removed", edits: []edit{{"modules/functionapp.bicep", "  AzureWebJobsStorage__credential: 'managedidentity'\n", ""}}, want: "AzureWebJobsStorage__credential"},
		{name: "credential not managed identity", edits: []edit{{"modules/functionapp.bicep", "SeedStorage__credential: 'managedidentity'", "SeedStorage__credential: 'connectionstring'"}}, want: "SeedStorage__credential is \"connectionstring\""},
		{name: "connection string for SeedStorage", edits: []edit{{"modules/functionapp.bicep", "  OATHPIPE_LOG_LEVEL: logLevel\n", "  OATHPIPE_LOG_LEVEL: logLevel\n  SeedStorage: 'DefaultEndpointsProtocol=https;AccountName=st;AccountKey=abc'\n"}}, want: "setting SeedStorage is a storage connection string"},
		{name: "worker runtime on Flex", edits: []edit{{"modules/functionapp.bicep", "  OATHPIPE_LOG_LEVEL: logLevel\n", "  OATHPIPE_LOG_LEVEL: logLevel\n  FUNCTIONS_WORKER_RUNTIME: 'custom'\n"}}, want: "FUNCTIONS_WORKER_RUNTIME must not be set"},
		{name: "container renamed", edits: []edit{{"modules/storage.bicep", "name: 'seed-rejected'", "name: 'seed-rejects'"}}, want: "container seed-rejected (needed by pipeline.RejectedContainer) is not created"},
		{name: "poison queue removed", edits: []edit{{"modules/storage.bicep", "name: 'token-provisioning-poison'", "name: 'token-provisioning-dead'"}}, want: "queue token-provisioning-poison"},
		{name: "audit table removed", edits: []edit{{"modules/storage.bicep", "name: 'oathpipeaudit'", "name: 'oathpipeaudits'"}}, want: "table oathpipeaudit (needed by pipeline.AuditTable)"},
		{name: "function with a new queue", fn: &function{Name: "Requeue", Bindings: []binding{{Type: "queueTrigger", QueueName: "token-retry", Connection: "SeedStorage"}}}, want: "queue token-retry (needed by functions/Requeue/function.json)"},
		{name: "function with a new connection", fn: &function{Name: "Other", Bindings: []binding{{Type: "blob", Path: "seed-inbox/x", Connection: "OtherStorage"}}}, want: "OtherStorage__blobServiceUri"},
		{name: "shared key access on", edits: []edit{{"modules/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true"}}, want: "allowSharedKeyAccess is true"},
		{name: "TLS 1.0", edits: []edit{{"modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"}}, want: "minimumTlsVersion"},
		{name: "blob soft delete off", edits: []edit{{"modules/storage.bicep", "deleteRetentionPolicy: {\n      enabled: true", "deleteRetentionPolicy: {\n      enabled: false"}}, want: "deleteRetentionPolicy.enabled is false"},
		{name: "no lifecycle for rejected files", edits: []edit{{"modules/storage.bicep", "                '${rejectedContainer.name}/'\n", ""}}, want: "container seed-rejected has no lifecycle delete rule"},
		{name: "role removed", edits: []edit{{"modules/roles.bicep", "roleDefinitions', role.storageTableDataContributor)", "roleDefinitions', role.storageQueueDataContributor)"}}, want: "role Storage Table Data Contributor"},
		{name: "role id wrong", edits: []edit{{"modules/storage.bicep", "storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'", "storageQueueDataMessageSender: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'"}}, want: "role Storage Queue Data Message Sender (c6a89b2d-59bc-44d0-9896-0f6e12d7b80a) is not granted to the topic identity"},
		{name: "broad role", edits: []edit{{"modules/roles.bicep", "monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'", "monitoringMetricsPublisher: 'b24988ac-6180-42a0-ab88-20f7382dd24c'"}}, want: "grants role b24988ac-6180-42a0-ab88-20f7382dd24c to app, which is not one of"},
		{name: "role on the wrong scope", edits: []edit{{"modules/roles.bicep", "  scope: vault\n", "  scope: storage\n"}}, want: "(oathpipe secrets) is scoped to storage"},
		{name: "role without scope", edits: []edit{{"modules/roles.bicep", "  scope: appInsights\n", ""}}, want: "(Monitoring Metrics Publisher) has no scope"},
		{name: "role without a reason", edits: []edit{{"modules/roles.bicep", "// requires this role on the component.\n", "// requires this role on the component.\n\n"}}, want: "(Monitoring Metrics Publisher) has no comment"},
		{name: "vault without purge protection", edits: []edit{{"modules/keyvault.bicep", "enablePurgeProtection: true", "enablePurgeProtection: false"}}, want: "enablePurgeProtection is false"},
		{name: "vault with access policies", edits: []edit{{"modules/keyvault.bicep", "enableRbacAuthorization: true", "enableRbacAuthorization: false"}}, want: "enableRbacAuthorization is false"},
		{name: "vault network access fixed", edits: []edit{{"modules/keyvault.bicep", "publicNetworkAccess: publicNetworkAccess\n", "publicNetworkAccess: 'Enabled'\n"}}, want: "publicNetworkAccess should come from a parameter"},
		{name: "app insights local auth", edits: []edit{{"modules/monitoring.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false"}}, want: "DisableLocalAuth is false"},
		{name: "runtime not custom", edits: []edit{{"modules/functionapp.bicep", "name: 'custom'", "name: 'node'"}}, want: "runtime.name is 'node'"},
		{name: "not Flex", edits: []edit{{"modules/functionapp.bicep", "name: 'FC1'", "name: 'Y1'"}}, want: "sku.name is 'Y1'"},
		{name: "system-assigned identity", edits: []edit{{"modules/functionapp.bicep", "type: 'UserAssigned'", "type: 'SystemAssigned, UserAssigned'"}}, want: "SystemAssigned"},
		{name: "no event grid topic", edits: []edit{{"modules/storage.bicep", "'Microsoft.EventGrid/systemTopics@", "'Microsoft.EventGrid/topics@"}}, want: "Event Grid system topic"},
		{name: "account key read", edits: []edit{{"main.bicep", "output APP_INSIGHTS_NAME string = monitoring.outputs.appInsightsName", "output APP_INSIGHTS_NAME string = monitoring.outputs.appInsightsName\nvar k = listKeys(storage.outputs.id, '2023-05-01').keys[0].value"}}, want: "listKeys()"},
		{name: "connection string output", edits: []edit{{"modules/monitoring.bicep", "output appInsightsName string = appInsights.name", "output appInsightsName string = appInsights.properties.ConnectionString"}}, want: "output appInsightsName = appInsights.properties.ConnectionString may expose a secret"},
		{name: "secure output", edits: []edit{{"modules/keyvault.bicep", "output uri string", "@secure()\noutput uri string"}}, want: "output uri is @secure()"},
		{name: "key in parameters", edits: []edit{{"main.parameters.json", `"pskcKeySecretName": { "value": "" }`, `"pskcKey": { "value": "00112233445566778899aabbccddeeff" }`}}, want: "parameter pskcKey holds a value"},
		{name: "output the script needs removed", edits: []edit{{"main.bicep", "output KEY_VAULT_URL string", "output KEY_VAULT_URI string"}}, want: "reads deployment output KEY_VAULT_URL"},
		{name: "module parameter misspelt", edits: []edit{{"main.bicep", "    logRetentionDays: logRetentionDays\n", "    logRetentionDay: logRetentionDays\n"}}, want: "module monitoring does not pass logRetentionDays"},
		{name: "module output misspelt", edits: []edit{{"main.bicep", "= keyVault.outputs.uri", "= keyVault.outputs.url"}}, want: "keyVault.outputs.url, which the module does not declare"},
		{name: "parameter file out of step", edits: []edit{{"main.parameters.json", `"logLevel"`, `"loglevel"`}}, want: "main.parameters.json sets loglevel"},
		{name: "post-deploy without a Graph permission", edits: []edit{{"post-deploy.sh", "for permission in Policy.ReadWrite.AuthenticationMethod ", "for permission in "}}, want: "Policy.ReadWrite.AuthenticationMethod"},

		// Issue 14, one case per fix (each re-introduces the mistake).
		// 14.1 what Flex rejects
		{name: "14.1 ftpsState on the Flex site", edits: []edit{{"modules/functionapp.bicep", "      minTlsVersion: '1.2'\n", "      minTlsVersion: '1.2'\n      ftpsState: 'Disabled'\n"}}, want: "siteConfig.ftpsState is rejected on Flex Consumption"},
		{name: "14.1 linuxFxVersion on the Flex site", edits: []edit{{"modules/functionapp.bicep", "      minTlsVersion: '1.2'\n", "      minTlsVersion: '1.2'\n      linuxFxVersion: 'custom'\n"}}, want: "siteConfig.linuxFxVersion is rejected"},
		{name: "14.1 setting Flex no longer uses", edits: []edit{{"modules/functionapp.bicep", "  OATHPIPE_LOG_LEVEL: logLevel\n", "  OATHPIPE_LOG_LEVEL: logLevel\n  WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT: '10'\n"}}, want: "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT must not be set"},
		// 14.2 the OATH policy PATCH under set -e, and `unknown` as a state
		{name: "14.2 policy PATCH fatal", edits: []edit{{"post-deploy.sh", "  if az rest --method patch ", "  az rest --method patch "}}, want: "PATCH runs outside an `if`"},
		{name: "14.2 unknown as a state", edits: []edit{{"post-deploy.sh", `--query state -o tsv 2>"$oath_err")`, `--query state -o tsv 2>"$oath_err" || echo unknown)`}}, want: "prints `unknown`"},
		// 14.3 the Entra administrator's part alone
		{name: "14.3 no graph-only option", edits: []edit{{"post-deploy.sh", "    --graph-only) GRAPH_ONLY=1; shift ;;\n", ""}}, want: "does not mention --graph-only) GRAPH_ONLY=1"},
		// 14.4 old Azure CLI
		{name: "14.4 minimum CLI too old", edits: []edit{{"post-deploy.sh", "MIN_AZ_VERSION=2.60.0", "MIN_AZ_VERSION=2.45.0"}}, want: "does not mention MIN_AZ_VERSION=2.60.0"},
		// 14.5 Flex's lowest maximum
		{name: "14.5 maximumInstanceCount below 40", edits: []edit{{"main.bicep", "@minValue(40)\n@maxValue(1000)\nparam maximumInstanceCount", "@minValue(1)\n@maxValue(1000)\nparam maximumInstanceCount"}}, want: "maximumInstanceCount allows 1 to 1000"},
		// 14.6 redeploy after deleting the group
		{name: "14.6 vault createMode fixed", edits: []edit{{"modules/keyvault.bicep", "    createMode: createMode\n", "    createMode: 'default'\n"}}, want: "createMode should come from the keyVaultCreateMode parameter"},
		{name: "14.6 no recover mode", edits: []edit{{"main.bicep", "  'default'\n  'recover'\n", "  'default'\n"}}, want: "allowing 'default' and 'recover'"},
		// 14.7 namePrefix
		{name: "14.7 names bypass the check", edits: []edit{{"main.bicep", "storage: take('st${prefix}${token}', 24)", "storage: take('st${namePrefix}${token}', 24)"}}, want: "`names` uses namePrefix directly"},
		{name: "14.7 hyphen allowed", edits: []edit{{"main.bicep", "var prefixAlphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'", "var prefixAlphabet = 'abcdefghijklmnopqrstuvwxyz0123456789-'"}}, want: "prefixAlphabet is"},
		{name: "14.7 no fail()", edits: []edit{{"main.bicep", "var prefix = empty(prefixBadChars) ? namePrefix : fail(", "var prefix = empty(prefixBadChars) ? namePrefix : string("}}, want: "want namePrefix checked against prefixAlphabet with fail()"},
		{name: "14.7 prefix too long for the vault", edits: []edit{{"main.bicep", "@maxLength(9)\nparam namePrefix", "@maxLength(20)\nparam namePrefix"}}, want: "names.keyVault is \"kv-aaaaaaaaaaaaaaaaaaa9-\" for a 20-character namePrefix"},
		// 14.8 requiredRole without App Service authentication
		{name: "14.8 no authsettingsV2", edits: []edit{{"modules/functionapp.bicep", "name: 'authsettingsV2'", "name: 'authsettings'"}}, want: "deploys no authsettingsV2"},
		{name: "14.8 auth always on", edits: []edit{{"modules/functionapp.bicep", "= if (!empty(requiredRole)) {", "= {"}}, want: "deploy it exactly when requiredRole is set"},
		{name: "14.8 unauthenticated refused", edits: []edit{{"modules/functionapp.bicep", "unauthenticatedClientAction: 'AllowAnonymous'", "unauthenticatedClientAction: 'Return401'"}}, want: "unauthenticatedClientAction is 'Return401'"},
		{name: "14.8 role without client id accepted", edits: []edit{{"main.bicep", "    authClientId: authClient\n", "    authClientId: authClientId\n"}}, want: "pass a variable that fail()s"},
		// 14.9 (and decision 1) the Event Grid subscription to seed-imports, with dead-letter
		{name: "14.9 no dead-letter", edits: []edit{{"modules/storage.bicep", "blobContainerName: eventsDeadLetterContainer.name", "blobContainerName: parkedContainer.name"}}, want: "dead-letters to container \"token-parked\""},
		{name: "14.9 dead-letter with Event Grid's credentials", edits: []edit{{"modules/storage.bicep", "    deadLetterWithResourceIdentity: {", "    deadLetterDestination: {}\n    deadLetterIdentity: {"}}, want: "properties.deadLetterDestination uses Event Grid's own credentials"},
		{name: "14.9 too many attempts", edits: []edit{{"modules/storage.bicep", "maxDeliveryAttempts: 30", "maxDeliveryAttempts: 31"}}, want: "maxDeliveryAttempts is \"31\""},
		{name: "14.9 no retry policy", edits: []edit{{"modules/storage.bicep", "eventTimeToLiveInMinutes: 1440", "eventTimeToLive: 1440"}}, want: "eventTimeToLiveInMinutes is \"\""},
		{name: "decision 1 events to the wrong queue", edits: []edit{{"modules/storage.bicep", "queueName: importQueue.name", "queueName: provisionQueue.name"}}, want: "events go to queue \"token-provisioning\""},
		{name: "decision 1 events of the wrong container", edits: []edit{{"modules/storage.bicep", "containers/${inboxContainer.name}/'", "containers/${reportsContainer.name}/'"}}, want: "subjectBeginsWith is \"/blobServices/default/containers/seed-reports/\""},
		{name: "decision 1 deleted blobs too", edits: []edit{{"modules/storage.bicep", "        'Microsoft.Storage.BlobCreated'\n", "        'Microsoft.Storage.BlobCreated'\n        'Microsoft.Storage.BlobDeleted'\n"}}, want: "want only 'Microsoft.Storage.BlobCreated'"},
		{name: "decision 1 cloud event schema", edits: []edit{{"modules/storage.bicep", "eventDeliverySchema: 'EventGridSchema'", "eventDeliverySchema: 'CloudEventSchemaV1_0'"}}, want: "eventDeliverySchema is 'CloudEventSchemaV1_0'"},
		{name: "decision 1 topic without identity", edits: []edit{{"modules/storage.bicep", "  identity: {\n    type: 'SystemAssigned'\n  }\n  properties: {\n    source", "  properties: {\n    source"}}, want: "identity.type is not set"},
		{name: "decision 1 subscription before its roles", edits: []edit{{"modules/storage.bicep", "    topicQueueSender\n", ""}}, want: "does not depend on topicQueueSender"},
		{name: "decision 1 dead-letter role on the account", edits: []edit{{"modules/storage.bicep", "  scope: eventsDeadLetterContainer\n", "  scope: account\n"}}, want: "(Storage Blob Data Contributor) is scoped to account"},
		{name: "decision 1 dead-letter role on another container", edits: []edit{{"modules/storage.bicep", "  scope: eventsDeadLetterContainer\n", "  scope: parkedContainer\n"}}, want: "want the Microsoft.Storage/storageAccounts/blobServices/containers seed-events-deadletter only"},
		{name: "decision 1 no import queue", edits: []edit{{"modules/storage.bicep", "name: 'seed-imports'", "name: 'seed-import'"}}, want: "queue seed-imports (needed by"},
		{name: "decision 1 no dead-letter container", edits: []edit{{"modules/storage.bicep", "name: 'seed-events-deadletter'", "name: 'seed-deadletter'"}}, want: "container seed-events-deadletter (needed by"},
		{name: "decision 1 public dead-letter container", edits: []edit{{"modules/storage.bicep", "  name: 'seed-events-deadletter'\n  properties: {\n    publicAccess: 'None'", "  name: 'seed-events-deadletter'\n  properties: {\n    publicAccess: 'Blob'"}}, want: "publicAccess is 'Blob'"},
		{name: "decision 1 blob trigger left", fn: &function{Name: "ImportSeeds2", Bindings: []binding{{Type: "blobTrigger", Source: "EventGrid", Path: "seed-inbox/{name}", Connection: "SeedStorage"}}}, want: "functions/ImportSeeds2/function.json is still a blob trigger"},
		{name: "decision 1 another reader of seed-imports", fn: &function{Name: "Other", Bindings: []binding{{Type: "queueTrigger", QueueName: "seed-imports", Connection: "SeedStorage"}}}, want: "functions/Other listens on seed-imports"},
		{name: "decision 1 post-deploy subscribes again", edits: []edit{{"post-deploy.sh", "\n# 3. Microsoft Graph", "\naz eventgrid system-topic event-subscription create -n x\n# 3. Microsoft Graph"}}, want: "still uses event-subscription"},
		// 14.10 Key Vault role
		{name: "14.10 purge in the custom role", edits: []edit{{"modules/roles.bicep", "          'Microsoft.KeyVault/vaults/secrets/recover/action'\n", "          'Microsoft.KeyVault/vaults/secrets/recover/action'\n          'Microsoft.KeyVault/vaults/secrets/purge/action'\n"}}, want: "dataActions are"},
		{name: "17 delete missing", edits: []edit{{"modules/roles.bicep", "          'Microsoft.KeyVault/vaults/secrets/delete'\n", ""}}, want: "dataActions are"},
		{name: "14.10 wildcard instead", edits: []edit{{"modules/roles.bicep", "          'Microsoft.KeyVault/vaults/secrets/getSecret/action'\n", "          'Microsoft.KeyVault/vaults/secrets/*'\n"}}, want: "dataActions are"},
		{name: "14.10 recover missing", edits: []edit{{"modules/roles.bicep", "          'Microsoft.KeyVault/vaults/secrets/recover/action'\n", ""}}, want: "dataActions are"},
		{name: "14.10 control-plane action", edits: []edit{{"modules/roles.bicep", "        actions: []\n", "        actions: [\n          'Microsoft.KeyVault/vaults/read'\n        ]\n"}}, want: "actions must be empty"},
		{name: "14.10 assignable everywhere", edits: []edit{{"modules/roles.bicep", "      resourceGroup().id\n", "      subscription().id\n"}}, want: "assignableScopes"},
		{name: "14.10 same role name everywhere", edits: []edit{{"modules/roles.bicep", "roleName: 'oathpipe secrets (${keyVaultName})'", "roleName: 'oathpipe secrets'"}}, want: "custom role names are unique per tenant"},
		{name: "14.10 Secrets Officer back", edits: []edit{{"modules/roles.bicep", "    roleDefinitionId: secretsRole.id\n", "    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')\n"}}, want: "grants role b86a8fe4-44ce-4948-aee5-eccb2c155cd7 to app, which is not one of"},
		// 14.11 Graph permissions
		{name: "14.11 broad permission by default", edits: []edit{{"post-deploy.sh", "ASSIGN_PERMISSION=${ASSIGN_PERMISSION:-$NARROW_PERMISSION}", "ASSIGN_PERMISSION=${ASSIGN_PERMISSION:-$BROAD_PERMISSION}"}}, want: "ASSIGN_PERMISSION must default to $NARROW_PERMISSION"},
		{name: "14.11 unneeded grants kept", edits: []edit{{"post-deploy.sh", "az rest --method delete ", "az rest --method get "}}, want: "does not mention --method delete"},
		// 14.12 no key on a command line
		{name: "14.12 function key read again", edits: []edit{{"post-deploy.sh", "\n# 3. Microsoft Graph", "\nkey=$(az functionapp keys list -g \"$RESOURCE_GROUP\" -n \"$APP\" -o tsv)\n# 3. Microsoft Graph"}}, want: "still uses functionapp keys"},
		// decisions 3-5
		{name: "decision 3 rejected files on the inbox's clock", edits: []edit{{"modules/storage.bicep", "daysAfterModificationGreaterThan: rejectedRetentionDays", "daysAfterModificationGreaterThan: seedBlobRetentionDays"}}, want: "deletes after \"seedBlobRetentionDays\", want the parameter rejectedRetentionDays"},
		{name: "decision 3 default not 30", edits: []edit{{"main.bicep", "param rejectedRetentionDays int = 30", "param rejectedRetentionDays int = 14"}}, want: "want `param rejectedRetentionDays int = 30`"},
		{name: "decision 4 PGP secret setting missing", edits: []edit{{"modules/functionapp.bicep", "  OATHPIPE_PGP_KEY_SECRET: pgpKeySecretName\n", ""}}, want: "setting OATHPIPE_PGP_KEY_SECRET from config.Settings is not set"},
		{name: "decision 5 keygen without --if-missing", edits: []edit{{"post-deploy.sh", `--secret "$pgp_secret" --if-missing)`, `--secret "$pgp_secret")`}}, want: "does not mention --if-missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := base.clone()
			for _, ed := range tc.edits {
				apply := func(s string) string {
					if n := strings.Count(s, ed.old); n != 1 {
						t.Fatalf("%s: %q occurs %d times, want once (update this case to match the templates)", ed.file, ed.old, n)
					}
					return strings.Replace(s, ed.old, ed.new, 1)
				}
				switch ed.file {
				case "main.parameters.json":
					e.Params = apply(e.Params)
				case "post-deploy.sh":
					e.PostDeploy = apply(e.PostDeploy)
				default:
					found := false
					for i, f := range e.Bicep {
						if f.Path == ed.file {
							e.Bicep[i] = newBicepFile(f.Path, apply(f.Text))
							found = true
						}
					}
					if !found {
						t.Fatalf("no infra/%s", ed.file)
					}
				}
			}
			if tc.fn != nil {
				e.Functions = append(e.Functions, *tc.fn)
			}
			e.parsed = nil
			settings := config.Settings
			if tc.settings != nil {
				settings = tc.settings
			}
			p := e.problems(settings)
			for _, line := range p {
				if strings.Contains(line, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got:\n%s", tc.want, strings.Join(p, "\n"))
		})
	}
}

// TestDocsAndAzd keeps docs/deploy.md and azure.yaml in step with infra/: the roles, permissions,
// functions and commands they name are the ones the templates and the script use.
func TestDocsAndAzd(t *testing.T) {
	e := loadEstate(t)
	doc, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	azd, err := os.ReadFile("../azure.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range neededRoles {
		want = append(want, r.Name)
	}
	for _, f := range e.Functions {
		want = append(want, f.Name)
	}
	want = append(want, graphPermissions...)
	want = append(want, "az deployment group create -g rg-oathpipe -n main", "make package", "infra/post-deploy.sh",
		pipeline.InboxContainer, pipeline.ReportsContainer, pipeline.RejectedContainer, "Entra ID P1 or P2",
		"Privileged Role Administrator", "Authentication Policy Administrator",
		// issue 14 and the decisions
		"make build", importQueue, eventsDeadLetterContainer, parkedContainer, "rejectedRetentionDays",
		"keyVaultCreateMode", "recover", "--graph-only", "--assign-permission", "2.60.0",
		"az functionapp list-flexconsumption-runtimes", "Update-MgBetaPolicyAuthenticationMethodPolicyAuthenticationMethodConfiguration",
		"authClientId", "oathpipe pgp-keygen", "GET /api/pgp-key", "User Access Administrator", "maximumInstanceCount")
	for _, a := range keyVaultDataActions {
		want = append(want, a)
	}
	for _, w := range want {
		if !strings.Contains(string(doc), w) {
			t.Errorf("docs/deploy.md does not mention %s", w)
		}
	}
	// The deployment outputs the docs read must exist.
	outs := map[string]bool{}
	main, _ := e.file("main.bicep")
	for _, o := range main.outputs() {
		outs[o.Name] = true
	}
	for _, m := range regexp.MustCompile(`properties\.outputs\.(\w+)\.value`).FindAllStringSubmatch(string(doc), -1) {
		if !outs[m[1]] {
			t.Errorf("docs/deploy.md reads output %s, which main.bicep does not declare", m[1])
		}
	}
	for _, w := range []string{"path: infra", "module: main", "make build package && bash infra/post-deploy.sh"} {
		if !strings.Contains(string(azd), w) {
			t.Errorf("azure.yaml does not contain %q", w)
		}
	}
}

var (
	paramDecl  = regexp.MustCompile(`(?m)^[ \t]*param[ \t]+(\w+)[ \t]+\w+([ \t]*=)?`)
	moduleDecl = regexp.MustCompile(`(?m)^[ \t]*module[ \t]+(\w+)[ \t]+'([^']+)'[ \t]*=[ \t]*\{`)
)

// params lists f's parameters and whether each has a default.
func (f bicepFile) params() map[string]bool {
	out := map[string]bool{}
	for _, m := range paramDecl.FindAllStringSubmatch(f.Stripped, -1) {
		out[m[1]] = m[2] != ""
	}
	return out
}

// checkWiring does part of the Bicep compiler's job, which cannot run here: every module call
// passes only parameters the module declares and every one it requires, every module output
// used exists, and main.parameters.json sets only parameters main.bicep declares.
func (e *estate) checkWiring() []string {
	var p []string
	main, ok := e.file("main.bicep")
	if !ok {
		return []string{"no infra/main.bicep"}
	}
	outputsOf := map[string]map[string]bool{}
	for _, m := range moduleDecl.FindAllStringSubmatchIndex(main.Stripped, -1) {
		sym, path := main.Stripped[m[2]:m[3]], main.Stripped[m[4]:m[5]]
		body := main.Stripped[m[1] : skipBalanced(main.Stripped, m[1]-1)-1]
		mod, ok := e.file(path)
		if !ok {
			p = append(p, fmt.Sprintf("main.bicep: module %s uses %s, which does not exist", sym, path))
			continue
		}
		declared := mod.params()
		passed := map[string]bool{}
		if v, ok := lookup(body, "params"); ok && strings.HasPrefix(strings.TrimSpace(v), "{") {
			v = strings.TrimSpace(v)
			for _, en := range entries(v[1 : len(v)-1]) {
				passed[en.Key] = true
				if _, ok := declared[en.Key]; !ok {
					p = append(p, fmt.Sprintf("main.bicep: module %s passes %s, which %s does not declare", sym, en.Key, path))
				}
			}
		}
		for name, hasDefault := range declared {
			if !hasDefault && !passed[name] {
				p = append(p, fmt.Sprintf("main.bicep: module %s does not pass %s, which %s requires", sym, name, path))
			}
		}
		outputsOf[sym] = map[string]bool{}
		for _, o := range mod.outputs() {
			outputsOf[sym][o.Name] = true
		}
	}
	for _, m := range regexp.MustCompile(`\b(\w+)\.outputs\.(\w+)`).FindAllStringSubmatch(main.Stripped, -1) {
		if outs, ok := outputsOf[m[1]]; ok && !outs[m[2]] {
			p = append(p, fmt.Sprintf("main.bicep uses %s.outputs.%s, which the module does not declare", m[1], m[2]))
		}
	}
	var params struct {
		Parameters map[string]any `json:"parameters"`
	}
	if err := json.Unmarshal([]byte(e.Params), &params); err == nil {
		declared := main.params()
		for _, name := range slices.Sorted(maps.Keys(params.Parameters)) {
			if _, ok := declared[name]; !ok {
				p = append(p, fmt.Sprintf("main.parameters.json sets %s, which main.bicep does not declare", name))
			}
		}
	}
	return p
}
