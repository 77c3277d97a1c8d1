package local_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/backend/backendtest"
	"github.com/praas-dev/praas/backend/local"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/testenv"
)

// The test binary doubles as the test image, as a prober of what an image
// can reach, and as a short-lived control plane, chosen by envRole, so the
// tests need no other binary.
const (
	envRole    = "PRAAS_LOCALTEST_ROLE"    // "image", "prober" or "starter"
	envDir     = "PRAAS_LOCALTEST_DIR"     // the starter's state directory
	envSandbox = "PRAAS_LOCALTEST_SANDBOX" // the starter's sandbox directory
	envMode    = "PRAAS_LOCALTEST_MODE"    // the starter's isolation
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "image":
		backendtest.ImageMain()
	case "prober":
		probe()
		backendtest.ImageMain()
	case "starter":
		if err := starter(os.Getenv(envDir), os.Getenv(envSandbox), local.Isolation(os.Getenv(envMode))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// imageEnv makes the test binary act as the test image. GORACE keeps a
// race-enabled image from sleeping a second at exit.
var imageEnv = []string{envRole + "=image", "GORACE=atexit_sleep_ms=0"}

func self(t testing.TB) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// modes are the isolation modes every test runs in.
var modes = []local.Isolation{local.IsolationNone, local.IsolationUser, local.IsolationNamespaces}

// env is where one test keeps its backend's state.
type env struct {
	mode    local.Isolation
	dir     string // run/ and logs/
	sandbox string // for the user and namespaces modes
}

// forModes runs fn once per isolation mode, as subtests named after them.
func forModes(t *testing.T, fn func(t *testing.T, e env)) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) { fn(t, newEnv(t, mode)) })
	}
}

// newEnv makes the directories of a test in mode, and skips the test (or
// fails it in CI, which must run every mode) if the mode cannot work here.
func newEnv(t *testing.T, mode local.Isolation) env {
	e := env{mode: mode, dir: t.TempDir()}
	if mode == local.IsolationNone {
		return e
	}
	// Sandbox users must reach the sandbox directory: t.TempDir's parent
	// is private.
	sb, err := os.MkdirTemp("", "praas-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sb) })
	if err := os.Chmod(sb, 0o711); err != nil {
		t.Fatal(err)
	}
	e.sandbox = sb
	if _, err := local.New(e.config()); err != nil {
		unavailable(t, mode, err)
	}
	return e
}

var notices sync.Map

// unavailable skips a test whose isolation mode cannot work here, saying so
// on the terminal once per mode, or fails it in CI.
func unavailable(t *testing.T, mode local.Isolation, why error) {
	t.Helper()
	if testenv.InCI() {
		t.Fatalf("isolation %s must work in CI (as root, with bubblewrap installed): %v", mode, why)
	}
	msg := fmt.Sprintf("SKIPPING isolation %s tests in backend/local: %v", mode, why)
	if _, done := notices.LoadOrStore(mode, true); !done {
		w := io.Writer(os.Stderr)
		if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
			defer tty.Close()
			w = tty
		}
		fmt.Fprintln(w, msg)
	}
	t.Skip(msg)
}

func (e env) config() local.Config {
	return local.Config{
		RunDir:     filepath.Join(e.dir, "run"),
		LogDir:     filepath.Join(e.dir, "logs"),
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Isolation:  e.mode,
		SandboxDir: e.sandbox,
	}
}

// records returns the names of the run records in dir/run.
func records(dir string) []string {
	names, _ := filepath.Glob(filepath.Join(dir, "run", "*.json"))
	return names
}

