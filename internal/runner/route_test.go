package runner

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRouteMatch(t *testing.T) {
	tests := []struct {
		template, path string
		want           map[string]string // nil: no match
	}{
		{"tokens/{serial}/assignment", "tokens/TK123/assignment", map[string]string{"serial": "TK123"}},
		{"tokens/{serial}/assignment", "Tokens/TK123/Assignment/", map[string]string{"serial": "TK123"}},
		// Kestrel decodes every escape but %2F (dotnet/aspnetcore#30655): the host keeps it in Params.
		{"tokens/{serial}/assignment", "tokens/a%2Fb%20c/assignment", map[string]string{"serial": "a%2Fb c"}},
		{"tokens/{serial}/assignment", "tokens/a%2fb/assignment", map[string]string{"serial": "a%2Fb"}},
		{"imports/{*name}", "imports/dir%2Fa%20b.csv", map[string]string{"name": "dir%2Fa b.csv"}},
		{"tokens/{serial}/assignment", "tokens//assignment", nil},
		{"tokens/{serial}/assignment", "tokens/a/b/assignment", nil},
		{"tokens/{serial}/assignment", "tokens/TK123", nil},
		{"imports/{name}", "imports/batch.csv", map[string]string{"name": "batch.csv"}},
		{"imports/{name}", "imports/batch.csv/x", nil},
		{"imports/{name:alpha}", "imports/x", map[string]string{"name": "x"}},
		{"imports/{name?}", "imports", map[string]string{}},
		{"imports/{name?}", "imports/a", map[string]string{"name": "a"}},
		{"files/{*rest}", "files/a/b/c", map[string]string{"rest": "a/b/c"}},
		{"files/{*rest}", "files", map[string]string{}},
		{"reports/{name}.json", "reports/a.b.json", map[string]string{"name": "a.b"}},
		{"a.b/{x}", "aXb/1", nil},
	}
	for _, tt := range tests {
		r, err := ParseRoute(tt.template)
		if err != nil {
			t.Fatalf("ParseRoute(%q): %v", tt.template, err)
		}
		got, ok := r.Match(tt.path)
		if tt.want == nil {
			if ok {
				t.Errorf("%q matched %q with %v; want no match", tt.template, tt.path, got)
			}
			continue
		}
		if !ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q on %q = %v, %v; want %v", tt.template, tt.path, got, ok, tt.want)
		}
	}
}

func TestParseRouteErrors(t *testing.T) {
	for _, tmpl := range []string{"", "/", "a//b", "a/{", "a/}", "a/{}", "a/{1x}", "{x}/{x}", "{*x}/y", "{x?}/y", "a{x?}", "a/{b c}"} {
		if _, err := ParseRoute(tmpl); err == nil {
			t.Errorf("ParseRoute(%q) succeeded; want an error", tmpl)
		}
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"tokens/{serial}/assignment", "imports/{name?}", "f/{*rest}", "a{b}c/{d:int}", "{", "}{"} {
		f.Add(s, "tokens/x/assignment")
	}
	f.Fuzz(func(t *testing.T, template, path string) {
		r, err := ParseRoute(template)
		if err != nil {
			return
		}
		params, ok := r.Match(path)
		if ok && len(params) > len(r.params) {
			t.Fatalf("%d params from a template with %d", len(params), len(r.params))
		}
	})
}

func TestBlobPattern(t *testing.T) {
	p, err := parseBlobPattern("seed-inbox/{name}")
	if err != nil {
		t.Fatal(err)
	}
	if p.container != "seed-inbox" {
		t.Fatalf("container %q", p.container)
	}
	got, ok := p.match("vendor/batch 1.csv")
	if !ok || got["name"] != "vendor/batch 1.csv" {
		t.Fatalf("match = %v, %v", got, ok)
	}
	p, err = parseBlobPattern("in/{stem}.csv")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := p.match("a.b.csv"); !ok || got["stem"] != "a.b" {
		t.Fatalf("match = %v, %v", got, ok)
	}
	if _, ok := p.match("a.xml"); ok {
		t.Fatal("a.xml matched in/{stem}.csv")
	}
	for _, bad := range []string{"", "nocontainer", "{c}/x", "c/{", "c/{1}"} {
		if _, err := parseBlobPattern(bad); err == nil {
			t.Errorf("parseBlobPattern(%q) succeeded", bad)
		}
	}
}

