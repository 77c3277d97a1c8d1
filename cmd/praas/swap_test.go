package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/testenv"
)

// storeFlags returns the `praas up` flags of a store setup: the embedded
// defaults, or Redis metadata and S3 swap from the servers started by
// scripts/test-servers.sh. Each run uses its own key prefix.
func storeFlags(t *testing.T, setup string) []string {
	t.Helper()
	if setup == "embedded" {
		return nil
	}
	redisURL, s3URL := testenv.Redis(t), testenv.S3(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "t" + hex.EncodeToString(b)
	return []string{
		"--metadata", withQuery(redisURL, "prefix="+prefix+":"),
		"--swap", withQuery(s3URL, "prefix="+prefix+"/"),
	}
}

func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func processStatus(t *testing.T, app, pid string) client.Process {
	t.Helper()
	p, err := testClient().GetProcess(context.Background(), app, pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func expect(t *testing.T, want string, args ...string) {
	t.Helper()
	if got := mustPraas(t, "", args...); got != want {
		t.Fatalf("praas %s = %q, want %q", strings.Join(args, " "), got, want)
	}
}

// The swap walk-through: state and queued messages survive a swap, a
// control-plane restart and a kill -9.
func TestSwapLifecycle(t *testing.T) {
	for _, setup := range []string{"embedded", "redis+s3"} {
		t.Run(setup, func(t *testing.T) {
			flags := storeFlags(t, setup)
			data := t.TempDir()
			cp := startControlPlane(t, data, append(flags, "--heartbeat-timeout", "2s")...)
			mustPraas(t, "", "app", "create", "demo")
			mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
			mustPraas(t, "", "process", "create", "demo", "--pid", "a")
			for i := 1; i <= 3; i++ {
				expect(t, strconv.Itoa(i), "invoke", "demo", "counter", "--pid", "p1")
			}
			mustPraas(t, "", "process", "swap", "demo", "p1")
			if p := listProcesses(t, "demo")["p1"]; p.Status != "swapped" || p.Address != "" {
				t.Fatalf("after swap p1 is %+v", p)
			}
			expect(t, "", "invoke", "demo", "send", "--pid", "a", "--data", "p1 k queued")
			expect(t, "4", "invoke", "demo", "counter", "--pid", "p1")
			expect(t, "queued", "invoke", "demo", "recv", "--pid", "p1", "--data", "a k 1000")

			// A graceful restart swaps everything out and loses nothing.
			expect(t, "", "invoke", "demo", "send", "--pid", "a", "--data", "p1 k2 kept")
			cp.terminate(t)
			startControlPlane(t, data, flags...)
			for pid, p := range listProcesses(t, "demo") {
				if p.Status != "swapped" {
					t.Fatalf("after restart %s is %s, want swapped", pid, p.Status)
				}
			}
			expect(t, "5", "invoke", "demo", "counter", "--pid", "p1")
			expect(t, "kept", "invoke", "demo", "recv", "--pid", "p1", "--data", "a k2 1000")

			// kill -9: noticed within seconds, restored on the next invocation
			// from the last snapshot (the restart's swap-out: counter 4).
			osPid, err := osPID(processStatus(t, "demo", "p1").Handle)
			if err != nil {
				t.Fatalf("handle: %v", err)
			}
			if err := syscall.Kill(osPid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "p1 marked failed", func() bool { return processStatus(t, "demo", "p1").Status == "failed" })
			expect(t, "5", "invoke", "demo", "counter", "--pid", "p1")
			if p := processStatus(t, "demo", "p1"); p.Status != "active" {
				t.Fatalf("after restore p1 is %s", p.Status)
			}
		})
	}
}

// A periodic checkpoint bounds what a crash loses.
func TestCheckpointBoundsCrashLoss(t *testing.T) {
	startControlPlane(t, t.TempDir(), "--checkpoint-interval", "100ms")
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	for i := 1; i <= 3; i++ {
		expect(t, strconv.Itoa(i), "invoke", "demo", "counter", "--pid", "p1")
	}
	// The record names a snapshot once the first checkpoint is written; give
	// the next one time to cover the last increment.
	waitFor(t, 5*time.Second, "checkpoint", func() bool { return processStatus(t, "demo", "p1").Snapshot != "" })
	time.Sleep(300 * time.Millisecond)
	osPid, err := osPID(processStatus(t, "demo", "p1").Handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(osPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "p1 marked failed", func() bool { return processStatus(t, "demo", "p1").Status == "failed" })
	expect(t, "4", "invoke", "demo", "counter", "--pid", "p1")
}

func TestIdleTimeoutSwapsOut(t *testing.T) {
	startControlPlane(t, t.TempDir(), "--idle-timeout", "500ms")
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	expect(t, "1", "invoke", "demo", "counter", "--pid", "p1")
	waitFor(t, 10*time.Second, "idle swap-out", func() bool { return processStatus(t, "demo", "p1").Status == "swapped" })
	expect(t, "2", "invoke", "demo", "counter", "--pid", "p1")
}

// A client on the data plane does not notice a swap: the go-away makes it
// re-route through the control plane, which swaps the process back in.
func TestClientReroutesAcrossSwap(t *testing.T) {
	startControlPlane(t, t.TempDir())
	c := demoClient(t)
	ctx := context.Background()
	for i := 1; i <= 6; i++ {
		out, err := c.Invoke(ctx, "demo", "p1", "counter", nil)
		if err != nil || string(out) != strconv.Itoa(i) {
			t.Fatalf("invoke %d: %q %v", i, out, err)
		}
		if i == 3 {
			if _, err := c.SwapProcess(ctx, "demo", "p1"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// 256 MiB of state goes out and comes back byte for byte.
func TestSwapLargeState(t *testing.T) {
	if testing.Short() {
		t.Skip("large state test skipped in -short mode")
	}
	for _, setup := range []string{"embedded", "redis+s3"} {
		t.Run(setup, func(t *testing.T) {
			startControlPlane(t, t.TempDir(), storeFlags(t, setup)...)
			mustPraas(t, "", "app", "create", "big")
			mustPraas(t, "", "process", "create", "big", "--pid", "p1")
			digest := mustPraas(t, "", "invoke", "big", "state-fill", "--pid", "p1", "--data", "blob "+strconv.Itoa(256<<20)+" 42")
			if !strings.HasSuffix(digest, " "+strconv.Itoa(256<<20)) {
				t.Fatalf("state-fill returned %q", digest)
			}
			mustPraas(t, "", "process", "swap", "big", "p1")
			expect(t, digest, "invoke", "big", "state-digest", "--pid", "p1", "--data", "blob")
		})
	}
}

// Two control planes sharing one Redis registry see the same applications.
func TestSharedRedisRegistry(t *testing.T) {
	flags := storeFlags(t, "redis+s3")
	startControlPlane(t, t.TempDir(), flags...)
	mustPraas(t, "", "app", "create", "shared")
	startControlPlane(t, t.TempDir(), flags...) // the CLI now talks to the second one
	if apps := mustPraas(t, "", "app", "list"); !strings.Contains(apps, "shared") {
		t.Fatalf("second control plane does not see the app:\n%s", apps)
	}
}

// Invocations keep arriving while the process is swapped out and in again
// and again: every one succeeds exactly once and the state adds them all up.
func TestNoInvocationLostAcrossSwaps(t *testing.T) {
	startControlPlane(t, t.TempDir())
	ctx := context.Background()
	c := demoClient(t)
	const workers, each = 8, 40
	errc := make(chan error, workers+1)
	done := make(chan struct{})
	go func() {
		// Swap repeatedly while the workers run.
		var err error
		for swaps := 0; ; swaps++ {
			select {
			case <-done:
				errc <- err
				return
			default:
			}
			if _, serr := c.SwapProcess(ctx, "demo", "p1"); serr != nil && err == nil {
				err = serr
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := c.Invoke(ctx, "demo", "p1", "counter", nil); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	if err := <-errc; err != nil {
		t.Fatalf("during swaps: %v", err)
	}
	expect(t, strconv.Itoa(workers*each), "invoke", "demo", "state-get", "--pid", "p1", "--data", "counter")
}

// Messages sent while the destination swaps out and in again and again all
// arrive, in order, through the backup queue or directly.
func TestMessageOrderAcrossSwaps(t *testing.T) {
	startControlPlane(t, t.TempDir())
	ctx := context.Background()
	c := demoClient(t)
	const n = 150
	done := make(chan struct{})
	swapErr := make(chan error, 1)
	go func() {
		var err error
		for {
			select {
			case <-done:
				swapErr <- err
				return
			default:
			}
			if _, serr := c.SwapProcess(ctx, "demo", "p1"); serr != nil && err == nil {
				err = serr
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	for i := range n {
		if err := c.SendMessage(ctx, "demo", "p1", "seq", []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	close(done)
	if err := <-swapErr; err != nil {
		t.Fatalf("swap: %v", err)
	}
	for i := range n {
		out, err := c.Invoke(ctx, "demo", "p1", "recv", []byte("ANY seq 2000"))
		if err != nil || string(out) != strconv.Itoa(i) {
			t.Fatalf("message %d arrived as %q (%v)", i, out, err)
		}
	}
}

// demoClient creates app demo with process p1 on the builtin image and
// returns a client of the control plane.
func demoClient(t *testing.T) *client.Client {
	t.Helper()
	ctx := context.Background()
	c := testClient()
	t.Cleanup(func() { c.Close() })
	if _, err := c.CreateApp(ctx, "demo", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateProcess(ctx, "demo", "p1"); err != nil {
		t.Fatal(err)
	}
	return c
}

// A control plane that crashes loses no process: its processes keep running
// and the next control plane on the same data and address adopts them,
// state and all.
func TestControlPlaneCrashAdoptsProcesses(t *testing.T) {
	addr := freeAddr(t)
	data := t.TempDir()
	cp := startControlPlane(t, data, "--listen", addr)
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	expect(t, "1", "invoke", "demo", "counter", "--pid", "p1")
	handle := processStatus(t, "demo", "p1").Handle

	if err := cp.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-cp.exited
	startControlPlane(t, data, "--listen", addr)
	// The control plane waits for p1 to re-register rather than start it anew.
	expect(t, "2", "invoke", "demo", "counter", "--pid", "p1")
	if h := processStatus(t, "demo", "p1").Handle; h != handle {
		t.Fatalf("p1 runs as %s now, want the adopted %s", h, handle)
	}
}

// osPID returns the OS pid in a local backend handle ("PID@STARTTIME").
func osPID(handle string) (int, error) {
	pid, _, _ := strings.Cut(handle, "@")
	n, err := strconv.Atoi(pid)
	if err == nil && n <= 1 {
		err = fmt.Errorf("handle %q names no process", handle)
	}
	return n, err
}

// testClient is a client of the current test's control plane, with the
// admin key that control plane made on its first start.
func testClient() *client.Client {
	return client.New(endpoint(), client.WithToken(token()))
}
