package controlplane

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
)

func (s *Server) internalRoutes(m *http.ServeMux) {
	m.HandleFunc("POST "+cpapi.PathRegister, s.register)
	m.HandleFunc("POST "+cpapi.PathHeartbeat, s.heartbeat)
	m.HandleFunc("GET "+cpapi.PathMembers, s.members)
	m.HandleFunc("POST "+cpapi.PathMessages, s.internalMessage)
	m.HandleFunc("POST "+cpapi.PathSnapshot, s.snapshotReport)
	m.HandleFunc("POST "+cpapi.PathFlush, s.flushBackup)
	s.snapshotRoutes(m)
}

// authProcess checks that the caller holds the app's secret.
func (s *Server) authProcess(r *http.Request, appName string) (store.App, error) {
	app, err := s.cfg.Metadata.GetApp(r.Context(), appName)
	if err != nil {
		return app, err
	}
	got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(got), []byte(app.Secret)) != 1 {
		return app, fmt.Errorf("%w: bad process credentials for app %s", errs.ErrUnauthenticated, appName)
	}
	return app, nil
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
		if !s.authLive(w, r, l) {
			return
		}
		l.mu.Lock()
		l.addr = reg.Address
		l.lastBeat = time.Now()
		l.mu.Unlock()
		select {
		case <-l.registered:
		default:
			close(l.registered)
		}
		writeJSON(w, http.StatusOK, s.heartbeatReply(reg.App))
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
	app, ok := s.authApp(w, r, appName)
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
	rec.Owner = s.id
	rec.Status = store.StatusActive
	if addr != "" {
		rec.Address = addr
	}
	rec.UpdatedAt = time.Now()
	stored, err := s.cfg.Metadata.UpdateProcess(r.Context(), rec)
	if err != nil {
		// Someone else changed it first: the runtime tries again next beat.
		writeError(w, s.log, err)
		return
	}
	if s.adopt(app, stored, h) != nil {
		s.bumpEpoch(r.Context(), appName)
		s.log.Info("process adopted", "app", appName, "pid", pid, "generation", gen, "addr", stored.Address, "handle", h.ID)
	}
	writeJSON(w, http.StatusOK, s.heartbeatReply(appName))
}

// heartbeatReply is what every accepted report is answered with.
func (s *Server) heartbeatReply(app string) cpapi.HeartbeatReply {
	return cpapi.HeartbeatReply{Epoch: s.knownEpoch(app), Replicas: s.liveReplicaURLs()}
}

// authLive checks a report's credentials against the live process, from
// memory: no store read per heartbeat.
func (s *Server) authLive(w http.ResponseWriter, r *http.Request, l *live) bool {
	got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(got), []byte(l.secret)) != 1 {
		writeError(w, s.log, fmt.Errorf("%w: bad process credentials for app %s", errs.ErrUnauthenticated, l.app))
		return false
	}
	return true
}

// authApp checks a report's credentials against the app's record. An app
// that no longer exists answers 410, which retires the runtime.
func (s *Server) authApp(w http.ResponseWriter, r *http.Request, appName string) (store.App, bool) {
	app, err := s.authProcess(r, appName)
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
	if !s.authLive(w, r, l) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	l.lastBeat = now
	l.usage = addUsage(l.base, hb.Usage)
	save := now.Sub(l.saved) >= usageSaveEvery
	if save {
		l.saved = now
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
	reply.Orphan = s.orphanAccess(r.Context(), l, time.Duration(hb.OrphanNanos))
	writeJSON(w, http.StatusOK, reply)
}

func addUsage(a, b store.Usage) store.Usage {
	return store.Usage{
		Invocations: a.Invocations + b.Invocations,
		BusyNanos:   a.BusyNanos + b.BusyNanos,
		BytesIn:     a.BytesIn + b.BytesIn,
		BytesOut:    a.BytesOut + b.BytesOut,
	}
}
