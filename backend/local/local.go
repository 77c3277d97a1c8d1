// Package local is the default praas backend: every process is an OS process
// on this Linux host. The builtin image runs by re-executing the praas
// binary; any other image is the absolute path of a binary built with the
// praas SDK.
//
// Processes run in their own process group, so they outlive a control plane
// that crashes. Each started process leaves a small record in Config.RunDir
// until it is known to have ended; backends sharing a RunDir (replicas on
// one host, or the next run of a control plane) see, wait for and stop each
// other's processes through these records. A RunDir belongs to one host
// and one pid namespace.
//
// A process is identified by its pid and its start time, and signalled and
// waited for through a pidfd (Linux 5.3 or later), so a pid the kernel has
// reused for another process is never signalled. A backend never signals a
// process it has no record of.
//
// Spec.Resources are ignored: RLIMIT_AS bounds address space, not memory,
// and Go runtimes (the race detector above all) reserve far more than they
// use, so it would kill healthy processes; real limits need cgroups, which
// are neither cheap nor always delegated to us.
//
// Config.Isolation keeps apps apart (see Isolation and docs/security.md):
// as root, each app's processes run as a uid of their own, with a private
// scratch directory, and where bubblewrap works, in namespaces of their own
// that show them only their image, their scratch directory and the system's
// libraries. In the namespaces mode the backend's child is bubblewrap, and
// the runtime is bubblewrap's child and pid 1 of its pid namespace: a
// Handle names the runtime, as in the other modes, and signals go straight
// to it; its end ends the sandbox.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/errs"
)

// Config configures the backend.
type Config struct {
	// Executable runs the builtin image, with BuiltinArgs (default: this
	// binary, args ["run-process"]).
	Executable  string
	BuiltinArgs []string
	// RunDir holds one record per running process (required). Backends
	// sharing it share their processes.
	RunDir string
	// LogDir receives the raw output of each process (LogDir/APP/PID.out:
	// everything it wrote to stdout and stderr, stamped by its runtime,
	// and what a crash prints); if empty, output is discarded. The backend
	// opens the files: processes inherit a descriptor and need no access
	// to LogDir.
	LogDir string
	Logger *slog.Logger

	// Isolation is how processes are kept apart (default IsolationAuto:
	// the strongest mode that works here).
	Isolation Isolation
	// FirstUID and UIDs are the range of uids (and gids of the same
	// numbers) apps get in the user and namespaces modes, one per app, kept
	// in RunDir; FirstUID itself is reserved for probing. Control planes on
	// one host that do not share a RunDir need ranges that do not overlap.
	// Default DefaultFirstUID and DefaultUIDs.
	FirstUID, UIDs uint32
	// SandboxDir receives the copies of images that sandboxed processes
	// run and their scratch directories (default DefaultSandboxDir). Every
	// directory above it must let other users through.
	SandboxDir string
	// Bwrap is the bubblewrap binary (default: bwrap in PATH, else
	// /usr/bin/bwrap).
	Bwrap string
}

