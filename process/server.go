package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/internal/procmetrics"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/wire"
)

func (rt *Runtime) acceptLoop(ctx context.Context) {
	for {
		conn, err := rt.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				rt.log.Warn("accept", "err", err)
			}
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		c := &serverConn{
			rt:       rt,
			conn:     conn,
			w:        wire.NewWriter(conn),
			r:        wire.NewReader(conn, rt.cfg.MaxPayload),
			inflight: make(map[uint64]*tracked),
		}
		c.w.SetWriteTimeout(rt.cfg.WriteTimeout)
		c.room.L = &c.mu
		rt.connsMu.Lock()
		if rt.draining.Load() {
			rt.connsMu.Unlock()
			// Bounded: over TLS this write runs the handshake first.
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			_ = c.w.WriteFrame(wire.FrameError, 0, wire.EncodeCode(errs.Unavailable), []byte("process is shutting down"))
			conn.Close()
			continue
		}
		rt.conns[c] = struct{}{}
		rt.connsMu.Unlock()
		go c.serve(ctx)
	}
}

// serverConn is one accepted data-plane connection.
type serverConn struct {
	rt   *Runtime
	conn net.Conn
	w    *wire.Writer
	r    *wire.Reader
	// claims are those of the token the client said hello with: who it is
	// (Sub: a pid of the app, or "" for a client outside it or the control
	// plane) and what it may do here.
	claims token.Claims

	mu       sync.Mutex
	inflight map[uint64]*tracked // invocations received and not yet finished, for After
	closed   bool
	// Invocations read and not yet answered, and the bytes of their input
	// and output: over Config.MaxConnInflight or MaxConnInflightBytes the
	// connection stops reading until answers are written (TCP then pushes
	// back on the client). room is signalled when they drop, and at close.
	calls int
	bytes int64
	room  sync.Cond

	inline atomic.Pointer[reader] // the reader running an invocation inline, if any
	// path is how invocations on this connection count in the metrics:
	// from the control plane, a peer process or a client (set at hello).
	path procmetrics.Path
}

// tracked is an invocation that later ones on the connection may wait for.
type tracked struct {
	done chan struct{} // made only when someone waits
}

func (c *serverConn) serve(ctx context.Context) {
	if err := c.handshake(); err != nil {
		c.rt.log.Debug("data-plane handshake refused", "remote", c.conn.RemoteAddr(), "err", err)
		c.finish()
		return
	}
	c.readFrames(ctx)
}

// finish closes the connection and forgets it.
func (c *serverConn) finish() {
	c.close()
	c.rt.connsMu.Lock()
	delete(c.rt.conns, c)
	c.rt.connsMu.Unlock()
}

