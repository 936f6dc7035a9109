package handlers

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/oathpipe/oathpipe/shared/config"
	"github.com/oathpipe/oathpipe/shared/loopback"
	"github.com/oathpipe/oathpipe/shared/pipeline"
)

// binding is one entry of a function.json.
type binding struct {
	Name, Type, Direction, Path, Source, Connection, DataType, QueueName, AuthLevel, Route string
	Methods                                                                                []string
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestFunctionJSONMatchesHandlers pins every function.json to the handler routes, the binding
// names the handlers read, and the resource names in shared/config.
func TestFunctionJSONMatchesHandlers(t *testing.T) {
	want := map[string][]binding{
		FuncImportSeeds: {
			{Name: "event", Type: "queueTrigger", Direction: "in", QueueName: pipeline.ImportsQueue, Connection: config.StorageConnection}},
		FuncProvisionToken:  {{Name: "job", Type: "queueTrigger", Direction: "in", QueueName: pipeline.ProvisionQueue, Connection: config.StorageConnection}},
		FuncProvisionFailed: {{Name: "job", Type: "queueTrigger", Direction: "in", QueueName: pipeline.PoisonQueue, Connection: config.StorageConnection}},
		FuncTokenAssignment: {
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: "function", Route: TokenAssignmentRoute, Methods: lower(hostRoutedMethods)},
			{Name: "res", Type: "http", Direction: "out"}},
		FuncImportStatus: {
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: "function", Route: ImportStatusRoute, Methods: lower(hostRoutedMethods)},
			{Name: "res", Type: "http", Direction: "out"}},
		FuncPgpKey: {
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: "function", Route: PGPKeyRoute, Methods: lower(pgpKeyMethods)},
			{Name: "res", Type: "http", Direction: "out"}},
		FuncTokens: {
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: "function", Route: TokensRoute, Methods: lower(hostRoutedMethods)},
			{Name: "res", Type: "http", Direction: "out"}},
		FuncRetireToken: {
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: "function", Route: TokenRoute, Methods: lower(hostRoutedMethods)},
			{Name: "res", Type: "http", Direction: "out"}},
		FuncReconcile: {{Name: "timer", Type: "timerTrigger", Direction: "in"}},
		FuncReconcileLatest: {
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: "function", Route: ReconcileLatestRoute, Methods: lower(hostRoutedMethods)},
			{Name: "res", Type: "http", Direction: "out"}},
		FuncUserTokens: {
			{Name: "req", Type: "httpTrigger", Direction: "in", AuthLevel: "function", Route: UserTokensRoute, Methods: lower(hostRoutedMethods)},
			{Name: "res", Type: "http", Direction: "out"}},
	}
	dirs, err := os.ReadDir(filepath.Join("..", "functions"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		seen[d.Name()] = true
		w, ok := want[d.Name()]
		if !ok {
			t.Errorf("functions/%s has no handler", d.Name())
			continue
		}
		var fj struct{ Bindings []binding }
		readJSON(t, filepath.Join("..", "functions", d.Name(), "function.json"), &fj)
		if len(fj.Bindings) != len(w) {
			t.Errorf("%s: %d bindings, want %d", d.Name(), len(fj.Bindings), len(w))
			continue
		}
		for i := range w {
			g := fj.Bindings[i]
			if g.Name != w[i].Name || g.Type != w[i].Type || g.Direction != w[i].Direction || g.Path != w[i].Path ||
				g.Source != w[i].Source || g.Connection != w[i].Connection || g.DataType != w[i].DataType ||
				g.QueueName != w[i].QueueName || g.AuthLevel != w[i].AuthLevel || g.Route != w[i].Route || !slices.Equal(g.Methods, w[i].Methods) {
				t.Errorf("%s binding %d = %+v, want %+v", d.Name(), i, g, w[i])
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("functions/%s/function.json missing", name)
		}
	}
}

func lower(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.ToLower(s)
	}
	return out
}

