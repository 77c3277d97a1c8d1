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

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/internal/token"
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

	inline atomic.Pointer[reader] // the reader running an invocation inline, if any
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
			if run := c.startInvocation(f.ID, inv, f.Payload, pooled); run != nil {
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
			if strings.HasPrefix(m.Key, names.ControlPrefix) {
				err := fmt.Errorf("%w: message key %q is reserved for the control plane", errs.ErrPermissionDenied, m.Key)
				if c.claims.Ops.Has(token.OpRelay) {
					err = c.rt.controlMessage(m.Key, f.Payload)
				}
				if err != nil {
					c.replyError(f.ID, err)
				} else {
					_ = c.w.WriteFrame(wire.FrameAck, f.ID, nil, nil)
				}
				continue
			}
			run, err := c.rt.acceptMessage(m, f.Payload, c.claims.Ops.Has(token.OpRelay))
			if err != nil {
				c.replyError(f.ID, err)
				continue
			}
			_ = c.w.WriteFrame(wire.FrameAck, f.ID, nil, nil)
			if run != nil && !r.runInline(ctx, run) {
				return // a triggered invocation took its time: another goroutine reads now
			}
		case wire.FramePing:
			_ = c.w.WriteFrame(wire.FramePong, f.ID, nil, f.Payload)
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
	w := wire.Welcome{Version: min(h.Version, wire.Version), App: cfg.App, PID: cfg.PID}
	return c.w.WriteFrame(wire.FrameWelcome, 0, w.Encode(), nil)
}

// fatal answers a connection-level error and finishes the connection;
// other connections are not affected.
func (c *serverConn) fatal(code errs.Code, err error) {
	_ = c.w.WriteFrame(wire.FrameError, 0, wire.EncodeCode(code), []byte(err.Error()))
	c.finish()
}

func (c *serverConn) close() {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if !already {
		c.conn.Close()
	}
}

func (c *serverConn) goAway(reason string) {
	_ = c.w.WriteFrame(wire.FrameGoAway, 0, wire.EncodeCode(errs.Unavailable), []byte(reason))
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
	_ = c.w.WriteFrame(wire.FrameError, id, wire.EncodeCode(code), []byte(err.Error()))
}

// startInvocation registers an invocation and returns the function that
// runs it and replies, or nil if it was answered at once (an error).
//
// pooled, if not nil, is input's buffer, given back to the pool once the
// result is written.
func (c *serverConn) startInvocation(id uint64, inv wire.Invoke, input, pooled []byte) func(context.Context) {
	rt := c.rt
	rt.admitMu.Lock()
	defer rt.admitMu.Unlock()
	if rt.draining.Load() {
		c.replyError(id, fmt.Errorf("%w: process %s is shutting down", errs.ErrUnavailable, rt.cfg.PID))
		putInput(pooled)
		return nil
	}
	fn, ok := rt.image.Lookup(inv.Function)
	if !ok {
		c.replyError(id, fmt.Errorf("%w: function %q is not in the image of %s/%s", errs.ErrNotFound, inv.Function, rt.cfg.App, rt.cfg.PID))
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
	c.mu.Unlock()

	rt.inflight.Add(1)
	return func(ctx context.Context) {
		defer rt.inflight.Done()
		if len(waitFor) > 0 {
			Blocking(ctx)
		}
		for _, ch := range waitFor {
			<-ch
		}
		out, err := rt.execute(ctx, fn, input)
		c.mu.Lock()
		if t := c.inflight[id]; t != nil && t.done != nil {
			close(t.done)
		}
		delete(c.inflight, id)
		c.mu.Unlock()
		if err != nil {
			c.replyError(id, err)
		} else {
			_ = c.w.WriteFrame(wire.FrameResult, id, nil, out)
		}
		if pooled != nil {
			putInput(pooled) // the result, possibly the input itself, is written
		}
	}
}

// execute runs one invocation under the concurrency limit, with accounting.
func (rt *Runtime) execute(ctx context.Context, fn *Function, input []byte) ([]byte, error) {
	select {
	case rt.sem <- struct{}{}:
	default:
		Blocking(ctx) // wait for a slot without holding up the connection
		rt.sem <- struct{}{}
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
	if code := errs.CodeOf(err); code == errs.Unknown || code == errs.Unavailable {
		// Unavailable is reserved for "not run": clients retry those elsewhere.
		err = fmt.Errorf("%w: %w", errs.ErrFunctionFailed, err)
	}
	return out, err
}
