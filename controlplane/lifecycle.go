package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/wire"
)

// live is a process the control plane started (or re-adopted) and that has
// not ended. The metadata record is the durable truth; live holds what only
// matters while the process runs.
type live struct {
	app, pid string
	instance string
	token    string

	registered chan struct{} // closed by the register call
	exited     chan struct{} // closed when the backend reports the end
	exitOnce   sync.Once
	ready      chan struct{} // closed when start finished, well or not
	startErr   error         // valid after ready
	gone       chan struct{} // closed when the control plane forgets it
	goneOnce   sync.Once
	// direct is set (under the process's backup lock) once the backup queue was
	// delivered: from then on messages go straight to the process.
	direct bool

	mu       sync.Mutex
	handle   string
	addr     string
	lastBeat time.Time
	base     store.Usage // usage of earlier instances of the process
	usage    store.Usage // base plus what this instance reported
	saved    time.Time   // when usage was last written to the store
	stopping bool
	swapped  bool // the process reported its final snapshot
	conn     *client.DataConn
}

func liveKey(app, pid string) string { return app + "/" + pid }

func newLive(app store.App, pid string) *live {
	return &live{
		app: app.Name, pid: pid,
		instance:   randomHex(8),
		token:      wire.Token(app.Secret, app.Name, pid),
		registered: make(chan struct{}),
		exited:     make(chan struct{}),
		ready:      make(chan struct{}),
		gone:       make(chan struct{}),
	}
}

// address is the process's data-plane address (a re-registration may change it).
func (l *live) address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

func (l *live) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dataConn returns the control plane's data-plane connection to the process,
// dialing it when needed.
func (l *live) dataConn(ctx context.Context) (*client.DataConn, error) {
	l.mu.Lock()
	if l.conn != nil && l.conn.Usable() {
		defer l.mu.Unlock()
		return l.conn, nil
	}
	addr := l.addr
	l.mu.Unlock()
	// Dial without l.mu: callers holding Server.mu take l.mu.
	dc, err := client.Dial(ctx, addr, l.token, client.DialOptions{})
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil && l.conn.Usable() {
		dc.Close() // another caller won the race
		return l.conn, nil
	}
	// An unusable old connection closes itself once its calls are answered.
	l.conn = dc
	return dc, nil
}

func (l *live) closeConn() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
}

// activeProcess returns the running process app/pid, starting it first if its
// record says it is not running. The record must exist.
func (s *Server) activeProcess(ctx context.Context, app store.App, pid string) (*live, error) {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		l := s.live[liveKey(app.Name, pid)]
		if l != nil && l.isStopping() {
			// It is swapping out or stopping: wait until it is gone, then bring it back.
			s.mu.Unlock()
			select {
			case <-l.gone:
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: waiting for process %s/%s to swap out: %w", errs.ErrUnavailable, app.Name, pid, ctx.Err())
			}
			attempt--
			continue
		}
		if wait, ok := s.adopting[liveKey(app.Name, pid)]; l == nil && ok {
			// It may still run from before a restart: give it time to re-register.
			s.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: waiting for process %s/%s to re-register: %w", errs.ErrUnavailable, app.Name, pid, ctx.Err())
			}
			attempt--
			continue
		}
		if l == nil {
			if s.shuttingDown() {
				s.mu.Unlock()
				return nil, fmt.Errorf("%w: the control plane is shutting down", errs.ErrUnavailable)
			}
			l = newLive(app, pid)
			s.live[liveKey(app.Name, pid)] = l
			s.mu.Unlock()
			go s.start(app, l)
		} else {
			s.mu.Unlock()
		}
		select {
		case <-l.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: waiting for process %s/%s to start: %w", errs.ErrUnavailable, app.Name, pid, ctx.Err())
		}
		if l.startErr == nil {
			return l, nil
		}
		if attempt > 0 || errs.CodeOf(l.startErr) == errs.NotFound {
			return nil, l.startErr
		}
		// The previous start failed; try once more with a fresh one.
	}
}

// start launches l and waits for it to register. It runs detached from the
// request that asked for it, so a caller giving up does not leave a process
// half-started.
func (s *Server) start(app store.App, l *live) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StartTimeout)
	defer cancel()
	err := s.startProcess(ctx, app, l)
	if err != nil {
		s.log.Warn("process start failed", "app", app.Name, "pid", l.pid, "err", err)
		s.forget(l)
		if l.handle != "" {
			_ = s.cfg.Backend.Kill(l.handle)
		}
		if errs.CodeOf(err) != errs.NotFound {
			s.setStatus(context.Background(), app.Name, l.pid, store.StatusFailed, "", l)
		}
	}
	l.startErr = err
	close(l.ready)
}

