package workers_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/testenv"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/process"
	"github.com/praas-dev/praas/process/workers"
)

var (
	signer   = token.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)))
	verifier = token.NewVerifier(signer.Public())
)

func module(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs("testdata/handlers.py")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startPython runs a standalone runtime (no control plane) whose
// functions are testdata/handlers.py's, on a pool of size workers, and
// returns a data-plane connection to it.
func startPython(t testing.TB, size int, register ...func(*process.Image)) (*process.Runtime, *client.DataConn) {
	t.Helper()
	return startModule(t, module(t), size, register...)
}

func startModule(t testing.TB, mod string, size int, register ...func(*process.Image)) (*process.Runtime, *client.DataConn) {
	t.Helper()
	return startWith(t, workers.Python{Module: mod, Workers: size}, register...)
}

func startWith(t testing.TB, py workers.Python, register ...func(*process.Image)) (*process.Runtime, *client.DataConn) {
	t.Helper()
	py.Interpreter = testenv.Python(t)
	pool, cleanup, err := workers.StartPython(py, "app", "p1")
	if err != nil {
		t.Fatal(err)
	}
	im := process.NewImage()
	pool.Register(im)
	im.Register("go-echo", func(_ context.Context, _ *process.Process, in []byte) ([]byte, error) { return in, nil })
	for _, r := range register {
		r(im)
	}
	rt, err := process.New(process.Config{App: "app", PID: "p1", Verifier: verifier, DrainTimeout: 5 * time.Second}, im)
	if err != nil {
		cleanup()
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
		cleanup()
	})
	select {
	case <-rt.Ready():
	case err := <-done:
		t.Fatalf("runtime ended: %v", err)
	}
	tok := signer.Sign(token.Claims{App: "app", PID: "p1", Ops: token.OpInvoke | token.OpSend, Expires: time.Now().Add(time.Hour)})
	dc, err := client.Dial(context.Background(), rt.Addr(), tok, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	return rt, dc
}

func invoke(t testing.TB, dc *client.DataConn, fn, in string) string {
	t.Helper()
	out, err := dc.Invoke(context.Background(), fn, []byte(in))
	if err != nil {
		t.Fatalf("%s(%q): %v", fn, in, err)
	}
	return string(out)
}

func TestPythonFunctions(t *testing.T) {
	rt, dc := startPython(t, 2)
	p := rt.Process()
	for _, tc := range []struct{ fn, in, want string }{
		{"echo", "hello", "hello"},
		{"noop", "x", ""},
		{"whoami", "", "app/p1"},
		{"count", "", "1"},
		{"count", "", "2"},
		{"state-put", "k=v", ""},
		{"state-read", "k", "v"},
		{"state-drop", "k", "count"},
		{"async-state", "ab", "ab|abab"},
		{"local", "x", "xx!"},
		{"py-invoke", "@self go-echo from-go", "from-go"},
		{"py-send", "@self greet hi", ""},
		{"py-recv", "@any greet", "p1:hi"},
	} {
		if got := invoke(t, dc, tc.fn, tc.in); got != tc.want {
			t.Errorf("%s(%q) = %q, want %q", tc.fn, tc.in, got, tc.want)
		}
	}
	if v, ok := p.State("count"); !ok || string(v) != "2" {
		t.Errorf("state count = %q, %v; want 2 in the runtime", v, ok)
	}
	// A big payload both ways, whole.
	big := strings.Repeat("0123456789abcdef", 1<<16+3)
	if got := invoke(t, dc, "echo", big); got != big {
		t.Errorf("echo of %d bytes returned %d bytes", len(big), len(got))
	}
}

func TestPythonErrors(t *testing.T) {
	_, dc := startPython(t, 1)
	_, err := dc.Invoke(context.Background(), "fail", nil)
	if errs.CodeOf(err) != errs.FunctionFailed || !strings.Contains(err.Error(), "ValueError: it went wrong") {
		t.Errorf("fail: %v, want function failed with the exception", err)
	}
	_, err = dc.Invoke(context.Background(), "state-read", []byte("absent"))
	if errs.CodeOf(err) != errs.NotFound {
		t.Errorf("state-read of an absent key: %v, want not found", err)
	}
	_, err = dc.Invoke(context.Background(), "py-recv", []byte("@any nothing 0.05"))
	if errs.CodeOf(err) == errs.Unknown || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("recv that times out: %v, want deadline exceeded", err)
	}
	// The worker serves on after errors.
	if got := invoke(t, dc, "echo", "still"); got != "still" {
		t.Errorf("echo after errors = %q", got)
	}
}

func TestPythonTriggers(t *testing.T) {
	rt, dc := startPython(t, 2)
	p := rt.Process()
	ctx := context.Background()
	for i, v := range []string{"1", "2", "3"} {
		if err := dc.Send(ctx, "", "total:r1", []byte(v)); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if _, ok := p.State("total/r1"); ok {
				t.Fatalf("total ran after %d messages", i+1)
			}
		}
	}
	waitState(t, p, "total/r1", "6 from ,,")
	for _, v := range []string{"a", "b"} {
		if err := dc.Send(ctx, "", "pair:"+v, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, p, "pair", "a+b")
	if err := dc.Send(ctx, "", "hit:k", []byte("data")); err != nil {
		t.Fatal(err)
	}
	waitState(t, p, "hit/k", "data")
}

