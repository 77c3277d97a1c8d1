// Package e2e holds end-to-end tests of praas's inter-process communication:
// a control plane runs inside the test process on a random port and starts
// real OS processes through the local backend — the praas binary's builtin
// image, the test image in testdata/testimage, and the reduction example.
// They talk to each other over the data plane as in production.
//
// The binaries are built once, in TestMain; under -race they are built with
// the race detector too, and a data race reported by any process fails the
// test that started it.
package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/backend/local"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/controlplane"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store/bolt"
	"github.com/praas-dev/praas/store/storeurl"
)

// bins are the binaries TestMain builds.
var bins struct {
	praas     string // the praas CLI; its run-process command serves the builtin image
	testImage string // testdata/testimage
	reduction string // examples/reduction
	driver    string // examples/reduction/driver
}

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	// A process whose test control plane is gone exits soon, not after minutes.
	os.Setenv("PRAAS_ORPHAN_TIMEOUT", "20s")
	dir, err := os.MkdirTemp("", "praas-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(dir)
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/praas", "./e2e/testdata/testimage", "./examples/reduction", "./examples/reduction/driver")
	build := exec.Command("go", args...)
	build.Dir = ".." // the module root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build test binaries:", err)
		return 2
	}
	bins.praas = filepath.Join(dir, "praas")
	bins.testImage = filepath.Join(dir, "testimage")
	bins.reduction = filepath.Join(dir, "reduction")
	bins.driver = filepath.Join(dir, "driver")
	return m.Run()
}

// callTimeout bounds every call a test makes.
const callTimeout = 30 * time.Second

// cluster is a control plane serving on a random port with the local
// backend, and a client of it.
type cluster struct {
	url    string
	c      *client.Client
	logDir string // process logs: APP/PID.log
	cpLog  *syncBuffer
}

// newCluster starts a control plane for t, with metadata and swap stores in
// a temporary directory, and stops it (swapping out every process it
// started) when t ends. processEnv is added to the processes' environment.
func newCluster(t *testing.T, processEnv ...string) *cluster {
	t.Helper()
	return newClusterOn(t, "", processEnv...)
}

// newClusterOn is newCluster with the swap store at swapURL ("": files in
// the temporary directory).
func newClusterOn(t *testing.T, swapURL string, processEnv ...string) *cluster {
	t.Helper()
	return newClusterTraced(t, swapURL, nil, processEnv...)
}

// newClusterTraced is newClusterOn with a control plane traced by tp.
func newClusterTraced(t *testing.T, swapURL string, tp trace.TracerProvider, processEnv ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	meta, err := bolt.Open(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	if swapURL == "" {
		swapURL = "file://" + filepath.Join(dir, "swap")
	}
	swap, err := storeurl.OpenSwap(context.Background(), swapURL, dir)
	if err != nil {
		t.Fatal(err)
	}
	cl := &cluster{logDir: filepath.Join(dir, "logs"), cpLog: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(cl.cpLog, &slog.HandlerOptions{Level: slog.LevelInfo}))
	backend, err := local.New(local.Config{
		Executable:  bins.praas,
		BuiltinArgs: []string{"run-process"},
		RunDir:      filepath.Join(dir, "run"),
		LogDir:      cl.logDir,
		Logger:      log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if raceEnabled {
		// A race-enabled binary sleeps a second at exit by default, which
		// would make every swap-out that long.
		processEnv = append(processEnv, "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=20")
	}
	_, signingKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := controlplane.New(controlplane.Config{
		SigningKey:  signingKey,
		NoAuth:      true, // REST API keys are tested in cmd/praas; here every client is an admin
		Metadata:    meta,
		Swap:        swap,
		Backend:     backend,
		Logger:      log,
		StopTimeout: 10 * time.Second,
		ProcessEnv:  processEnv,

		TracerProvider: tp,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	cl.url = "http://" + ln.Addr().String()
	cl.c = client.New(cl.url)
	t.Cleanup(func() {
		cl.c.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("control plane: %v", err)
			}
		case <-time.After(time.Minute):
			t.Errorf("control plane did not stop within a minute")
		}
		meta.Close()
		swap.Close()
		cl.checkLogs(t)
	})
	return cl
}

// checkLogs fails t on a data race reported by a process, and shows the
// logs when t failed.
func (cl *cluster) checkLogs(t *testing.T) {
	t.Helper()
	_ = filepath.WalkDir(cl.logDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(cl.logDir, path)
		if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("process %s reported a data race:\n%s", rel, b)
		} else if t.Failed() {
			t.Logf("log of process %s:\n%s", rel, tail(b, 4<<10))
		}
		return nil
	})
	if t.Failed() {
		t.Logf("control plane log:\n%s", tail(cl.cpLog.Bytes(), 8<<10))
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return append([]byte("...\n"), b[len(b)-n:]...)
	}
	return b
}

// createApp creates app with image ("" for builtin) and its processes.
func (cl *cluster) createApp(t *testing.T, app, image string, pids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := cl.c.CreateApp(ctx, app, image); err != nil {
		t.Fatalf("create app %s: %v", app, err)
	}
	errc := make(chan error, len(pids))
	for _, pid := range pids {
		go func() {
			_, err := cl.c.CreateProcess(ctx, app, pid)
			if err != nil {
				err = fmt.Errorf("create process %s/%s: %w", app, pid, err)
			}
			errc <- err
		}()
	}
	for range pids {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// call invokes function in app/pid; after the first call to a process it
// goes over the data plane.
func (cl *cluster) call(app, pid, function, input string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	out, err := cl.c.Invoke(ctx, app, pid, function, []byte(input))
	return string(out), err
}

// invoke is call that fails t on an error.
func (cl *cluster) invoke(t testing.TB, app, pid, function, input string) string {
	t.Helper()
	out, err := cl.call(app, pid, function, input)
	if err != nil {
		t.Fatalf("invoke %s on %s/%s with %q: %v", function, app, pid, input, err)
	}
	return out
}

// checkFor calls f every interval until it returns nil, and fails t with
// f's last error if that does not happen within total.
func checkFor(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}

// wantState polls state key on app/pid (through function get, which fails
// for a key that is not set) until it holds want.
func (cl *cluster) wantState(t testing.TB, app, pid, get, key, want string) {
	t.Helper()
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		got, err := cl.call(app, pid, get, key)
		if err != nil {
			return fmt.Errorf("state %q on %s: %w", key, pid, err)
		}
		if got != want {
			return fmt.Errorf("state %q on %s = %q, want %q", key, pid, got, want)
		}
		return nil
	})
}

// wantErr fails t unless err has code and its message contains each of msgs.
func wantErr(t testing.TB, err error, code errs.Code, msgs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("error %q has code %s, want %s", err, got, code)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("error %q does not say %q", err, m)
		}
	}
}

// apiStatus returns the HTTP status of a control-plane error, or 0.
func apiStatus(err error) int {
	var api *client.APIError
	if errors.As(err, &api) {
		return api.Status
	}
	return 0
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