func TestParseTimeSpan(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"00:00:30", 30 * time.Second, true},
		{"00:10:00", 10 * time.Minute, true},
		{"01:00:00.500", time.Hour + 500*time.Millisecond, true},
		{"1.02:00:00", 26 * time.Hour, true},
		{"30", 0, false},
		{"00:60:00", 0, false},
		{"aa:00:00", 0, false},
		{"-1:00:00", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseTimeSpan(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseTimeSpan(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseTimeSpan(f *testing.F) {
	for _, s := range []string{"00:00:30", "1.02:03:04.5", "::", "1.:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseTimeSpan(s)
		if err == nil && d < 0 {
			t.Fatalf("%q: negative %v", s, d)
		}
	})
}

func TestParseHost(t *testing.T) {
	h, err := ParseHost([]byte(`{"functionTimeout":"00:10:00","extensions":{"http":{"routePrefix":""},
		"queues":{"maxDequeueCount":3,"batchSize":4,"visibilityTimeout":"00:00:30","maxPollingInterval":"00:00:05"},
		"blobs":{"maxDegreeOfParallelism":2}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Host{RoutePrefix: "", MaxDequeueCount: 3, BatchSize: 4, NewBatchThreshold: -1, VisibilityTimeout: 30 * time.Second,
		MaxPollInterval: 5 * time.Second, BlobParallelism: 2, PoisonBlobThreshold: 5, FunctionTimeout: 10 * time.Minute}
	if h != want {
		t.Fatalf("ParseHost = %+v\nwant %+v", h, want)
	}
	if h.QueueConcurrency() != 6 {
		t.Errorf("queue concurrency %d; want batchSize + batchSize/2 = 6", h.QueueConcurrency())
	}
	h, _ = ParseHost([]byte(`{"extensions":{"queues":{"batchSize":4,"newBatchThreshold":2},"blobs":{"poisonBlobThreshold":3}}}`))
	if h.QueueConcurrency() != 6 || h.PoisonBlobThreshold != 3 {
		t.Errorf("concurrency %d, poisonBlobThreshold %d; want 6 and 3", h.QueueConcurrency(), h.PoisonBlobThreshold)
	}
	h, _ = ParseHost([]byte(`{"extensions":{"queues":{"batchSize":4,"newBatchThreshold":0}}}`))
	if h.QueueConcurrency() != 4 {
		t.Errorf("newBatchThreshold 0: concurrency %d; want 4", h.QueueConcurrency())
	}
	if h, _ := ParseHost([]byte(`{}`)); h != DefaultHost() {
		t.Fatalf("empty host.json = %+v; want defaults", h)
	}
	if _, err := ParseHost([]byte(`{"extensions":{"queues":{"visibilityTimeout":"soon"}}}`)); err == nil ||
		!strings.Contains(err.Error(), "visibilityTimeout") {
		t.Fatalf("bad time span: err = %v", err)
	}
}

// The project's own host.json and functions/ must load: the local stack runs them.
func TestProjectFunctions(t *testing.T) {
	root := filepath.Join("..", "..")
	if _, err := LoadHost(filepath.Join(root, "host.json")); err != nil {
		t.Fatal(err)
	}
	fns, err := LoadFunctions(filepath.Join(root, "functions"))
	if err != nil {
		t.Fatal(err)
	}
	triggers := map[string]string{}
	for _, f := range fns {
		tr, _ := f.Trigger()
		triggers[f.Name] = tr.Type
	}
	want := map[string]string{"ImportSeeds": QueueTrigger, "ProvisionToken": QueueTrigger,
		"ProvisionFailed": QueueTrigger, "TokenAssignment": HTTPTrigger, "ImportStatus": HTTPTrigger, "PgpKey": HTTPTrigger,
		"Tokens": HTTPTrigger, "UserTokens": HTTPTrigger, "RetireToken": HTTPTrigger, "ReconcileLatest": HTTPTrigger,
		"Reconcile": TimerTrigger}
	if !reflect.DeepEqual(triggers, want) {
		t.Fatalf("functions = %v; want %v", triggers, want)
	}
}

func TestParseFunctionErrors(t *testing.T) {
	tests := map[string]string{
		"not json":    `{`,
		"no trigger":  `{"bindings":[{"name":"res","type":"http","direction":"out"}]}`,
		"two":         `{"bindings":[{"name":"a","type":"queueTrigger","direction":"in","queueName":"q","connection":"c"},{"name":"b","type":"blobTrigger","direction":"in","path":"c/{n}","connection":"c"}]}`,
		"no queue":    `{"bindings":[{"name":"a","type":"queueTrigger","direction":"in","connection":"c"}]}`,
		"bad path":    `{"bindings":[{"name":"a","type":"blobTrigger","direction":"in","path":"nocontainer","connection":"c"}]}`,
		"bad route":   `{"bindings":[{"name":"req","type":"httpTrigger","direction":"in","route":"a/{"}]}`,
		"unnamed":     `{"bindings":[{"type":"httpTrigger","direction":"in"}]}`,
		"out trigger": `{"bindings":[{"name":"a","type":"httpTrigger","direction":"out"}]}`,
	}
	for name, doc := range tests {
		if _, err := ParseFunction("F", []byte(doc)); err == nil {
			t.Errorf("%s: ParseFunction succeeded", name)
		}
	}
	dir := t.TempDir()
	if _, err := LoadFunctions(dir); err == nil {
		t.Error("LoadFunctions on an empty folder succeeded")
	}
	_ = os.MkdirAll(filepath.Join(dir, "F"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "F", "function.json"), []byte(`{`), 0o644)
	if _, err := LoadFunctions(dir); err == nil || !strings.Contains(err.Error(), "function.json") {
		t.Errorf("LoadFunctions with a broken function.json: %v", err)
	}
}
