package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
	// Polled, when set, is called at the end of every turn of a storage trigger's polling loop
	// (from several goroutines). A test that asserts something is not delivered waits for a
	// settled turn that began after the thing had its chance (Poll.Settled).
	Polled func(Poll)
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

// Poll describes one turn of a storage trigger's polling loop: a blob trigger's or an Event
// Grid subscription's listing of its container, or a queue trigger's dequeue.
type Poll struct {
	Function string    // the function; "" for an Event Grid subscription
	Source   string    // the container or queue polled
	Began    time.Time // when the turn began
	Started  int       // deliveries the turn started (for Event Grid: events it queued)
	InFlight int       // the watcher's deliveries still running when the turn ended, those it started included
	Full     bool      // a queue trigger with no free slot: the turn did not dequeue
	Err      error     // the listing, dequeue or event write failed
}

// Settled reports whether the turn looked, found nothing to start and had nothing running:
// every delivery the watcher started before it has finished and been reported to Observe
// (for Event Grid: every blob listed has had its event queued).
func (p Poll) Settled() bool {
	return !p.Full && p.Err == nil && p.Started == 0 && p.InFlight == 0
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
	polled     func(Poll)

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
	r := &Runner{
		fns: o.Functions, host: o.Host.withDefaults(), handlerURL: o.HandlerURL, hostID: o.HostID,
		client: o.HTTPClient, log: o.Logger, poll: o.PollInterval, observe: o.Observe, polled: o.Polled,
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
	conns := &connections{strings: o.Connection, blobs: map[string]*azblob.Client{}, queues: map[string]*azqueue.ServiceClient{}}
	for _, g := range o.EventGrid {
		bc, qc, err := conns.get(g.Connection)
		if err != nil {
			return nil, err
		}
		r.grids = append(r.grids, newGridWatch(r, g, bc, qc))
	}
	for _, fn := range o.Functions {
		if err := r.add(fn, conns, o.AppSetting); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// withDefaults is h with its zero fields taking host.json's defaults (all of them when h is zero).
func (h Host) withDefaults() Host {
	def := DefaultHost()
	if h == (Host{}) {
		return def
	}
	orDefault(&h.MaxDequeueCount, def.MaxDequeueCount)
	orDefault(&h.BatchSize, def.BatchSize)
	orDefault(&h.PoisonBlobThreshold, def.PoisonBlobThreshold)
	orDefault(&h.BlobParallelism, def.BlobParallelism)
	orDefault(&h.FunctionTimeout, def.FunctionTimeout)
	orDefault(&h.MaxPollInterval, def.MaxPollInterval)
	return h
}

// orDefault sets *v to def when it is not positive.
func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// connections builds one blob and one queue client per connection name, on first use.
type connections struct {
	strings map[string]string // connection strings by name
	blobs   map[string]*azblob.Client
	queues  map[string]*azqueue.ServiceClient
}

func (c *connections) get(name string) (*azblob.Client, *azqueue.ServiceClient, error) {
	if bc, ok := c.blobs[name]; ok {
		return bc, c.queues[name], nil
	}
	cs := c.strings[name]
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
	c.blobs[name], c.queues[name] = bc, qc
	return bc, qc, nil
}

// add sets up the watcher or route of one function by its trigger.
func (r *Runner) add(fn Function, conns *connections, setting func(string) string) error {
	t, ok := fn.Trigger()
	if !ok {
		return fmt.Errorf("runner: function %s has no trigger", fn.Name)
	}
	switch t.Type {
	case BlobTrigger:
		bc, qc, err := conns.get(t.Connection)
		if err != nil {
			return err
		}
		pat, err := parseBlobPattern(t.Path)
		if err != nil {
			return fmt.Errorf("runner: function %s: %w", fn.Name, err)
		}
		r.blobs = append(r.blobs, newBlobWatch(r, fn, t, pat, bc, qc))
	case QueueTrigger:
		_, qc, err := conns.get(t.Connection)
		if err != nil {
			return err
		}
		r.queues = append(r.queues, newQueueWatch(r, fn, t, qc))
	case HTTPTrigger:
		rt, err := ParseRoute(routeOrName(t.Route, fn.Name))
		if err != nil {
			return fmt.Errorf("runner: function %s: %w", fn.Name, err)
		}
		r.routes = append(r.routes, httpRoute{fn: fn, trig: t, route: rt})
	case TimerTrigger:
		// The host resolves %NAME% from the app settings and refuses a function whose
		// schedule does not parse; so does the runner.
		sched, err := timerSchedule(t.Schedule, setting)
		if err != nil {
			return fmt.Errorf("runner: function %s: %w", fn.Name, err)
		}
		r.timers = append(r.timers, &timerWatch{r: r, fn: fn, trig: t, sched: sched, now: time.Now})
	default:
		r.log.Warn("trigger type not run locally; function skipped", logctx.Function, fn.Name, "trigger", t.Type)
	}
	return nil
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

// reportPoll hands one finished polling turn to Options.Polled.
func (r *Runner) reportPoll(p Poll) {
	if r.polled != nil {
		r.polled(p)
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
