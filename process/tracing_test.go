package process

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/wire"
)

var traceSigner = token.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))

func traceToken(c token.Claims) string {
	c.Expires = time.Now().Add(time.Hour)
	return traceSigner.Sign(c)
}

// tracedRuntime runs a standalone runtime pid of app "app" with im, traced by tp (nil: off).
func tracedRuntime(t *testing.T, pid string, im *Image, tp trace.TracerProvider) *Runtime {
	t.Helper()
	own := traceToken(token.Claims{App: "app", PID: token.AnyPID, Sub: pid, Ops: token.OpInvoke | token.OpSend})
	rt, err := New(Config{App: "app", PID: pid, Token: own, Verifier: token.NewVerifier(traceSigner.Public()),
		TracerProvider: tp, DrainTimeout: 5 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, im)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runtime %s: %v", pid, err)
		}
	})
	<-rt.Ready()
	return rt
}

// spanIndex finds recorded spans by name and kind.
type spanIndex []sdktrace.ReadOnlySpan

func (ix spanIndex) find(t *testing.T, name string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	for _, s := range ix {
		if s.Name() == name && s.SpanKind() == kind {
			if found != nil {
				t.Fatalf("two %s spans %q", kind, name)
			}
			found = s
		}
	}
	if found == nil {
		var have []string
		for _, s := range ix {
			have = append(have, s.SpanKind().String()+" "+s.Name())
		}
		t.Fatalf("no %s span %q; have %q", kind, name, have)
	}
	return found
}

// checkParent fails t unless child is parent's child in parent's trace.
func checkParent(t *testing.T, child, parent sdktrace.ReadOnlySpan) {
	t.Helper()
	if child.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("%s %q is in trace %s, its parent %q in %s", child.SpanKind(), child.Name(),
			child.SpanContext().TraceID(), parent.Name(), parent.SpanContext().TraceID())
	}
	if child.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("%s %q: parent span %s, want %s (%s %q)", child.SpanKind(), child.Name(),
			child.Parent().SpanID(), parent.SpanContext().SpanID(), parent.SpanKind(), parent.Name())
	}
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