func newBackend(t testing.TB, cfg local.Config) *local.Backend {
	b, err := local.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func output(dir string, h backend.Handle) ([]byte, error) {
	return os.ReadFile(filepath.Join(dir, "logs", h.App, h.PID+".out"))
}

func imageSpec(t testing.TB, app, pid string, env ...string) backend.Spec {
	return backend.Spec{App: app, PID: pid, Generation: 1, Image: self(t), Env: slices.Concat(imageEnv, env)}
}

func TestConformance(t *testing.T) { forModes(t, testConformance) }

func testConformance(t *testing.T, e env) {
	dir := e.dir
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	backendtest.Run(t, backendtest.Harness{
		New:       func(t *testing.T) backend.Backend { return newBackend(t, e.config()) },
		Spec:      backend.Spec{Image: self(t), Env: imageEnv},
		Output:    func(h backend.Handle) ([]byte, error) { return output(dir, h) },
		BadImages: []string{"relative/image", "/no/such/image", dir, notExec},
		Stale: func(t *testing.T, h backend.Handle) backend.Handle {
			// The same pid, started a tick earlier: what a handle of the
			// pid's previous user would look like.
			var pid int
			var start uint64
			if _, err := fmt.Sscanf(h.ID, "%d@%d", &pid, &start); err != nil {
				t.Fatalf("handle ID %q: %v", h.ID, err)
			}
			h.ID = fmt.Sprintf("%d@%d", pid, start-1)
			return h
		},
	})
}

// starter plays a control plane that starts two processes and exits,
// leaving them to whoever runs next.
func starter(dir, sandbox string, mode local.Isolation) error {
	b, err := local.New(env{mode: mode, dir: dir, sandbox: sandbox}.config())
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var hs []backend.Handle
	for i, pid := range []string{"p1", "p2"} {
		h, err := b.Start(context.Background(), backend.Spec{
			App: "restart", PID: pid, Generation: uint64(5 + i), Image: exe, Env: imageEnv,
		})
		if err != nil {
			return err
		}
		hs = append(hs, h)
	}
	return json.NewEncoder(os.Stdout).Encode(hs)
}

func TestRecoverAfterRestart(t *testing.T) { forModes(t, testRecoverAfterRestart) }

func testRecoverAfterRestart(t *testing.T, e env) {
	dir := e.dir
	cmd := exec.Command(self(t))
	cmd.Env = []string{envRole + "=starter", envDir + "=" + dir, envSandbox + "=" + e.sandbox, envMode + "=" + string(e.mode), "GORACE=atexit_sleep_ms=0"}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("starter: %v", err)
	}
	var started []backend.Handle
	if err := json.Unmarshal(out, &started); err != nil || len(started) != 2 {
		t.Fatalf("starter output %q: %v", out, err)
	}
	h, dies := started[0], started[1]
	// The starter has exited: its processes are now nobody's child here.
	b := newBackend(t, e.config())
	for _, h := range started {
		t.Cleanup(func() { b.Kill(context.Background(), h) })
		waitOutput(t, dir, h, "backendtest ready")
	}
	// One dies while no control plane runs, so nobody removes its record.
	// (With namespaces, what dies is its sandbox: the backend kills a
	// runtime whose sandbox has gone once it notices.)
	var pid int
	fmt.Sscanf(dies.ID, "%d@", &pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	want := backend.Handle{ID: h.ID, App: "restart", PID: "p1", Generation: 5}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		hs, err := b.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) == 1 && hs[0] == want {
			break
		}
		// SIGKILL is not instant.
		if len(hs) != 2 || hs[0] != want || time.Now().After(deadline) {
			t.Fatalf("List after restart = %+v, want [%+v] once %s has died", hs, want, dies.ID)
		}
	}
	if recs := records(dir); len(recs) != 1 {
		t.Errorf("List left the dead process's record: %v", recs)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := b.Wait(ctx, h); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on the running process: %v, want it to block", err)
	}
	if err := b.Stop(t.Context(), h); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	exit, err := b.Wait(t.Context(), h)
	if err != nil || exit.Code != -1 {
		t.Errorf("Wait after Stop = %+v, %v; want an unknown (-1) exit: it was not our child", exit, err)
	}
	waitOutput(t, dir, h, "backendtest sigterm")
	if hs, err := b.List(t.Context()); err != nil || len(hs) != 0 {
		t.Errorf("List after Stop = %+v, %v; want none", hs, err)
	}
	if recs := records(dir); len(recs) != 0 {
		t.Errorf("run records left after the process ended: %v", recs)
	}
	if e.sandbox != "" {
		wantNoScratch(t, e)
	}
}

// wantNoScratch fails t if a scratch directory is left in e's sandbox.
func wantNoScratch(t *testing.T, e env) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(e.sandbox, "scratch", "*", "*"))
	if len(left) > 0 {
		t.Errorf("scratch directories left after their processes ended: %v", left)
	}
}

