package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
)

// Ownership. Every process that is not swapped out has one owner replica,
// named in its record (Owner). The owner's lease on all its processes is its
// own replica record in the metadata store, renewed every LeaseTTL/3: one
// store write per replica and period, however many processes it owns. The
// generation in the record grows on every activation and fences everything
// a process reports (see internal.go). Only the owner starts, swaps and
// stops a process; another replica takes it over once the owner's record has
// expired, and every such change is a compare-and-set on the record, so two
// replicas racing for one pid cannot both win.

// replicaView caches the replica records, refreshed with every renewal.
type replicaView struct {
	mu      sync.Mutex
	byID    map[string]store.Replica
	fetched time.Time
}

// renewLease writes this replica's record with a new expiry. The lease is
// counted from before the write, so it never outlasts the store's view.
func (s *Server) renewLease(ctx context.Context) error {
	now := time.Now()
	r := store.Replica{ID: s.id, URL: s.cfg.URL, Started: s.started, Expires: now.Add(s.cfg.LeaseTTL)}
	if err := s.cfg.Metadata.PutReplica(ctx, r); err != nil {
		s.metrics.leaseRenewals.WithLabelValues("failed").Inc()
		return err
	}
	s.metrics.leaseRenewals.WithLabelValues("ok").Inc()
	s.leaseUntil.Store(now.Add(s.cfg.LeaseTTL).UnixNano())
	return nil
}

// holdsLease reports whether this replica's lease is unexpired.
func (s *Server) holdsLease() bool { return time.Now().UnixNano() < s.leaseUntil.Load() }

func (s *Server) refreshReplicas(ctx context.Context) error {
	all, err := s.cfg.Metadata.ListReplicas(ctx)
	if err != nil {
		return fmt.Errorf("list replicas: %w", err)
	}
	byID := make(map[string]store.Replica, len(all))
	for _, r := range all {
		byID[r.ID] = r
	}
	s.replicas.mu.Lock()
	s.replicas.byID, s.replicas.fetched = byID, time.Now()
	s.replicas.mu.Unlock()
	return nil
}

// replica returns the cached record of replica id.
func (s *Server) replica(id string) (store.Replica, bool) {
	s.replicas.mu.Lock()
	defer s.replicas.mu.Unlock()
	r, ok := s.replicas.byID[id]
	return r, ok
}

// liveReplicaURLs are the URLs of the replicas whose lease holds, for
// processes to fail over to.
func (s *Server) liveReplicaURLs() []string {
	now := time.Now()
	s.replicas.mu.Lock()
	defer s.replicas.mu.Unlock()
	urls := make([]string, 0, len(s.replicas.byID))
	for _, r := range s.replicas.byID {
		if r.Live(now) && r.URL != "" {
			urls = append(urls, r.URL)
		}
	}
	return urls
}

// ownership is what a replica makes of a record's owner.
type ownership int

const (
	unowned     ownership = iota // nobody holds a lease: anyone may activate
	ownedHere                    // this replica owns it
	ownedByPeer                  // another replica with a valid lease owns it
	ownerGone                    // the owner's lease expired: take it over
)

// ownerOf classifies rec's owner. A peer whose cached lease looks expired is
// read again before it is declared gone: the cache may be a period old.
func (s *Server) ownerOf(ctx context.Context, rec store.Process) (ownership, store.Replica) {
	switch rec.Owner {
	case "":
		return unowned, store.Replica{}
	case s.id:
		return ownedHere, store.Replica{ID: s.id, URL: s.cfg.URL}
	}
	if r, ok := s.replica(rec.Owner); ok && r.Live(time.Now()) {
		return ownedByPeer, r
	}
	if err := s.refreshReplicas(ctx); err != nil {
		// Unsure: assume it lives, which only delays a takeover.
		r, _ := s.replica(rec.Owner)
		return ownedByPeer, r
	}
	if r, ok := s.replica(rec.Owner); ok && r.Live(time.Now()) {
		return ownedByPeer, r
	}
	return ownerGone, store.Replica{ID: rec.Owner}
}

// errOwnedByPeer is returned when a lifecycle transition belongs to another
// replica; handlers forward the request there.
type errOwnedByPeer struct {
	rec   store.Process
	owner store.Replica
}