// One chain of functions is one trace: a client invokes "chain" in a,
// which invokes "inner" locally, which invokes "forward" in b, which
// sends to c, whose trigger runs "log". Every hop's span is the child of
// the one before, across the data plane, a peer connection and a message.
func TestChainIsOneTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	logged := make(chan string, 1)
	imC := NewImage()
	imC.Register("log", func(ctx context.Context, _ *Process, in []byte) ([]byte, error) {
		logged <- string(in)
		return nil, nil
	}, OnMessage())
	c := tracedRuntime(t, "c", imC, tp)

	imB := NewImage()
	imB.Register("forward", func(ctx context.Context, p *Process, in []byte) ([]byte, error) {
		return []byte("sent"), p.Send(ctx, "c", "log:k", in)
	})
	imB.Register("fail", func(context.Context, *Process, []byte) ([]byte, error) {
		return nil, errs.Errorf(errs.FailedPrecondition, "not now")
	})
	b := tracedRuntime(t, "b", imB, tp)

	imA := NewImage()
	imA.Register("chain", func(ctx context.Context, p *Process, in []byte) ([]byte, error) {
		return p.Invoke(ctx, Self, "inner", in)
	})
	imA.Register("inner", func(ctx context.Context, p *Process, in []byte) ([]byte, error) {
		if _, err := p.Invoke(ctx, "b", "fail", nil); errs.CodeOf(err) != errs.FailedPrecondition {
			return nil, errs.Errorf(errs.Internal, "b's fail: %v", err)
		}
		return p.Invoke(ctx, "b", "forward", in)
	})
	a := tracedRuntime(t, "a", imA, tp)
	a.members.update(cpapi.MembersUpdate{View: "v", Membership: Membership{Epoch: 1, Members: []Member{
		{PID: "b", Status: "active", Address: b.Addr()}, {PID: "c", Status: "active", Address: c.Addr()}}}})
	b.members.update(cpapi.MembersUpdate{View: "v", Membership: Membership{Epoch: 1, Members: []Member{
		{PID: "c", Status: "active", Address: c.Addr()}}}})

	dc, err := client.Dial(context.Background(), a.Addr(), traceToken(token.Claims{App: "app", PID: "a", Ops: token.OpInvoke | token.OpSend}),
		client.DialOptions{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	ctx, root := tp.Tracer("test").Start(context.Background(), "test")
	out, err := dc.Invoke(ctx, "chain", []byte("hello"))
	root.End()
	if err != nil || string(out) != "sent" {
		t.Fatalf("chain = %q, %v", out, err)
	}
	select {
	case got := <-logged:
		if got != "hello" {
			t.Fatalf("triggered log got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the trigger did not run")
	}
	var spans spanIndex
	for deadline := time.Now().Add(10 * time.Second); ; {
		spans = rec.Ended()
		if len(spans) >= 11 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	rootSpan := spans.find(t, "test", trace.SpanKindInternal)
	clientChain := spans.find(t, "app/chain", trace.SpanKindClient)
	serverChain := spans.find(t, "app/chain", trace.SpanKindServer)
	inner := spans.find(t, "app/inner", trace.SpanKindInternal)
	clientFail := spans.find(t, "app/fail", trace.SpanKindClient)
	serverFail := spans.find(t, "app/fail", trace.SpanKindServer)
	clientForward := spans.find(t, "app/forward", trace.SpanKindClient)
	serverForward := spans.find(t, "app/forward", trace.SpanKindServer)
	send := spans.find(t, "send log", trace.SpanKindProducer)
	receive := spans.find(t, "receive log", trace.SpanKindConsumer)
	process := spans.find(t, "process log", trace.SpanKindConsumer)
	checkParent(t, clientChain, rootSpan)
	checkParent(t, serverChain, clientChain)
	checkParent(t, inner, serverChain)
	checkParent(t, clientFail, inner)
	checkParent(t, serverFail, clientFail)
	checkParent(t, clientForward, inner)
	checkParent(t, serverForward, clientForward)
	checkParent(t, send, serverForward)
	checkParent(t, receive, send)
	checkParent(t, process, receive)
	if len(spans) != 11 {
		t.Errorf("%d spans, want 11", len(spans))
	}

	for _, s := range []sdktrace.ReadOnlySpan{clientChain, serverChain, serverForward} {
		if attr(s, "rpc.system") != "praas" || attr(s, "rpc.method") != s.Name()[len("app/"):] || attr(s, "rpc.service") != "app" {
			t.Errorf("%s %q: rpc attributes %v", s.SpanKind(), s.Name(), s.Attributes())
		}
	}
	for _, s := range []sdktrace.ReadOnlySpan{send, receive, process} {
		if attr(s, "messaging.system") != "praas" || attr(s, "messaging.destination.name") != "log:k" {
			t.Errorf("%s %q: messaging attributes %v", s.SpanKind(), s.Name(), s.Attributes())
		}
	}
	for _, s := range []sdktrace.ReadOnlySpan{clientFail, serverFail} {
		if s.Status().Code.String() != "Error" || attr(s, "error.type") != "failed_precondition" {
			t.Errorf("%s %q: status %v, error.type %q; want Error, failed_precondition", s.SpanKind(), s.Name(), s.Status(), attr(s, "error.type"))
		}
	}
	if serverChain.Status().Code.String() == "Error" {
		t.Errorf("the chain's span has status %v", serverChain.Status())
	}
}

// frameSpy is a data-plane server that welcomes version, answers every
// invocation with its input and records the frames it reads.
type frameSpy struct {
	ln     net.Listener
	mu     sync.Mutex
	frames []wire.Frame
}

func newFrameSpy(t *testing.T, version uint16) *frameSpy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &frameSpy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r, w := wire.NewReader(conn, 0), wire.NewWriter(conn)
		if _, err := r.Next(); err != nil {
			return
		}
		_ = w.WriteFrame(wire.FrameWelcome, 0, wire.Welcome{Version: version, App: "app", PID: "p"}.Encode(), nil)
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.frames = append(s.frames, f)
			s.mu.Unlock()
			_ = w.WriteFrame(wire.FrameResult, f.ID, nil, f.Payload)
		}
	}()
	return s
}

