package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/procmetrics"
	"github.com/praas-dev/praas/store"
)

// live is a process this replica owns and that has not ended. The metadata
// record is the durable truth; live holds what only matters while the
// process runs.
type live struct {
	app, pid string
	gen      uint64 // the generation this replica started or adopted; its credential names it

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
	// delivered is the last backup-queue sequence this generation has
	// acknowledged (under the backup lock): a later delivery skips what it
	// has. The queue itself is trimmed only as snapshots that hold the
	// messages are recorded (snapshotReport).
	delivered uint64

	mu       sync.Mutex
	handle   backend.Handle
	addr     string
	lastBeat time.Time
	base     store.Usage // usage of earlier generations of the process
	usage    store.Usage // base plus what this generation reported
	saved    time.Time   // when usage was last written to the store
	// savedUsage is the usage a heartbeat last had written.
	savedUsage store.Usage
	stopping   bool
	swapped    bool // the process reported its final snapshot
	conn       *client.DataConn
	// report is the generation's latest metrics report (see metrics.go);
	// once reportsEnded, the control plane has retired it and takes no more.
	report       *procmetrics.Report
	reportsEnded bool
	// finalBytes is the size of the final snapshot; restoredBytes that of
	// the snapshot the process restored at start.
	finalBytes, restoredBytes int64
}

func liveKey(app, pid string) string { return app + "/" + pid }

