package process_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/process"
	"github.com/praas-dev/praas/store/file"
	"github.com/praas-dev/praas/wire"
)

// rawClient is a data-plane client that writes frames and reads only when
// told to: a client that stops reading its answers.
type rawClient struct {
	conn net.Conn
	w    *wire.Writer
	r    *wire.Reader
}

func dialRaw(t *testing.T, addr, tok string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{conn: conn, w: wire.NewWriter(conn), r: wire.NewReader(conn, 0)}
	if err := c.w.WriteFrame(wire.FrameHello, 0, wire.Hello{Version: wire.Version, Token: tok}.Encode(), nil); err != nil {
		t.Fatal(err)
	}
	if f, err := c.r.Next(); err != nil || f.Type != wire.FrameWelcome {
		t.Fatalf("handshake: frame type %d, %v", f.Type, err)
	}
	return c
}

// pipeline writes n invocations of function with input, ids 1..n, from a
// goroutine of its own (the process may stop reading them), and returns
// how many were written once that goroutine ends.
func (c *rawClient) pipeline(t *testing.T, function string, input []byte, n int) <-chan int {
	t.Helper()
	meta, err := wire.AppendInvoke(nil, function, nil)
	if err != nil {
		t.Fatal(err)
	}
	written := make(chan int, 1)
	go func() {
		i := 0
		for ; i < n; i++ {
			if c.w.WriteFrame(wire.FrameInvoke, uint64(i+1), meta, input) != nil {
				break
			}
		}
		written <- i
	}()
	return written
}

// countingImage has "big", which counts its runs and answers 1 MiB, and
// "append", which appends its input to state key "log".
func countingImage(runs *atomic.Int64) *process.Image {
	im := testImage()
	answer := bytes.Repeat([]byte("a"), 1<<20)
	im.Register("big", func(context.Context, *process.Process, []byte) ([]byte, error) {
		runs.Add(1)
		return answer, nil
	})
	return im
}

// waitStill waits until runs has not changed for 400ms, and returns it.
func waitStill(runs *atomic.Int64) int64 {
	last, still := int64(-1), 0
	for still < 20 {
		time.Sleep(20 * time.Millisecond)
		if r := runs.Load(); r == last && r > 0 {
			still++
		} else {
			last, still = r, 0
		}
	}
	return last
}

