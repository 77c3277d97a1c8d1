package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/wire"
)

// DataConn is one data-plane connection to a process. Many goroutines may
// invoke over it at once: requests are multiplexed by id and pipelined.
type DataConn struct {
	conn net.Conn
	w    *wire.Writer
	r    *wire.Reader

	// App and PID of the process, as it announced them.
	App, PID string

	// tracer makes the spans of Invoke, InvokeInto and Send (nil: tracing
	// off); traceWire says the process reads trace contexts in frames.
	tracer    *tracing.Tracer
	traceWire bool

	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]*call
	err     error // set once the connection is unusable; pending calls got it
	goAway  error // set when the process said it is leaving

	done chan struct{}
}

type call struct {
	ch  chan reply
	dst []byte // where a large result may be read, if it fits (InvokeInto)
}

// reply is what a call gets: a frame, or err if the connection failed.
type reply struct {
	f   wire.Frame
	err error
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan reply, 1)} }}

// ErrNotSent marks a call that never reached the process (the connection was
// down or the process going away): retrying it elsewhere cannot run it twice.
var ErrNotSent = errors.New("not sent")

// ErrConnectionLost marks a call whose connection failed after it was sent:
// the process may or may not have run it. Its code is errs.OutcomeUnknown,
// and nothing retries it on its own.
var ErrConnectionLost = errors.New("connection lost")

// DialOptions tune a data-plane connection.
type DialOptions struct {
	// Source is the calling process's pid, for process-to-process connections.
	Source string
	// MaxPayload bounds results read from the process (default wire.DefaultMaxPayload).
	MaxPayload int
	// TLS, if set, speaks TLS to a process that serves its data plane
	// over TLS: its RootCAs should hold the data-plane CA (the control
	// plane's GET /v1/ca). An empty ServerName is taken from addr.
	TLS *tls.Config
	// TracerProvider, if set, makes spans of Invoke, InvokeInto and Send
	// (children of the span in their context) and carries their trace
	// context to the process, which continues the trace. Nil: no tracing,
	// at no cost.
	TracerProvider trace.TracerProvider
}

// Dial connects to the data plane of a process at addr and authenticates
// with token.
func Dial(ctx context.Context, addr, token string, opt DialOptions) (*DataConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial data plane %s: %w: %w: %w", addr, errs.ErrUnavailable, ErrNotSent, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if opt.TLS != nil {
		if conn, err = tlsClient(ctx, conn, addr, opt.TLS); err != nil {
			return nil, err
		}
	}
	max := opt.MaxPayload
	if max <= 0 {
		max = wire.DefaultMaxPayload
	}
	c := &DataConn{
		conn:    conn,
		w:       wire.NewWriter(conn),
		r:       wire.NewReader(conn, max),
		pending: make(map[uint64]*call),
		done:    make(chan struct{}),
		tracer:  tracing.New(opt.TracerProvider),
	}
	if err := c.handshake(ctx, token, opt.Source); err != nil {
		conn.Close()
		return nil, fmt.Errorf("data plane %s: %w", addr, err)
	}
	go c.readLoop()
	return c, nil
}

// tlsClient runs the TLS handshake on conn, verifying the process's
// certificate for addr's host unless cfg names another. A failure sent no
// request.
func tlsClient(ctx context.Context, conn net.Conn, addr string, cfg *tls.Config) (net.Conn, error) {
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("data plane %s: TLS: %w: %w: %w", addr, errs.ErrUnavailable, ErrNotSent, err)
	}
	return tc, nil
}

func (c *DataConn) handshake(ctx context.Context, token, source string) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	} else {
		_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	defer c.conn.SetDeadline(time.Time{})
	hello := wire.Hello{Version: wire.Version, Token: token, Source: source}
	// Transport failures here sent no request: callers may retry elsewhere.
	if err := c.w.WriteFrame(wire.FrameHello, 0, hello.Encode(), nil); err != nil {
		return fmt.Errorf("%w: %w: %w", errs.ErrUnavailable, ErrNotSent, err)
	}
	f, err := c.r.Next()
	if err != nil {
		return fmt.Errorf("%w: %w: handshake: %w", errs.ErrUnavailable, ErrNotSent, err)
	}
	switch f.Type {
	case wire.FrameWelcome:
		w, err := wire.DecodeWelcome(f.Meta)
		if err != nil {
			return err
		}
		if w.Version < wire.MinVersion || w.Version > wire.Version {
			return fmt.Errorf("%w: process speaks protocol version %d", errs.ErrFailedPrecondition, w.Version)
		}
		c.App, c.PID = w.App, w.PID
		c.traceWire = w.Version >= wire.TraceVersion
		return nil
	case wire.FrameError:
		return decodeRefusal(f)
	case wire.FrameGoAway:
		return fmt.Errorf("%w: %w: process is going away: %w", errs.ErrUnavailable, ErrNotSent, wire.DecodeError(f))
	default:
		return fmt.Errorf("%w: unexpected frame type %d in handshake", wire.ErrMalformed, f.Type)
	}
}

