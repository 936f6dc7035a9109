// Package runner plays the Azure Functions host for the local stack: it reads host.json and
// functions/*/function.json, and delivers new blobs, queue messages and HTTP requests to a custom
// handler as invocations in the documented payload shape, with the host's retries and poison
// queues. It is a development tool; the deployed app runs under the real host.
package runner

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Binding is one entry of a function.json "bindings" array (only the fields the runner uses).
type Binding struct {
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	Direction  string   `json:"direction"`
	Path       string   `json:"path,omitempty"`
	Source     string   `json:"source,omitempty"`
	Connection string   `json:"connection,omitempty"`
	DataType   string   `json:"dataType,omitempty"`
	QueueName  string   `json:"queueName,omitempty"`
	Route      string   `json:"route,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	AuthLevel  string   `json:"authLevel,omitempty"`
	// Timer trigger: an NCRONTAB expression or %SETTING%, and the host's two switches.
	Schedule     string `json:"schedule,omitempty"`
	RunOnStartup bool   `json:"runOnStartup,omitempty"`
	UseMonitor   *bool  `json:"useMonitor,omitempty"`
}

// Trigger types the runner delivers.
const (
	BlobTrigger  = "blobTrigger"
	QueueTrigger = "queueTrigger"
	HTTPTrigger  = "httpTrigger"
)

// Function is one function folder: its name (the handler path) and bindings.
type Function struct {
	Name     string
	Bindings []Binding
}

// Trigger returns the function's trigger binding (the one whose type ends in "Trigger").
func (f Function) Trigger() (Binding, bool) {
	for _, b := range f.Bindings {
		if strings.HasSuffix(strings.ToLower(b.Type), "trigger") && strings.EqualFold(b.Direction, "in") {
			return b, true
		}
	}
	return Binding{}, false
}

// HTTPOutput returns the function's http output binding, if any.
func (f Function) HTTPOutput() (Binding, bool) {
	for _, b := range f.Bindings {
		if strings.EqualFold(b.Type, "http") && strings.EqualFold(b.Direction, "out") {
			return b, true
		}
	}
	return Binding{}, false
}

// LoadFunctions reads every dir/<Name>/function.json, sorted by name. A folder without a
// function.json is skipped, as the host does; a malformed one is an error.
func LoadFunctions(dir string) ([]Function, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read functions folder: %w", err)
	}
	var fns []Function
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name(), "function.json")
		raw, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		f, err := ParseFunction(e.Name(), raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		fns = append(fns, f)
	}
	sort.Slice(fns, func(i, j int) bool { return fns[i].Name < fns[j].Name })
	if len(fns) == 0 {
		return nil, fmt.Errorf("no function.json under %s", dir)
	}
	return fns, nil
}

// ParseFunction decodes a function.json document for the function called name and checks what
// the runner relies on: exactly one trigger, and the fields that trigger needs.
func ParseFunction(name string, raw []byte) (Function, error) {
	var doc struct {
		Bindings []Binding `json:"bindings"`
		Disabled bool      `json:"disabled"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return Function{}, fmt.Errorf("decode function.json: %w", err)
	}
	f := Function{Name: name, Bindings: doc.Bindings}
	triggers := 0
	for _, b := range doc.Bindings {
		if strings.HasSuffix(strings.ToLower(b.Type), "trigger") {
			triggers++
		}
	}
	if triggers != 1 {
		return Function{}, fmt.Errorf("want exactly one trigger binding, found %d", triggers)
	}
	t, ok := f.Trigger()
	if !ok {
		return Function{}, fmt.Errorf("trigger binding must have direction \"in\"")
	}
	if t.Name == "" {
		return Function{}, fmt.Errorf("trigger binding has no name")
	}
	switch t.Type {
	case BlobTrigger:
		if _, _, err := splitBlobPath(t.Path); err != nil {
			return Function{}, err
		}
		if t.Connection == "" {
			return Function{}, fmt.Errorf("blobTrigger %s has no connection", t.Name)
		}
	case QueueTrigger:
		if t.QueueName == "" || t.Connection == "" {
			return Function{}, fmt.Errorf("queueTrigger %s needs queueName and connection", t.Name)
		}
	case HTTPTrigger:
		if _, err := ParseRoute(routeOrName(t.Route, name)); err != nil {
			return Function{}, err
		}
	case TimerTrigger:
		if strings.TrimSpace(t.Schedule) == "" {
			return Function{}, fmt.Errorf("timerTrigger %s has no schedule", t.Name)
		}
	}
	return f, nil
}

// routeOrName is the route of an HTTP function: its template, or its name when none is given.
func routeOrName(route, name string) string {
	if route == "" {
		return name
	}
	return route
}