// baseEnv is the whole environment a process gets besides its Spec's: the
// control plane's own environment holds credentials and must not leak.
var baseEnv = []string{"PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}

// keepExits is how long the exit of a child stays known to Wait.
const keepExits = 10 * time.Minute

// killWait bounds how long Stop waits for a process it had to kill.
const killWait = 5 * time.Second

// Backend runs processes as OS processes.
type Backend struct {
	cfg    Config
	bootID string
	sb     *sandbox // nil without isolation
	desc   string   // what Isolation says
	// scratch holds the scratch directories of this RunDir's processes
	// (SandboxDir/scratch/RUNKEY).
	scratch string

	mu        sync.Mutex
	children  map[ident]*child // started by this instance
	uids      map[string]uint32
	imageSums map[string]imageSum
}

type imageSum struct {
	key fileKey
	sha string
}

// child is a process this instance started and reaps.
type child struct {
	proc *os.Process
	// sandboxed: proc is bubblewrap, and the process itself its child.
	sandboxed bool
	done      chan struct{} // closed once reaped
	exit      backend.Exit  // set before done is closed
	ended     time.Time     // guarded by Backend.mu
}

var _ backend.Backend = (*Backend)(nil)

// New returns a local backend, creating RunDir and LogDir if needed.
func New(cfg Config) (*Backend, error) {
	if cfg.RunDir == "" {
		return nil, fmt.Errorf("local backend: %w: no run dir", errs.ErrInvalidArgument)
	}
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
	if cfg.FirstUID == 0 && cfg.UIDs == 0 {
		cfg.FirstUID, cfg.UIDs = DefaultFirstUID, DefaultUIDs
	}
	if cfg.SandboxDir == "" {
		cfg.SandboxDir = DefaultSandboxDir
	}
	// Only the control plane may read what it keeps here.
	for _, dir := range []string{cfg.RunDir, cfg.LogDir} {
		if dir == "" {
			continue
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("local backend: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("local backend: %w", err)
		}
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return nil, fmt.Errorf("local backend: %w", err)
	}
	sb, desc, err := chooseIsolation(&cfg)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		cfg:       cfg,
		bootID:    strings.TrimSpace(string(boot)),
		sb:        sb,
		desc:      desc,
		children:  make(map[ident]*child),
		uids:      make(map[string]uint32),
		imageSums: make(map[string]imageSum),
	}
	if sb != nil {
		run, err := filepath.Abs(cfg.RunDir)
		if err != nil {
			return nil, fmt.Errorf("local backend: %w", err)
		}
		key := sha256.Sum256([]byte(run))
		b.scratch = filepath.Join(sb.scratchDir(), hex.EncodeToString(key[:8]))
		if err := b.makeScratchParent(); err != nil {
			return nil, fmt.Errorf("local backend: %w", err)
		}
		live, err := b.records()
		if err != nil {
			return nil, err
		}
		b.sweepScratch(live)
		b.pruneScratchParents()
		b.pruneImages()
	}
	cfg.Logger.Info("local backend isolation: "+desc, "isolation", b.Mode())
	return b, nil
}

// Mode returns the isolation in force: none, user or namespaces.
func (b *Backend) Mode() Isolation {
	if b.sb == nil {
		return IsolationNone
	}
	return b.sb.mode
}

// Isolation describes, in a sentence for the operator, the isolation in
// force and why no stronger one is.
func (b *Backend) Isolation() string { return b.desc }

// CheckImage accepts "builtin" (or ""), the absolute path of an
// executable file, and "python:" and the absolute path of a Python module.
func (b *Backend) CheckImage(ctx context.Context, image string) (string, error) {
	if image == "" || image == backend.BuiltinImage {
		return backend.BuiltinImage, nil
	}
	if pythonModule(image) != "" {
		return checkPython(image)
	}
	if !filepath.IsAbs(image) {
		return "", fmt.Errorf("%w: image %q: give %q or an absolute path to an image binary", errs.ErrInvalidArgument, image, backend.BuiltinImage)
	}
	fi, err := os.Stat(image)
	if err != nil {
		return "", fmt.Errorf("%w: image %q: %v", errs.ErrInvalidArgument, image, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w: image %q is not an executable file", errs.ErrInvalidArgument, image)
	}
	return image, nil
}

// Start launches the process with exactly baseEnv, Spec.Env and
// Spec.Secrets as its environment (later entries win).
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Handle, error) {
	if err := ctx.Err(); err != nil {
		return backend.Handle{}, err
	}
	for _, name := range []string{spec.App, spec.PID} {
		// They name the log file: no separators, no "..".
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return backend.Handle{}, fmt.Errorf("local backend: %w: bad app or pid %q", errs.ErrInvalidArgument, name)
		}
	}
	image, args := spec.Image, []string(nil)
	if spec.Image == backend.BuiltinImage || spec.Image == "" {
		image, args = b.cfg.Executable, b.cfg.BuiltinArgs
	} else if m := pythonModule(spec.Image); m != "" {
		image, args = b.cfg.Executable, pythonArgs(b.cfg.BuiltinArgs, m)
	}
	l := launch{cmd: exec.Command(image, args...)}
	l.cmd.Env = slices.Concat(baseEnv, spec.Env, spec.Secrets)
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if b.sb != nil {
		var err error
		if l, err = b.sandboxed(spec, image, args); err != nil {
			return backend.Handle{}, fmt.Errorf("local backend: start %s/%s: %w", spec.App, spec.PID, err)
		}
	}
	cmd := l.cmd
	ok := false
	defer func() {
		if l.info != nil {
			l.info.r.Close()
			l.info.w.Close()
			l.args.Close()
		}
		if !ok {
			b.removeScratch(l.scratch)
		}
	}()
	if b.cfg.LogDir != "" {
		dir := filepath.Join(b.cfg.LogDir, spec.App)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return backend.Handle{}, fmt.Errorf("local backend: log dir: %w", err)
		}
		f, err := os.OpenFile(filepath.Join(dir, spec.PID+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return backend.Handle{}, fmt.Errorf("local backend: log file: %w", err)
		}
		defer f.Close() // the child has its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
	}
	err := cmd.Start()
	if l.info != nil {
		l.info.w.Close() // bubblewrap has its own: EOF once it is gone
	}
	if err != nil {
		return backend.Handle{}, fmt.Errorf("local backend: start %s: %w", cmd.Path, err)
	}
	// Until cmd.Wait reaps it, the pid stays ours even if the child exits.
	pid := cmd.Process.Pid
	_, start, err := procStat(pid)
	id, sandboxed := ident{pid, start}, false
	if err == nil && l.info != nil {
		// The runtime, bubblewrap's child, is the process; if it has
		// ended already, bubblewrap stands for it.
		var rt ident
		if rt, err = sandboxRuntime(ctx, l.info.r, pid); err == nil && rt.start != 0 {
			id, sandboxed = rt, true
		}
	}
	if err == nil {
		err = b.writeRecord(record{
			App: spec.App, PID: spec.PID, Generation: spec.Generation,
			OSPID: id.pid, StartTime: id.start, BootID: b.bootID,
			UID: l.uid, Scratch: l.scratch, Sandboxed: sandboxed,
		})
	}
	if err != nil {
		if sandboxed {
			killProc(id)
		}
		cmd.Process.Kill()
		cmd.Wait()
		return backend.Handle{}, fmt.Errorf("local backend: start %s/%s: process %d: %w", spec.App, spec.PID, pid, err)
	}
	ok = true
	c := &child{proc: cmd.Process, sandboxed: sandboxed, done: make(chan struct{})}
	b.mu.Lock()
	b.pruneLocked()
	b.children[id] = c
	b.mu.Unlock()
	go b.reap(id, c, cmd, spec)

	b.cfg.Logger.Debug("process started", "app", spec.App, "pid", spec.PID,
		"generation", spec.Generation, "image", spec.Image, "id", id.String(),
		"isolation", b.Mode(), "uid", l.uid)
	return backend.Handle{ID: id.String(), App: spec.App, PID: spec.PID, Generation: spec.Generation}, nil
}

