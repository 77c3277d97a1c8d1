// Package backendtest is the conformance suite that every implementation of
// backend.Backend runs from its own tests, so that the local and the
// Kubernetes backends keep the same contract.
//
// A backend's test calls Run with a Harness that makes backend instances
// sharing one state (as control-plane replicas, or a control plane and its
// next run, share the processes they run) and a Spec that runs the test
// image: a program that calls ImageMain.
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, backendtest.Harness{New: ..., Spec: ..., Output: ...})
//	}
package backendtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/errs"
)

// Harness is what a backend gives the suite.
type Harness struct {
	// New returns a new instance of the backend. All instances made by one
	// Harness share their state: each one lists, waits for and stops the
	// processes the others started.
	New func(t *testing.T) backend.Backend
	// Spec runs the test image; the suite sets App, PID and Generation and
	// appends to Env and Secrets. Image must be what CheckImage returns for
	// it.
	Spec backend.Spec
	// Output returns what the process of h has written to its standard
	// output and error so far.
	Output func(h backend.Handle) ([]byte, error)
	// BadImages are images CheckImage must reject, besides the suite's own.
	BadImages []string
	// Stale, if set, returns a handle for the same slot as h (its OS pid,
	// its pod name) but another incarnation, as a handle kept from before
	// that slot was reused would be. The suite checks that it is treated as
	// ended and that h is not signalled through it.
	Stale func(t *testing.T, h backend.Handle) backend.Handle
	// Timeout bounds how long a process may take to start, or to end once
	// stopped (default 30s).
	Timeout time.Duration
}

// prompt is how soon a call must return when it has nothing to wait for.
const prompt = 5 * time.Second

// blockFor is how long a Wait must keep blocking on a running process.
const blockFor = 300 * time.Millisecond

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 30 * time.Second
	}
	s := &suite{Harness: h}
	for _, c := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"CheckImage", s.testCheckImage},
		{"StartList", s.testStartList},
		{"WaitBlocksUntilKill", s.testWaitBlocksUntilKill},
		{"StopGraceful", s.testStopGraceful},
		{"StopKillsWhenIgnored", s.testStopKillsWhenIgnored},
		{"ExitOnItsOwn", s.testExitOnItsOwn},
		{"EndedProcess", s.testEndedProcess},
		{"UnknownHandles", s.testUnknownHandles},
		{"SecondInstance", s.testSecondInstance},
		{"FreshInstanceRecovers", s.testFreshInstanceRecovers},
		{"ConcurrentStarts", s.testConcurrentStarts},
		{"Environment", s.testEnvironment},
	} {
		t.Run(c.name, c.fn)
	}
}

type suite struct {
	Harness
}

// spec returns the test image's Spec for a process of app, with extra env.
func (s *suite) spec(app, pid string, gen uint64, env ...string) backend.Spec {
	sp := s.Spec
	sp.App, sp.PID, sp.Generation = app, pid, gen
	sp.Env = slices.Concat(s.Spec.Env, env)
	sp.Secrets = slices.Clone(s.Spec.Secrets)
	return sp
}

// newApp returns an app name no other test, nor an earlier run, uses; List
// results are filtered by it.
func newApp(t *testing.T) string {
	var b [3]byte
	rand.Read(b[:])
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	return fmt.Sprintf("bt-%s-%s", name[strings.LastIndexByte(name, '-')+1:], hex.EncodeToString(b[:]))
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), s.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// start starts sp on b and kills the process when the test ends.
func (s *suite) start(t *testing.T, b backend.Backend, sp backend.Spec) backend.Handle {
	t.Helper()
	h, err := b.Start(s.ctx(t), sp)
	if err != nil {
		t.Fatalf("Start %s/%s: %v", sp.App, sp.PID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
		defer cancel()
		if err := b.Kill(ctx, h); err != nil {
			t.Errorf("cleanup: Kill %s: %v", h.ID, err)
		}
	})
	want := backend.Handle{ID: h.ID, App: sp.App, PID: sp.PID, Generation: sp.Generation}
	if h.ID == "" || h != want {
		t.Fatalf("Start returned handle %+v, want %+v with an ID", h, want)
	}
	return h
}

// startReady starts sp and waits until the image is ready, so that it
// handles SIGTERM.
func (s *suite) startReady(t *testing.T, b backend.Backend, sp backend.Spec) backend.Handle {
	t.Helper()
	h := s.start(t, b, sp)
	s.waitOutput(t, h, lineReady)
	return h
}

// waitOutput waits until the output of h contains line and returns it.
func (s *suite) waitOutput(t *testing.T, h backend.Handle, line string) string {
	t.Helper()
	var out string
	eventually(t, s.Timeout, fmt.Sprintf("output of %s/%s contains %q", h.App, h.PID, line), func() bool {
		b, err := s.Output(h)
		out = string(b)
		return err == nil && strings.Contains(out, line)
	})
	return out
}

