package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/oathpipe/oathpipe/shared/logctx"
)

// PoisonSuffix ends the name of a queue's poison queue.
const PoisonSuffix = "-poison"

// PoisonQueueRetry is how long a failed message of a "-poison" queue stays invisible: the
// listener's own visibility timeout (QueueListener.cs, 10 minutes), as it has no poison queue.
const PoisonQueueRetry = 10 * time.Minute

// queueWatch delivers the messages of one queue to one queueTrigger function like the host:
// at most batchSize + newBatchThreshold at once; a message is hidden while its invocation runs,
// deleted on success, made visible again after Host.VisibilityTimeout on failure, and moved to
// <queue>-poison once it has been dequeued Host.MaxDequeueCount times without success. A queue
// whose name ends in "-poison" has no poison queue (poison is nil): a failed message stays
// invisible for PoisonQueueRetry, and one dequeued more than MaxDequeueCount times is skipped
// (left invisible, never invoked) until it expires.
type queueWatch struct {
	r      *Runner
	fn     Function
	trig   Binding
	q      *azqueue.QueueClient
	poison *azqueue.QueueClient // nil for a "-poison" queue
}

func newQueueWatch(r *Runner, fn Function, t Binding, qc *azqueue.ServiceClient) *queueWatch {
	w := &queueWatch{r: r, fn: fn, trig: t, q: qc.NewQueueClient(t.QueueName)}
	// QueueListenerFactory.cs CreatePoisonQueueReference: a queue whose name ends in
	// "-poison" has no poison queue.
	if !strings.HasSuffix(strings.ToLower(t.QueueName), PoisonSuffix) {
		w.poison = qc.NewQueueClient(t.QueueName + PoisonSuffix)
	}
	return w
}

func (w *queueWatch) run(ctx context.Context) {
	batch := w.r.host.QueueConcurrency()
	if batch < 1 {
		batch = 1
	}
	slots := make(chan struct{}, batch)
	var wg sync.WaitGroup
	defer wg.Wait()
	idle := w.r.poll
	missing := false
	for ctx.Err() == nil {
		turn := Poll{Function: w.fn.Name, Source: w.trig.QueueName, Began: time.Now()}
		free := batch - len(slots)
		if free == 0 {
			turn.Full, turn.InFlight = true, len(slots)
			w.r.reportPoll(turn)
			if !sleep(ctx, 20*time.Millisecond) {
				return
			}
			continue
		}
		msgs, err := w.dequeue(ctx, free, &missing)
		if ctx.Err() != nil {
			return
		}
		if err != nil || len(msgs) == 0 {
			turn.Err, turn.InFlight = err, len(slots)
			w.r.reportPoll(turn)
			if !sleep(ctx, idle) {
				return
			}
			idle = min(idle*2, max(w.r.host.MaxPollInterval, w.r.poll))
			continue
		}
		idle = w.r.poll
		for _, m := range msgs {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				w.deliver(ctx, m)
			}()
		}
		turn.Started, turn.InFlight = len(msgs), len(slots)
		w.r.reportPoll(turn)
	}
}

// dequeue receives up to free messages (at most 32), hidden for the function timeout plus a
// margin. What it receives after shutdown began is released at once. A missing queue is
// logged once (missing remembers it) and returned as its error.
func (w *queueWatch) dequeue(ctx context.Context, free int, missing *bool) ([]*azqueue.DequeuedMessage, error) {
	// Hidden for the function timeout (plus a margin); released early on failure or shutdown.
	lease := int32((w.r.host.FunctionTimeout + time.Minute) / time.Second)
	// Not cancelled by shutdown: a dequeue cut off after the service hid its messages would
	// lose them for the whole lease. What it returns after shutdown is released below.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	resp, err := w.q.DequeueMessages(dctx, &azqueue.DequeueMessagesOptions{
		NumberOfMessages: to.Ptr(int32(min(free, 32))), VisibilityTimeout: to.Ptr(lease),
	})
	cancel()
	switch {
	case ctx.Err() != nil:
		if err == nil {
			w.release(resp.Messages)
		}
		return nil, ctx.Err()
	case queueerror.HasCode(err, queueerror.QueueNotFound):
		if !*missing {
			w.r.log.Info("queue does not exist yet; waiting", "queue", w.trig.QueueName)
		}
		*missing = true
		return nil, err
	case err != nil:
		w.r.log.Warn("dequeue", "queue", w.trig.QueueName, logctx.Error, err)
		return nil, err
	}
	*missing = false
	return resp.Messages, nil
}

