package process

import (
	"context"
	"strings"
	"sync"
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
func (rt *Runtime) deliver(m Message, limited bool) (func(context.Context), error) {
	// Counted once the change is made, as a checkpoint that saw the count
	// must also see the change.
	defer rt.mutations.Add(1)
	name, invKey := splitKey(m.Key)
	fn, ok := rt.image.Lookup(name)
	if !ok || fn.Trigger == NoTrigger {
		if !limited {
			rt.mailbox.put(m)
			return nil, nil
		}
		return nil, rt.mailbox.putWithin(m, rt.cfg.MaxMailbox, rt.cfg.MaxMailboxBytes)
	}
	var batch []Message
	switch fn.Trigger {
	case Standard:
		batch = []Message{m}
	case MultiSourceTrigger, BatchTrigger:
		bufKey := name + "\x00"
		if fn.Trigger == MultiSourceTrigger {
			bufKey += invKey
		}
		rt.triggers.mu.Lock()
		buf := append(rt.triggers.pending[bufKey], m)
		if len(buf) >= fn.N {
			batch = buf
			delete(rt.triggers.pending, bufKey)
		} else {
			rt.triggers.pending[bufKey] = buf
		}
		rt.triggers.mu.Unlock()
	}
	if batch == nil {
		return nil, nil
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
		if _, err := rt.execute(tctx, fn, input); err != nil {
			rt.log.Warn("triggered invocation failed", "function", fn.Name, "key", invKey, "err", err)
		}
	}, nil
}

// snapshotLocked returns the buffered trigger messages. t.mu is held.
func (t *triggers) snapshotLocked() map[string][]Message {
	out := make(map[string][]Message, len(t.pending))
	for k, v := range t.pending {
		out[k] = append([]Message(nil), v...)
	}
	return out
}