func (c *DataConn) readLoop() {
	var err error
	var filling *call // a call whose result is read into its own buffer
	resultBuf := func(h wire.Header, _ []byte) []byte {
		if h.Type != wire.FrameResult {
			return nil
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if cl := c.pending[h.ID]; cl != nil && cap(cl.dst) >= int(h.BodyLen)-int(h.MetaLen) {
			// Taken out of pending now, so a caller giving up waits for
			// this read instead of reusing dst under it.
			delete(c.pending, h.ID)
			filling = cl
			return cl.dst
		}
		return nil
	}
	for {
		var f wire.Frame
		filling = nil
		f, err = c.r.NextInto(resultBuf)
		if filling != nil {
			if err != nil {
				filling.ch <- reply{err: fmt.Errorf("%w: %w: data-plane connection to %s: %w", errs.ErrOutcomeUnknown, ErrConnectionLost, c.PID, err)}
			} else {
				filling.ch <- reply{f: f}
			}
		}
		if err != nil {
			if errors.Is(err, wire.ErrTooLarge) {
				c.deliver(f.ID, reply{err: fmt.Errorf("%w: result refused: %w", errs.ErrTooLarge, err)})
				continue
			}
			break
		}
		switch f.Type {
		case wire.FrameResult, wire.FrameError, wire.FrameAck, wire.FramePong:
			if f.ID == 0 && f.Type == wire.FrameError {
				err = wire.DecodeError(f)
				break
			}
			if filling == nil {
				c.deliver(f.ID, reply{f: f})
			} else {
				c.closeIfDrained()
			}
			continue
		case wire.FrameGoAway:
			c.mu.Lock()
			c.goAway = fmt.Errorf("%w: %w: process %s is going away: %w", errs.ErrUnavailable, ErrNotSent, c.PID, wire.DecodeError(f))
			idle := len(c.pending) == 0
			c.mu.Unlock()
			if idle {
				c.Close() // nothing more will come: let the process exit at once
			}
			continue
		default:
			err = fmt.Errorf("%w: unexpected frame type %d", wire.ErrMalformed, f.Type)
		}
		break
	}
	c.fail(err)
}

func (c *DataConn) deliver(id uint64, r reply) {
	c.mu.Lock()
	cl := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if cl != nil {
		cl.ch <- r // buffered, and each call gets exactly one frame
	}
	c.closeIfDrained()
}

// closeIfDrained closes the connection once a process that went away has
// answered every call: the process waits for that to exit.
func (c *DataConn) closeIfDrained() {
	c.mu.Lock()
	drained := c.goAway != nil && len(c.pending) == 0
	c.mu.Unlock()
	if drained {
		c.Close()
	}
}

// fail closes the connection and fails every pending call.
func (c *DataConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if err == nil {
		err = errors.New("connection closed")
	}
	c.err = fmt.Errorf("%w: %w: data-plane connection to %s: %w", errs.ErrUnavailable, ErrNotSent, c.PID, err)
	lost := fmt.Errorf("%w: %w: data-plane connection to %s: %w", errs.ErrOutcomeUnknown, ErrConnectionLost, c.PID, err)
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.conn.Close()
	for _, cl := range pending {
		cl.ch <- reply{err: lost}
	}
	close(c.done)
}

// Close closes the connection; pending calls fail.
func (c *DataConn) Close() error {
	c.fail(errors.New("closed by the client"))
	return nil
}

// Done is closed once the connection is unusable.
func (c *DataConn) Done() <-chan struct{} { return c.done }

// Usable reports whether new requests may be sent: the connection is up and
// the process has not announced that it goes away. A connection that went
// away closes itself once every call in flight on it was answered.
func (c *DataConn) Usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && c.goAway == nil
}

