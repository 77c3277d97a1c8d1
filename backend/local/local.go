// Package local is the default praas backend: every process is an OS process
// on this host. The builtin image runs by re-executing the praas binary;
// any other image is the path of a binary built with the praas SDK.
//
// Processes are started in their own process group, so they outlive a
// control plane that crashes and re-register when it comes back.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/praas-dev/praas/controlplane"
)

// Config configures the backend.
type Config struct {
	// Executable runs the builtin image, with BuiltinArgs (default: this
	// binary, args ["run-process"]).
	Executable  string
	BuiltinArgs []string
	// LogDir receives one log file per process (LogDir/APP/PID.log).
	LogDir string
	// OnExit is called once when a process started by this backend ends.
	OnExit func(handle string)
	Logger *slog.Logger
}

// Backend starts processes as OS processes.
type Backend struct {
	cfg Config

	mu       sync.Mutex
	children map[int]chan struct{} // pid → closed when reaped
}

// New returns a local backend.
func New(cfg Config) (*Backend, error) {
	if cfg.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("local backend: find own executable: %w", err)
		}
		cfg.Executable = exe
		if cfg.BuiltinArgs == nil {
			cfg.BuiltinArgs = []string{"run-process"}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnExit == nil {
		cfg.OnExit = func(string) {}
	}
	return &Backend{cfg: cfg, children: make(map[int]chan struct{})}, nil
}

var _ controlplane.Backend = (*Backend)(nil)

// Start launches the process and returns its OS pid as the handle.
func (b *Backend) Start(ctx context.Context, spec controlplane.Spec) (string, error) {
	var cmd *exec.Cmd
	if spec.Image == controlplane.BuiltinImage || spec.Image == "" {
		cmd = exec.Command(b.cfg.Executable, b.cfg.BuiltinArgs...)
	} else {
		cmd = exec.Command(spec.Image)
	}
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if b.cfg.LogDir != "" {
		dir := filepath.Join(b.cfg.LogDir, spec.App)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("log dir: %w", err)
		}
		f, err := os.OpenFile(filepath.Join(dir, spec.PID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return "", fmt.Errorf("log file: %w", err)
		}
		defer f.Close() // the child has its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	pid := cmd.Process.Pid
	handle := strconv.Itoa(pid)
	reaped := make(chan struct{})
	b.mu.Lock()
	b.children[pid] = reaped
	b.mu.Unlock()
	go func() {
		err := cmd.Wait()
		b.mu.Lock()
		delete(b.children, pid)
		b.mu.Unlock()
		close(reaped)
		b.cfg.Logger.Debug("process ended", "app", spec.App, "pid", spec.PID, "os_pid", pid, "err", err)
		b.cfg.OnExit(handle)
	}()
	return handle, nil
}

// Stop sends SIGTERM (the runtime drains and exits), waits until ctx ends,
// then kills.
func (b *Backend) Stop(ctx context.Context, handle string) error {
	pid, err := strconv.Atoi(handle)
	if err != nil || pid <= 1 {
		return fmt.Errorf("local backend: bad handle %q", handle)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	if b.wait(ctx, pid) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	waitCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.wait(waitCtx, pid)
	return fmt.Errorf("process %d did not stop in time and was killed", pid)
}

// Kill ends the process at once.
func (b *Backend) Kill(handle string) error {
	pid, err := strconv.Atoi(handle)
	if err != nil || pid <= 1 {
		return fmt.Errorf("local backend: bad handle %q", handle)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// wait reports whether pid ended before ctx did. Children are waited for
// through their reaper; processes of an earlier control plane are polled.
func (b *Backend) wait(ctx context.Context, pid int) bool {
	b.mu.Lock()
	reaped, child := b.children[pid]
	b.mu.Unlock()
	if child {
		select {
		case <-reaped:
			return true
		case <-ctx.Done():
			return false
		}
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
}
