package pipeline_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oathpipe/oathpipe/shared/token"

	"github.com/oathpipe/oathpipe/shared/pipeline"
	"github.com/oathpipe/oathpipe/shared/pipeline/pipelinetest"
)

// crashPlan makes one named step fail once: "before" fails without doing the step, "after" does
// it and then fails, as if the process died between the step and the next one.
type crashPlan struct {
	mu    sync.Mutex
	op    string
	after bool
	fired bool
}

func (c *crashPlan) step(op string, fn func() error) error {
	c.mu.Lock()
	hit := !c.fired && c.op == op
	if hit {
		c.fired = true
	}
	c.mu.Unlock()
	if hit && !c.after {
		return &token.Error{Kind: token.KindTransient, Op: op, Message: "injected crash before the step"}
	}
	if err := fn(); err != nil {
		return err
	}
	if hit {
		return &token.Error{Kind: token.KindTransient, Op: op, Message: "injected crash after the step"}
	}
	return nil
}

type crashLedger struct {
	pipeline.Ledger
	c *crashPlan
}

func (l crashLedger) BeginImport(ctx context.Context, rec pipeline.ImportRecord) (out pipeline.ImportRecord, created bool, err error) {
	err = l.c.step("ledger.BeginImport", func() (e error) { out, created, e = l.Ledger.BeginImport(ctx, rec); return })
	return
}
func (l crashLedger) AddTokens(ctx context.Context, imp pipeline.ImportRecord, rows []pipeline.TokenRecord) error {
	return l.c.step("ledger.AddTokens", func() error { return l.Ledger.AddTokens(ctx, imp, rows) })
}
func (l crashLedger) SealImport(ctx context.Context, imp pipeline.ImportRecord) error {
	return l.c.step("ledger.SealImport", func() error { return l.Ledger.SealImport(ctx, imp) })
}
func (l crashLedger) EachToken(ctx context.Context, id string, from, to int, fn func(pipeline.TokenRecord) error) error {
	return l.c.step("ledger.EachToken", func() error { return l.Ledger.EachToken(ctx, id, from, to, fn) })
}
func (l crashLedger) SetImportStage(ctx context.Context, id string, stage pipeline.Stage, disp string) error {
	return l.c.step("ledger.SetImportStage."+string(stage), func() error { return l.Ledger.SetImportStage(ctx, id, stage, disp) })
}
func (l crashLedger) SetImportCheckpoint(ctx context.Context, id string, line, refused int) error {
	return l.c.step("ledger.SetImportCheckpoint", func() error { return l.Ledger.SetImportCheckpoint(ctx, id, line, refused) })
}
func (l crashLedger) GetToken(ctx context.Context, id string, line int) (r pipeline.TokenRecord, err error) {
	err = l.c.step("ledger.GetToken", func() (e error) { r, e = l.Ledger.GetToken(ctx, id, line); return })
	return
}
func (l crashLedger) SetTokenOutcome(ctx context.Context, id string, line int, o pipeline.Outcome) (last bool, err error) {
	err = l.c.step("ledger.SetTokenOutcome", func() (e error) { last, e = l.Ledger.SetTokenOutcome(ctx, id, line, o); return })
	return
}

type crashQueue struct {
	pipeline.Queue
	c *crashPlan
}

func (q crashQueue) Enqueue(ctx context.Context, msgs []pipeline.ProvisionMessage) error {
	return q.c.step("queue.Enqueue", func() error { return q.Queue.Enqueue(ctx, msgs) })
}

type crashBlobs struct {
	pipeline.Blobs
	c *crashPlan
}

func (b crashBlobs) PutReport(ctx context.Context, name string, js []byte, csv io.Reader) error {
	return b.c.step("blobs.PutReport", func() error { return b.Blobs.PutReport(ctx, name, js, csv) })
}
func (b crashBlobs) Reject(ctx context.Context, name, etag string, content io.Reader, target string) error {
	return b.c.step("blobs.Reject", func() error { return b.Blobs.Reject(ctx, name, etag, content, target) })
}
func (b crashBlobs) DeleteInbox(ctx context.Context, name, etag string) error {
	return b.c.step("blobs.DeleteInbox", func() error { return b.Blobs.DeleteInbox(ctx, name, etag) })
}

type crashVault struct {
	pipeline.SeedVault
	c *crashPlan
}

func (v crashVault) PutSeed(ctx context.Context, t token.Token, s token.Seed, id string) (retired time.Time, err error) {
	err = v.c.step("vault.PutSeed", func() (e error) { retired, e = v.SeedVault.PutSeed(ctx, t, s, id); return })
	return
}
func (v crashVault) GetSeed(ctx context.Context, m, serial string) (s token.Seed, err error) {
	err = v.c.step("vault.GetSeed", func() (e error) { s, e = v.SeedVault.GetSeed(ctx, m, serial); return })
	return
}

type crashDirectory struct {
	pipeline.Directory
	c *crashPlan
}