func newLive(app store.App, pid string, gen uint64) *live {
	return &live{
		app: app.Name, pid: pid, gen: gen,
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

func (l *live) backendHandle() backend.Handle {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.handle
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dataConn returns the control plane's data-plane connection to the
// process of l, dialing it with the control plane's own token when needed.
func (s *Server) dataConn(ctx context.Context, l *live) (*client.DataConn, error) {
	return l.dataConn(ctx, s.planeToken(l.app, l.pid), s.dialOptions())
}

// dataConn returns the data-plane connection to the process, dialing it
// with tok and opt when needed.
func (l *live) dataConn(ctx context.Context, tok string, opt client.DialOptions) (*client.DataConn, error) {
	l.mu.Lock()
	if l.conn != nil && l.conn.Usable() {
		defer l.mu.Unlock()
		return l.conn, nil
	}
	addr := l.addr
	l.mu.Unlock()
	// Dial without l.mu: callers holding Server.mu take l.mu.
	dc, err := client.Dial(ctx, addr, tok, opt)
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

// activeProcess returns the running process app/pid, owned by this replica,
// starting it first if its record says it is not running. The record must
// exist. If another replica owns the process it returns *errOwnedByPeer.
func (s *Server) activeProcess(ctx context.Context, app store.App, pid string) (*live, error) {
	backoff := time.Millisecond
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: bring up process %s/%s: %w", errs.ErrUnavailable, app.Name, pid, err)
		}
		s.mu.Lock()
		l := s.live[liveKey(app.Name, pid)]
		s.mu.Unlock()
		if l != nil && l.isStopping() {
			// It is swapping out or stopping: wait until it is gone, then bring it back.
			select {
			case <-l.gone:
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: waiting for process %s/%s to swap out: %w", errs.ErrUnavailable, app.Name, pid, ctx.Err())
			}
			attempt--
			continue
		}
		if l == nil {
			var err error
			if l, err = s.claim(ctx, app, pid); err != nil {
				return nil, err
			}
			if l == nil {
				// The record changed under us: look again.
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				backoff = min(2*backoff, 50*time.Millisecond)
				attempt--
				continue
			}
		}
		select {
		case <-l.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: waiting for process %s/%s to start: %w", errs.ErrUnavailable, app.Name, pid, ctx.Err())
		}
		if l.startErr == nil {
			return l, nil
		}
		if errors.Is(l.startErr, errTakenMeanwhile) {
			attempt--
			continue
		}
		if attempt > 0 || errs.CodeOf(l.startErr) == errs.NotFound {
			return nil, l.startErr
		}
		// The previous start failed; try once more with a fresh one.
	}
}

// claim decides, from the record, who brings app/pid up. It returns a live
// being started (or adopted) by this replica, *errOwnedByPeer, or nil, nil
// when the record changed meanwhile and the caller should look again.
func (s *Server) claim(ctx context.Context, app store.App, pid string) (*live, error) {
	if s.shuttingDown() {
		return nil, fmt.Errorf("%w: the control plane is shutting down", errs.ErrUnavailable)
	}
	if !s.holdsLease() {
		return nil, fmt.Errorf("%w: this control-plane replica has lost its lease", errs.ErrUnavailable)
	}
	rec, err := s.cfg.Metadata.GetProcess(ctx, app.Name, pid)
	if err != nil {
		return nil, err
	}
	own, owner := s.ownerOf(ctx, rec)
	mayRun := rec.Generation > 0 && rec.Status != store.StatusSwapped && rec.Status != store.StatusFailed
	switch {
	case own == ownedByPeer:
		return nil, &errOwnedByPeer{rec: rec, owner: owner}
	case mayRun:
		// Ours from before a restart, or a gone owner's: adopt what still
		// runs, end the rest. Then look again.
		running, err := s.runningHandles(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.takeOver(ctx, app, rec, running); err != nil && errs.CodeOf(err) != errs.FailedPrecondition {
			return nil, err
		}
		return nil, nil
	}
	if rec.Status == store.StatusFailed || rec.Status == store.StatusSwapping {
		if rec, err = s.adoptOrphanSnapshot(ctx, rec); errs.CodeOf(err) == errs.FailedPrecondition {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
	}
	l := newLive(app, pid, rec.Generation+1)
	s.mu.Lock()
	if s.live[liveKey(app.Name, pid)] != nil {
		s.mu.Unlock()
		return nil, nil // another request of ours got there first
	}
	s.live[liveKey(app.Name, pid)] = l
	s.mu.Unlock()
	s.goBackground(func(context.Context) { s.start(app, l, rec) })
	return l, nil
}

// start takes the lease on rec with a new generation, launches l and waits
// for it to register. It runs detached from the request that asked for it,
// so a caller giving up does not leave a process half-started.
func (s *Server) start(app store.App, l *live, rec store.Process) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(s.bgCtx, s.cfg.StartTimeout)
	defer cancel()
	err := s.startProcess(ctx, app, l, rec)
	if err == nil {
		s.emit(activated(rec, l.gen, time.Since(began)))
	} else {
		if !errors.Is(err, errTakenMeanwhile) {
			s.log.Warn("process start failed", "app", app.Name, "pid", l.pid, "err", err)
		}
		s.forget(l)
		if h := l.backendHandle(); h.ID != "" {
			_ = s.cfg.Backend.Kill(context.WithoutCancel(ctx), h)
		}
		if errs.CodeOf(err) != errs.NotFound && !errors.Is(err, errTakenMeanwhile) &&
			s.endRecord(context.WithoutCancel(ctx), l, store.StatusFailed) {
			s.emit(Event{Type: EventProcessFailed, App: l.app, PID: l.pid, Generation: l.gen, Status: store.StatusFailed,
				DurationNanos: int64(time.Since(began)), Reason: "start: " + err.Error()})
		}
	}
	l.startErr = err
	close(l.ready)
}

// activated is the event of generation gen's activation from rec, the
// record as it was before: started afresh, swapped in from the snapshot of
// a swap-out, or restored from the last snapshot of a failed generation.
func activated(rec store.Process, gen uint64, took time.Duration) Event {
	e := Event{Type: EventProcessStarted, App: rec.App, PID: rec.PID, Generation: gen, Status: store.StatusActive, DurationNanos: int64(took)}
	if rec.Snapshot != "" {
		e.Type, e.Bytes = EventProcessRestored, rec.SnapshotBytes
		if rec.Status == store.StatusSwapped {
			e.Type = EventProcessSwappedIn
		}
	}
	return e
}

func (s *Server) startProcess(ctx context.Context, app store.App, l *live, rec store.Process) error {
	began := time.Now()
	// The lease: owner and a new generation, in one compare-and-set on the
	// record as claim read it. A replica that raced us wins or loses here.
	before := rec
	rec.Owner = s.id
	rec.Generation = l.gen
	rec.Status = store.StatusAllocating
	rec.Address = ""
	rec.UpdatedAt = time.Now()
	trackSwap(&rec, rec.UpdatedAt) // the swap period ends here, and is the past's
	rec.UsageBase = rec.Usage
	rec, err := s.writeRecord(ctx, before, rec)
	if errs.CodeOf(err) == errs.FailedPrecondition {
		return errTakenMeanwhile
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.base, l.usage = rec.UsageBase, rec.Usage
	l.mu.Unlock()
	res := app.Resources
	if rec.Resources != (store.Resources{}) {
		res = rec.Resources
	}
	spec := backend.Spec{App: app.Name, PID: l.pid, Generation: l.gen, Image: app.Image,
		Resources: backend.Resources{MilliCPU: res.MilliCPU, MemoryBytes: res.MemoryBytes},
		Env: append([]string{
			cpapi.EnvControlPlane + "=" + s.cfg.URL,
			cpapi.EnvControlPlanes + "=" + strings.Join(s.liveReplicaURLs(), ","),
			cpapi.EnvApp + "=" + app.Name,
			cpapi.EnvPID + "=" + l.pid,
			cpapi.EnvGeneration + "=" + strconv.FormatUint(l.gen, 10),
		}, s.cfg.ProcessEnv...),
	}
	// The process's credentials, and the key to verify what is presented
	// to it; never the app's secret or the signing key.
	own, peer := s.processTokens(app.Name, l.pid, l.gen)
	spec.Env = append(spec.Env, cpapi.EnvPublicKey+"="+s.tokens.public)
	spec.Secrets = append(spec.Secrets, cpapi.EnvToken+"="+own, cpapi.EnvPeerToken+"="+peer)
	if err := s.processTLS(&spec); err != nil {
		return err
	}
	if s.cfg.Swap != nil {
		if rec.Snapshot != "" {
			spec.Env = append(spec.Env, cpapi.EnvRestore+"="+rec.Snapshot)
		}
	}
	h, err := s.cfg.Backend.Start(ctx, spec)
	if err != nil {
		return fmt.Errorf("%w: start process %s/%s: %w", errs.ErrUnavailable, app.Name, l.pid, err)
	}
	l.mu.Lock()
	l.handle = h
	l.mu.Unlock()
	s.watchExit(l, h)
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
	addr := l.addr
	l.lastBeat = time.Now()
	l.mu.Unlock()
	_, err = s.updateOwned(ctx, l, func(p *store.Process) {
		p.Status = store.StatusActive
		p.Address = addr
		p.Handle = h.ID
		p.LastActive = time.Now()
	})
	if err != nil {
		return err
	}
	// A replica that queued a message while the record still said
	// allocating relies on this second look (see deliverMessage).
	if err := s.deliverBackup(ctx, l); err != nil {
		return err
	}
	s.bumpEpoch(ctx, app.Name)
	if rec.Snapshot != "" && s.cfg.Swap != nil {
		l.mu.Lock()
		restored := l.restoredBytes
		l.mu.Unlock()
		s.metrics.swapIns.WithLabelValues(app.Name).Inc()
		s.metrics.swapInSeconds.WithLabelValues(app.Name).Observe(time.Since(began).Seconds())
		s.metrics.swapInBytes.WithLabelValues(app.Name).Add(float64(restored))
	}
	s.log.Info("process active", "app", app.Name, "pid", l.pid, "generation", l.gen, "addr", addr, "handle", h.ID)
	return nil
}

// adoptOrphanSnapshot makes rec name the final snapshot its generation left
// when it lost every control plane, if there is one: it is newer than any
// snapshot the generation reported.
func (s *Server) adoptOrphanSnapshot(ctx context.Context, rec store.Process) (store.Process, error) {
	if s.cfg.Swap == nil || rec.Generation == 0 {
		return rec, nil
	}
	key := cpapi.SnapshotKey(rec.App, rec.PID, rec.Generation, cpapi.OrphanSeq)
	if rec.Snapshot == key {
		return rec, nil
	}
	r, err := s.cfg.Swap.Get(ctx, key)
	if errors.Is(err, errs.ErrNotFound) {
		return rec, nil
	}
	if err != nil {
		return rec, err
	}
	r.Close()
	before, previous := rec, rec.Snapshot
	rec.Snapshot = key
	// Its size is unknown without reading it all: SnapshotBytes keeps the
	// previous snapshot's, the closest guess for billing.
	rec.UpdatedAt = time.Now()
	stored, err := s.writeRecord(ctx, before, rec)
	if err != nil {
		return rec, err // changed meanwhile: the caller's compare-and-set fails anyway
	}
	s.log.Info("found the final snapshot of an orphaned process", "app", rec.App, "pid", rec.PID, "generation", rec.Generation, "key", key)
	s.deleteSnapshot(ctx, previous)
	return stored, nil
}

// watchExit waits in the background for the process of l to end.
func (s *Server) watchExit(l *live, h backend.Handle) {
	s.goBackground(func(ctx context.Context) {
		exit, err := s.cfg.Backend.Wait(ctx, h)
		if err != nil {
			return // shutting down: the process is not ours to watch any more
		}
		s.log.Debug("process ended", "app", l.app, "pid", l.pid, "generation", l.gen, "exit", exit.Reason)
		s.processExited(l, exit.Reason)
	})
}

// adopt makes a running process of rec's generation, which this replica
// now owns, a live one. It returns nil if one is already known.
func (s *Server) adopt(app store.App, rec store.Process, h backend.Handle) *live {
	l := newLive(app, rec.PID, rec.Generation)
	l.addr = rec.Address
	l.handle = h
	l.lastBeat = time.Now()
	// What the generation reported to the replica before is in rec.Usage
	// already; what it reports is cumulative since its start.
	l.base, l.usage = rec.UsageBase, rec.Usage
	close(l.registered)
	close(l.ready)
	s.mu.Lock()
	if s.live[liveKey(rec.App, rec.PID)] != nil {
		s.mu.Unlock()
		return nil
	}
	s.live[liveKey(rec.App, rec.PID)] = l
	s.mu.Unlock()
	if h.ID != "" {
		s.watchExit(l, h)
	}
	// Messages queued meanwhile go first; until then new ones queue too.
	s.goBackground(func(ctx context.Context) {
		if err := s.deliverBackup(ctx, l); err != nil {
			s.log.Warn("deliver backup queue to adopted process", "app", l.app, "pid", l.pid, "err", err)
		}
	})
	return l
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
// The generation has ended: its metrics join its app's retired totals.
func (s *Server) forget(l *live) { s.forgetAs(l, true) }

// forgetAs removes l from the live set; ended says the generation is over
// (not handed to another replica, which goes on counting its metrics).
func (s *Server) forgetAs(l *live, ended bool) {
	// Under metrics.mu, so that no scrape sees the generation's counts
	// neither live nor retired, nor both.
	s.metrics.mu.Lock()
	s.mu.Lock()
	if s.live[liveKey(l.app, l.pid)] == l {
		delete(s.live, liveKey(l.app, l.pid))
	}
	s.mu.Unlock()
	l.mu.Lock()
	rep := l.report
	done := l.reportsEnded
	l.report, l.reportsEnded = nil, true
	l.mu.Unlock()
	if ended && !done {
		s.metrics.retireLocked(l.app, rep)
	}
	s.metrics.mu.Unlock()
	l.closeConn()
	l.goneOnce.Do(func() { close(l.gone) })
}

func (s *Server) lookupLive(app, pid string) *live {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[liveKey(app, pid)]
}

// updateOwned changes the record of l with a compare-and-set, as long as
// this replica still owns l's generation; errTakenMeanwhile if not. The
// usage l reported is written too.
func (s *Server) updateOwned(ctx context.Context, l *live, change func(*store.Process)) (store.Process, error) {
	return s.updateRecord(ctx, l.app, l.pid, func(p *store.Process) error {
		if p.Owner != s.id || p.Generation != l.gen {
			return errTakenMeanwhile
		}
		l.mu.Lock()
		p.Usage = p.Usage.Max(l.usage) // never back: the buckets count increases
		l.mu.Unlock()
		change(p)
		p.UpdatedAt = time.Now()
		return nil
	})
}

// endRecord writes the end of l's generation: status swapped or failed, no
// address, no owner (the lease is released). It reports whether it wrote
// it: not if the record is gone or another replica took it meanwhile.
func (s *Server) endRecord(ctx context.Context, l *live, status string) bool {
	_, err := s.updateOwned(ctx, l, func(p *store.Process) {
		p.Status = status
		p.Address = ""
		p.Owner = ""
	})
	switch {
	case err == nil:
		s.bumpEpoch(ctx, l.app)
		return true
	case errors.Is(err, errTakenMeanwhile), errors.Is(err, errs.ErrNotFound):
	default:
		s.log.Error("write process status", "app", l.app, "pid", l.pid, "status", status, "err", err)
	}
	return false
}

func (s *Server) bumpEpoch(ctx context.Context, app string) {
	epoch, err := s.cfg.Metadata.BumpEpoch(ctx, app)
	if err != nil {
		if !errors.Is(err, errs.ErrNotFound) {
			s.log.Error("bump epoch", "app", app, "err", err)
		}
		return
	}
	s.epochChanged(app, epoch)
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
	h := l.handle
	l.mu.Unlock()
	if _, err := s.updateOwned(ctx, l, func(p *store.Process) { p.Status = store.StatusSwapping }); err != nil {
		// Not stopped: it runs on, for the replica that owns it now (or for
		// this one once it reports again), which counts its metrics.
		s.forgetAs(l, false)
		if errors.Is(err, errTakenMeanwhile) {
			return fmt.Errorf("%w: process %s/%s was taken over by another replica", errs.ErrUnavailable, l.app, l.pid)
		}
		return err
	}
	start := time.Now()
	var err error
	if h.ID != "" {
		stopCtx, cancel := context.WithTimeout(ctx, s.cfg.StopTimeout)
		err = s.cfg.Backend.Stop(stopCtx, h)
		cancel()
	}
	l.mu.Lock()
	swapped, finalBytes := l.swapped, l.finalBytes
	l.mu.Unlock()
	status := store.StatusSwapped
	if !swapped {
		status = store.StatusFailed
		if err == nil {
			err = fmt.Errorf("%w: process %s/%s exited without a snapshot (see its log)", errs.ErrInternal, l.app, l.pid)
		}
	}
	ended := s.endRecord(ctx, l, status)
	s.forget(l)
	took := time.Since(start)
	s.metrics.swapOuts.WithLabelValues(l.app, status).Inc()
	s.metrics.swapOutSeconds.WithLabelValues(l.app).Observe(took.Seconds())
	if swapped {
		s.metrics.swapOutBytes.WithLabelValues(l.app).Add(float64(finalBytes))
	}
	s.log.Info("process swapped out", "app", l.app, "pid", l.pid, "generation", l.gen, "status", status, "took", took)
	if ended {
		e := Event{Type: EventProcessSwappedOut, App: l.app, PID: l.pid, Generation: l.gen, Status: status, Bytes: finalBytes, DurationNanos: int64(took)}
		if !swapped {
			e.Type, e.Bytes, e.Reason = EventProcessFailed, 0, "swap-out: "+err.Error()
		}
		s.emit(e)
	}
	return err
}

// kill ends a process at once, for deletion: its state is not kept.
func (s *Server) kill(ctx context.Context, l *live) {
	l.mu.Lock()
	l.stopping = true
	h := l.handle
	l.mu.Unlock()
	if h.ID != "" {
		if err := s.cfg.Backend.Kill(ctx, h); err != nil {
			s.log.Warn("kill process", "app", l.app, "pid", l.pid, "err", err)
		}
	}
	s.forget(l)
}

// stopConcurrency bounds the swap-outs a shutdown runs at once. Each makes
// a process drain, write its snapshot through this replica (or to the swap
// store) and report it; a thousand at once on a small host would make each
// slow enough to outlast its timeouts, while a few dozen keep the host busy
// without queueing anyone for long.
const stopConcurrency = 64

// stopAll swaps out every running process, at shutdown, stopConcurrency at
// a time. Each swap-out is bounded by StopTimeout from when it begins, not
// from when the shutdown began, so a long queue of processes does not eat
// into the last ones' time; ctx ends the waiting for processes still
// starting.
func (s *Server) stopAll(ctx context.Context) {
	s.mu.Lock()
	all := make([]*live, 0, len(s.live))
	for _, l := range s.live {
		all = append(all, l)
	}
	s.mu.Unlock()
	slots := make(chan struct{}, stopConcurrency)
	var wg sync.WaitGroup
	for _, l := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-l.ready:
			case <-ctx.Done():
				return // still starting after the wait: not ours to swap
			}
			if l.startErr != nil {
				return
			}
			slots <- struct{}{}
			defer func() { <-slots }()
			if err := s.swapOut(context.WithoutCancel(ctx), l); err != nil {
				s.log.Warn("swap out at shutdown", "app", l.app, "pid", l.pid, "err", err)
			}
		}()
	}
	wg.Wait()
}

// processExited handles the end of l's process, as the backend reported it
// (why, for the event).
func (s *Server) processExited(l *live, why string) {
	l.exitOnce.Do(func() { close(l.exited) })
	l.mu.Lock()
	stopping := l.stopping
	l.mu.Unlock()
	select {
	case <-l.ready:
	default:
		return // start() sees exited and handles it
	}
	if stopping || l.startErr != nil {
		return
	}
	s.log.Warn("process exited unexpectedly", "app", l.app, "pid", l.pid, "generation", l.gen, "exit", why)
	s.forget(l)
	if s.endRecord(context.Background(), l, store.StatusFailed) {
		s.emit(Event{Type: EventProcessFailed, App: l.app, PID: l.pid, Generation: l.gen, Status: store.StatusFailed,
			Reason: "exited unexpectedly: " + why})
	}
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
		limit := s.silenceLimit()
		s.mu.Lock()
		var silent []*live
		for _, l := range s.live {
			select {
			case <-l.ready:
			default:
				continue
			}
			l.mu.Lock()
			if l.startErr == nil && !l.stopping && time.Since(l.lastBeat) > limit {
				silent = append(silent, l)
			}
			l.mu.Unlock()
		}
		s.mu.Unlock()
		for _, l := range silent {
			s.log.Warn("process silent, marking failed", "app", l.app, "pid", l.pid, "timeout", limit)
			s.kill(ctx, l)
			if s.endRecord(ctx, l, store.StatusFailed) {
				s.emit(Event{Type: EventProcessFailed, App: l.app, PID: l.pid, Generation: l.gen, Status: store.StatusFailed,
					Reason: fmt.Sprintf("no heartbeat for %s", limit)})
			}
		}
	}
}