// readFrames reads and dispatches frames, running invocations inline (see
// inline.go). The goroutine that finds the connection closed finishes it.
func (c *serverConn) readFrames(ctx context.Context) {
	r := &reader{c: c, ctx: ctx}
	var pooled []byte        // the payload buffer of the current frame, if it came from the pool
	var decoded *wire.Invoke // the current frame's metadata, if borrow decoded it
	borrow := func(h wire.Header, meta []byte) []byte {
		if h.Type != wire.FrameInvoke || !c.claims.Ops.Has(token.OpInvoke) {
			return nil
		}
		inv, err := wire.DecodeInvoke(meta)
		if err != nil {
			return nil // the loop decodes again and reports it
		}
		decoded = &inv
		if fn, ok := c.rt.image.Lookup(inv.Function); ok && fn.BorrowsInput {
			pooled = getInput(int(h.BodyLen) - int(h.MetaLen))
		}
		return pooled
	}
	for {
		if !c.waitForRoom() {
			c.finish()
			return
		}
		pooled, decoded = nil, nil
		f, err := c.r.NextInto(borrow)
		if err != nil {
			if errors.Is(err, wire.ErrTooLarge) {
				c.replyError(f.ID, fmt.Errorf("%w: %w", errs.ErrTooLarge, err))
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.fatal(errs.InvalidArgument, err)
			}
			c.finish()
			return
		}
		c.rt.lastActive.Store(time.Now().UnixNano())
		switch f.Type {
		case wire.FrameInvoke:
			var inv wire.Invoke
			if decoded != nil {
				inv = *decoded
			} else if inv, err = wire.DecodeInvoke(f.Meta); err != nil {
				c.fatal(errs.InvalidArgument, err)
				return
			}
			if pooled != nil && (len(f.Payload) == 0 || &f.Payload[0] != &pooled[:1][0]) {
				pooled = nil // the payload did not fit the buffer: nothing to give back
			}
			if !c.claims.Ops.Has(token.OpInvoke) {
				c.refuse(f.ID, "invoke")
				continue
			}
			var span *invocationSpan
			if c.rt.tracer != nil {
				span = c.rt.startInvokeSpan(&f.Trace, inv.Function)
			}
			if run := c.startInvocation(f.ID, inv, f.Payload, pooled, span); run != nil {
				if !r.runInline(ctx, run) {
					return // handed off: another goroutine reads now
				}
			}
		case wire.FrameMessage:
			m, err := wire.DecodeMessage(f.Meta)
			if err != nil {
				c.fatal(errs.InvalidArgument, err)
				return
			}
			if !c.claims.Ops.Has(token.OpSend) {
				c.refuse(f.ID, "send")
				continue
			}
			if !c.claims.Ops.Has(token.OpRelay) {
				// A message is from whoever the token says the sender is;
				// only the control plane relays others' messages.
				m.Source = c.claims.Sub
			}
			var span trace.Span
			if c.rt.tracer != nil {
				span = c.rt.startReceiveSpan(&f.Trace, m.Key)
			}
			if strings.HasPrefix(m.Key, names.ControlPrefix) {
				err := fmt.Errorf("%w: message key %q is reserved for the control plane", errs.ErrPermissionDenied, m.Key)
				if c.claims.Ops.Has(token.OpRelay) {
					err = c.rt.controlMessage(m.Key, f.Payload)
				}
				if span != nil {
					tracing.End(span, err)
				}
				if err != nil {
					c.replyError(f.ID, err)
				} else {
					c.send(wire.FrameAck, f.ID, nil, nil)
				}
				continue
			}
			run, err := c.rt.acceptMessage(m, f.Payload, c.claims.Ops.Has(token.OpRelay))
			if span != nil {
				tracing.End(span, err)
				run = underSpan(run, span)
			}
			if err != nil {
				c.replyError(f.ID, err)
				continue
			}
			c.send(wire.FrameAck, f.ID, nil, nil)
			if run != nil && !r.runInline(ctx, run) {
				return // a triggered invocation took its time: another goroutine reads now
			}
		case wire.FramePing:
			c.send(wire.FramePong, f.ID, nil, f.Payload)
		default:
			c.fatal(errs.InvalidArgument, fmt.Errorf("%w: unexpected frame type %d", wire.ErrMalformed, f.Type))
			return
		}
	}
}

func (c *serverConn) handshake() error {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	f, err := c.r.Next()
	if err != nil {
		c.fatal(errs.InvalidArgument, err)
		return err
	}
	if f.Type != wire.FrameHello {
		err := fmt.Errorf("%w: first frame must be hello, got type %d", wire.ErrMalformed, f.Type)
		c.fatal(errs.InvalidArgument, err)
		return err
	}
	h, err := wire.DecodeHello(f.Meta)
	if len(f.Meta) >= 2 && h.Version < wire.MinVersion {
		err := fmt.Errorf("protocol version %d is not supported (%d to %d are)", h.Version, wire.MinVersion, wire.Version)
		c.fatal(errs.FailedPrecondition, err)
		return err
	}
	if err != nil {
		c.fatal(errs.InvalidArgument, err)
		return err
	}
	cfg := &c.rt.cfg
	claims, err := cfg.Verifier.Verify(h.Token, time.Now())
	if err != nil {
		err = fmt.Errorf("data-plane token for %s/%s: %w", cfg.App, cfg.PID, err)
		c.fatal(errs.Unauthenticated, err)
		return err
	}
	if !claims.Covers(cfg.App, cfg.PID) {
		err := fmt.Errorf("%w: the token is for %s/%s, not %s/%s", errs.ErrUnauthenticated, claims.App, claims.PID, cfg.App, cfg.PID)
		c.fatal(errs.Unauthenticated, err)
		return err
	}
	// The token is checked once, here: a connection may outlive it.
	c.claims = claims
	switch {
	case claims.Ops.Has(token.OpRelay): // only the control plane's tokens relay
		c.path = procmetrics.ControlPlane
	case claims.Sub != "":
		c.path = procmetrics.Remote
	default:
		c.path = procmetrics.DataPlane
	}
	w := wire.Welcome{Version: min(h.Version, wire.Version), App: cfg.App, PID: cfg.PID}
	return c.w.WriteFrame(wire.FrameWelcome, 0, w.Encode(), nil)
}

