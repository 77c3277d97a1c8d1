package process

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
)

// Message is one mailbox message.
type Message struct {
	Src  string // sending pid; empty for a message from outside the app
	Key  string
	Data []byte
}

// mailbox holds unread messages per key in arrival order and the receivers
// waiting for them. A message is handed straight to the oldest matching
// waiter, so receivers wake without polling and Recv(Any) is first come,
// first served across sources.
type mailbox struct {
	mu      sync.Mutex
	queues  map[string][]Message
	waiters map[string][]*waiter
	size    int   // unread messages
	bytes   int64 // their data
	// queued is the highest backup-queue sequence consumed: the last
	// message the control plane delivered from this process's backup queue
	// is in the mailbox, was handed to a receiver, or was handed to a
	// trigger. It is written with both triggers.mu and mu held, together
	// with that hand-over (Runtime.deliver), and read under either, so a
	// checkpoint (which holds both) sees it and the message together.
	queued uint64
}

type waiter struct {
	src string // a pid, or Any
	ch  chan Message
}

func newMailbox() *mailbox {
	return &mailbox{queues: make(map[string][]Message), waiters: make(map[string][]*waiter)}
}

func matches(want, src string) bool { return want == Any || want == src }

// put delivers m to a waiting receiver or queues it, whatever the limits
// (a restored snapshot's messages were acknowledged long ago).
func (mb *mailbox) put(m Message) { _ = mb.putWithin(m, 0, 0) }

// putWithin delivers m to a waiting receiver, or queues it unless that
// would make more than maxN unread messages or maxBytes of their data (0:
// no limit); then it fails with errs.ErrResourceExhausted and m is not
// taken.
func (mb *mailbox) putWithin(m Message, maxN int, maxBytes int64) error {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.putLocked(m, maxN, maxBytes)
}

// putLocked is putWithin with mb.mu held.
func (mb *mailbox) putLocked(m Message, maxN int, maxBytes int64) error {
	ws := mb.waiters[m.Key]
	for i, w := range ws {
		if matches(w.src, m.Src) {
			mb.waiters[m.Key] = slices.Delete(ws, i, i+1)
			if len(mb.waiters[m.Key]) == 0 {
				delete(mb.waiters, m.Key)
			}
			w.ch <- m // buffered; each waiter gets one message
			return nil
		}
	}
	if (maxN > 0 && mb.size >= maxN) || (maxBytes > 0 && mb.bytes+int64(len(m.Data)) > maxBytes) {
		return fmt.Errorf("%w: mailbox full: %d unread messages of %d bytes (limits %d messages, %d bytes); the process must read some first",
			errs.ErrResourceExhausted, mb.size, mb.bytes, maxN, maxBytes)
	}
	mb.queues[m.Key] = append(mb.queues[m.Key], m)
	mb.size++
	mb.bytes += int64(len(m.Data))
	return nil
}

// take removes and returns the oldest queued message with key from src.
func (mb *mailbox) takeLocked(src, key string) (Message, bool) {
	q := mb.queues[key]
	for i, m := range q {
		if matches(src, m.Src) {
			if len(q) == 1 {
				delete(mb.queues, key)
			} else {
				mb.queues[key] = slices.Delete(q, i, i+1)
			}
			mb.size--
			mb.bytes -= int64(len(m.Data))
			return m, true
		}
	}
	return Message{}, false
}

// get waits for the oldest message with key from src (or Any) until timeout
// (0: do not wait) or ctx ends; beforeWait, if set, runs before it waits.
func (mb *mailbox) get(ctx context.Context, src, key string, timeout time.Duration, beforeWait func()) (Message, error) {
	mb.mu.Lock()
	if m, ok := mb.takeLocked(src, key); ok {
		mb.mu.Unlock()
		return m, nil
	}
	if timeout <= 0 {
		mb.mu.Unlock()
		return Message{}, fmt.Errorf("%w: no message with key %q from %s", errs.ErrNotFound, key, srcName(src))
	}
	w := &waiter{src: src, ch: make(chan Message, 1)}
	mb.waiters[key] = append(mb.waiters[key], w)
	mb.mu.Unlock()
	if beforeWait != nil {
		beforeWait()
	}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var cause error
	select {
	case m := <-w.ch:
		return m, nil
	case <-timer.C:
		cause = fmt.Errorf("%w: no message with key %q from %s within %s", errs.ErrDeadlineExceeded, key, srcName(src), timeout)
	case <-ctx.Done():
		cause = fmt.Errorf("%w: recv %q: %w", errs.ErrDeadlineExceeded, key, ctx.Err())
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	ws := mb.waiters[key]
	if i := slices.Index(ws, w); i >= 0 {
		mb.waiters[key] = slices.Delete(ws, i, i+1)
		if len(mb.waiters[key]) == 0 {
			delete(mb.waiters, key)
		}
		return Message{}, cause
	}
	// A message was handed over as we gave up: take it rather than lose it.
	return <-w.ch, nil
}

// snapshotLocked returns every unread message, oldest first per key. mb.mu
// is held.
func (mb *mailbox) snapshotLocked() []Message {
	out := make([]Message, 0, mb.size)
	keys := make([]string, 0, len(mb.queues))
	for k := range mb.queues {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, mb.queues[k]...)
	}
	return out
}

func srcName(src string) string {
	if src == Any {
		return "any process"
	}
	if src == "" {
		return "outside"
	}
	return src
}
