package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/praas-dev/praas/bench/internal/blob"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/controlplane"
)

// Env is what the experiments share: built binaries, a running control
// plane, the baseline servers and handles on Redis and S3.
type Env struct {
	Quick   bool
	Root    string // repository root
	Tmp     string // scratch directory, removed at the end
	Log     io.Writer
	PlotDir string // where plots are written

	Praas, Image, Baseline string // built binaries

	RedisURL, S3URL string
	Redis           *goredis.Client // nil if Redis is not available
	S3              *blob.S3        // nil if S3 is not available
	RedisErr, S3Err error

	CP *ControlPlane // `praas up` with the default (file) swap store
	C  *client.Client

	TCPEcho, HTTPEcho *Server // baseline servers

	mu      sync.Mutex
	closers []func()
}

func (e *Env) logf(format string, args ...any) {
	fmt.Fprintf(e.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// defer runs f at Close, in reverse order.
func (e *Env) onClose(f func()) {
	e.mu.Lock()
	e.closers = append(e.closers, f)
	e.mu.Unlock()
}

// Close stops everything the environment started.
func (e *Env) Close() {
	e.mu.Lock()
	cl := e.closers
	e.closers = nil
	e.mu.Unlock()
	for i := len(cl) - 1; i >= 0; i-- {
		cl[i]()
	}
}

// findRoot returns the directory of the praas go.mod at or above dir.
func findRoot(dir string) (string, error) {
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/praas-dev/praas\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the praas repository")
		}
		dir = parent
	}
}