// fatal answers a connection-level error and finishes the connection;
// other connections are not affected.
func (c *serverConn) fatal(code errs.Code, err error) {
	c.send(wire.FrameError, 0, wire.EncodeCode(code), []byte(err.Error()))
	c.finish()
}

// send writes a frame. A write that fails (the peer went away, or did not
// read within Config.WriteTimeout) closes the connection: its reader stops
// and nothing waits on the peer any longer.
func (c *serverConn) send(typ uint8, id uint64, meta, payload []byte) {
	if err := c.w.WriteFrame(typ, id, meta, payload); err != nil {
		c.close()
	}
}

func (c *serverConn) close() {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.room.Broadcast()
	c.mu.Unlock()
	if !already {
		c.conn.Close()
	}
}

// goAway tells the client to take new work elsewhere. Sent from drain on a
// goroutine of its own: it may wait behind a result the client is slow to
// read, and drain must not.
func (c *serverConn) goAway(reason string) {
	c.send(wire.FrameGoAway, 0, wire.EncodeCode(errs.Unavailable), []byte(reason))
}

// waitForRoom blocks the reader while the connection's unanswered
// invocations are at their limits, and reports false once it is closed.
// One invocation is always let in, whatever its size.
func (c *serverConn) waitForRoom() bool {
	cfg := &c.rt.cfg
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && c.calls > 0 && (c.calls >= cfg.MaxConnInflight || c.bytes >= cfg.MaxConnInflightBytes) {
		c.room.Wait()
	}
	return !c.closed
}

// release gives back an answered invocation's count and bytes.
func (c *serverConn) release(n int) {
	c.mu.Lock()
	c.calls--
	c.bytes -= int64(n)
	c.room.Signal() // only the reader waits
	c.mu.Unlock()
}

// refuse answers a request the connection's token does not allow; the
// connection stays open for the requests it does allow.
func (c *serverConn) refuse(id uint64, op string) {
	c.replyError(id, fmt.Errorf("%w: this connection's token allows %s, not %s", errs.ErrPermissionDenied, c.claims.Ops, op))
}

func (c *serverConn) replyError(id uint64, err error) {
	code := errs.CodeOf(err)
	if code == errs.Unknown {
		code = errs.Internal
	}
	c.send(wire.FrameError, id, wire.EncodeCode(code), []byte(err.Error()))
}

// startInvocation registers an invocation and returns the function that
// runs it and replies, or nil if it was answered at once (an error).
//
// pooled, if not nil, is input's buffer, given back to the pool once the
// result is written. span, if not nil, is the invocation's span, ended
// with it.
func (c *serverConn) startInvocation(id uint64, inv wire.Invoke, input, pooled []byte, span *invocationSpan) func(context.Context) {
	fn, err := c.admit(inv.Function)
	if err != nil {
		if span != nil {
			tracing.End(span.Span, err)
		}
		// Answered outside admitMu: a socket write may wait on the client.
		c.replyError(id, err)
		putInput(pooled)
		return nil
	}
	var waitFor []chan struct{}
	c.mu.Lock()
	for _, dep := range inv.After {
		if t := c.inflight[dep]; t != nil {
			if t.done == nil {
				t.done = make(chan struct{})
			}
			waitFor = append(waitFor, t.done)
		}
		// An id not in flight has finished (frames are read in order).
	}
	c.inflight[id] = &tracked{}
	c.calls++
	c.bytes += int64(len(input))
	c.mu.Unlock()

	return func(ctx context.Context) {
		if span != nil {
			ctx = trace.ContextWithSpan(ctx, span.Span)
		}
		out, err := c.run(ctx, fn, input, waitFor)
		if span != nil {
			tracing.End(span.Span, err)
		}
		c.mu.Lock()
		if t := c.inflight[id]; t != nil && t.done != nil {
			close(t.done)
		}
		delete(c.inflight, id)
		c.bytes += int64(len(out)) // held, with the input, until the answer is written
		c.mu.Unlock()
		// Drain waits for the run, not for this write: a client slow to
		// read its answer holds up only itself (and its connection, closed
		// after Config.WriteTimeout).
		if err != nil {
			c.replyError(id, err)
		} else {
			c.send(wire.FrameResult, id, nil, out)
		}
		if pooled != nil {
			putInput(pooled) // the result, possibly the input itself, is written
		}
		c.release(len(input) + len(out))
	}
}