func (s *suite) output(t *testing.T, h backend.Handle) string {
	t.Helper()
	b, err := s.Output(h)
	if err != nil {
		t.Fatalf("output of %s: %v", h.ID, err)
	}
	return string(b)
}

// list returns what b lists for app.
func (s *suite) list(t *testing.T, b backend.Backend, app string) []backend.Handle {
	t.Helper()
	all, err := b.List(s.ctx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var hs []backend.Handle
	for _, h := range all {
		if h.App == app {
			hs = append(hs, h)
		}
	}
	return hs
}

// wantList fails t unless b lists exactly want for app.
func (s *suite) wantList(t *testing.T, b backend.Backend, app string, want ...backend.Handle) {
	t.Helper()
	sortHandles := cmpopts.SortSlices(func(x, y backend.Handle) bool { return x.ID < y.ID })
	if d := cmp.Diff(want, s.list(t, b, app), sortHandles, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("List for app %s (-want +got):\n%s", app, d)
	}
}

// wantBlocks fails t unless Wait on b keeps blocking for a while.
func wantBlocks(t *testing.T, b backend.Backend, h backend.Handle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), blockFor)
	defer cancel()
	if exit, err := b.Wait(ctx, h); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on running %s: got (%+v, %v), want it to block until the context ends", h.ID, exit, err)
	}
}

// promptly runs call with a long context and fails t unless it returns
// nil well before that context ends: there is nothing to wait for.
func (s *suite) promptly(t *testing.T, what string, call func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), prompt+s.Timeout)
	defer cancel()
	t0 := time.Now()
	err := call(ctx)
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	if d := time.Since(t0); d > prompt {
		t.Errorf("%s took %v, want it at once", what, d)
	}
}

// wantEnded fails t unless Wait, Stop and Kill of h return nil at once.
func (s *suite) wantEnded(t *testing.T, b backend.Backend, h backend.Handle) {
	t.Helper()
	s.promptly(t, "Wait "+h.ID, func(ctx context.Context) error {
		exit, err := b.Wait(ctx, h)
		if err == nil && (exit.Reason == "" || exit.At.IsZero()) {
			return fmt.Errorf("exit %+v has no reason or time", exit)
		}
		return err
	})
	s.promptly(t, "Stop "+h.ID, func(ctx context.Context) error { return b.Stop(ctx, h) })
	s.promptly(t, "Kill "+h.ID, func(ctx context.Context) error { return b.Kill(ctx, h) })
}

// eventually polls cond until it holds, failing t after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; !cond(); wait = min(2*wait, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(wait)
	}
}

func (s *suite) testCheckImage(t *testing.T) {
	b := s.New(t)
	got, err := b.CheckImage(s.ctx(t), s.Spec.Image)
	if err != nil || got != s.Spec.Image {
		t.Errorf("CheckImage(%q) = %q, %v; want it back", s.Spec.Image, got, err)
	}
	for _, bad := range append([]string{"no such image !!", "bad\x00image", "../relative"}, s.BadImages...) {
		got, err := b.CheckImage(s.ctx(t), bad)
		if !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("CheckImage(%q) = %q, %v; want an error wrapping ErrInvalidArgument", bad, got, err)
		}
	}
}

func (s *suite) testStartList(t *testing.T) {
	b, app := s.New(t), newApp(t)
	s.wantList(t, b, app)
	h1 := s.start(t, b, s.spec(app, "p1", 7))
	h2 := s.start(t, b, s.spec(app, "p2", 8))
	if h1.ID == h2.ID {
		t.Fatalf("two processes got the same ID %q", h1.ID)
	}
	s.wantList(t, b, app, h1, h2)
}

func (s *suite) testWaitBlocksUntilKill(t *testing.T) {
	b, app := s.New(t), newApp(t)
	h := s.start(t, b, s.spec(app, "p1", 1))
	wantBlocks(t, b, h)

	type result struct {
		exit backend.Exit
		err  error
	}
	done := make(chan result, 1)
	ctx := s.ctx(t)
	go func() {
		exit, err := b.Wait(ctx, h)
		done <- result{exit, err}
	}()
	if err := b.Kill(s.ctx(t), h); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Wait after Kill: %v", r.err)
		}
		if r.exit.Code != -1 || r.exit.Reason == "" || r.exit.At.IsZero() {
			t.Errorf("Wait after Kill: exit %+v, want code -1 with a reason and a time", r.exit)
		}
	case <-time.After(s.Timeout):
		t.Fatalf("Wait still blocks %v after Kill", s.Timeout)
	}
	s.wantList(t, b, app)
}