// build compiles the praas binary, the benchmark image and the baseline servers.
func (e *Env) build(ctx context.Context) error {
	e.Praas = filepath.Join(e.Tmp, "bin", "praas")
	e.Image = filepath.Join(e.Tmp, "bin", "bench-image")
	e.Baseline = filepath.Join(e.Tmp, "bin", "baseline")
	for _, b := range []struct{ out, pkg string }{
		{e.Praas, "./cmd/praas"}, {e.Image, "./bench/image"}, {e.Baseline, "./bench/cmd/baseline"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = e.Root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// ControlPlane is a `praas up` running as an OS process.
type ControlPlane struct {
	Endpoint string
	Token    string // the admin key the harness gave it
	Data     string
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
}

// PID is the control plane's OS pid.
func (cp *ControlPlane) PID() int { return cp.cmd.Process.Pid }

// startControlPlane runs `praas up` with data under a fresh directory and
// extra flags.
func (e *Env) startControlPlane(ctx context.Context, name string, extra ...string) (*ControlPlane, error) {
	data := filepath.Join(e.Tmp, name)
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	cp := &ControlPlane{Data: data, exited: make(chan struct{}), logPath: filepath.Join(e.Tmp, name+".log")}
	logf, err := os.Create(cp.logPath)
	if err != nil {
		return nil, err
	}
	_, adminKey, err := controlplane.NewKey("", "bench")
	if err != nil {
		return nil, err
	}
	cp.Token = adminKey
	args := append([]string{"up", "--data", data, "--listen", "127.0.0.1:0", "--log-level", "warn", "--admin-key", adminKey}, extra...)
	cmd := exec.Command(e.Praas, args...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	cp.cmd = cmd
	go func() { _ = cmd.Wait(); logf.Close(); close(cp.exited) }()
	lineCh := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		lineCh <- line
		_, _ = io.Copy(io.Discard, br)
	}()
	select {
	case line := <-lineCh:
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "http://") {
				cp.Endpoint = f
			}
		}
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	if cp.Endpoint == "" {
		cp.stop()
		tail, _ := os.ReadFile(cp.logPath)
		return nil, fmt.Errorf("praas up %s did not start: %s", strings.Join(extra, " "), lastLines(string(tail), 10))
	}
	e.onClose(cp.stop)
	return cp, nil
}

// stop sends SIGTERM (the control plane stops its processes) and waits.
func (cp *ControlPlane) stop() {
	select {
	case <-cp.exited:
		return
	default:
	}
	_ = cp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-cp.exited:
	case <-time.After(60 * time.Second):
		_ = cp.cmd.Process.Kill()
		<-cp.exited
	}
}

// Server is a baseline server process.
type Server struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

func (e *Env) startBaseline(mode string) (*Server, error) {
	cmd := exec.Command(e.Baseline, mode)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{cmd: cmd, done: make(chan struct{})}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening ") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("baseline %s did not start: %q %v", mode, line, err)
	}
	s.Addr = strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	go func() { _ = cmd.Wait(); close(s.done) }()
	e.onClose(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	return s, nil
}

// setup builds the binaries and starts the control plane and baselines.
func (e *Env) setup(ctx context.Context) error {
	e.logf("building praas, the benchmark image and the baseline servers")
	if err := e.build(ctx); err != nil {
		return err
	}
	e.RedisURL, e.S3URL = os.Getenv("PRAAS_TEST_REDIS"), os.Getenv("PRAAS_TEST_S3")
	if e.RedisURL == "" {
		e.RedisErr = errors.New("PRAAS_TEST_REDIS is not set (run bench/run, which starts Redis)")
	} else if e.Redis, e.RedisErr = blob.OpenRedis(ctx, e.RedisURL, 16); e.RedisErr == nil {
		e.onClose(func() { e.Redis.Close() })
		// Like process state, the Redis baseline keeps data in memory only:
		// no append-only file, no fsync per write (the test servers run with
		// appendfsync always, which would make Redis look slower than it is).
		if err := e.Redis.ConfigSet(ctx, "appendonly", "no").Err(); err != nil {
			e.logf("redis: CONFIG SET appendonly no: %v", err)
		}
	}
	if e.S3URL == "" {
		e.S3Err = errors.New("PRAAS_TEST_S3 is not set (run bench/run, which starts the S3 server)")
	} else {
		e.S3, e.S3Err = blob.OpenS3(ctx, e.S3URL)
	}
	var err error
	if e.CP, err = e.startControlPlane(ctx, "cp-file"); err != nil {
		return err
	}
	e.C = client.New(e.CP.Endpoint, client.WithToken(e.CP.Token))
	e.onClose(func() { e.C.Close() })
	if e.TCPEcho, err = e.startBaseline("tcp-echo"); err != nil {
		return err
	}
	if e.HTTPEcho, err = e.startBaseline("http-echo"); err != nil {
		return err
	}
	if _, err := e.C.CreateApp(ctx, "demo", ""); err != nil {
		return fmt.Errorf("create app: %w", err)
	}
	if _, err := e.C.CreateApp(ctx, "img", e.Image); err != nil {
		return fmt.Errorf("create app: %w", err)
	}
	return nil
}

// dataConn creates process pid of app (if needed) and dials its data plane
// directly with the address and token the control plane gives; the
// connection is the caller's.
func dataConn(ctx context.Context, c *client.Client, app, pid string) (*client.DataConn, error) {
	p, err := c.CreateProcess(ctx, app, pid)
	if err != nil {
		if p, err = c.GetProcess(ctx, app, pid); err != nil {
			return nil, err
		}
	}
	if p.Address == "" || p.Token == "" {
		return nil, fmt.Errorf("process %s/%s is %s", app, pid, p.Status)
	}
	return client.Dial(ctx, p.Address, p.Token, client.DialOptions{})
}

// storeConn is dataConn to a process that compares with Redis and S3: it
// tells the process where they are (a process's environment is only what
// the control plane gives it).
func (e *Env) storeConn(ctx context.Context, app, pid string) (*client.DataConn, error) {
	dc, err := dataConn(ctx, e.C, app, pid)
	if err != nil {
		return nil, err
	}
	if _, err := dc.Invoke(ctx, "bench-config", []byte(e.RedisURL+"\n"+e.S3URL)); err != nil {
		dc.Close()
		return nil, fmt.Errorf("bench-config on %s/%s: %w", app, pid, err)
	}
	return dc, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