func (s *frameSpy) flags() []uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint8
	for _, f := range s.frames {
		out = append(out, f.Flags)
	}
	return out
}

// Trace bytes go only to a process that said it reads them (version 3),
// and only from a client that traces.
func TestTraceContextOnlyWhenTracedAndUnderstood(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("test").Start(context.Background(), "test")
	defer span.End()
	for _, tc := range []struct {
		name    string
		version uint16
		tp      trace.TracerProvider
		want    uint8
	}{
		{"traced, version 3", wire.TraceVersion, tp, wire.FlagTraceContext},
		{"traced, version 2", 2, tp, 0},
		{"untraced, version 3", wire.TraceVersion, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spy := newFrameSpy(t, tc.version)
			dc, err := client.Dial(ctx, spy.ln.Addr().String(), "tok", client.DialOptions{TracerProvider: tc.tp})
			if err != nil {
				t.Fatal(err)
			}
			defer dc.Close()
			if out, err := dc.Invoke(ctx, "echo", []byte("x")); err != nil || string(out) != "x" {
				t.Fatalf("invoke = %q, %v", out, err)
			}
			if got := spy.flags(); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("frame flags %v, want [%#x]", got, tc.want)
			}
			if tc.want != 0 {
				spy.mu.Lock()
				f := spy.frames[0]
				spy.mu.Unlock()
				if f.Trace.TraceID != span.SpanContext().TraceID() {
					t.Fatalf("frame trace id %x, want the caller's %s", f.Trace.TraceID, span.SpanContext().TraceID())
				}
			}
		})
	}
}

// A process that does not trace ignores the trace context of a frame.
func TestUntracedProcessIgnoresTraceContext(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	im := NewImage()
	im.Register("echo", func(_ context.Context, _ *Process, in []byte) ([]byte, error) { return in, nil })
	rt := tracedRuntime(t, "p", im, nil)
	dc, err := client.Dial(context.Background(), rt.Addr(), traceToken(token.Claims{App: "app", PID: "p", Ops: token.OpInvoke | token.OpSend}),
		client.DialOptions{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if out, err := dc.Invoke(context.Background(), "echo", []byte("x")); err != nil || string(out) != "x" {
		t.Fatalf("invoke = %q, %v", out, err)
	}
	if err := dc.Send(context.Background(), "", "k", []byte("m")); err != nil {
		t.Fatal(err)
	}
	spans := spanIndex(rec.Ended())
	spans.find(t, "app/echo", trace.SpanKindClient)
	spans.find(t, "send k", trace.SpanKindProducer)
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the client's 2", len(spans))
	}
}

// Concurrent traced invocations on one connection: each server span is
// the child of its own client span.
func TestConcurrentTracedInvocations(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	im := NewImage()
	im.Register("echo", func(_ context.Context, _ *Process, in []byte) ([]byte, error) { return in, nil })
	rt := tracedRuntime(t, "p", im, tp)
	dc, err := client.Dial(context.Background(), rt.Addr(), traceToken(token.Claims{App: "app", PID: "p", Ops: token.OpInvoke}),
		client.DialOptions{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := []byte{byte(i)}
			if out, err := dc.Invoke(context.Background(), "echo", in); err != nil || !bytes.Equal(out, in) {
				t.Errorf("invoke %d = %v, %v", i, out, err)
			}
		}()
	}
	wg.Wait()
	var spans []sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(5 * time.Second); len(spans) < 2*n && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		spans = rec.Ended()
	}
	clients := map[trace.SpanID]bool{}
	for _, s := range spans {
		if s.SpanKind() == trace.SpanKindClient {
			clients[s.SpanContext().SpanID()] = true
		}
	}
	servers := 0
	for _, s := range spans {
		if s.SpanKind() != trace.SpanKindServer {
			continue
		}
		servers++
		if !clients[s.Parent().SpanID()] {
			t.Errorf("server span %s has parent %s, no client span", s.SpanContext().SpanID(), s.Parent().SpanID())
		}
		delete(clients, s.Parent().SpanID()) // one server span per client span
	}
	if servers != n || len(clients) != 0 {
		t.Fatalf("%d server spans, %d client spans without one; want %d and 0", servers, len(clients), n)
	}
}
