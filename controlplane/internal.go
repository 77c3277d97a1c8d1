package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/store"
)

func (s *Server) internalRoutes(m *routeMux) {
	m.HandleFunc("POST "+cpapi.PathRegister, s.register)
	m.HandleFunc("POST "+cpapi.PathHeartbeat, s.heartbeat)
	m.HandleFunc("GET "+cpapi.PathMembers, s.members)
	m.HandleFunc("POST "+cpapi.PathMessages, s.budgeted(s.internalMessage))
	m.HandleFunc("POST "+cpapi.PathSnapshot, s.snapshotReport)
	m.HandleFunc("POST "+cpapi.PathFlush, s.flushBackup)
	m.HandleFunc("POST "+cpapi.PathInvoke, s.internalInvoke)
	m.HandleFunc("POST "+cpapi.PathLogs, s.receiveLogs)
	s.snapshotRoutes(m)
}

// register is called by a runtime once it serves its data plane, and by one
// whose owner went away, at whichever replica it reaches. Reports of a
// generation other than the record's are refused (410 retires the runtime).
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var reg cpapi.Register
	if err := readJSON(r, &reg, false); err != nil {
		writeError(w, s.log, err)
		return
	}
	l := s.lookupLive(reg.App, reg.PID)
	if l != nil && l.gen == reg.Generation {
		claims, ok := s.checkLive(w, r, l)
		if !ok {
			return
		}
		l.mu.Lock()
		l.addr = reg.Address
		l.lastBeat = time.Now()
		l.restoredBytes = reg.RestoredBytes
		l.mu.Unlock()
		select {
		case <-l.registered:
		default:
			close(l.registered)
		}
		reply := s.heartbeatReply(reg.App)
		s.renewCredentials(claims, &reply)
		writeJSON(w, http.StatusOK, reply)
		return
	}
	s.reattach(w, r, reg.App, reg.PID, reg.Generation, reg.Address, l)
}

// reattach answers a report from a process this replica has no live entry
// for (or an older one): it is refused if its generation is not the
// record's, pointed to its owner if a peer owns it, and adopted otherwise
// (its owner is gone, or was this replica before a restart).
func (s *Server) reattach(w http.ResponseWriter, r *http.Request, appName, pid string, gen uint64, addr string, l *live) {
	if l != nil && l.gen > gen {
		w.WriteHeader(http.StatusGone)
		return
	}
	app, ok := s.authApp(w, r, appName, pid, gen)
	if !ok {
		return
	}
	rec, err := s.cfg.Metadata.GetProcess(r.Context(), appName, pid)
	if err != nil || rec.Generation != gen || rec.Status == store.StatusSwapped {
		w.WriteHeader(http.StatusGone) // deleted, or a newer generation exists
		return
	}
	own, owner := s.ownerOf(r.Context(), rec)
	if own == ownedByPeer {
		reply := s.heartbeatReply(appName)
		reply.Owner = owner.URL
		writeJSON(w, http.StatusOK, reply)
		return
	}
	if !s.holdsLease() || s.shuttingDown() {
		writeError(w, s.log, fmt.Errorf("%w: this replica cannot own processes now", errs.ErrUnavailable))
		return
	}
	running, err := s.runningHandles(r.Context())
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	h := running[handleKey(appName, pid, gen)]
	before := rec
	previousOwner := ownerName(rec)
	rec.Owner = s.id
	rec.Status = store.StatusActive
	if addr != "" {
		rec.Address = addr
	}
	rec.UpdatedAt = time.Now()
	stored, err := s.writeRecord(r.Context(), before, rec)
	if err != nil {
		// Someone else changed it first: the runtime tries again next beat.
		writeError(w, s.log, err)
		return
	}
	if s.adopt(app, stored, h) != nil {
		s.bumpEpoch(r.Context(), appName)
		s.log.Info("process adopted", "app", appName, "pid", pid, "generation", gen, "addr", stored.Address, "handle", h.ID)
		s.emit(Event{Type: EventProcessTakenOver, App: appName, PID: pid, Generation: gen, Status: stored.Status,
			Reason: "it reported to this replica after its owner " + previousOwner + " went away"})
	}
	writeJSON(w, http.StatusOK, s.heartbeatReply(appName))
}

// internalInvoke runs an invocation a process makes of a peer that is not
// active, bringing the peer back: the REST invoke (see invoke.go), taken
// with a process credential of the app that may invoke.
func (s *Server) internalInvoke(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c, err := s.authAppProcess(r, q.Get("app"))
	if err == nil && !c.Ops.Has(token.OpInvoke) {
		err = fmt.Errorf("%w: the credential of %s/%s may not invoke", errs.ErrPermissionDenied, c.App, c.Sub)
	}
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	r.SetPathValue("app", c.App)
	r.SetPathValue("function", q.Get("function"))
	s.invoke(w, r)
}

// heartbeatReply is what every accepted report is answered with.
func (s *Server) heartbeatReply(app string) cpapi.HeartbeatReply {
	return cpapi.HeartbeatReply{Epoch: s.knownEpoch(app), Replicas: s.liveReplicaURLs(),
		IntervalNanos: int64(s.beatInterval())}
}

// beatsPerSecond is the heartbeat budget of a replica: with more processes
// than it can hear from once a second, it asks them to beat less often (a
// thousand processes: every 4 s), and waits as many times longer before it
// calls one silent. Each heartbeat costs the process and the replica an
// HTTP round trip; a thousand a second were most of what a thousand idle
// processes cost a small host.
const beatsPerSecond = 250