func (s *Server) startProcess(ctx context.Context, app store.App, l *live) error {
	rec, err := s.cfg.Metadata.GetProcess(ctx, app.Name, l.pid)
	if err != nil {
		return err
	}
	rec.Status = store.StatusAllocating
	rec.Address = ""
	rec.UpdatedAt = time.Now()
	l.mu.Lock()
	l.base, l.usage = rec.Usage, rec.Usage
	l.mu.Unlock()
	if err := s.cfg.Metadata.PutProcess(ctx, rec); err != nil {
		return err
	}
	spec := Spec{App: app.Name, PID: l.pid, Instance: l.instance, Image: app.Image, Env: append([]string{
		cpapi.EnvControlPlane + "=" + s.cfg.URL,
		cpapi.EnvApp + "=" + app.Name,
		cpapi.EnvPID + "=" + l.pid,
		cpapi.EnvInstance + "=" + l.instance,
		cpapi.EnvSecret + "=" + app.Secret,
	}, s.cfg.ProcessEnv...)}
	if s.cfg.SwapURL != "" {
		spec.Env = append(spec.Env, cpapi.EnvSwap+"="+s.cfg.SwapURL)
		if rec.Snapshot != "" {
			spec.Env = append(spec.Env, cpapi.EnvRestore+"=1")
		}
	}
	handle, err := s.cfg.Backend.Start(ctx, spec)
	if err != nil {
		return fmt.Errorf("%w: start process %s/%s: %w", errs.ErrUnavailable, app.Name, l.pid, err)
	}
	l.mu.Lock()
	l.handle = handle
	l.mu.Unlock()
	select {
	case <-l.registered:
	case <-l.exited:
		return fmt.Errorf("%w: process %s/%s exited before it registered (see its log)", errs.ErrUnavailable, app.Name, l.pid)
	case <-ctx.Done():
		return fmt.Errorf("%w: process %s/%s did not register within %s", errs.ErrUnavailable, app.Name, l.pid, s.cfg.StartTimeout)
	}
	// Messages that waited in the backup queue go first, in order, before
	// the record announces the address to peers that would send directly.
	if err := s.deliverBackup(ctx, l); err != nil {
		return err
	}
	l.mu.Lock()
	rec.Status = store.StatusActive
	rec.Address = l.addr
	rec.Handle = handle
	l.lastBeat = time.Now()
	l.mu.Unlock()
	rec.UpdatedAt = time.Now()
	rec.LastActive = rec.UpdatedAt
	if err := s.cfg.Metadata.PutProcess(ctx, rec); err != nil {
		return err
	}
	s.bumpEpoch(ctx, app.Name)
	s.log.Info("process active", "app", app.Name, "pid", l.pid, "addr", rec.Address, "handle", handle)
	return nil
}

func (s *Server) shuttingDown() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// forget removes l from the live set if it is still the entry for its key.
func (s *Server) forget(l *live) {
	s.mu.Lock()
	if s.live[liveKey(l.app, l.pid)] == l {
		delete(s.live, liveKey(l.app, l.pid))
	}
	s.mu.Unlock()
	l.closeConn()
	l.goneOnce.Do(func() { close(l.gone) })
}

func (s *Server) lookupLive(app, pid string) *live {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[liveKey(app, pid)]
}

// setStatus writes a status to a record that may be gone (deleted meanwhile),
// with the usage l reported if l is given.
func (s *Server) setStatus(ctx context.Context, app, pid, status, snapshot string, l *live) {
	rec, err := s.cfg.Metadata.GetProcess(ctx, app, pid)
	if err != nil {
		return
	}
	if l != nil {
		l.mu.Lock()
		rec.Usage = l.usage
		l.mu.Unlock()
	}
	rec.Status = status
	rec.Address = ""
	if snapshot != "" {
		rec.Snapshot = snapshot
	}
	rec.UpdatedAt = time.Now()
	if err := s.cfg.Metadata.PutProcess(ctx, rec); err != nil {
		s.log.Error("write process status", "app", app, "pid", pid, "status", status, "err", err)
		return
	}
	if status != store.StatusSwapping {
		// Peers need to know when a process is gone or back, not that it is
		// leaving: one that is leaving refuses them and they re-route.
		s.bumpEpoch(ctx, app)
	}
}