// waitState polls until the runtime's state holds want under key (a
// triggered invocation runs after the send returns).
func waitState(t *testing.T, p *process.Process, key, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, ok := p.State(key)
		if ok && string(v) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %q = %q (%v), want %q", key, v, ok, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPythonWorkerCrash(t *testing.T) {
	rt, dc := startPython(t, 1)
	p := rt.Process()
	invoke(t, dc, "count", "")
	_, err := dc.Invoke(context.Background(), "crash", []byte("set"))
	if errs.CodeOf(err) != errs.FunctionFailed || !strings.Contains(err.Error(), "signal: killed") {
		t.Fatalf("crash: %v, want function failed naming the kill", err)
	}
	// State set before the crash stays; the restarted worker serves.
	if v, _ := p.State("before-crash"); string(v) != "set" {
		t.Errorf("before-crash = %q", v)
	}
	if got := invoke(t, dc, "count", ""); got != "2" {
		t.Errorf("count after the crash = %q, want 2", got)
	}
}

func TestPythonWorkerKilledFromOutside(t *testing.T) {
	rt, dc := startPython(t, 2)
	p := rt.Process()
	errc := make(chan error, 1)
	go func() {
		_, err := dc.Invoke(context.Background(), "hang", []byte("60"))
		errc <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	var pid int
	for pid == 0 {
		if v, ok := p.State("hang-pid"); ok {
			pid, _ = strconv.Atoi(strings.Fields(string(v))[0])
		} else if time.Now().After(deadline) {
			t.Fatal("hang never started")
		} else {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; errs.CodeOf(err) != errs.FunctionFailed {
		t.Fatalf("hang killed: %v, want function failed", err)
	}
	if got := invoke(t, dc, "echo", "after"); got != "after" {
		t.Errorf("echo after the kill = %q", got)
	}
}

func TestPythonConcurrent(t *testing.T) {
	_, dc := startPython(t, 3)
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := strconv.Itoa(i)
			out, err := dc.Invoke(context.Background(), "slow_double", []byte(in))
			if err == nil && string(out) != in+in {
				err = errors.New("slow_double(" + in + ") = " + string(out))
			}
			if err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestPythonBadModule(t *testing.T) {
	interp := testenv.Python(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.py")
	if err := os.WriteFile(bad, []byte("import praas\nraise RuntimeError('no import for you')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := workers.StartPython(workers.Python{Module: bad, Interpreter: interp, Workers: 1, Output: &strings.Builder{}}, "app", "p1")
	if err == nil || !strings.Contains(err.Error(), "no import for you") {
		t.Fatalf("start with a module that fails: %v, want the exception", err)
	}
}

// TestPythonLargePayloads sends inputs and results around the size from
// which they go through the worker's shared memory, which grows on the way.
func TestPythonLargePayloads(t *testing.T) {
	for _, noShm := range []bool{false, true} {
		t.Run(fmt.Sprintf("noshm=%v", noShm), func(t *testing.T) {
			_, dc := startWith(t, workers.Python{Module: module(t), Workers: 1, NoSharedMemory: noShm})
			testLargePayloads(t, dc)
		})
	}
}

func testLargePayloads(t *testing.T, dc *client.DataConn) {
	for _, n := range []int{64<<10 - 1, 64 << 10, 3 << 20, 100 << 10, 9<<20 + 5, 1} {
		in := make([]byte, n)
		for i := range in {
			in[i] = byte(i*7 + n)
		}
		out, err := dc.Invoke(context.Background(), "echo", in)
		if err != nil {
			t.Fatalf("echo of %d bytes: %v", n, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("echo of %d bytes returned %d bytes, not the same", n, len(out))
		}
	}
	// A large input to a function whose result is small, and the reverse.
	out := invoke(t, dc, "state-put", "big="+strings.Repeat("x", 2<<20))
	if out != "" {
		t.Fatalf("state-put = %q", out)
	}
	if got := invoke(t, dc, "state-read", "big"); got != strings.Repeat("x", 2<<20) {
		t.Fatalf("state-read of a 2 MiB value returned %d bytes", len(got))
	}
}

// TestPythonBrokenWorker: a worker that writes garbage on its protocol
// socket is killed and replaced; its invocation fails, others go on.
func TestPythonBrokenWorker(t *testing.T) {
	_, dc := startPython(t, 1)
	_, err := dc.Invoke(context.Background(), "garble", nil)
	if errs.CodeOf(err) != errs.FunctionFailed || !strings.Contains(err.Error(), "killed") || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("garble: %v, want function failed: the worker killed for a malformed frame", err)
	}
	if got := invoke(t, dc, "echo", "after"); got != "after" {
		t.Errorf("echo after a broken worker = %q", got)
	}
}