// Host is the part of host.json the runner honours.
type Host struct {
	RoutePrefix         string        // extensions.http.routePrefix, "api" by default
	MaxDequeueCount     int           // extensions.queues.maxDequeueCount, 5 by default
	BatchSize           int           // extensions.queues.batchSize, 16 by default
	NewBatchThreshold   int           // extensions.queues.newBatchThreshold, batchSize/2 by default (-1: not set)
	VisibilityTimeout   time.Duration // extensions.queues.visibilityTimeout: delay before a failed message is retried
	MaxPollInterval     time.Duration // extensions.queues.maxPollingInterval, 1 minute by default
	BlobParallelism     int           // extensions.blobs.maxDegreeOfParallelism, 8 by default
	PoisonBlobThreshold int           // extensions.blobs.poisonBlobThreshold, 5 by default
	FunctionTimeout     time.Duration // functionTimeout, 5 minutes by default
}

// DefaultHost is host.json's defaults as documented for the Functions host.
func DefaultHost() Host {
	return Host{RoutePrefix: "api", MaxDequeueCount: 5, BatchSize: 16, NewBatchThreshold: -1, MaxPollInterval: time.Minute,
		BlobParallelism: 8, PoisonBlobThreshold: 5, FunctionTimeout: 5 * time.Minute}
}

// QueueConcurrency is how many messages of one queue run at once on one instance: batchSize +
// newBatchThreshold (QueueListener.cs fetches a new batch once no more than newBatchThreshold
// are running; QueuesOptions.cs defaults newBatchThreshold to batchSize/2).
func (h Host) QueueConcurrency() int {
	n := h.NewBatchThreshold
	if n < 0 {
		n = h.BatchSize / 2
	}
	return h.BatchSize + n
}

// LoadHost reads host.json at path on top of DefaultHost.
func LoadHost(path string) (Host, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Host{}, fmt.Errorf("read host.json: %w", err)
	}
	return ParseHost(raw)
}

// ParseHost decodes a host.json document on top of DefaultHost.
func ParseHost(raw []byte) (Host, error) {
	var doc struct {
		FunctionTimeout string `json:"functionTimeout"`
		Extensions      struct {
			HTTP *struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
			Queues struct {
				MaxDequeueCount    int    `json:"maxDequeueCount"`
				BatchSize          int    `json:"batchSize"`
				NewBatchThreshold  *int   `json:"newBatchThreshold"`
				VisibilityTimeout  string `json:"visibilityTimeout"`
				MaxPollingInterval string `json:"maxPollingInterval"`
			} `json:"queues"`
			Blobs struct {
				MaxDegreeOfParallelism int `json:"maxDegreeOfParallelism"`
				PoisonBlobThreshold    int `json:"poisonBlobThreshold"`
			} `json:"blobs"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return Host{}, fmt.Errorf("decode host.json: %w", err)
	}
	h := DefaultHost()
	if doc.Extensions.HTTP != nil && doc.Extensions.HTTP.RoutePrefix != nil {
		h.RoutePrefix = strings.Trim(*doc.Extensions.HTTP.RoutePrefix, "/")
	}
	q := doc.Extensions.Queues
	if q.MaxDequeueCount > 0 {
		h.MaxDequeueCount = q.MaxDequeueCount
	}
	if q.BatchSize > 0 {
		h.BatchSize = q.BatchSize
	}
	if q.NewBatchThreshold != nil && *q.NewBatchThreshold >= 0 {
		h.NewBatchThreshold = *q.NewBatchThreshold
	}
	for _, d := range []struct {
		name, val string
		dst       *time.Duration
	}{
		{"extensions.queues.visibilityTimeout", q.VisibilityTimeout, &h.VisibilityTimeout},
		{"extensions.queues.maxPollingInterval", q.MaxPollingInterval, &h.MaxPollInterval},
		{"functionTimeout", doc.FunctionTimeout, &h.FunctionTimeout},
	} {
		if d.val == "" {
			continue
		}
		v, err := ParseTimeSpan(d.val)
		if err != nil {
			return Host{}, fmt.Errorf("host.json %s: %w", d.name, err)
		}
		*d.dst = v
	}
	if n := doc.Extensions.Blobs.MaxDegreeOfParallelism; n > 0 {
		h.BlobParallelism = n
	}
	if n := doc.Extensions.Blobs.PoisonBlobThreshold; n > 0 {
		h.PoisonBlobThreshold = n
	}
	return h, nil
}

// ParseTimeSpan reads a .NET TimeSpan as host.json writes it: "hh:mm:ss", "d.hh:mm:ss" or
// "hh:mm:ss.fff".
func ParseTimeSpan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days int
	if i := strings.IndexByte(s, '.'); i >= 0 && i < strings.IndexByte(s, ':') {
		if _, err := fmt.Sscanf(s[:i], "%d", &days); err != nil {
			return 0, fmt.Errorf("%q is not a time span", s)
		}
		s = s[i+1:]
	}
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, fmt.Errorf("%q is not a time span (want hh:mm:ss)", s)
	}
	var h, m int
	if _, err := fmt.Sscanf(parts[0]+" "+parts[1], "%d %d", &h, &m); err != nil {
		return 0, fmt.Errorf("%q is not a time span", s)
	}
	sec, err := time.ParseDuration(parts[2] + "s")
	if err != nil || h < 0 || m < 0 || m > 59 || sec < 0 || sec >= time.Minute || days < 0 {
		return 0, fmt.Errorf("%q is not a time span", s)
	}
	return time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + sec, nil
}