// Call is an invocation in flight, started by Go.
type Call struct {
	// ID is the request id, which later invocations may name in After.
	ID uint64
	c  *DataConn
	cl *call
}

// Go starts an invocation of function with input and returns without waiting
// for the result. The invocation starts only after the invocations named in
// after (ids of earlier calls on this connection) finished, so a client can
// pipeline a chain. input must not be modified until the call completes.
func (c *DataConn) Go(function string, input []byte, after ...uint64) (*Call, error) {
	return c.goInvoke(function, input, nil, after)
}

func (c *DataConn) goInvoke(function string, input, dst []byte, after []uint64) (*Call, error) {
	var metaBuf [64]byte
	meta, err := wire.AppendInvoke(metaBuf[:0], function, after)
	if err != nil {
		return nil, err
	}
	return c.start(wire.FrameInvoke, meta, nil, input, dst)
}

// start sends a request, with the trace context tc if not nil and the
// process reads it.
func (c *DataConn) start(typ uint8, meta []byte, tc *wire.TraceContext, payload, dst []byte) (*Call, error) {
	if !c.traceWire {
		tc = nil
	}
	metaLen := len(meta)
	if tc != nil {
		metaLen += wire.TraceContextLen
	}
	// Refuse what WriteFrame would refuse before anything is registered, so
	// a write error always means the connection failed.
	if metaLen > wire.MaxMeta || uint64(metaLen)+uint64(len(payload)) > 1<<32-1 {
		return nil, fmt.Errorf("%w: frame of %d bytes", errs.ErrTooLarge, metaLen+len(payload))
	}
	id := c.nextID.Add(1)
	cl := callPool.Get().(*call)
	cl.dst = dst
	c.mu.Lock()
	if c.err != nil || c.goAway != nil {
		err := c.err
		if err == nil {
			err = c.goAway
		}
		c.mu.Unlock()
		cl.dst = nil
		callPool.Put(cl)
		return nil, err
	}
	c.pending[id] = cl
	c.mu.Unlock()
	var err error
	if tc != nil {
		err = c.w.WriteTracedFrame(typ, id, meta, tc, payload)
	} else {
		err = c.w.WriteFrame(typ, id, meta, payload)
	}
	if err != nil {
		c.fail(err)
		// fail delivered an error frame to cl unless the read loop had already.
	}
	return &Call{ID: id, c: c, cl: cl}, nil
}

// Wait waits for the call's result. If ctx ends first the result is dropped.
func (cl *Call) Wait(ctx context.Context) ([]byte, error) {
	select {
	case r := <-cl.cl.ch:
		cl.release()
		return r.result()
	case <-ctx.Done():
		c := cl.c
		c.mu.Lock()
		_, stillPending := c.pending[cl.ID]
		delete(c.pending, cl.ID)
		c.mu.Unlock()
		if !stillPending {
			// The reply raced in; take it so the call can be reused.
			r := <-cl.cl.ch
			cl.release()
			return r.result()
		}
		c.closeIfDrained()
		return nil, ctx.Err()
	}
}

// decodeRefusal decodes an error frame. Unavailable means the process
// refused without running anything (it is shutting down): ErrNotSent.
func decodeRefusal(f wire.Frame) error {
	err := wire.DecodeError(f)
	if errs.CodeOf(err) == errs.Unavailable {
		err = fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	return err
}

func (cl *Call) release() {
	cl.cl.dst = nil
	callPool.Put(cl.cl)
}

func (r reply) result() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	f := r.f
	switch f.Type {
	case wire.FrameResult, wire.FrameAck, wire.FramePong:
		return f.Payload, nil
	case wire.FrameError:
		return nil, decodeRefusal(f)
	default:
		return nil, fmt.Errorf("%w: unexpected reply type %d", wire.ErrMalformed, f.Type)
	}
}

// Invoke runs function with input in the process and returns its output.
func (c *DataConn) Invoke(ctx context.Context, function string, input []byte) ([]byte, error) {
	if c.tracer != nil {
		return c.invokeTraced(ctx, function, input, nil)
	}
	cl, err := c.Go(function, input)
	if err != nil {
		return nil, err
	}
	return cl.Wait(ctx)
}

