package process_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/process"
	"github.com/praas-dev/praas/store/file"
	"github.com/praas-dev/praas/wire"
)

// startRuntime runs a standalone runtime (no control plane) with im and
// returns its address and a token for it.
func startRuntime(t *testing.T, im *process.Image, mutate ...func(*process.Config)) (*process.Runtime, string) {
	t.Helper()
	cfg := process.Config{App: "app", PID: "p1", Verifier: testVerifier, DrainTimeout: 5 * time.Second}
	for _, m := range mutate {
		m(&cfg)
	}
	rt, err := process.New(cfg, im)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runtime: %v", err)
		}
	})
	select {
	case <-rt.Ready():
	case err := <-done:
		t.Fatalf("runtime ended: %v", err)
	}
	return rt, clientToken("app", "p1")
}

func dial(t *testing.T, rt *process.Runtime, token string) *client.DataConn {
	t.Helper()
	dc, err := client.Dial(context.Background(), rt.Addr(), token, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	return dc
}

func testImage() *process.Image {
	im := process.NewImage()
	im.Register("echo", func(_ context.Context, _ *process.Process, in []byte) ([]byte, error) { return in, nil })
	im.Register("panic", func(context.Context, *process.Process, []byte) ([]byte, error) { panic("boom") })
	im.Register("fail", func(context.Context, *process.Process, []byte) ([]byte, error) {
		return nil, errors.New("it went wrong")
	})
	im.Register("append", func(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
		return p.UpdateState("log", func(old []byte, _ bool) []byte { return append(bytes.Clone(old), in...) })
	})
	im.Register("local", func(ctx context.Context, p *process.Process, in []byte) ([]byte, error) {
		return p.Invoke(ctx, process.Self, "echo", in)
	})
	return im
}

func TestInvokeAndErrors(t *testing.T) {
	rt, token := startRuntime(t, testImage())
	dc := dial(t, rt, token)
	ctx := context.Background()
	tests := []struct {
		fn, in, want string
		code         errs.Code
	}{
		{fn: "echo", in: "hello", want: "hello"},
		{fn: "echo", in: "", want: ""},
		{fn: "local", in: "via self", want: "via self"},
		{fn: "nosuch", code: errs.NotFound},
		{fn: "panic", code: errs.FunctionFailed},
		{fn: "fail", code: errs.FunctionFailed},
	}
	for _, tc := range tests {
		t.Run(tc.fn, func(t *testing.T) {
			out, err := dc.Invoke(ctx, tc.fn, []byte(tc.in))
			if tc.code != errs.Unknown {
				if errs.CodeOf(err) != tc.code {
					t.Fatalf("error %v has code %v, want %v", err, errs.CodeOf(err), tc.code)
				}
				return
			}
			if err != nil || string(out) != tc.want {
				t.Fatalf("got %q, %v; want %q", out, err, tc.want)
			}
		})
	}
	// The panic did not take the process down.
	if out, err := dc.Invoke(ctx, "echo", []byte("still here")); err != nil || string(out) != "still here" {
		t.Fatalf("after panic: %q %v", out, err)
	}
}

func TestStatePersistsAcrossInvocations(t *testing.T) {
	rt, token := startRuntime(t, testImage())
	dc := dial(t, rt, token)
	for _, part := range []string{"a", "b", "c"} {
		if _, err := dc.Invoke(context.Background(), "append", []byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := rt.Process().State("log"); string(v) != "abc" {
		t.Fatalf("state log = %q, want abc", v)
	}
}

// Many goroutines share one connection; every result must match its request.
func TestConcurrentInvocationsOneConnection(t *testing.T) {
	rt, token := startRuntime(t, testImage())
	dc := dial(t, rt, token)
	const workers, each = 32, 200
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				in := []byte(fmt.Sprintf("worker %d call %d %s", w, i, bytes.Repeat([]byte{'x'}, (w*i)%3000)))
				out, err := dc.Invoke(context.Background(), "echo", in)
				if err != nil || !bytes.Equal(out, in) {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d of %d results did not match their request", n, workers*each)
	}
}

func TestConcurrencyLimitQueues(t *testing.T) {
	var running, peak atomic.Int64
	im := process.NewImage()
	im.Register("slow", func(context.Context, *process.Process, []byte) ([]byte, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		running.Add(-1)
		return nil, nil
	})
	rt, token := startRuntime(t, im, func(c *process.Config) { c.MaxConcurrency = 2 })
	dc := dial(t, rt, token)
	var calls []*client.Call
	for range 8 {
		c, err := dc.Go("slow", nil)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
	}
	for _, c := range calls {
		if _, err := c.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak concurrency %d, want exactly the limit 2", p)
	}
}

// A chain of dependent invocations pipelined without waiting runs in order.
func TestDependencyChain(t *testing.T) {
	rt, token := startRuntime(t, testImage())
	dc := dial(t, rt, token)
	var prev []uint64
	var calls []*client.Call
	for i := range 50 {
		c, err := dc.Go("append", []byte{byte('a' + i%26)}, prev...)
		if err != nil {
			t.Fatal(err)
		}
		prev = []uint64{c.ID}
		calls = append(calls, c)
	}
	var want []byte
	for i := range 50 {
		want = append(want, byte('a'+i%26))
	}
	for _, c := range calls {
		if _, err := c.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := rt.Process().State("log"); !bytes.Equal(v, want) {
		t.Fatalf("state log = %q, want %q", v, want)
	}
}

func TestBadToken(t *testing.T) {
	rt, _ := startRuntime(t, testImage())
	_, err := client.Dial(context.Background(), rt.Addr(), "wrong", client.DialOptions{})
	if !errors.Is(err, errs.ErrUnauthenticated) {
		t.Fatalf("dial with bad token: %v", err)
	}
}

func TestOversizedPayloadRefused(t *testing.T) {
	rt, token := startRuntime(t, testImage(), func(c *process.Config) { c.MaxPayload = 1024 })
	dc := dial(t, rt, token)
	_, err := dc.Invoke(context.Background(), "echo", make([]byte, 4096))
	if !errors.Is(err, errs.ErrResourceExhausted) {
		t.Fatalf("oversized invoke: %v", err)
	}
	if out, err := dc.Invoke(context.Background(), "echo", []byte("small")); err != nil || string(out) != "small" {
		t.Fatalf("connection unusable after refusal: %q %v", out, err)
	}
}

// Garbage on one connection gets an error frame and that connection closed;
// other connections keep working.
func TestMalformedFramesCloseOnlyThatConnection(t *testing.T) {
	rt, token := startRuntime(t, testImage())
	good := dial(t, rt, token)
	garbage := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0, 0, 0, 0, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
	}
	for _, g := range garbage {
		conn, err := net.Dial("tcp", rt.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(g)
		f, err := wire.NewReader(conn, 0).Next()
		if err != nil || f.Type != wire.FrameError {
			t.Fatalf("reply to garbage: type %d err %v, want an error frame", f.Type, err)
		}
		if _, err := wire.NewReader(conn, 0).Next(); err == nil {
			t.Fatal("connection still open after malformed frame")
		}
		conn.Close()
	}
	if out, err := good.Invoke(context.Background(), "echo", []byte("ok")); err != nil || string(out) != "ok" {
		t.Fatalf("other connection broken: %q %v", out, err)
	}
}

// On shutdown clients are told to go away and running invocations finish.
func TestDrainFinishesRunningInvocations(t *testing.T) {
	release := make(chan struct{})
	im := process.NewImage()
	im.Register("wait", func(ctx context.Context, _ *process.Process, _ []byte) ([]byte, error) {
		// A shutdown must let it finish, not cancel it.
		select {
		case <-release:
			return []byte("done"), nil
		case <-ctx.Done():
			return nil, fmt.Errorf("cancelled during the drain: %w", ctx.Err())
		}
	})
	rt, err := process.New(process.Config{App: "app", PID: "p1", Verifier: testVerifier}, im)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	<-rt.Ready()
	dc := dial(t, rt, clientToken("app", "p1"))
	call, err := dc.Go("wait", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the invocation start
	cancel()
	for dc.Usable() {
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := dc.Invoke(context.Background(), "wait", nil); !errors.Is(err, client.ErrNotSent) {
		t.Fatalf("invoke after go-away: %v, want ErrNotSent", err)
	}
	close(release)
	if out, err := call.Wait(context.Background()); err != nil || string(out) != "done" {
		t.Fatalf("running invocation: %q %v", out, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// An invocation that blocks without saying so holds its connection's reader
// for about inlineBudget at most: others on the same connection still run
// concurrently. Also once the watchdog has gone to sleep in an idle process.
func TestSlowInvocationDoesNotHoldConnection(t *testing.T) {
	for _, idleFirst := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(fmt.Sprint("idle ", idleFirst), func(t *testing.T) {
			release := make(chan struct{})
			im := testImage()
			im.Register("stuck", func(context.Context, *process.Process, []byte) ([]byte, error) {
				<-release
				return []byte("unstuck"), nil
			})
			rt, token := startRuntime(t, im)
			dc := dial(t, rt, token)
			time.Sleep(idleFirst) // longer than the watchdog's quiet period
			stuck, err := dc.Go("stuck", nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if out, err := dc.Invoke(ctx, "echo", []byte("behind it")); err != nil || string(out) != "behind it" {
				t.Fatalf("invocation behind a stuck one: %q %v", out, err)
			}
			close(release)
			if out, err := stuck.Wait(ctx); err != nil || string(out) != "unstuck" {
				t.Fatalf("stuck invocation: %q %v", out, err)
			}
		})
	}
}

// A function that calls Blocking hands its connection on at once.
func TestBlockingHandsOff(t *testing.T) {
	release := make(chan struct{})
	im := testImage()
	im.Register("polite", func(ctx context.Context, _ *process.Process, _ []byte) ([]byte, error) {
		process.Blocking(ctx)
		<-release
		return nil, nil
	})
	rt, token := startRuntime(t, im)
	dc := dial(t, rt, token)
	polite, err := dc.Go("polite", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 100 {
		if _, err := dc.Invoke(ctx, "echo", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	if _, err := polite.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// A function waiting in Recv for a message that arrives on its own
// connection gets it: waiting hands the connection on at once.
func TestRecvOnSameConnection(t *testing.T) {
	im := testImage()
	im.Register("wait-msg", func(ctx context.Context, p *process.Process, _ []byte) ([]byte, error) {
		m, err := p.Recv(ctx, process.Any, "k", 5*time.Second)
		return m.Data, err
	})
	rt, token := startRuntime(t, im)
	dc := dial(t, rt, token)
	call, err := dc.Go("wait-msg", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dc.Send(ctx, "", "k", []byte("over the same connection")); err != nil {
		t.Fatal(err)
	}
	// Had the connection been held, Recv would have timed out.
	if out, err := call.Wait(ctx); err != nil || string(out) != "over the same connection" {
		t.Fatalf("recv: %q %v", out, err)
	}
}

// Inputs of a function that borrows them are reused, but never while an
// invocation or its result still needs them.
func TestBorrowedInputsAreNotReusedTooEarly(t *testing.T) {
	im := process.NewImage()
	im.Register("echo", func(_ context.Context, _ *process.Process, in []byte) ([]byte, error) {
		time.Sleep(time.Millisecond) // overlap with the others
		return in, nil
	}, process.BorrowInput())
	rt, token := startRuntime(t, im)
	dc := dial(t, rt, token)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				in := bytes.Repeat([]byte{byte(w*20 + i)}, 64<<10+(w*7919+i*104729)%(256<<10))
				out, err := dc.Invoke(context.Background(), "echo", in)
				if err != nil || !bytes.Equal(out, in) {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d results did not match their input", n)
	}
}

// fakeControlPlane answers register and heartbeats, with orphan (if set)
// as the pre-issued orphan PUT, until it is closed.
type fakeControlPlane struct {
	*httptest.Server
	beats       atomic.Int64
	orphanNanos atomic.Int64
}

func newFakeControlPlane(t *testing.T, orphan *cpapi.SnapshotAccess) *fakeControlPlane {
	f := &fakeControlPlane{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply := cpapi.HeartbeatReply{Epoch: 1}
		switch r.URL.Path {
		case cpapi.PathRegister:
		case cpapi.PathHeartbeat:
			var hb cpapi.Heartbeat
			if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
				t.Errorf("heartbeat: %v", err)
			}
			f.orphanNanos.Store(hb.OrphanNanos)
			reply.Orphan = orphan
			defer f.beats.Add(1)
		default:
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(reply)
	}))
	t.Cleanup(f.Close)
	return f
}

// fakePresigned stands for a store's presigned URL: it takes one PUT with
// Content-Length and no credentials.
type fakePresigned struct {
	*httptest.Server
	mu   sync.Mutex
	body []byte
	puts int
}

func newFakePresigned(t *testing.T) *fakePresigned {
	f := &fakePresigned{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Query().Get("signature") != "ok" || r.Header.Get("Authorization") != "" || r.ContentLength <= 0 {
			t.Errorf("presigned URL: %s %s, Authorization %q, Content-Length %d", r.Method, r.URL, r.Header.Get("Authorization"), r.ContentLength)
			w.WriteHeader(http.StatusForbidden)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("presigned URL: %v", err)
			return
		}
		f.mu.Lock()
		f.body, f.puts = b, f.puts+1
		f.mu.Unlock()
	}))
	t.Cleanup(f.Close)
	return f
}

// runOrphan runs a runtime reporting to cp, waits for a few heartbeats,
// takes the control plane away and waits for the runtime to exit.
func runOrphan(t *testing.T, cp *fakeControlPlane) {
	t.Helper()
	rt, err := process.New(process.Config{
		App: "app", PID: "p1", Generation: 3, Verifier: testVerifier,
		Token:         ownToken("app", "p1", 3),
		ControlPlane:  cp.URL,
		Heartbeat:     20 * time.Millisecond,
		OrphanTimeout: 200 * time.Millisecond,
	}, testImage())
	if err != nil {
		t.Fatal(err)
	}
	rt.Process().SetState("kept", []byte("yes"))
	done := make(chan error, 1)
	go func() { done <- rt.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for cp.beats.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeats")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cp.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("orphan exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("orphan did not exit")
	}
}

// A runtime whose control plane stays away swaps itself out and exits, so
// a control plane that comes back restores it instead of losing it. It holds
// no store credentials: it writes through the URL the control plane issued
// in advance, if the store makes them.
func TestOrphanSwapsItselfOut(t *testing.T) {
	t.Run("through the pre-issued URL", func(t *testing.T) {
		store := newFakePresigned(t)
		key := cpapi.SnapshotKey("app", "p1", 3, cpapi.OrphanSeq)
		cp := newFakeControlPlane(t, &cpapi.SnapshotAccess{Key: key, URL: store.URL + "/" + key + "?signature=ok",
			Method: http.MethodPut, Expires: time.Now().Add(time.Hour)})
		runOrphan(t, cp)
		if got := time.Duration(cp.orphanNanos.Load()); got < 200*time.Millisecond {
			t.Errorf("heartbeats ask for an orphan URL valid %s, less than the orphan timeout", got)
		}
		store.mu.Lock()
		body, puts := store.body, store.puts
		store.mu.Unlock()
		if puts != 1 {
			t.Fatalf("%d PUTs through the orphan URL, want 1", puts)
		}
		// The control plane that comes back restores it.
		swap, err := file.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := swap.Put(context.Background(), key, bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
		rt, _ := startRuntime(t, testImage(), func(c *process.Config) { c.Swap, c.RestoreKey = swap, key })
		if v, _ := rt.Process().State("kept"); string(v) != "yes" {
			t.Fatalf("restored state kept = %q, want yes", v)
		}
	})
	t.Run("without one the orphan writes nothing", func(t *testing.T) {
		runOrphan(t, newFakeControlPlane(t, nil))
	})
}