func (w *queueWatch) deliver(ctx context.Context, m *azqueue.DequeuedMessage) {
	if m.MessageID == nil || m.PopReceipt == nil || m.MessageText == nil {
		return
	}
	start := time.Now()
	id, pop, text := *m.MessageID, *m.PopReceipt, *m.MessageText
	count := 0
	if m.DequeueCount != nil {
		count = int(*m.DequeueCount)
	}
	d := Delivery{Function: w.fn.Name, Trigger: QueueTrigger, Key: id, DequeueCount: count}
	// A message already dequeued more often than allowed (a crash mid-invocation) goes
	// straight to the poison queue, as the host does (QueueProcessor.cs
	// BeginProcessingMessageAsync); without a poison queue it is skipped, left invisible.
	if count > w.r.host.MaxDequeueCount {
		d.Err = fmt.Errorf("dequeued %d times (max %d)", count, w.r.host.MaxDequeueCount)
		if w.poison != nil {
			d.Poisoned = w.moveToPoison(ctx, id, pop, text)
		} else {
			d.Skipped = true
		}
		d.Duration = time.Since(start)
		w.r.report(d)
		return
	}

	p := Payload{Data: map[string]any{w.trig.Name: hostString(text)}, Metadata: map[string]any{
		"DequeueCount": fmt.Sprint(count), // JsonConvert.SerializeObject of a number: "5"
		"Id":           hostString(id),
		"PopReceipt":   hostString(pop),
		"sys":          sysData(w.fn.Name, time.Now()),
	}}
	for key, t := range map[string]*time.Time{"InsertionTime": m.InsertionTime, "ExpirationTime": m.ExpirationTime, "NextVisibleTime": m.TimeNextVisible} {
		if t != nil {
			p.Metadata[key] = hostTime(*t)
		}
	}
	applyBindingData(p.Metadata, text)
	// The host cancels an invocation at functionTimeout; the lease outlasts it by a minute.
	ictx, icancel := context.WithTimeout(ctx, w.r.host.FunctionTimeout)
	_, err := w.r.Invoke(ictx, w.fn.Name, p)
	icancel()
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	switch {
	case err == nil:
		if _, derr := w.q.DeleteMessage(bg, id, pop, nil); derr != nil && !queueerror.HasCode(derr, queueerror.MessageNotFound) {
			w.r.log.Warn("delete message", "queue", w.trig.QueueName, "id", id, logctx.Error, derr)
		}
	case ctx.Err() != nil:
		// Shutting down: make the message visible again now so the next run takes it.
		if _, uerr := w.q.UpdateMessage(bg, id, pop, text, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(0))}); uerr != nil {
			w.r.log.Warn("release message", "queue", w.trig.QueueName, "id", id, logctx.Error, uerr)
		}
		return
	case count >= w.r.host.MaxDequeueCount && w.poison != nil:
		d.Err = err
		d.Poisoned = w.moveToPoison(bg, id, pop, text)
	default:
		d.Err = err
		vis := int32(w.r.host.VisibilityTimeout / time.Second)
		if w.poison == nil {
			vis = int32(PoisonQueueRetry / time.Second)
		}
		if _, uerr := w.q.UpdateMessage(bg, id, pop, text, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(vis)}); uerr != nil {
			w.r.log.Warn("release message", "queue", w.trig.QueueName, "id", id, logctx.Error, uerr)
		}
	}
	d.Duration = time.Since(start)
	w.r.report(d)
}

// release makes messages received during shutdown visible again at once.
func (w *queueWatch) release(msgs []*azqueue.DequeuedMessage) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range msgs {
		if m.MessageID == nil || m.PopReceipt == nil || m.MessageText == nil {
			continue
		}
		if _, err := w.q.UpdateMessage(ctx, *m.MessageID, *m.PopReceipt, *m.MessageText,
			&azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(0))}); err != nil {
			w.r.log.Warn("release message", "queue", w.trig.QueueName, "id", *m.MessageID, logctx.Error, err)
		}
	}
}

// moveToPoison copies the message text to <queue>-poison and deletes the original.
func (w *queueWatch) moveToPoison(ctx context.Context, id, pop, text string) bool {
	_, err := w.poison.EnqueueMessage(ctx, text, nil)
	if queueerror.HasCode(err, queueerror.QueueNotFound) {
		if _, cerr := w.poison.Create(ctx, nil); cerr != nil && !queueerror.HasCode(cerr, queueerror.QueueAlreadyExists) {
			err = errors.Join(err, cerr)
		} else {
			_, err = w.poison.EnqueueMessage(ctx, text, nil)
		}
	}
	if err != nil {
		w.r.log.Error("move to poison queue", "queue", w.trig.QueueName, "id", id, logctx.Error, err)
		return false
	}
	if _, err := w.q.DeleteMessage(ctx, id, pop, nil); err != nil && !queueerror.HasCode(err, queueerror.MessageNotFound) {
		w.r.log.Warn("delete poisoned message", "queue", w.trig.QueueName, "id", id, logctx.Error, err)
	}
	return true
}

// applyBindingData copies the top-level fields of a JSON message into the metadata, as the
// host's Utility.ApplyBindingData does (called from WorkerFunctionInvoker.cs TransformInput):
// objects stay objects, arrays are skipped, other values become strings (sent JSON-encoded
// twice, like every string), and a field replaces a host key of the same name, compared
// without case (the least convenient reading of the binding data's comparer).
func applyBindingData(meta map[string]any, text string) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &top); err != nil {
		return // not a JSON object: nothing to copy
	}
	for k, raw := range top {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || raw[0] == '[' || string(raw) == "null" {
			continue
		}
		var v any
		if raw[0] == '{' {
			var obj map[string]any
			if json.Unmarshal(raw, &obj) != nil {
				continue
			}
			v = obj
		} else {
			var s string
			if raw[0] == '"' {
				_ = json.Unmarshal(raw, &s)
			} else {
				s = string(raw)
			}
			v = hostString(s)
		}
		for hk := range meta {
			if strings.EqualFold(hk, k) {
				delete(meta, hk)
				k = hk // the host's key keeps its spelling; the value is the message's
			}
		}
		meta[k] = v
	}
}