func (s *Server) bumpEpoch(ctx context.Context, app string) {
	if _, err := s.cfg.Metadata.BumpEpoch(ctx, app); err != nil && !errors.Is(err, errs.ErrNotFound) {
		s.log.Error("bump epoch", "app", app, "err", err)
	}
	s.notifyEpoch(app)
}

// swapOut stops a running process gracefully: it drains, writes its
// snapshot and exits. The record ends swapped, or failed if no final
// snapshot was reported (the previous snapshot, if any, stays).
func (s *Server) swapOut(ctx context.Context, l *live) error {
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		<-l.gone
		return nil
	}
	l.stopping = true
	handle := l.handle
	l.mu.Unlock()
	s.setStatus(ctx, l.app, l.pid, store.StatusSwapping, "", l)
	start := time.Now()
	var err error
	if handle != "" {
		stopCtx, cancel := context.WithTimeout(ctx, s.cfg.StopTimeout)
		err = s.cfg.Backend.Stop(stopCtx, handle)
		cancel()
	}
	l.mu.Lock()
	swapped := l.swapped
	l.mu.Unlock()
	status := store.StatusSwapped
	if !swapped {
		status = store.StatusFailed
		if err == nil {
			err = fmt.Errorf("%w: process %s/%s exited without a snapshot (see its log)", errs.ErrInternal, l.app, l.pid)
		}
	}
	s.setStatus(ctx, l.app, l.pid, status, "", l)
	s.forget(l)
	s.log.Info("process swapped out", "app", l.app, "pid", l.pid, "status", status, "took", time.Since(start))
	return err
}

// kill ends a process at once, for deletion: its state is not kept.
func (s *Server) kill(l *live) {
	l.mu.Lock()
	l.stopping = true
	handle := l.handle
	l.mu.Unlock()
	if handle != "" {
		if err := s.cfg.Backend.Kill(handle); err != nil {
			s.log.Warn("kill process", "app", l.app, "pid", l.pid, "err", err)
		}
	}
	s.forget(l)
}

// stopAll swaps out every running process, at shutdown.
func (s *Server) stopAll(ctx context.Context) {
	s.mu.Lock()
	all := make([]*live, 0, len(s.live))
	for _, l := range s.live {
		all = append(all, l)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-l.ready:
			case <-ctx.Done():
			}
			if err := s.swapOut(ctx, l); err != nil {
				s.log.Warn("swap out at shutdown", "app", l.app, "pid", l.pid, "err", err)
			}
		}()
	}
	wg.Wait()
}

// ProcessExited is the backend's onExit callback.
func (s *Server) ProcessExited(handle string) {
	s.mu.Lock()
	var found *live
	for _, l := range s.live {
		l.mu.Lock()
		h := l.handle
		l.mu.Unlock()
		if h == handle {
			found = l
			break
		}
	}
	s.mu.Unlock()
	if found == nil {
		return
	}
	found.exitOnce.Do(func() { close(found.exited) })
	found.mu.Lock()
	stopping := found.stopping
	found.mu.Unlock()
	select {
	case <-found.ready:
	default:
		return // start() sees exited and handles it
	}
	if stopping || found.startErr != nil {
		return
	}
	s.log.Warn("process exited unexpectedly", "app", found.app, "pid", found.pid, "handle", handle)
	s.forget(found)
	s.setStatus(context.Background(), found.app, found.pid, store.StatusFailed, "", found)
}

// sweep marks processes failed whose heartbeats stopped.
func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		var silent []*live
		for _, l := range s.live {
			select {
			case <-l.ready:
			default:
				continue
			}
			l.mu.Lock()
			if l.startErr == nil && !l.stopping && time.Since(l.lastBeat) > s.cfg.HeartbeatTimeout {
				silent = append(silent, l)
			}
			l.mu.Unlock()
		}
		s.mu.Unlock()
		for _, l := range silent {
			s.log.Warn("process silent, marking failed", "app", l.app, "pid", l.pid, "timeout", s.cfg.HeartbeatTimeout)
			l.mu.Lock()
			l.stopping = true
			handle := l.handle
			l.mu.Unlock()
			if handle != "" {
				_ = s.cfg.Backend.Kill(handle)
			}
			s.forget(l)
			s.setStatus(ctx, l.app, l.pid, store.StatusFailed, "", l)
		}
	}
}