func (s *suite) testStopGraceful(t *testing.T) {
	b, app := s.New(t), newApp(t)
	h := s.startReady(t, b, s.spec(app, "p1", 1))
	t0 := time.Now()
	if err := b.Stop(s.ctx(t), h); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(t0); d > s.Timeout/2 {
		t.Errorf("Stop took %v for a process that exits on SIGTERM", d)
	}
	s.wantList(t, b, app)
	s.promptly(t, "Wait after Stop", func(ctx context.Context) error {
		exit, err := b.Wait(ctx, h)
		if err == nil && exit.Code != 0 && exit.Code != -1 {
			return fmt.Errorf("exit %+v, want status 0 (or -1, unknown)", exit)
		}
		return err
	})
	if out := s.output(t, h); !strings.Contains(out, lineSIGTERM) {
		t.Errorf("the process was not sent SIGTERM; its output:\n%s", out)
	}
}

func (s *suite) testStopKillsWhenIgnored(t *testing.T) {
	b, app := s.New(t), newApp(t)
	h := s.startReady(t, b, s.spec(app, "p1", 1, EnvIgnoreSIGTERM+"=1"))
	const grace = time.Second
	ctx, cancel := context.WithTimeout(t.Context(), grace)
	defer cancel()
	t0 := time.Now()
	err := b.Stop(ctx, h)
	if err == nil {
		t.Errorf("Stop of a process that ignores SIGTERM returned nil, want an error saying it was killed")
	}
	if d := time.Since(t0); d < grace-50*time.Millisecond || d > grace+s.Timeout {
		t.Errorf("Stop returned after %v, want it to kill once its %v context ended", d, grace)
	}
	s.wantList(t, b, app)
	s.promptly(t, "Wait after Stop", func(ctx context.Context) error { _, err := b.Wait(ctx, h); return err })
	if out := s.output(t, h); !strings.Contains(out, lineSIGTERM) {
		t.Errorf("the process was not sent SIGTERM before the kill; its output:\n%s", out)
	}
}

func (s *suite) testExitOnItsOwn(t *testing.T) {
	b, app := s.New(t), newApp(t)
	h := s.start(t, b, s.spec(app, "p1", 1, EnvExit+"=3"))
	exit, err := b.Wait(s.ctx(t), h)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit.Code != 3 && exit.Code != -1 {
		t.Errorf("exit %+v, want status 3 (or -1, unknown)", exit)
	}
	s.wantList(t, b, app)
	s.wantEnded(t, b, h)
}

func (s *suite) testEndedProcess(t *testing.T) {
	b, app := s.New(t), newApp(t)
	h := s.start(t, b, s.spec(app, "p1", 1))
	if err := b.Kill(s.ctx(t), h); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if _, err := b.Wait(s.ctx(t), h); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	s.wantEnded(t, b, h)
	t.Run("OtherInstance", func(t *testing.T) { s.wantEnded(t, s.New(t), h) })
}

func (s *suite) testUnknownHandles(t *testing.T) {
	b, app := s.New(t), newApp(t)
	live := s.startReady(t, b, s.spec(app, "p1", 1))
	unknown := []backend.Handle{
		{},
		{ID: "no-such-process", App: app, PID: "p1", Generation: 1},
		{ID: live.ID + "0", App: app, PID: "p1", Generation: 1},
		{ID: live.ID + "x", App: app, PID: "p1", Generation: 1},
		{ID: "x" + live.ID, App: app, PID: "p1", Generation: 1},
	}
	if s.Stale != nil {
		unknown = append(unknown, s.Stale(t, live))
	} else {
		t.Log("the harness has no Stale: reused slots are not checked")
	}
	for _, h := range unknown {
		s.wantEnded(t, b, h)
	}
	// Nothing reached the live process through them.
	wantBlocks(t, b, live)
	s.wantList(t, b, app, live)
	if out := s.output(t, live); strings.Contains(out, lineSIGTERM) {
		t.Errorf("a handle naming no process signalled a live one; its output:\n%s", out)
	}
}