func (b *Backend) reap(id ident, c *child, cmd *exec.Cmd, spec backend.Spec) {
	awaitExit(cmd)
	err := cmd.Wait()
	if c.sandboxed {
		// bubblewrap ends with its runtime; if it was killed itself, the
		// runtime goes too: nothing would report its end.
		killProc(id)
	}
	c.exit = backend.Exit{Code: -1, At: time.Now()}
	if ps := cmd.ProcessState; ps != nil {
		c.exit.Code, c.exit.Reason = ps.ExitCode(), ps.String() // "exit status 1", "signal: killed"
		if c.sandboxed {
			c.exit = sandboxExit(c.exit)
		}
	} else {
		c.exit.Reason = err.Error()
	}
	b.forget(id) // before done: who saw Wait return must not List it
	b.mu.Lock()
	c.ended = c.exit.At
	b.mu.Unlock()
	close(c.done)
	b.cfg.Logger.Debug("process ended", "app", spec.App, "pid", spec.PID,
		"id", id.String(), "exit", c.exit.Reason)
}

// pruneLocked drops children that ended long ago.
func (b *Backend) pruneLocked() {
	for id, c := range b.children {
		if !c.ended.IsZero() && time.Since(c.ended) > keepExits {
			delete(b.children, id)
		}
	}
}

// proc is a process of this backend, pinned so that no other process can
// be mistaken for it: a child by its reaper, any other by a pidfd.
type proc struct {
	id    ident
	child *child
	pidfd *os.File
	// sandboxed: pid 1 of its own pid namespace.
	sandboxed bool
}

// find returns the process h names, or ok=false if it has ended or never
// was a process of this backend.
func (b *Backend) find(h backend.Handle) (p *proc, ok bool, err error) {
	id, ok := parseIdent(h.ID)
	if !ok {
		return nil, false, nil
	}
	b.mu.Lock()
	c := b.children[id]
	b.mu.Unlock()
	if c != nil {
		return &proc{id: id, child: c, sandboxed: c.sandboxed}, true, nil
	}
	r, ok, err := b.readRecord(id)
	if !ok || err != nil {
		return nil, false, err
	}
	f, ok, err := openPidfd(id)
	if err != nil {
		return nil, false, fmt.Errorf("local backend: %w", err)
	}
	if !ok {
		b.forget(id)
		return nil, false, nil
	}
	return &proc{id: id, pidfd: f, sandboxed: r.Sandboxed}, true, nil
}