func TestHostJSON(t *testing.T) {
	var host struct {
		Version       string
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string
				Arguments             []string
			}
			EnableForwardingHTTPRequest bool `json:"enableForwardingHttpRequest"`
		}
		Extensions struct {
			Queues struct {
				MessageEncoding   string
				MaxDequeueCount   int
				BatchSize         int
				NewBatchThreshold int
			}
		}
	}
	readJSON(t, filepath.Join("..", "host.json"), &host)
	d := host.CustomHandler.Description
	if host.Version != "2.0" || d.DefaultExecutablePath != "oathpipe" || !slices.Equal(d.Arguments, []string{"serve"}) {
		t.Errorf("host.json customHandler = %+v (version %q)", d, host.Version)
	}
	if host.CustomHandler.EnableForwardingHTTPRequest {
		t.Error("enableForwardingHttpRequest must stay off: the HTTP handlers read the JSON invocation payload")
	}
	q := host.Extensions.Queues
	if q.MessageEncoding != "none" {
		t.Errorf("queues.messageEncoding = %q, want none (the pipeline writes plain JSON text)", q.MessageEncoding)
	}
	if q.MaxDequeueCount != DefaultMaxDequeue {
		t.Errorf("queues.maxDequeueCount = %d, the handler assumes %d", q.MaxDequeueCount, DefaultMaxDequeue)
	}
	// docs/operations.md explains the figure: at most batchSize+newBatchThreshold tokens in
	// flight per instance keeps Graph writes under its per-app limit.
	if inFlight := q.BatchSize + q.NewBatchThreshold; q.BatchSize < 1 || inFlight > 8 {
		t.Errorf("queues batchSize %d + newBatchThreshold %d = %d tokens in flight per instance; keep it 1..8", q.BatchSize, q.NewBatchThreshold, inFlight)
	}
}

// hostSettings are read by the Functions host, not by oathpipe; they belong in local settings.
var hostSettings = map[string]bool{"FUNCTIONS_WORKER_RUNTIME": true, "AzureWebJobsStorage": true}

// TestLocalSettingsSample checks local.settings.sample.json holds every setting in
// config.Settings (except the port, which the host sets) and nothing unknown, and that its
// values pass config.Load.
func TestLocalSettingsSample(t *testing.T) {
	var ls struct {
		IsEncrypted bool
		Values      map[string]string
	}
	readJSON(t, filepath.Join("..", "local.settings.sample.json"), &ls)
	if ls.IsEncrypted {
		t.Error("IsEncrypted must be false in the sample")
	}
	known := map[string]bool{}
	for _, s := range config.Settings {
		known[s.Name] = true
		if s.Name == "FUNCTIONS_CUSTOMHANDLER_PORT" {
			if _, ok := ls.Values[s.Name]; ok {
				t.Errorf("%s is set by the Functions host; keep it out of local settings", s.Name)
			}
			continue
		}
		if _, ok := ls.Values[s.Name]; !ok {
			t.Errorf("local.settings.sample.json lacks %s (%s)", s.Name, s.Meaning)
		}
	}
	for k := range ls.Values {
		if !known[k] && !hostSettings[k] {
			t.Errorf("local.settings.sample.json sets %s, which config.Settings does not know", k)
		}
	}
	if ls.Values["AzureWebJobsStorage"] != "UseDevelopmentStorage=true" {
		t.Errorf("AzureWebJobsStorage = %q, want UseDevelopmentStorage=true (Azurite)", ls.Values["AzureWebJobsStorage"])
	}
	if ls.Values["FUNCTIONS_WORKER_RUNTIME"] != "custom" {
		t.Errorf("FUNCTIONS_WORKER_RUNTIME = %q, want custom", ls.Values["FUNCTIONS_WORKER_RUNTIME"])
	}
	// The values load (the CA file is written by the dev runner; point it at an existing file).
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) string {
		switch k {
		case "FUNCTIONS_CUSTOMHANDLER_PORT":
			return "7072"
		case "OATHPIPE_CA_FILE":
			return ca
		}
		return ls.Values[k]
	})
	if err != nil {
		t.Fatalf("the sample's values do not load: %v", err)
	}
	for _, u := range []string{cfg.KeyVaultURL, cfg.GraphURL} {
		if !loopback.URL(u) {
			t.Errorf("%s: local defaults must point at the stand-ins on loopback", u)
		}
	}
}