func (d crashDirectory) EnsureDevice(ctx context.Context, t token.Token, s token.Seed) (dev token.Device, created bool, err error) {
	err = d.c.step("directory.EnsureDevice", func() (e error) { dev, created, e = d.Directory.EnsureDevice(ctx, t, s); return })
	return
}
func (d crashDirectory) ResolveUser(ctx context.Context, upn string) (u token.User, err error) {
	err = d.c.step("directory.ResolveUser", func() (e error) { u, e = d.Directory.ResolveUser(ctx, upn); return })
	return
}
func (d crashDirectory) Assign(ctx context.Context, userID, deviceID string) (id string, err error) {
	err = d.c.step("directory.Assign", func() (e error) { id, e = d.Directory.Assign(ctx, userID, deviceID); return })
	return
}
func (d crashDirectory) Activate(ctx context.Context, userID, methodID string, s token.Seed, after time.Time) (used time.Time, err error) {
	err = d.c.step("directory.Activate", func() (e error) { used, e = d.Directory.Activate(ctx, userID, methodID, s, after); return })
	return
}
func (d crashDirectory) ListUserMethods(ctx context.Context, userID string) (ms []token.Method, err error) {
	err = d.c.step("directory.ListUserMethods", func() (e error) { ms, e = d.Directory.ListUserMethods(ctx, userID); return })
	return
}

// TestCrashBetweenSteps makes every step of Import and Provision fail once, before or after doing
// its work, re-runs the invocation the way the host would, and checks that the end state is the
// same as without the crash: nothing lost, nothing done twice.
func TestCrashBetweenSteps(t *testing.T) {
	ops := []string{
		// The import records its rows with AddTokens and SealImport (it once did with PutTokens),
		// and reads rows back with EachToken (for the report).
		"ledger.BeginImport", "vault.PutSeed", "ledger.AddTokens", "ledger.SealImport", "ledger.EachToken", "blobs.PutReport", "queue.Enqueue",
		"ledger.SetImportCheckpoint", "ledger.SetImportStage." + string(pipeline.StageEnqueued), "blobs.Reject", "blobs.DeleteInbox", "ledger.SetImportStage." + string(pipeline.StageDone),
		"ledger.GetToken", "vault.GetSeed", "directory.EnsureDevice", "directory.ResolveUser",
		"directory.ListUserMethods", "directory.Assign", "directory.Activate", "ledger.SetTokenOutcome",
	}
	ctx := context.Background()
	n := 0
	for _, op := range ops {
		for _, after := range []bool{false, true} {
			name := op + "/before"
			if after {
				name = op + "/after"
			}
			t.Run(name, func(t *testing.T) {
				n++
				s := pipelinetest.NewStack(t, pipelinetest.Options{}) // fresh: a user holds at most 5 tokens
				plan := &crashPlan{op: op, after: after}
				l, q, b := pipelinetest.NewMemLedger(), &pipelinetest.MemQueue{}, pipelinetest.NewMemBlobs()
				p := s.Pipeline(crashLedger{l, plan}, crashQueue{q, plan}, crashBlobs{b, plan}, func(d *pipeline.Deps) {
					d.Vault = crashVault{d.Vault, plan}
					d.Directory = crashDirectory{d.Directory, plan}
				})
				ss := &pipelinetest.SeedSet{}
				// Serials unique per case: the stand-ins are shared across cases.
				ser := func(i int) string { return fmt.Sprintf("CR%02d-%d", n, i) }
				clean := b.Upload("clean.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row(ser(1), ada), ss.Row(ser(2), "")}))
				bad := b.Upload("bad.csv", pipelinetest.EntraCSV([]pipelinetest.Row{ss.Row(ser(3), grace), {UPN: ada, Serial: ser(4), Secret: "x", Interval: "30", Manufacturer: "Token2", Model: "C202"}}))
				for _, f := range []pipeline.InboxFile{clean, bad} {
					var err error
					for attempt := 0; attempt < 3; attempt++ {
						if _, err = p.Import(ctx, f); err == nil {
							break
						}
						if k := token.KindOf(err); k != token.KindTransient && k != token.KindThrottled {
							t.Fatalf("import %s: a crash gave a permanent error: %v", f.Name, err)
						}
					}
					if err != nil {
						t.Fatalf("import %s never succeeded: %v", f.Name, err)
					}
				}
				pipelinetest.Drain(t, ctx, p, q)
				if !plan.fired {
					t.Fatalf("the crash at %s never fired", op)
				}
				if len(b.Inbox) != 0 {
					t.Errorf("inbox still holds %d files", len(b.Inbox))
				}
				if kept := b.Rejected[pipeline.RejectedName(pipeline.ImportID(bad.Name, bad.ETag), bad.Name)+".gpg"]; len(b.Rejected) != 1 || kept == nil ||
					string(pipelinetest.DecryptRejected(t, kept)) != string(bad.Content) {
					t.Errorf("rejected: %d files", len(b.Rejected))
				}
				for serial, want := range map[string]string{ser(1): "activated", ser(2): "available", ser(3): "activated"} {
					d, ok := s.Graph.Server.DeviceBySerial(serial)
					if !ok || d.Status != want || d.Activations > 1 {
						t.Errorf("%s: %+v, want %s once", serial, d, want)
					}
				}
				if _, ok := s.Graph.Server.DeviceBySerial(ser(4)); ok {
					t.Errorf("the invalid row reached Graph")
				}
				for _, f := range []string{"clean.csv", "bad.csv"} {
					st, err := p.ImportStatus(ctx, f)
					if err != nil || !st.Settled {
						t.Fatalf("%s: %+v %v", f, st, err)
					}
					js, _ := b.Report(f + ".json")
					if !strings.Contains(string(js), `"settled": true`) {
						t.Errorf("%s: the report on disk is not final:\n%s", f, js)
					}
				}
			})
		}
	}
}
