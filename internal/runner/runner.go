package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

// Options configures a Runner.
type Options struct {
	Functions  []Function
	Host       Host              // host.json settings (DefaultHost when zero)
	HandlerURL string            // the custom handler, e.g. http://127.0.0.1:PORT
	HostID     string            // names the blob receipts; "oathpipe-dev" by default
	Connection map[string]string // storage connection strings by connection name ("SeedStorage")
	HTTPClient *http.Client      // for the handler; a client without timeout by default
	Logger     *slog.Logger
	// PollInterval is how often blob containers are listed and the shortest queue poll
	// (250ms by default); empty queues back off up to Host.MaxPollInterval.
	PollInterval time.Duration
	// Observe, when set, is called after every delivery (from several goroutines).
	Observe func(Delivery)
	// EventGrid plays Event Grid system-topic subscriptions: every blob created in Container
	// becomes a Microsoft.Storage.BlobCreated event message on Queue.
	EventGrid []EventGridSubscription
	// AppSetting resolves %NAME% in binding properties (a timer's schedule), as the host reads
	// app settings; nil resolves nothing.
	AppSetting func(name string) string
}

// EventGridSubscription is one Event Grid subscription the runner plays: BlobCreated events of
// a container delivered to a storage queue (StorageQueue destination, EventGridSchema).
type EventGridSubscription struct {
	Connection string // connection name ("SeedStorage")
	Container  string // "seed-inbox"
	Queue      string // "seed-imports"
}

// Delivery describes one invocation the runner made.
type Delivery struct {
	Function     string
	Trigger      string // blobTrigger, queueTrigger, httpTrigger, timerTrigger
	Key          string // blob name, queue message id, or "METHOD /api/path"
	DequeueCount int    // tries so far, for blob and queue triggers
	Err          error  // nil when the handler answered 2xx
	Poisoned     bool   // the item was moved to the poison queue after this delivery
	Skipped      bool   // a message of a "-poison" queue past maxDequeueCount: not invoked, left invisible
	Duration     time.Duration
}

// Runner delivers invocations to the handler. Create it with New; Run drives the storage
// triggers and ServeHTTP is the HTTP front (/api/...).
type Runner struct {
	fns        []Function
	host       Host
	handlerURL string
	hostID     string
	client     *http.Client
	log        *slog.Logger
	poll       time.Duration
	observe    func(Delivery)

	blobs  []*blobWatch
	queues []*queueWatch
	grids  []*gridWatch
	timers []*timerWatch
	routes []httpRoute
}