// invokeTraced is Invoke or InvokeInto in a client span whose trace
// context goes with the frame.
func (c *DataConn) invokeTraced(ctx context.Context, function string, input, dst []byte) (out []byte, err error) {
	ctx, span := c.tracer.StartInvoke(ctx, trace.SpanKindClient, c.App, c.PID, function)
	defer func() { tracing.End(span, err) }()
	var metaBuf [64]byte
	meta, err := wire.AppendInvoke(metaBuf[:0], function, nil)
	if err != nil {
		return nil, err
	}
	tc, ok := tracing.ToWire(ctx)
	var tcp *wire.TraceContext
	if ok {
		tcp = &tc
	}
	cl, err := c.start(wire.FrameInvoke, meta, tcp, input, dst)
	if err != nil {
		return nil, err
	}
	return cl.Wait(ctx)
}

// InvokeInto is Invoke, but a result of 64 KiB or more is read into dst
// when it fits, so a caller reusing dst spares a fresh buffer per call. The
// result is returned either way (a slice of dst, or new memory). dst must
// not be used until InvokeInto returns.
func (c *DataConn) InvokeInto(ctx context.Context, function string, input, dst []byte) ([]byte, error) {
	if c.tracer != nil {
		return c.invokeTraced(ctx, function, input, dst[:cap(dst)])
	}
	cl, err := c.goInvoke(function, input, dst[:cap(dst)], nil)
	if err != nil {
		return nil, err
	}
	return cl.Wait(ctx)
}

// Send puts a message with key and data into the process's mailbox, as
// coming from source (empty for an external client). It returns once the
// process acknowledged it.
func (c *DataConn) Send(ctx context.Context, source, key string, data []byte) error {
	if c.tracer != nil {
		return c.sendTraced(ctx, source, key, data)
	}
	cl, err := c.GoSend(source, key, data)
	if err != nil {
		return err
	}
	_, err = cl.Wait(ctx)
	return err
}

// sendTraced is Send in a producer span whose trace context goes with the frame.
func (c *DataConn) sendTraced(ctx context.Context, source, key string, data []byte) (err error) {
	ctx, span := c.tracer.StartSend(ctx, trace.SpanKindProducer, c.PID, key)
	defer func() { tracing.End(span, err) }()
	if err := checkSend(source, key); err != nil {
		return err
	}
	var tcp *wire.TraceContext
	if tc, ok := tracing.ToWire(ctx); ok {
		tcp = &tc
	}
	cl, err := c.start(wire.FrameMessage, wire.Message{Source: source, Key: key}.Encode(), tcp, data, nil)
	if err != nil {
		return err
	}
	_, err = cl.Wait(ctx)
	return err
}

func checkSend(source, key string) error {
	if len(source) > 255 || len(key) > wire.MaxMeta-300 {
		return fmt.Errorf("%w: source or key too long", errs.ErrInvalidArgument)
	}
	return nil
}

// GoSend sends a message like Send without waiting for the acknowledgement;
// Wait on the call for it.
func (c *DataConn) GoSend(source, key string, data []byte) (*Call, error) {
	if err := checkSend(source, key); err != nil {
		return nil, err
	}
	return c.start(wire.FrameMessage, wire.Message{Source: source, Key: key}.Encode(), nil, data, nil)
}

// GoSendQueued is GoSend of a message delivered from the destination's
// backup queue, where it has sequence number seq (see wire.Message.Queued):
// the process drops it if it has consumed that sequence already. Only a
// connection whose token allows relaying (the control plane's) may use it.
func (c *DataConn) GoSendQueued(source, key string, seq uint64, data []byte) (*Call, error) {
	if err := checkSend(source, key); err != nil {
		return nil, err
	}
	if seq == 0 {
		return nil, fmt.Errorf("%w: queue sequence 0", errs.ErrInvalidArgument)
	}
	return c.start(wire.FrameMessage, wire.Message{Source: source, Key: key, Queued: seq}.Encode(), nil, data, nil)
}

// Ping measures a round trip.
func (c *DataConn) Ping(ctx context.Context) error {
	cl, err := c.start(wire.FramePing, nil, nil, nil, nil)
	if err != nil {
		return err
	}
	_, err = cl.Wait(ctx)
	return err
}