func (e *errOwnedByPeer) Error() string {
	return fmt.Sprintf("process %s/%s is owned by replica %s", e.rec.App, e.rec.PID, e.owner.ID)
}

func (e *errOwnedByPeer) Unwrap() error { return errs.ErrUnavailable }

// leaseLoop renews the lease, takes over the processes of replicas whose
// lease expired, and now and then kills strays (see reapStrays). A replica that cannot renew stops acting for its processes
// once its lease has run out: they re-register with whichever replica they
// reach, which then owns them.
func (s *Server) leaseLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	seen := make(strays)
	var lastReap time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.renewLease(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("renew lease", "err", err)
			if !s.holdsLease() {
				s.dropAll("lease expired")
			}
			continue
		}
		if err := s.refreshReplicas(ctx); err != nil {
			s.log.Warn("refresh replicas", "err", err)
			continue
		}
		if err := s.takeOverExpired(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("take over processes of expired replicas", "err", err)
		}
		if time.Since(lastReap) >= s.cfg.StrayGrace/2 {
			s.reapStrays(ctx, seen, s.cfg.StrayGrace)
			lastReap = time.Now()
		}
	}
}

// dropAll stops acting for every process without touching them: they keep
// running and serving, and re-register with a replica that holds a lease.
func (s *Server) dropAll(why string) {
	s.mu.Lock()
	all := make([]*live, 0, len(s.live))
	for _, l := range s.live {
		all = append(all, l)
	}
	s.mu.Unlock()
	if len(all) > 0 {
		s.log.Warn("dropping ownership of every process", "reason", why, "processes", len(all))
	}
	for _, l := range all {
		s.forgetAs(l, false) // the processes go on, counted by their next owner
	}
}