func waitOutput(t *testing.T, dir string, h backend.Handle, line string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := output(dir, h)
		if strings.Contains(string(out), line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output of %s:\n%s", line, h.ID, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The instance that started a process reaps it and so knows its status.
func TestExitStatus(t *testing.T) { forModes(t, testExitStatus) }

func testExitStatus(t *testing.T, e env) {
	b := newBackend(t, e.config())
	h, err := b.Start(t.Context(), imageSpec(t, "a", "exits", backendtest.EnvExit+"=3"))
	if err != nil {
		t.Fatal(err)
	}
	if exit, err := b.Wait(t.Context(), h); err != nil || exit.Code != 3 || exit.Reason != "exit status 3" {
		t.Errorf("Wait = %+v, %v; want status 3", exit, err)
	}
	h, err = b.Start(t.Context(), imageSpec(t, "a", "killed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Kill(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	if exit, err := b.Wait(t.Context(), h); err != nil || exit.Code != -1 || exit.Reason != "signal: killed" {
		t.Errorf("Wait = %+v, %v; want killed", exit, err)
	}
	if recs := records(e.dir); len(recs) != 0 {
		t.Errorf("run records left after the processes ended: %v", recs)
	}
	if e.sandbox != "" {
		wantNoScratch(t, e)
	}
}

// The environment is the Spec's and a minimal base, nothing of ours.
func TestExactEnvironment(t *testing.T) { forModes(t, testExactEnvironment) }

func testExactEnvironment(t *testing.T, e env) {
	dir := e.dir
	b := newBackend(t, e.config())
	sp := imageSpec(t, "a", "p1", "HOME=/home/app", "X=1")
	sp.Secrets = []string{"S=2"}
	h, err := b.Start(t.Context(), sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Kill(context.Background(), h) })
	waitOutput(t, dir, h, "backendtest ready")
	out, _ := output(dir, h)
	_, line, _ := strings.Cut(string(out), "backendtest env ")
	line, _, _ = strings.Cut(line, "\n")
	var env []string
	if err := json.Unmarshal([]byte(line), &env); err != nil {
		t.Fatalf("env line %q: %v", line, err)
	}
	want := slices.Concat([]string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/home/app", "X=1", "S=2"}, imageEnv)
	if e.mode == local.IsolationNamespaces {
		want = append(want, "PWD=/tmp") // bubblewrap sets it
	}
	if e.mode == local.IsolationUser {
		// TMPDIR is the scratch directory, wherever it is.
		i := slices.IndexFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "TMPDIR=") })
		if i < 0 || !strings.HasPrefix(env[i], "TMPDIR="+filepath.Join(e.sandbox, "scratch")+"/") {
			t.Errorf("environment %q: want TMPDIR in the sandbox's scratch directory", env)
		} else {
			want = append(want, env[i])
		}
	}
	slices.Sort(env)
	slices.Sort(want)
	if !slices.Equal(env, want) {
		t.Errorf("environment = %q, want %q", env, want)
	}
}

func TestBuiltinImage(t *testing.T) { forModes(t, testBuiltinImage) }

func testBuiltinImage(t *testing.T, e env) {
	dir := e.dir
	cfg := e.config()
	cfg.Executable = self(t) // no BuiltinArgs: the role comes from the env
	b := newBackend(t, cfg)
	for _, image := range []string{"", backend.BuiltinImage} {
		if got, err := b.CheckImage(t.Context(), image); err != nil || got != backend.BuiltinImage {
			t.Errorf("CheckImage(%q) = %q, %v", image, got, err)
		}
	}
	sp := imageSpec(t, "a", "p1")
	sp.Image = backend.BuiltinImage
	h, err := b.Start(t.Context(), sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Kill(context.Background(), h) })
	waitOutput(t, dir, h, "backendtest ready")
	if err := b.Stop(t.Context(), h); err != nil {
		t.Fatal(err)
	}
}

// A process stopped before its runtime installed its SIGTERM handler ends
// at once: in the namespaces mode, where it is pid 1 and the kernel would
// drop a SIGTERM it does not handle, too.
func TestStopRightAfterStart(t *testing.T) { forModes(t, testStopRightAfterStart) }

func testStopRightAfterStart(t *testing.T, e env) {
	b := newBackend(t, e.config())
	for i := range 5 {
		h, err := b.Start(t.Context(), imageSpec(t, "a", fmt.Sprintf("p%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		err = b.Stop(ctx, h)
		cancel()
		if d := time.Since(t0); err != nil || d > 10*time.Second {
			t.Errorf("Stop right after Start: %v after %v; want it ended at once", err, d)
		}
	}
}

func TestConfigAndSpecChecks(t *testing.T) {
	if _, err := local.New(local.Config{}); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Errorf("New without RunDir: %v, want ErrInvalidArgument", err)
	}
	dir := t.TempDir()
	b := newBackend(t, env{mode: local.IsolationNone, dir: dir}.config())
	for _, sub := range []string{"run", "logs"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, mode %v; want 0700", sub, err, fi.Mode())
		}
	}
	for _, bad := range [][2]string{{"", "p"}, {"a", ""}, {"..", "p"}, {"a", "../p"}, {"a/b", "p"}} {
		sp := imageSpec(t, bad[0], bad[1])
		if h, err := b.Start(t.Context(), sp); !errors.Is(err, errs.ErrInvalidArgument) {
			b.Kill(t.Context(), h)
			t.Errorf("Start app %q pid %q: %v, want ErrInvalidArgument", bad[0], bad[1], err)
		}
	}
}
