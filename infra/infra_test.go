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
}

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
		config.InboxContainer:    "config.InboxContainer",
		config.ReportsContainer:  "config.ReportsContainer",
		config.RejectedContainer: "config.RejectedContainer",
	}
	queues = map[string]string{
		config.ProvisionQueue: "config.ProvisionQueue",
		config.PoisonQueue:    "config.PoisonQueue",
	}
	tables = map[string]string{
		config.LedgerTable: "config.LedgerTable",
		config.AuditTable:  "config.AuditTable",
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
	for _, c := range []string{config.InboxContainer, config.RejectedContainer, config.ReportsContainer} {
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
	return p
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

// neededRole is an Azure built-in role the app's identity must hold, with its documented id and
// the kind of resource it must be scoped to (no broader).
type neededRole struct {
	Name, ID, Scope string
}

var neededRoles = []neededRole{
	{"Storage Blob Data Owner", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "Microsoft.Storage/storageAccounts"},
	{"Storage Queue Data Contributor", "974c5e8b-45b9-4653-ba55-5f855dd0fb88", "Microsoft.Storage/storageAccounts"},
	{"Storage Table Data Contributor", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "Microsoft.Storage/storageAccounts"},
	{"Key Vault Secrets Officer", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "Microsoft.KeyVault/vaults"},
	{"Monitoring Metrics Publisher", "3913510d-42f4-4e42-8a64-420c390055eb", "Microsoft.Insights/components"},
}

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// roleID resolves a roleAssignment's role definition to a GUID: a literal, or var.member.
func (e *estate) roleID(r resource) (string, error) {
	v, ok := lookup(r.Body, "properties.roleDefinitionId")
	if !ok {
		return "", fmt.Errorf("%s has no properties.roleDefinitionId", r)
	}
	m := regexp.MustCompile(`roleDefinitions'\s*,\s*(.+?)\s*\)$`).FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return "", fmt.Errorf("%s: roleDefinitionId %s: want subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <id>)", r, v)
	}
	arg := m[1]
	if s, ok := literal(arg); ok {
		return s, nil
	}
	if parts := strings.Split(arg, "."); len(parts) == 2 {
		f, _ := e.file(r.File)
		if obj, ok := f.variable(parts[0]); ok && strings.HasPrefix(obj, "{") {
			for _, en := range entries(obj[1 : len(obj)-1]) {
				if en.Key == parts[1] {
					if s, ok := literal(en.Value); ok {
						return s, nil
					}
				}
			}
		}
	}
	return "", fmt.Errorf("%s: cannot resolve role id %s to a literal GUID", r, arg)
}

func (e *estate) checkRoles() []string {
	var p []string
	byID := map[string]neededRole{}
	for _, n := range neededRoles {
		byID[strings.ToLower(n.ID)] = n
	}
	granted := map[string]bool{}
	for _, r := range e.ofType("Microsoft.Authorization/roleAssignments") {
		id, err := e.roleID(r)
		if err != nil {
			p = append(p, err.Error())
			continue
		}
		if !guidRE.MatchString(id) {
			p = append(p, fmt.Sprintf("%s: role id %q is not a GUID", r, id))
			continue
		}
		need, ok := byID[strings.ToLower(id)]
		if !ok {
			p = append(p, fmt.Sprintf("%s grants role %s, which is not one of the documented built-in roles the app needs (%s)", r, id, roleNames()))
			continue
		}
		granted[need.Name] = true
		if r.Comment == "" {
			p = append(p, fmt.Sprintf("%s (%s) has no comment above it saying why the app needs it", r, need.Name))
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
		scopeType := ""
		for _, s := range e.resources() {
			if s.File == r.File && s.Symbol == strings.TrimSpace(scope) {
				scopeType = s.Type
			}
		}
		if !strings.EqualFold(scopeType, need.Scope) {
			p = append(p, fmt.Sprintf("%s (%s) is scoped to %s (%s), want a %s", r, need.Name, scope, scopeType, need.Scope))
		}
	}
	for _, n := range neededRoles {
		if !granted[n.Name] {
			p = append(p, fmt.Sprintf("role %s (%s) is not granted to the app's identity in infra/", n.Name, n.ID))
		}
	}
	return p
}

func roleNames() string {
	var s []string
	for _, n := range neededRoles {
		s = append(s, n.Name)
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
	return p
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
	if n := len(e.ofType("Microsoft.ManagedIdentity/userAssignedIdentities")); n != 1 {
		p = append(p, fmt.Sprintf("want exactly one user-assigned identity (the app's only identity), found %d", n))
	}
	for _, f := range e.Bicep {
		if strings.Contains(f.Stripped, "SystemAssigned") {
			p = append(p, fmt.Sprintf("%s mentions SystemAssigned: the user-assigned identity is the only one anything uses", f.Path))
		}
	}
	return p
}

func (e *estate) checkEventGrid() []string {
	topics := e.ofType("Microsoft.EventGrid/systemTopics")
	if len(topics) != 1 {
		return []string{fmt.Sprintf("want one Event Grid system topic on the storage account (blob trigger source EventGrid), found %d", len(topics))}
	}
	return want(topics[0], "properties.topicType", "'Microsoft.Storage.StorageAccounts'")
}

// inboxOutputIs reports whether main.bicep's INBOX_CONTAINER output (which post-deploy.sh reads
// as $INBOX) is the container created with the given name.
func (e *estate) inboxOutputIs(container string) bool {
	var sym string
	for _, r := range e.ofType("Microsoft.Storage/storageAccounts/blobServices/containers") {
		if v, _ := lookup(r.Body, "name"); v == "'"+container+"'" {
			sym = r.Symbol
		}
	}
	var top, mod bool
	for _, f := range e.Bicep {
		for _, o := range f.outputs() {
			top = top || (o.Name == "INBOX_CONTAINER" && o.Value == "storage.outputs.inboxContainerName")
			mod = mod || (sym != "" && o.Name == "inboxContainerName" && o.Value == sym+".name")
		}
	}
	return top && mod
}

// graphPermissions are the application permissions post-deploy.sh must grant.
var graphPermissions = []string{"Policy.ReadWrite.AuthenticationMethod", "User.Read.All", "UserAuthenticationMethod.ReadWrite.All", "UserAuthMethod-HardwareOATH.ReadWrite.All"}

func (e *estate) checkPostDeploy() []string {
	var p []string
	// Only commands count: comments and messages (log, die) may name things the script does not do.
	var code []string
	for _, l := range strings.Split(e.PostDeploy, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") || strings.HasPrefix(t, "log ") || strings.HasPrefix(t, "die ") {
			continue
		}
		code = append(code, l)
	}
	s := strings.Join(code, "\n")
	for _, f := range e.Functions {
		for _, b := range f.Bindings {
			if b.Type != "blobTrigger" || !strings.EqualFold(b.Source, "EventGrid") {
				continue
			}
			container := strings.SplitN(b.Path, "/", 2)[0]
			m := regexp.MustCompile(`(?m)^\s*subscribe\s+` + f.Name + `\s+(\S+)`).FindStringSubmatch(s)
			if m == nil {
				p = append(p, fmt.Sprintf("post-deploy.sh has no `subscribe %s <container>` line: blob trigger %s (source EventGrid) gets no events", f.Name, f.Name))
			} else if arg := strings.Trim(m[1], `"'`); arg != container && !(arg == "$INBOX" && e.inboxOutputIs(container)) {
				p = append(p, fmt.Sprintf("post-deploy.sh subscribes %s to %s, want container %s (functions/%s)", f.Name, m[1], container, f.Name))
			}
		}
	}
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
	for _, want := range append([]string{"Host.Functions.", "blobs_extension", "Microsoft.Storage.BlobCreated", "/blobServices/default/containers/", "set -euo pipefail", "config-zip", "hardwareOath"}, graphPermissions...) {
		if !strings.Contains(s, want) {
			p = append(p, fmt.Sprintf("post-deploy.sh does not mention %s", want))
		}
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
	for _, p := range e.problems(config.Settings) {
		t.Error(p)
	}
}

// TestChecksCatchMistakes proves each check can fail: it feeds the checks the real templates
// with one thing removed or changed, and wants a problem that names that thing.
func TestChecksCatchMistakes(t *testing.T) {
	base := loadEstate(t)
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
		{name: "container renamed", edits: []edit{{"modules/storage.bicep", "name: 'seed-rejected'", "name: 'seed-rejects'"}}, want: "container seed-rejected (needed by config.RejectedContainer) is not created"},
		{name: "poison queue removed", edits: []edit{{"modules/storage.bicep", "name: 'token-provisioning-poison'", "name: 'token-provisioning-dead'"}}, want: "queue token-provisioning-poison"},
		{name: "audit table removed", edits: []edit{{"modules/storage.bicep", "name: 'oathpipeaudit'", "name: 'oathpipeaudits'"}}, want: "table oathpipeaudit (needed by config.AuditTable)"},
		{name: "function with a new queue", fn: &function{Name: "Requeue", Bindings: []binding{{Type: "queueTrigger", QueueName: "token-retry", Connection: "SeedStorage"}}}, want: "queue token-retry (needed by functions/Requeue/function.json)"},
		{name: "function with a new connection", fn: &function{Name: "Other", Bindings: []binding{{Type: "blob", Path: "seed-inbox/x", Connection: "OtherStorage"}}}, want: "OtherStorage__blobServiceUri"},
		{name: "shared key access on", edits: []edit{{"modules/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true"}}, want: "allowSharedKeyAccess is true"},
		{name: "TLS 1.0", edits: []edit{{"modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"}}, want: "minimumTlsVersion"},
		{name: "blob soft delete off", edits: []edit{{"modules/storage.bicep", "deleteRetentionPolicy: {\n      enabled: true", "deleteRetentionPolicy: {\n      enabled: false"}}, want: "deleteRetentionPolicy.enabled is false"},
		{name: "no lifecycle for rejected files", edits: []edit{{"modules/storage.bicep", "                '${rejectedContainer.name}/'\n", ""}}, want: "container seed-rejected has no lifecycle delete rule"},
		{name: "role removed", edits: []edit{{"modules/roles.bicep", "roleDefinitions', role.storageTableDataContributor)", "roleDefinitions', role.storageQueueDataContributor)"}}, want: "role Storage Table Data Contributor"},
		{name: "role id wrong", edits: []edit{{"modules/roles.bicep", "keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'", "keyVaultSecretsOfficer: '4633458b-17de-408a-b874-0445c86b69e6'"}}, want: "role Key Vault Secrets Officer (b86a8fe4-44ce-4948-aee5-eccb2c155cd7) is not granted"},
		{name: "broad role", edits: []edit{{"modules/roles.bicep", "monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'", "monitoringMetricsPublisher: 'b24988ac-6180-42a0-ab88-20f7382dd24c'"}}, want: "grants role b24988ac-6180-42a0-ab88-20f7382dd24c, which is not one of"},
		{name: "role on the wrong scope", edits: []edit{{"modules/roles.bicep", "  scope: vault\n", "  scope: storage\n"}}, want: "(Key Vault Secrets Officer) is scoped to storage"},
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
		{name: "post-deploy without the subscription", edits: []edit{{"post-deploy.sh", "\nsubscribe ImportSeeds ", "\n# subscribe ImportSeeds "}}, want: "post-deploy.sh has no `subscribe ImportSeeds <container>` line"},
		{name: "post-deploy on the wrong container", edits: []edit{{"modules/storage.bicep", "output inboxContainerName string = inboxContainer.name", "output inboxContainerName string = reportsContainer.name"}}, want: "post-deploy.sh subscribes ImportSeeds to \"$INBOX\", want container seed-inbox"},
		{name: "output the script needs removed", edits: []edit{{"main.bicep", "output EVENT_GRID_SYSTEM_TOPIC_NAME string", "output EVENTGRID_TOPIC string"}}, want: "reads deployment output EVENT_GRID_SYSTEM_TOPIC_NAME"},
		{name: "module parameter misspelt", edits: []edit{{"main.bicep", "    logRetentionDays: logRetentionDays\n", "    logRetentionDay: logRetentionDays\n"}}, want: "module monitoring does not pass logRetentionDays"},
		{name: "module output misspelt", edits: []edit{{"main.bicep", "= keyVault.outputs.uri", "= keyVault.outputs.url"}}, want: "keyVault.outputs.url, which the module does not declare"},
		{name: "parameter file out of step", edits: []edit{{"main.parameters.json", `"logLevel"`, `"loglevel"`}}, want: "main.parameters.json sets loglevel"},
		{name: "post-deploy without a Graph permission", edits: []edit{{"post-deploy.sh", "Policy.ReadWrite.AuthenticationMethod \"$assign\"", "\"$assign\""}}, want: "Policy.ReadWrite.AuthenticationMethod"},
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
		config.InboxContainer, config.ReportsContainer, config.RejectedContainer, "Entra ID P1 or P2",
		"Privileged Role Administrator", "Authentication Policy Administrator")
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
	for _, w := range []string{"path: infra", "module: main", "make package && bash infra/post-deploy.sh"} {
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