// New checks the options, builds the storage clients for every trigger's connection and
// compiles the HTTP routes. It does not contact storage.
func New(o Options) (*Runner, error) {
	if o.HandlerURL == "" {
		return nil, errors.New("runner: HandlerURL is required")
	}
	// Zero fields take host.json's defaults.
	def := DefaultHost()
	if o.Host == (Host{}) {
		o.Host = def
	}
	if o.Host.MaxDequeueCount <= 0 {
		o.Host.MaxDequeueCount = def.MaxDequeueCount
	}
	if o.Host.BatchSize <= 0 {
		o.Host.BatchSize = def.BatchSize
	}
	if o.Host.PoisonBlobThreshold <= 0 {
		o.Host.PoisonBlobThreshold = def.PoisonBlobThreshold
	}
	if o.Host.BlobParallelism <= 0 {
		o.Host.BlobParallelism = def.BlobParallelism
	}
	if o.Host.FunctionTimeout <= 0 {
		o.Host.FunctionTimeout = def.FunctionTimeout
	}
	if o.Host.MaxPollInterval <= 0 {
		o.Host.MaxPollInterval = def.MaxPollInterval
	}
	r := &Runner{
		fns: o.Functions, host: o.Host, handlerURL: o.HandlerURL, hostID: o.HostID,
		client: o.HTTPClient, log: o.Logger, poll: o.PollInterval, observe: o.Observe,
	}
	if r.hostID == "" {
		r.hostID = "oathpipe-dev"
	}
	if r.client == nil {
		r.client = &http.Client{}
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.poll <= 0 {
		r.poll = 250 * time.Millisecond
	}
	blobClients := map[string]*azblob.Client{}
	queueClients := map[string]*azqueue.ServiceClient{}
	conn := func(name string) (*azblob.Client, *azqueue.ServiceClient, error) {
		if c, ok := blobClients[name]; ok {
			return c, queueClients[name], nil
		}
		cs := o.Connection[name]
		if cs == "" {
			return nil, nil, fmt.Errorf("runner: no connection string for connection %q", name)
		}
		bc, err := azblob.NewClientFromConnectionString(cs, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("runner: blob client for %q: %w", name, err)
		}
		qc, err := azqueue.NewServiceClientFromConnectionString(cs, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("runner: queue client for %q: %w", name, err)
		}
		blobClients[name], queueClients[name] = bc, qc
		return bc, qc, nil
	}
	for _, g := range o.EventGrid {
		bc, qc, err := conn(g.Connection)
		if err != nil {
			return nil, err
		}
		r.grids = append(r.grids, newGridWatch(r, g, bc, qc))
	}
	for _, fn := range o.Functions {
		t, ok := fn.Trigger()
		if !ok {
			return nil, fmt.Errorf("runner: function %s has no trigger", fn.Name)
		}
		switch t.Type {
		case BlobTrigger:
			bc, qc, err := conn(t.Connection)
			if err != nil {
				return nil, err
			}
			pat, err := parseBlobPattern(t.Path)
			if err != nil {
				return nil, fmt.Errorf("runner: function %s: %w", fn.Name, err)
			}
			r.blobs = append(r.blobs, newBlobWatch(r, fn, t, pat, bc, qc))
		case QueueTrigger:
			_, qc, err := conn(t.Connection)
			if err != nil {
				return nil, err
			}
			qw := &queueWatch{r: r, fn: fn, trig: t, q: qc.NewQueueClient(t.QueueName)}
			// QueueListenerFactory.cs CreatePoisonQueueReference: a queue whose name ends in
			// "-poison" has no poison queue.
			if !strings.HasSuffix(strings.ToLower(t.QueueName), PoisonSuffix) {
				qw.poison = qc.NewQueueClient(t.QueueName + PoisonSuffix)
			}
			r.queues = append(r.queues, qw)
		case HTTPTrigger:
			rt, err := ParseRoute(routeOrName(t.Route, fn.Name))
			if err != nil {
				return nil, fmt.Errorf("runner: function %s: %w", fn.Name, err)
			}
			r.routes = append(r.routes, httpRoute{fn: fn, trig: t, route: rt})
		case TimerTrigger:
			// The host resolves %NAME% from the app settings and refuses a function whose
			// schedule does not parse; so does the runner.
			expr, err := resolveSetting(t.Schedule, o.AppSetting)
			if err == nil {
				var sched *schedule
				if sched, err = parseSchedule(expr); err == nil {
					r.timers = append(r.timers, &timerWatch{r: r, fn: fn, trig: t, sched: sched, now: time.Now})
				}
			}
			if err != nil {
				return nil, fmt.Errorf("runner: function %s: %w", fn.Name, err)
			}
		default:
			r.log.Warn("trigger type not run locally; function skipped", logctx.Function, fn.Name, "trigger", t.Type)
		}
	}
	return r, nil
}

// Run delivers blob and queue triggers until ctx is done, then waits for the invocations in
// flight: they are cancelled, and their queue messages made visible again at once, as the host
// does when it shuts down.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, b := range r.blobs {
		wg.Add(1)
		go func() { defer wg.Done(); b.run(ctx) }()
	}
	for _, q := range r.queues {
		wg.Add(1)
		go func() { defer wg.Done(); q.run(ctx) }()
	}
	for _, g := range r.grids {
		wg.Add(1)
		go func() { defer wg.Done(); g.run(ctx) }()
	}
	for _, t := range r.timers {
		wg.Add(1)
		go func() { defer wg.Done(); t.run(ctx) }()
	}
	wg.Wait()
	return nil
}

func (r *Runner) report(d Delivery) {
	lvl := slog.LevelInfo
	attrs := []any{"function", d.Function, "trigger", d.Trigger, "key", d.Key, "ms", d.Duration.Milliseconds()}
	if d.DequeueCount > 0 {
		attrs = append(attrs, "try", d.DequeueCount)
	}
	msg := "delivered"
	if d.Err != nil {
		lvl, msg = slog.LevelWarn, "delivery failed"
		attrs = append(attrs, "err", d.Err)
	}
	if d.Poisoned {
		lvl, msg = slog.LevelError, "moved to poison queue"
	}
	if d.Skipped {
		lvl, msg = slog.LevelError, "skipped: past maxDequeueCount on a queue without a poison queue; it stays invisible until it expires"
	}
	r.log.Log(context.Background(), lvl, msg, attrs...)
	if r.observe != nil {
		r.observe(d)
	}
}

// sleep waits for d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