func (p *proc) close() {
	if p.pidfd != nil {
		p.pidfd.Close()
	}
}

// signal sends sig; ended is true if the process has already ended.
func (p *proc) signal(sig unix.Signal) (ended bool, err error) {
	if p.sandboxed && sig != unix.SIGKILL && !catches(p.id.pid, sig) {
		sig = unix.SIGKILL // what the default action would do
	}
	if p.child != nil && p.child.sandboxed {
		// Not bubblewrap, which does not pass signals on: the runtime,
		// through a pidfd because it is not our child.
		f, ok, err := openPidfd(p.id)
		if err != nil || !ok {
			return !ok && err == nil, err
		}
		defer f.Close()
		return signalPidfd(f, sig)
	}
	if p.child != nil {
		err := p.child.proc.Signal(sig)
		if errors.Is(err, os.ErrProcessDone) {
			return true, nil
		}
		return false, err
	}
	return signalPidfd(p.pidfd, sig)
}

// wait returns once the process has ended, or ctx.Err().
func (b *Backend) wait(ctx context.Context, p *proc) (backend.Exit, error) {
	if p.child != nil {
		select {
		case <-p.child.done:
			return p.child.exit, nil
		case <-ctx.Done():
			return backend.Exit{}, ctx.Err()
		}
	}
	if err := waitPidfd(ctx, p.pidfd); err != nil {
		return backend.Exit{}, err
	}
	b.forget(p.id)
	return unknownExit(), nil
}

// unknownExit is the exit of a process this instance did not start: only
// its parent learns the status.
func unknownExit() backend.Exit {
	return backend.Exit{Code: -1, Reason: "ended", At: time.Now()}
}

// Wait returns once the process has ended; the exit status is known only
// for processes this instance started.
func (b *Backend) Wait(ctx context.Context, h backend.Handle) (backend.Exit, error) {
	p, ok, err := b.find(h)
	if err != nil {
		return backend.Exit{}, err
	}
	if !ok {
		return unknownExit(), nil
	}
	defer p.close()
	return b.wait(ctx, p)
}

// Stop sends SIGTERM (the runtime drains and exits), waits until ctx ends,
// then kills the process and says so in its error.
func (b *Backend) Stop(ctx context.Context, h backend.Handle) error {
	p, ok, err := b.find(h)
	if err != nil || !ok {
		return err
	}
	defer p.close()
	if ended, err := p.signal(unix.SIGTERM); ended || err != nil {
		if err != nil {
			return fmt.Errorf("local backend: stop %s: %w", h.ID, err)
		}
		b.wait(ctx, p) // let the reaper or forget remove its record
		return nil
	}
	if _, err := b.wait(ctx, p); err == nil {
		return nil
	}
	if _, err := p.signal(unix.SIGKILL); err != nil {
		return fmt.Errorf("local backend: kill %s: %w", h.ID, err)
	}
	kctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	if _, err := b.wait(kctx, p); err != nil {
		return fmt.Errorf("local backend: process %s did not stop in time (%w), and had not ended %v after SIGKILL", h.ID, ctx.Err(), killWait)
	}
	return fmt.Errorf("local backend: process %s did not stop in time (%w) and was killed", h.ID, ctx.Err())
}

// Kill sends SIGKILL and waits until the process has ended or ctx ends.
func (b *Backend) Kill(ctx context.Context, h backend.Handle) error {
	p, ok, err := b.find(h)
	if err != nil || !ok {
		return err
	}
	defer p.close()
	if _, err := p.signal(unix.SIGKILL); err != nil {
		return fmt.Errorf("local backend: kill %s: %w", h.ID, err)
	}
	_, err = b.wait(ctx, p)
	return err
}

// List returns the processes of every backend sharing RunDir that run now.
func (b *Backend) List(ctx context.Context) ([]backend.Handle, error) {
	recs, err := b.records()
	if err != nil {
		return nil, err
	}
	hs := make([]backend.Handle, 0, len(recs))
	for _, r := range recs {
		hs = append(hs, backend.Handle{ID: r.ident().String(), App: r.App, PID: r.PID, Generation: r.Generation})
	}
	slices.SortFunc(hs, func(x, y backend.Handle) int {
		return strings.Compare(x.App+"\x00"+x.PID, y.App+"\x00"+y.PID)
	})
	return hs, nil
}