// beatInterval is how often this replica asks its processes to beat (0:
// as often as they like, once a second by default).
func (s *Server) beatInterval() time.Duration {
	s.mu.Lock()
	n := len(s.live)
	s.mu.Unlock()
	if n <= beatsPerSecond {
		return 0
	}
	return time.Duration(n) * time.Second / beatsPerSecond
}

// silenceLimit is how long a process may go without a heartbeat before it
// is marked failed: HeartbeatTimeout, stretched as beatInterval stretches
// the interval beyond a second.
func (s *Server) silenceLimit() time.Duration {
	return max(s.cfg.HeartbeatTimeout, time.Duration(float64(s.cfg.HeartbeatTimeout)*s.beatInterval().Seconds()))
}

// authLive checks that a report comes from the live process l: its
// credential, for l's app, pid and generation. From memory: no store read
// per heartbeat.
func (s *Server) authLive(w http.ResponseWriter, r *http.Request, l *live) bool {
	_, ok := s.checkLive(w, r, l)
	return ok
}

// checkLive is authLive that also returns the credential's claims.
func (s *Server) checkLive(w http.ResponseWriter, r *http.Request, l *live) (token.Claims, bool) {
	c, err := s.authInternal(r, l.app, l.pid, l.gen)
	if err != nil {
		writeError(w, s.log, err)
		return c, false
	}
	return c, true
}

// authApp checks that a report comes from generation gen of app/pid (its
// credential) and reads the app's record. An app that no longer exists
// answers 410, which retires the runtime.
func (s *Server) authApp(w http.ResponseWriter, r *http.Request, appName, pid string, gen uint64) (store.App, bool) {
	if _, err := s.authInternal(r, appName, pid, gen); err != nil {
		writeError(w, s.log, err)
		return store.App{}, false
	}
	app, err := s.cfg.Metadata.GetApp(r.Context(), appName)
	if err != nil {
		if errs.CodeOf(err) == errs.NotFound {
			w.WriteHeader(http.StatusGone)
		} else {
			writeError(w, s.log, err)
		}
		return app, false
	}
	return app, true
}

// usageSaveEvery bounds how often heartbeats write usage to the store.
const usageSaveEvery = 5 * time.Second

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	var hb cpapi.Heartbeat
	if err := readJSON(r, &hb, false); err != nil {
		writeError(w, s.log, err)
		return
	}
	l := s.lookupLive(hb.App, hb.PID)
	if l == nil || l.gen != hb.Generation {
		s.reattach(w, r, hb.App, hb.PID, hb.Generation, "", l)
		return
	}
	claims, ok := s.checkLive(w, r, l)
	if !ok {
		return
	}
	s.metrics.heartbeats.Inc()
	l.keepReport(hb.Metrics)
	now := time.Now()
	l.mu.Lock()
	l.lastBeat = now
	l.reportUsage(hb.Usage)
	// Only a change is written: a thousand idle processes would otherwise
	// make two hundred store writes a second. The memory-time of a state
	// grows at every beat, idle or not: alone, it is written once a usage
	// bucket.
	sinceSaved := now.Sub(l.saved)
	stateOnly := withoutState(l.usage) == withoutState(l.savedUsage)
	save := sinceSaved >= usageSaveEvery && l.usage != l.savedUsage && (!stateOnly || sinceSaved >= s.cfg.UsageBucket)
	if save {
		l.saved, l.savedUsage = now, l.usage
	}
	l.mu.Unlock()
	if save {
		idleSince := now.Add(-time.Duration(hb.IdleNanos))
		s.goBackground(func(ctx context.Context) {
			_, err := s.updateOwned(ctx, l, func(p *store.Process) { p.LastActive = idleSince })
			if err != nil && !errors.Is(err, errTakenMeanwhile) && ctx.Err() == nil {
				s.log.Warn("save usage", "app", l.app, "pid", l.pid, "err", err)
			}
		})
	}
	if s.cfg.IdleTimeout > 0 && time.Duration(hb.IdleNanos) >= s.cfg.IdleTimeout && !l.isStopping() {
		s.log.Info("process idle, swapping out", "app", hb.App, "pid", hb.PID, "idle", time.Duration(hb.IdleNanos))
		s.goBackground(func(ctx context.Context) {
			if err := s.swapOut(ctx, l); err != nil {
				s.log.Warn("idle swap-out", "app", hb.App, "pid", hb.PID, "err", err)
			}
		})
	}
	reply := s.heartbeatReply(hb.App)
	s.renewCredentials(claims, &reply)
	s.renewProcessCert(hb, &reply)
	reply.Orphan = s.orphanAccess(r.Context(), l, time.Duration(hb.OrphanNanos))
	writeJSON(w, http.StatusOK, reply)
}

// reportUsage takes the generation's cumulative usage u, as a heartbeat or
// a snapshot report carries it. l.mu is held. The counters only grow, so a
// report that arrives late (a heartbeat sent before the final snapshot's
// report, answered after it) changes nothing.
func (l *live) reportUsage(u store.Usage) {
	u.SwapByteSeconds = 0 // the control plane's to count, not the runtime's
	l.usage = l.usage.Max(l.base.Add(u))
}

// withoutState is u without its state's memory-time.
func withoutState(u store.Usage) store.Usage {
	u.StateByteSeconds = 0
	return u
}