func (s *suite) testSecondInstance(t *testing.T) {
	b1, b2, app := s.New(t), s.New(t), newApp(t)
	h1 := s.startReady(t, b1, s.spec(app, "p1", 1))
	h2 := s.startReady(t, b1, s.spec(app, "p2", 2))
	s.wantList(t, b2, app, h1, h2)
	wantBlocks(t, b2, h1)

	ended := make(chan error, 1)
	ctx := s.ctx(t)
	go func() { _, err := b1.Wait(ctx, h1); ended <- err }()
	if err := b2.Stop(s.ctx(t), h1); err != nil {
		t.Fatalf("Stop by the second instance: %v", err)
	}
	if err := <-ended; err != nil {
		t.Errorf("Wait by the first instance: %v", err)
	}
	if out := s.output(t, h1); !strings.Contains(out, lineSIGTERM) {
		t.Errorf("the process was not sent SIGTERM; its output:\n%s", out)
	}

	if err := b2.Kill(s.ctx(t), h2); err != nil {
		t.Fatalf("Kill by the second instance: %v", err)
	}
	s.promptly(t, "Wait by the first instance after Kill", func(ctx context.Context) error { _, err := b1.Wait(ctx, h2); return err })
	s.wantEnded(t, b2, h1)
	s.wantEnded(t, b2, h2)
	s.wantList(t, b1, app)
	s.wantList(t, b2, app)
}

func (s *suite) testFreshInstanceRecovers(t *testing.T) {
	b1, app := s.New(t), newApp(t)
	var hs []backend.Handle
	for i := range 3 {
		hs = append(hs, s.startReady(t, b1, s.spec(app, fmt.Sprintf("p%d", i), uint64(10+i))))
	}
	// Started after the others: a fresh instance sees it ended.
	gone := s.start(t, b1, s.spec(app, "gone", 1))
	if err := b1.Kill(s.ctx(t), gone); err != nil {
		t.Fatalf("Kill: %v", err)
	}

	b2 := s.New(t)
	s.wantList(t, b2, app, hs...)
	for _, h := range hs {
		wantBlocks(t, b2, h)
		if err := b2.Stop(s.ctx(t), h); err != nil {
			t.Errorf("Stop %s by the fresh instance: %v", h.ID, err)
		}
	}
	s.wantEnded(t, b2, gone)
	s.wantList(t, b1, app)
	s.wantList(t, b2, app)
}

func (s *suite) testConcurrentStarts(t *testing.T) {
	const n = 20
	bs, app := []backend.Backend{s.New(t), s.New(t)}, newApp(t)
	hs := make([]backend.Handle, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	ctx := s.ctx(t)
	for i := range n {
		wg.Go(func() {
			sp := s.spec(app, fmt.Sprintf("p%02d", i), uint64(100+i))
			h, err := bs[i%2].Start(ctx, sp)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err)
				return
			}
			hs[i] = h
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for i, h := range hs {
			if h.ID != "" {
				bs[i%2].Kill(context.Background(), h)
			}
		}
	})
	if len(failed) > 0 {
		t.Fatalf("%d of %d Starts failed, first: %v", len(failed), n, failed[0])
	}
	ids := make(map[string]bool)
	for i, h := range hs {
		want := backend.Handle{ID: h.ID, App: app, PID: fmt.Sprintf("p%02d", i), Generation: uint64(100 + i)}
		if h != want || ids[h.ID] {
			t.Errorf("Start %d returned %+v, want %+v with a unique ID", i, h, want)
		}
		ids[h.ID] = true
	}
	s.wantList(t, bs[0], app, hs...)
	s.wantList(t, bs[1], app, hs...)

	// Each instance stops the other's.
	errc := make(chan error, n)
	for i, h := range hs {
		go func() { errc <- bs[(i+1)%2].Kill(ctx, h) }()
	}
	for range n {
		if err := <-errc; err != nil {
			t.Errorf("Kill: %v", err)
		}
	}
	s.wantList(t, bs[0], app)
}

func (s *suite) testEnvironment(t *testing.T) {
	// The backend's own environment holds the control plane's credentials.
	const leak = "BACKENDTEST_CONTROL_PLANE_SECRET"
	t.Setenv(leak, "leaked")
	b, app := s.New(t), newApp(t)
	sp := s.spec(app, "p1", 1, "BACKENDTEST_VALUE=a b=c")
	sp.Secrets = append(sp.Secrets, "BACKENDTEST_SECRET=s3cret")
	h := s.start(t, b, sp)

	out := s.waitOutput(t, h, lineReady)
	i := strings.Index(out, lineEnv)
	if i < 0 {
		t.Fatalf("no environment in the output:\n%s", out)
	}
	line, _, _ := strings.Cut(out[i+len(lineEnv):], "\n")
	var env []string
	if err := json.Unmarshal([]byte(line), &env); err != nil {
		t.Fatalf("environment line %q: %v", line, err)
	}
	for _, kv := range []string{"BACKENDTEST_VALUE=a b=c", "BACKENDTEST_SECRET=s3cret"} {
		if !slices.Contains(env, kv) {
			t.Errorf("%s did not reach the process; its environment: %q", kv, env)
		}
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, leak+"=") {
			t.Errorf("the backend's own environment reached the process: %s", kv)
		}
	}
}
