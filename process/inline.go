package process

import (
	"context"
	"sync/atomic"
	"time"
)

// Invocations run on the goroutine that read them from the connection.
// Starting a goroutine per invocation wakes an idle processor, which costs
// about as much as the network round trip of a small call; running inline
// makes the data plane cost little more than TCP itself.
//
// The reading moves to a new goroutine (a hand-off) as soon as the inline
// invocation may wait for long: when it waits in Recv, WaitMembers, for a
// concurrency slot or for a dependency, when it calls Blocking, or when it
// has run for longer than inlineBudget (noticed by the watchdog; this covers
// remote Invoke and Send, which usually take one round trip). Exactly one
// goroutine reads a connection at any time.

// inlineBudget is how long an invocation may hold its connection's reader.
const inlineBudget = time.Millisecond

// watchdogQuiet is how long the watchdog ticks with nothing inline before
// it sleeps, so an idle process costs no CPU.
const watchdogQuiet = 100 * time.Millisecond

const (
	inlineIdle int32 = iota
	inlineRunning
	inlineHandedOff
)

// reader is a goroutine reading one connection.
type reader struct {
	c     *serverConn
	ctx   context.Context
	state atomic.Int32
	since atomic.Int64 // monotonic nanoseconds when the inline invocation started
}

// handOff gives the connection to a new reading goroutine if this reader is
// running an invocation inline; the invocation then goes on as a goroutine
// of its own.
func (r *reader) handOff() {
	if r.state.CompareAndSwap(inlineRunning, inlineHandedOff) {
		go r.c.readFrames(r.ctx)
	}
}

// runInline runs an invocation on the reading goroutine and reports
// whether this goroutine still reads the connection afterwards.
func (r *reader) runInline(ctx context.Context, run func(context.Context)) bool {
	r.since.Store(monotonic())
	r.state.Store(inlineRunning)
	r.c.inline.Store(r)
	r.c.rt.watchdog.poke()
	run(context.WithValue(ctx, readerKey{}, r))
	r.c.inline.CompareAndSwap(r, nil)
	return r.state.CompareAndSwap(inlineRunning, inlineIdle)
}

type readerKey struct{}

// Blocking tells praas that the calling function is about to block or work
// for long (I/O, sleeps, heavy computation), so the connection it came from
// goes on serving other invocations meanwhile. praas's own blocking
// operations do this by themselves; without the call, the process notices
// within about a millisecond.
func Blocking(ctx context.Context) {
	if r, _ := ctx.Value(readerKey{}).(*reader); r != nil {
		r.handOff()
	}
}

var monoStart = time.Now()

func monotonic() int64 { return int64(time.Since(monoStart)) }

// watchdog hands off readers whose inline invocation runs past its budget.
type watchdog struct {
	rt     *Runtime
	asleep atomic.Bool
	wake   chan struct{}
}

func (w *watchdog) init(rt *Runtime) {
	w.rt = rt
	w.wake = make(chan struct{}, 1)
}

// poke wakes the watchdog if it sleeps; called after an inline invocation
// was published on its connection.
func (w *watchdog) poke() {
	if w.asleep.Load() && w.asleep.CompareAndSwap(true, false) {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// scan hands off overdue readers and reports whether any invocation runs inline.
func (w *watchdog) scan() bool {
	now := monotonic()
	busy := false
	w.rt.connsMu.Lock()
	defer w.rt.connsMu.Unlock()
	for c := range w.rt.conns {
		if r := c.inline.Load(); r != nil {
			busy = true
			if now-r.since.Load() > int64(inlineBudget) {
				r.handOff()
			}
		}
	}
	return busy
}

func (w *watchdog) run(ctx context.Context) {
	t := time.NewTicker(inlineBudget)
	defer t.Stop()
	quietSince := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w.scan() {
			quietSince = time.Now()
			continue
		}
		if time.Since(quietSince) < watchdogQuiet {
			continue
		}
		// Sleep until poked. Publishing an inline invocation happens before
		// poke reads asleep, and asleep is set before this scan, so either
		// poke sees asleep or the scan sees the invocation.
		w.asleep.Store(true)
		if w.scan() {
			w.asleep.Store(false)
			continue
		}
		t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		t.Reset(inlineBudget)
		quietSince = time.Now()
	}
}
