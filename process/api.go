package process

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/procmetrics"
	"github.com/praas-dev/praas/internal/tracing"
)

// Special process ids for Send, Recv and Invoke.
const (
	// Self names the calling process: Invoke(Self, ...) is a local call
	// without the network.
	Self = "@self"
	// Any matches every source in Recv.
	Any = "@any"
)

// Process is what functions use to reach their process: its state, its
// mailbox, other processes. It is shared by all invocations and safe for
// concurrent use.
type Process struct {
	rt *Runtime
}

// PID is this process's id.
func (p *Process) PID() string { return p.rt.cfg.PID }

// App is this process's application.
func (p *Process) App() string { return p.rt.cfg.App }

// Logger returns a logger for function whose records go to the process's
// log (see docs/observability.md), with the attributes app, pid and
// function (omitted if function is ""). Loggers are kept per function:
// calling it in every invocation costs a map lookup.
func (p *Process) Logger(function string) *slog.Logger {
	if l, ok := p.rt.loggers.Load(function); ok {
		return l.(*slog.Logger)
	}
	l := p.rt.log
	if function != "" {
		l = l.With("function", function)
	}
	actual, _ := p.rt.loggers.LoadOrStore(function, l)
	return actual.(*slog.Logger)
}

// State returns the value stored under key. The slice must not be modified.
func (p *Process) State(key string) ([]byte, bool) { return p.rt.state.get(key) }

// SetState stores data under key. The process keeps data: the caller must not
// modify it afterwards. It fails with errs.ErrResourceExhausted, changing
// nothing, if the state would grow past its limit (praas up
// --max-state-bytes).
func (p *Process) SetState(key string, data []byte) error {
	if err := p.rt.state.set(key, data); err != nil {
		return err
	}
	p.rt.mutations.Add(1)
	return nil
}

// DeleteState removes key.
func (p *Process) DeleteState(key string) {
	p.rt.state.delete(key)
	p.rt.mutations.Add(1)
}

// UpdateState atomically replaces the value under key with fn's result and
// returns it; fn gets the old value (ok false if absent) and must not keep
// it. If the result would grow the state past its limit, nothing changes:
// UpdateState returns the old value and an error wrapping
// errs.ErrResourceExhausted.
func (p *Process) UpdateState(key string, fn func(old []byte, ok bool) []byte) ([]byte, error) {
	defer p.rt.mutations.Add(1)
	return p.rt.state.update(key, fn)
}

// StateKeys lists the keys in state, sorted.
func (p *Process) StateKeys() []string { return p.rt.state.keys() }

// Invoke runs function in process dest with input and returns its result.
// With dest Self it is a local call: no network, no copy of input.
func (p *Process) Invoke(ctx context.Context, dest, function string, input []byte) (out []byte, err error) {
	if dest == Self || dest == p.rt.cfg.PID {
		if p.rt.tracer != nil {
			var span trace.Span
			ctx, span = p.rt.tracer.StartInvoke(ctx, trace.SpanKindInternal, p.rt.cfg.App, p.rt.cfg.PID, function)
			defer func() { tracing.End(span, err) }()
		}
		fn, ok := p.rt.image.Lookup(function)
		if !ok {
			return nil, fmt.Errorf("%w: function %q is not in the image", errs.ErrNotFound, function)
		}
		if ctx.Value(triggeredKey{}) != nil {
			// The callee was not started by the caller's messages.
			ctx = context.WithValue(ctx, triggeredKey{}, (*triggeredBy)(nil))
		}
		if p.rt.metrics.off {
			return p.rt.call(ctx, fn, input)
		}
		start := time.Now()
		out, err = p.rt.call(ctx, fn, input)
		p.rt.metrics.record(fn, procmetrics.Local, time.Since(start), err)
		return out, err
	}
	return p.rt.remoteInvoke(ctx, dest, function, input)
}

// Send puts data into dest's mailbox under key, or Self's. It returns once
// the message is in the destination's mailbox. Order is kept per (source,
// destination, key). A key "F" or "F:K" that names a function with a
// message trigger starts that function instead (see OnMessage, MultiSource,
// Batch).
func (p *Process) Send(ctx context.Context, dest, key string, data []byte) error {
	return p.rt.send(ctx, dest, key, data)
}

// Recv returns the oldest unread message with key from src (a pid, or Any),
// waiting up to timeout for one to arrive. It fails with a deadline-exceeded
// error when none did.
func (p *Process) Recv(ctx context.Context, src, key string, timeout time.Duration) (Message, error) {
	if src == Self {
		src = p.rt.cfg.PID
	}
	m, err := p.rt.mailbox.get(ctx, src, key, timeout, func() { Blocking(ctx) })
	if err == nil {
		p.rt.mutations.Add(1)
	}
	return m, err
}

// Members returns the application's processes as last known (within about
// a second of any change). The process follows the membership from the
// first call of Members or WaitMembers on (the first call waits for it, up
// to two seconds).
func (p *Process) Members() Membership {
	p.rt.awaitMembers()
	m, _ := p.rt.members.get()
	return m
}

// WaitMembers waits until the membership epoch exceeds epoch and returns it.
func (p *Process) WaitMembers(ctx context.Context, epoch uint64) (Membership, error) {
	p.rt.members.want()
	for first := true; ; first = false {
		m, changed := p.rt.members.get()
		if m.Epoch > epoch {
			return m, nil
		}
		if first {
			Blocking(ctx)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return m, ctx.Err()
		}
	}
}
