package process

import (
	"context"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/internal/procmetrics"
	"github.com/praas-dev/praas/internal/tracing"
)

// triggers buffers messages for multi-source and batch functions until
// enough have arrived. The buffers are part of the process state (they are
// snapshotted with it).
type triggers struct {
	mu      sync.Mutex
	pending map[string][]Message // "function\x00invocation key" → messages in arrival order
}

func newTriggers() *triggers { return &triggers{pending: make(map[string][]Message)} }

// Triggered tells a function started by a message trigger the invocation
// key and the messages that started it, in arrival order. ok is false for
// an invocation that was not started by messages.
func Triggered(ctx context.Context) (key string, msgs []Message, ok bool) {
	t, _ := ctx.Value(triggeredKey{}).(*triggeredBy)
	if t == nil {
		return "", nil, false
	}
	return t.key, t.msgs, true
}

type triggeredKey struct{}

type triggeredBy struct {
	key  string
	msgs []Message
}

// splitKey splits a message key "FUNCTION:INVOCATION_KEY" (or "FUNCTION").
func splitKey(key string) (function, invocation string) {
	function, invocation, _ = strings.Cut(key, ":")
	return function, invocation
}

// deliver routes an arriving message: to a function trigger if its key
// names one, else into the mailbox. When the message completes a trigger it
// returns the invocation to run (the caller runs it, inline or as a
// goroutine); otherwise nil. A limited message is refused (ResourceExhausted)
// rather than queued in a mailbox at its limits (MaxMailbox, MaxMailboxBytes).
//
// queued is the message's sequence in this process's backup queue (0 for a
// live message). A queued message is taken, whatever the limits, only if
// its sequence is above the highest consumed so far, and that mark moves to
// it in the same critical section (under triggers.mu and mailbox.mu, which
// a checkpoint holds too): a snapshot holds a queued message, or the effect
// of handing it over, exactly when its mark covers it. One at or below the
// mark was consumed before (the queue is being delivered again after a
// crash of the control plane or of this process): it is dropped, and the
// caller acknowledges it as usual. A message handed to a trigger counts as
// consumed then, not when its invocation has finished.
func (rt *Runtime) deliver(m Message, limited bool, queued uint64) (func(context.Context), error) {
	// Counted once the change is made, as a checkpoint that saw the count
	// must also see the change.
	defer rt.mutations.Add(1)
	name, invKey := splitKey(m.Key)
	fn, ok := rt.image.Lookup(name)
	triggered := ok && fn.Trigger != NoTrigger
	if queued > 0 {
		rt.triggers.mu.Lock()
		rt.mailbox.mu.Lock()
		if queued <= rt.mailbox.queued {
			rt.mailbox.mu.Unlock()
			rt.triggers.mu.Unlock()
			return nil, nil
		}
		rt.mailbox.queued = queued
		var batch []Message
		if triggered {
			batch = rt.triggers.addLocked(fn, name, invKey, m)
		} else {
			_ = rt.mailbox.putLocked(m, 0, 0) // no limits: it cannot fail
		}
		rt.mailbox.mu.Unlock()
		rt.triggers.mu.Unlock()
		rt.metrics.backupDelivered.Add(1)
		return rt.triggerRun(fn, invKey, batch), nil
	}
	if !triggered {
		if !limited {
			rt.mailbox.put(m)
			return nil, nil
		}
		return nil, rt.mailbox.putWithin(m, rt.cfg.MaxMailbox, rt.cfg.MaxMailboxBytes)
	}
	var batch []Message
	if fn.Trigger == Standard {
		batch = []Message{m}
	} else {
		rt.triggers.mu.Lock()
		batch = rt.triggers.addLocked(fn, name, invKey, m)
		rt.triggers.mu.Unlock()
	}
	return rt.triggerRun(fn, invKey, batch), nil
}

// addLocked hands m to fn's trigger and returns the messages of the
// invocation it completes, or nil if the trigger waits for more. t.mu is
// held.
func (t *triggers) addLocked(fn *Function, name, invKey string, m Message) []Message {
	if fn.Trigger == Standard {
		return []Message{m}
	}
	bufKey := name + "\x00"
	if fn.Trigger == MultiSourceTrigger {
		bufKey += invKey
	}
	buf := append(t.pending[bufKey], m)
	if len(buf) < fn.N {
		t.pending[bufKey] = buf
		return nil
	}
	delete(t.pending, bufKey)
	return buf
}

// triggerRun returns the invocation of fn that batch starts (nil for none).
func (rt *Runtime) triggerRun(fn *Function, invKey string, batch []Message) func(context.Context) {
	if batch == nil {
		return nil
	}
	if fn.Trigger == BatchTrigger {
		invKey = ""
	}
	input := batch[0].Data
	if len(batch) > 1 {
		input = nil
	}
	rt.inflight.Add(1)
	return func(ctx context.Context) {
		defer rt.inflight.Done()
		tctx := context.WithValue(ctx, triggeredKey{}, &triggeredBy{key: invKey, msgs: batch})
		var span trace.Span
		if rt.tracer != nil {
			// A child of the span in ctx: the message that completed the trigger.
			tctx, span = rt.tracer.StartTriggered(tctx, fn.Name, batch[len(batch)-1].Key, len(batch))
		}
		_, err := rt.execute(tctx, fn, input, procmetrics.Triggered)
		if span != nil {
			tracing.End(span, err)
		}
		if err != nil {
			rt.log.Warn("triggered invocation failed", "function", fn.Name, "key", invKey, "err", err)
		}
	}
}

// snapshotLocked returns the buffered trigger messages. t.mu is held.
func (t *triggers) snapshotLocked() map[string][]Message {
	out := make(map[string][]Message, len(t.pending))
	for k, v := range t.pending {
		out[k] = append([]Message(nil), v...)
	}
	return out
}