// A client that pipelines large invocations and never reads the answers
// does not hold up a swap-out: the process drains, writes its final
// snapshot, and every change acknowledged to another client is in it.
func TestSlowReaderDoesNotHoldSwapOut(t *testing.T) {
	swap, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	cfg := process.Config{App: "app", PID: "p1", Verifier: testVerifier, Swap: swap,
		DrainTimeout: 5 * time.Second, WriteTimeout: time.Minute}
	rt, err := process.New(cfg, countingImage(&runs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	<-rt.Ready()
	tok := clientToken("app", "p1")

	slow := dialRaw(t, rt.Addr(), tok)
	slow.pipeline(t, "big", make([]byte, 1<<20), 24)
	good := dial(t, rt, tok)
	for range 50 {
		if _, err := good.Invoke(context.Background(), "append", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	waitStill(&runs) // answers are stuck now: the client reads nothing
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("swap-out with a client that does not read: %v", err)
	}
	t.Logf("swap-out took %s with a client that never read %d answers of 1 MiB", time.Since(start).Round(time.Millisecond), runs.Load())

	restored, _ := startRuntime(t, testImage(), func(c *process.Config) {
		c.Swap, c.RestoreKey = swap, cpapi.SnapshotKey("app", "p1", 0, 1)
	})
	if v, _ := restored.Process().State("log"); len(v) != 50 {
		t.Fatalf("restored log has %d entries, want the 50 acknowledged", len(v))
	}
}

// A connection stops being read while its unanswered invocations hold
// MaxConnInflightBytes: a client that does not read cannot make the
// process take ever more work. Once it reads, every answer arrives.
func TestConnectionInflightBound(t *testing.T) {
	var runs atomic.Int64
	rt, tok := startRuntime(t, countingImage(&runs), func(c *process.Config) {
		c.MaxConnInflightBytes = 8 << 20
	})
	const n = 64
	c := dialRaw(t, rt.Addr(), tok)
	written := c.pipeline(t, "big", make([]byte, 1<<20), n)
	last := waitStill(&runs)
	// 8 MiB holds 4 calls of 1 MiB in and 1 MiB out; the rest that ran are
	// answers the kernel's socket buffers took.
	if last >= n/2 {
		t.Fatalf("%d of %d invocations ran while the client read nothing; the bound is 8 MiB in flight", last, n)
	}
	t.Logf("%d of %d invocations ran before the process stopped reading", last, n)
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range n {
		f, err := c.r.Next()
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		if f.Type != wire.FrameResult || len(f.Payload) != 1<<20 {
			t.Fatalf("answer %d: frame type %d, %d bytes", i+1, f.Type, len(f.Payload))
		}
	}
	if w := <-written; w != n {
		t.Fatalf("%d invocations written", w)
	}
}

// A client that leaves answers unread past WriteTimeout has its connection
// closed; other clients are not affected.
func TestWriteTimeoutClosesConnection(t *testing.T) {
	var runs atomic.Int64
	rt, tok := startRuntime(t, countingImage(&runs), func(c *process.Config) {
		c.WriteTimeout = 200 * time.Millisecond
	})
	c := dialRaw(t, rt.Addr(), tok)
	c.pipeline(t, "big", nil, 64)
	time.Sleep(2 * time.Second) // well past the write timeout, reading nothing
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	answers := 0
	var err error
	for ; answers < 64; answers++ {
		var f wire.Frame
		if f, err = c.r.Next(); err != nil {
			break
		}
		if f.Type != wire.FrameResult {
			t.Fatalf("frame type %d", f.Type)
		}
	}
	var nerr net.Error
	if err == nil || errors.As(err, &nerr) && nerr.Timeout() {
		t.Fatalf("%d answers, then %v: want the connection closed by the process", answers, err)
	}
	t.Logf("connection closed after %d answers: %v", answers, err)
	good := dial(t, rt, tok)
	if out, err := good.Invoke(context.Background(), "echo", []byte("ok")); err != nil || string(out) != "ok" {
		t.Fatalf("another client: %q %v", out, err)
	}
}

// Past MaxInflight invocations taken and not finished, a process refuses
// more, unrun, with resource_exhausted; those it took all finish.
func TestMaxInflightRefuses(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	im := process.NewImage()
	im.Register("wait", func(ctx context.Context, _ *process.Process, _ []byte) ([]byte, error) {
		started.Done()
		<-release
		return []byte("done"), nil
	})
	rt, tok := startRuntime(t, im, func(c *process.Config) { c.MaxInflight = 4 })
	dc := dial(t, rt, tok)
	ctx := context.Background()
	started.Add(4)
	var calls []interface {
		Wait(context.Context) ([]byte, error)
	}
	for range 4 {
		call, err := dc.Go("wait", nil)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call)
	}
	started.Wait()
	if _, err := dc.Invoke(ctx, "wait", nil); !errors.Is(err, errs.ErrResourceExhausted) {
		t.Fatalf("fifth invocation: %v, want resource exhausted", err)
	}
	close(release)
	for i, call := range calls {
		if out, err := call.Wait(ctx); err != nil || string(out) != "done" {
			t.Fatalf("call %d: %q %v", i, out, err)
		}
	}
	started.Add(1)
	if _, err := dc.Invoke(ctx, "wait", nil); err != nil {
		t.Fatalf("after the others finished: %v", err)
	}
}

// A state at MaxStateBytes refuses a change that grows it, changing
// nothing, and takes one that shrinks or keeps its size.
func TestStateLimit(t *testing.T) {
	rt, _ := startRuntime(t, testImage(), func(c *process.Config) { c.MaxStateBytes = 1000 })
	p := rt.Process()
	if err := p.SetState("a", make([]byte, 599)); err != nil { // 600 bytes with the key
		t.Fatal(err)
	}
	if err := p.SetState("b", make([]byte, 500)); !errors.Is(err, errs.ErrResourceExhausted) {
		t.Fatalf("past the limit: %v", err)
	}
	if _, ok := p.State("b"); ok {
		t.Fatal("a refused SetState stored its value")
	}
	old, err := p.UpdateState("a", func(old []byte, _ bool) []byte { return make([]byte, 1200) })
	if !errors.Is(err, errs.ErrResourceExhausted) || len(old) != 599 {
		t.Fatalf("UpdateState past the limit: %d bytes, %v", len(old), err)
	}
	if err := p.SetState("b", make([]byte, 399)); err != nil { // exactly 1000
		t.Fatalf("up to the limit: %v", err)
	}
	if err := p.SetState("a", make([]byte, 10)); err != nil {
		t.Fatalf("shrinking: %v", err)
	}
	p.DeleteState("b")
	if err := p.SetState("c", make([]byte, 900)); err != nil {
		t.Fatalf("after a delete made room: %v", err)
	}
}

// Other clients' latency while one client pipelines large invocations and
// reads nothing: reported as p99 against an idle run of the same test.
// Asserted only loosely (machines running tests are noisy): a connection
// that stops reading must not stall the process for anyone else.
func TestSlowReaderOthersLatency(t *testing.T) {
	var runs atomic.Int64
	rt, tok := startRuntime(t, countingImage(&runs))
	good := dial(t, rt, tok)
	p99 := func() time.Duration {
		const n = 2000
		lat := make([]time.Duration, n)
		for i := range lat {
			start := time.Now()
			if _, err := good.Invoke(context.Background(), "echo", []byte("ping")); err != nil {
				t.Fatal(err)
			}
			lat[i] = time.Since(start)
		}
		slices.Sort(lat)
		return lat[n*99/100]
	}
	idle := p99()
	for range 4 {
		dialRaw(t, rt.Addr(), tok).pipeline(t, "big", make([]byte, 1<<20), 64)
	}
	waitStill(&runs)
	loaded := p99()
	t.Logf("p99 of a 4-byte echo: %s idle, %s with 4 clients not reading 64 answers of 1 MiB each (%.2fx)",
		idle, loaded, float64(loaded)/float64(idle))
	if loaded > 100*idle && loaded > 50*time.Millisecond {
		t.Fatalf("p99 %s against %s idle: the clients that do not read hold up others", loaded, idle)
	}
}

// A restored state counts against MaxStateBytes as it did before the swap.
func TestStateLimitAfterRestore(t *testing.T) {
	swap, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	limit := func(c *process.Config) { c.MaxStateBytes, c.Swap = 1000, swap }
	rt, err := process.New(process.Config{App: "app", PID: "p1", Verifier: testVerifier, MaxStateBytes: 1000, Swap: swap}, testImage())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	<-rt.Ready()
	if err := rt.Process().SetState("a", make([]byte, 899)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	restored, _ := startRuntime(t, testImage(), limit, func(c *process.Config) { c.RestoreKey = cpapi.SnapshotKey("app", "p1", 0, 1) })
	if err := restored.Process().SetState("b", make([]byte, 200)); !errors.Is(err, errs.ErrResourceExhausted) {
		t.Fatalf("past the limit after a restore: %v", err)
	}
}