// admit checks, atomically with drain, that an invocation of function may
// start, and counts it in flight; the caller must then run it (see run).
func (c *serverConn) admit(function string) (*Function, error) {
	rt := c.rt
	rt.admitMu.Lock()
	defer rt.admitMu.Unlock()
	if rt.draining.Load() {
		return nil, fmt.Errorf("%w: process %s is shutting down", errs.ErrUnavailable, rt.cfg.PID)
	}
	fn, ok := rt.image.Lookup(function)
	if !ok {
		return nil, fmt.Errorf("%w: function %q is not in the image of %s/%s", errs.ErrNotFound, function, rt.cfg.App, rt.cfg.PID)
	}
	if n := rt.admitted.Load(); n >= int64(rt.cfg.MaxInflight) {
		return nil, fmt.Errorf("%w: process %s/%s has %d invocations in flight (limit %d); retry later",
			errs.ErrResourceExhausted, rt.cfg.App, rt.cfg.PID, n, rt.cfg.MaxInflight)
	}
	rt.admitted.Add(1)
	rt.inflight.Add(1)
	return fn, nil
}

// run runs an admitted invocation once the invocations it comes after
// have finished.
func (c *serverConn) run(ctx context.Context, fn *Function, input []byte, after []chan struct{}) ([]byte, error) {
	defer c.rt.admitted.Add(-1)
	defer c.rt.inflight.Done()
	if len(after) > 0 {
		Blocking(ctx)
		c.rt.metrics.queued.Add(1)
		for _, ch := range after {
			<-ch
		}
		c.rt.metrics.queued.Add(-1)
	}
	return c.rt.execute(ctx, fn, input, c.path)
}

// execute runs one invocation that came by path under the concurrency
// limit, with accounting.
func (rt *Runtime) execute(ctx context.Context, fn *Function, input []byte, path procmetrics.Path) ([]byte, error) {
	select {
	case rt.sem <- struct{}{}:
	default:
		Blocking(ctx) // wait for a slot without holding up the connection
		rt.metrics.queued.Add(1)
		rt.sem <- struct{}{}
		rt.metrics.queued.Add(-1)
	}
	defer func() { <-rt.sem }()
	rt.running.Add(1)
	start := time.Now()
	out, err := rt.call(ctx, fn, input)
	end := time.Now()
	rt.running.Add(-1)
	rt.lastActive.Store(end.UnixNano())
	rt.invocations.Add(1)
	rt.busyNanos.Add(uint64(end.Sub(start)))
	rt.bytesIn.Add(uint64(len(input)))
	rt.bytesOut.Add(uint64(len(out)))
	if !rt.metrics.off {
		rt.metrics.record(fn, path, end.Sub(start), err)
	}
	return out, err
}

// call runs the handler; a panic fails this invocation only.
func (rt *Runtime) call(ctx context.Context, fn *Function, input []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			rt.log.Error("function panicked", "function", fn.Name, "panic", r, "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("%w: function %q panicked: %v", errs.ErrFunctionFailed, fn.Name, r)
		}
	}()
	out, err = fn.Handler(ctx, rt.proc, input)
	if err == nil {
		return out, nil
	}
	switch errs.CodeOf(err) {
	case errs.Unknown, errs.Unavailable, errs.ResourceExhausted, errs.OutcomeUnknown:
		// These codes say what became of a call as a whole: Unavailable and
		// ResourceExhausted "refused, not run" (callers retry them), and
		// OutcomeUnknown "may have run". A function that ran and returned
		// one (its state at its limit, a call of its own refused) failed.
		err = fmt.Errorf("%w: %w", errs.ErrFunctionFailed, err)
	}
	return out, err
}