// takeOverExpired takes over the processes of every replica whose lease
// expired, then deletes that replica's record.
func (s *Server) takeOverExpired(ctx context.Context) error {
	now := time.Now()
	s.replicas.mu.Lock()
	var dead []string
	for id, r := range s.replicas.byID {
		if id != s.id && !r.Live(now) {
			dead = append(dead, id)
		}
	}
	s.replicas.mu.Unlock()
	for _, id := range dead {
		s.log.Info("replica lease expired, taking over its processes", "dead", id)
		n, err := s.takeOverWhere(ctx, func(p store.Process) bool { return p.Owner == id })
		if err != nil {
			return err
		}
		s.log.Info("took over processes", "dead", id, "processes", n)
		if err := s.cfg.Metadata.DeleteReplica(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// takeOverOwn takes back, at start, the processes this replica id owned
// before a restart, and those whose owner has no record at all.
func (s *Server) takeOverOwn(ctx context.Context) error {
	n, err := s.takeOverWhere(ctx, func(p store.Process) bool {
		if p.Owner == s.id {
			return true
		}
		_, known := s.replica(p.Owner)
		return p.Owner != "" && !known
	})
	if n > 0 {
		s.log.Info("took back processes at start", "processes", n)
	}
	return err
}

// takeOverWhere takes over every process record that match selects.
func (s *Server) takeOverWhere(ctx context.Context, match func(store.Process) bool) (int, error) {
	apps, err := s.cfg.Metadata.ListApps(ctx)
	if err != nil {
		return 0, err
	}
	running, err := s.runningHandles(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, app := range apps {
		procs, err := s.cfg.Metadata.ListProcesses(ctx, app.Name)
		if errors.Is(err, errs.ErrNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		for _, p := range procs {
			if !match(p) {
				continue
			}
			if s.shuttingDown() {
				return n, nil // what is not adopted yet stays for the next start
			}
			if err := s.takeOver(ctx, app, p, running); err != nil {
				s.log.Warn("take over process", "app", p.App, "pid", p.PID, "err", err)
				continue
			}
			n++
		}
	}
	return n, nil
}

// runningHandles lists what the backend runs, by app/pid/generation.
func (s *Server) runningHandles(ctx context.Context) (map[string]backend.Handle, error) {
	hs, err := s.cfg.Backend.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list backend processes: %w", err)
	}
	m := make(map[string]backend.Handle, len(hs))
	for _, h := range hs {
		m[handleKey(h.App, h.PID, h.Generation)] = h
	}
	return m, nil
}

func handleKey(app, pid string, gen uint64) string { return fmt.Sprintf("%s/%s@%d", app, pid, gen) }

// takeOver makes this replica the owner of rec, whose owner is gone (or is
// this replica before a restart). A process still running as the record's
// generation is adopted as it is; anything else of it is ended, and the
// record says swapped or failed: the next activation restores it from its
// snapshot with a new generation.
func (s *Server) takeOver(ctx context.Context, app store.App, rec store.Process, running map[string]backend.Handle) error {
	if s.lookupLive(rec.App, rec.PID) != nil {
		return nil
	}
	h, isRunning := running[handleKey(rec.App, rec.PID, rec.Generation)]
	if isRunning && rec.Status == store.StatusActive {
		before := rec
		rec.Owner = s.id
		stored, err := s.writeRecord(ctx, before, rec)
		if err != nil {
			return err
		}
		l := s.adopt(app, stored, h)
		if l != nil {
			s.metrics.takeovers.Inc()
			s.log.Info("process taken over", "app", rec.App, "pid", rec.PID, "generation", rec.Generation)
			s.emit(Event{Type: EventProcessTakenOver, App: rec.App, PID: rec.PID, Generation: rec.Generation, Status: stored.Status,
				Reason: "its owner replica " + ownerName(rec) + " went away; it still ran"})
			s.goBackground(func(ctx context.Context) { s.tellOwner(ctx, l) })
		}
		return nil
	}
	// Older generations, and a generation caught mid-start or mid-swap by
	// its owner's end, must not run on: end them first.
	for _, other := range running {
		if other.App == rec.App && other.PID == rec.PID {
			stopCtx, cancel := context.WithTimeout(ctx, s.cfg.StopTimeout)
			err := s.cfg.Backend.Stop(stopCtx, other)
			cancel()
			if err != nil {
				s.log.Warn("stop process of a gone owner", "app", rec.App, "pid", rec.PID, "err", err)
			}
		}
	}
	ended, err := s.updateRecord(ctx, rec.App, rec.PID, func(p *store.Process) error {
		if p.Owner != rec.Owner || p.Generation != rec.Generation {
			return errTakenMeanwhile
		}
		p.Owner = ""
		p.Address = ""
		p.Status = endStatus(*p)
		p.UpdatedAt = time.Now()
		return nil
	})
	if errors.Is(err, errTakenMeanwhile) {
		return nil
	}
	if err == nil {
		s.bumpEpoch(ctx, rec.App)
		e := Event{Type: EventProcessTakenOver, App: rec.App, PID: rec.PID, Generation: rec.Generation, Status: ended.Status,
			Reason: fmt.Sprintf("its owner replica %s went away while it was %s", ownerName(rec), rec.Status)}
		if ended.Status == store.StatusFailed {
			e.Type = EventProcessFailed
		}
		s.emit(e)
	}
	return err
}

// ownerName names rec's owner for an event: a replica id, or "(none)".
func ownerName(rec store.Process) string {
	if rec.Owner == "" {
		return "(none)"
	}
	return rec.Owner
}

var errTakenMeanwhile = errors.New("record changed meanwhile")

// endStatus is the status of a process that ended while nobody watched: swapped
// if it was swapping out and its record names a snapshot of its own
// generation (the final one is the last it writes), failed if not.
func endStatus(p store.Process) string {
	if gen, _, ok := cpapi.ParseSnapshotKey(p.App, p.PID, p.Snapshot); ok && gen == p.Generation && p.Status == store.StatusSwapping {
		return store.StatusSwapped
	}
	return store.StatusFailed
}

// tellOwner tells a process this replica took over, over its data plane,
// where to report from now on: it may know no other replica than its gone
// owner, whose URL it would try on and on while this replica, hearing
// nothing, marked it failed.
func (s *Server) tellOwner(ctx context.Context, l *live) {
	urls := append([]string{s.cfg.URL}, s.liveReplicaURLs()...)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatTimeout)
	defer cancel()
	dc, err := s.dataConn(ctx, l)
	if err == nil {
		err = dc.Send(ctx, "", cpapi.KeyControlPlane, []byte(strings.Join(urls, "\n")))
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn("tell a taken-over process its new owner", "app", l.app, "pid", l.pid, "err", err)
	}
}
