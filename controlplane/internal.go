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

// processReport decodes a runtime's JSON report into v and authenticates it
// against the app that appName names once decoded. An app that no longer
// exists answers 410, which retires the runtime.
func (s *Server) processReport(w http.ResponseWriter, r *http.Request, v any, appName func() string) (store.App, bool) {
	if err := readJSON(r, v, false); err != nil {
		writeError(w, s.log, err)
		return store.App{}, false
	}
	app, err := s.authProcess(r, appName())
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

// register is called by a runtime once it serves its data plane. A runtime
// the control plane does not know of (it restarted meanwhile) is adopted if
// its record exists; one superseded by a newer instance is told to go.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var reg cpapi.Register
	app, ok := s.processReport(w, r, &reg, func() string { return reg.App })
	if !ok {
		return
	}
	s.mu.Lock()
	l := s.live[liveKey(reg.App, reg.PID)]
	if l != nil && l.instance == reg.Instance {
		s.mu.Unlock()
		l.mu.Lock()
		l.addr = reg.Address
		l.lastBeat = time.Now()
		l.mu.Unlock()
		select {
		case <-l.registered:
		default:
			close(l.registered)
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if l != nil {
		s.mu.Unlock()
		w.WriteHeader(http.StatusGone) // another instance owns this pid
		return
	}
	s.mu.Unlock()
	// Unknown: a process that outlived a control plane that crashed. Adopt
	// it if its record says it was active (then Handle is its own); one that
	// was still starting is retired and started afresh when needed.
	rec, err := s.cfg.Metadata.GetProcess(r.Context(), reg.App, reg.PID)
	if err != nil || rec.Status != store.StatusActive {
		w.WriteHeader(http.StatusGone)
		return
	}
	l = newLive(app, reg.PID)
	l.instance = reg.Instance
	l.addr = reg.Address
	l.handle = rec.Handle
	l.lastBeat = time.Now()
	close(l.registered)
	close(l.ready)
	s.mu.Lock()
	if s.live[liveKey(reg.App, reg.PID)] != nil {
		s.mu.Unlock()
		w.WriteHeader(http.StatusGone) // started anew meanwhile
		return
	}
	s.live[liveKey(reg.App, reg.PID)] = l
	if ch, ok := s.adopting[liveKey(reg.App, reg.PID)]; ok {
		close(ch)
		delete(s.adopting, liveKey(reg.App, reg.PID))
	}
	s.mu.Unlock()
	rec.Status = store.StatusActive
	rec.Address = reg.Address
	rec.UpdatedAt = time.Now()
	if err := s.cfg.Metadata.PutProcess(r.Context(), rec); err != nil {
		writeError(w, s.log, err)
		return
	}
	s.bumpEpoch(r.Context(), reg.App)
	s.log.Info("process re-adopted", "app", reg.App, "pid", reg.PID, "addr", reg.Address)
	w.WriteHeader(http.StatusOK)
	// Messages queued meanwhile go first; until then new ones queue too.
	go func() {
		if err := s.deliverBackup(context.Background(), l); err != nil {
			s.log.Warn("deliver backup queue to re-adopted process", "app", l.app, "pid", l.pid, "err", err)
		}
	}()
}

// usageSaveEvery bounds how often heartbeats write usage to the store.
const usageSaveEvery = 5 * time.Second

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	var hb cpapi.Heartbeat
	app, ok := s.processReport(w, r, &hb, func() string { return hb.App })
	if !ok {
		return
	}
	l := s.lookupLive(hb.App, hb.PID)
	if l == nil {
		w.WriteHeader(http.StatusNotFound) // register again
		return
	}
	if l.instance != hb.Instance {
		w.WriteHeader(http.StatusGone)
		return
	}
	now := time.Now()
	l.mu.Lock()
	l.lastBeat = now
	l.usage = addUsage(l.base, hb.Usage)
	usage := l.usage
	save := now.Sub(l.saved) >= usageSaveEvery
	if save {
		l.saved = now
	}
	l.mu.Unlock()
	if save {
		if rec, err := s.cfg.Metadata.GetProcess(r.Context(), hb.App, hb.PID); err == nil {
			rec.Usage = usage
			rec.LastActive = now.Add(-time.Duration(hb.IdleNanos))
			_ = s.cfg.Metadata.PutProcess(r.Context(), rec)
		}
	}
	if s.cfg.IdleTimeout > 0 && time.Duration(hb.IdleNanos) >= s.cfg.IdleTimeout && !l.isStopping() {
		s.log.Info("process idle, swapping out", "app", hb.App, "pid", hb.PID, "idle", time.Duration(hb.IdleNanos))
		go func() {
			if err := s.swapOut(context.Background(), l); err != nil {
				s.log.Warn("idle swap-out", "app", hb.App, "pid", hb.PID, "err", err)
			}
		}()
	}
	writeJSON(w, http.StatusOK, cpapi.HeartbeatReply{Epoch: app.Epoch})
}

func addUsage(a, b store.Usage) store.Usage {
	return store.Usage{
		Invocations: a.Invocations + b.Invocations,
		BusyNanos:   a.BusyNanos + b.BusyNanos,
		BytesIn:     a.BytesIn + b.BytesIn,
		BytesOut:    a.BytesOut + b.BytesOut,
	}
}

// awaitSurvivors notes the processes whose records say they run: after a
// crash of the control plane they still do, and re-register within a
// heartbeat. Those that do not within HeartbeatTimeout are marked failed
// (the next invocation restores them from their last snapshot).
func (s *Server) awaitSurvivors(ctx context.Context) error {
	apps, err := s.cfg.Metadata.ListApps(ctx)
	if err != nil {
		return err
	}
	var survivors []store.Process
	for _, app := range apps {
		procs, err := s.cfg.Metadata.ListProcesses(ctx, app.Name)
		if err != nil && !errors.Is(err, errs.ErrNotFound) {
			return err
		}
		for _, p := range procs {
			switch p.Status {
			case store.StatusActive, store.StatusAllocating, store.StatusSwapping:
				survivors = append(survivors, p)
			}
		}
	}
	if len(survivors) == 0 {
		return nil
	}
	s.mu.Lock()
	for _, p := range survivors {
		s.adopting[liveKey(p.App, p.PID)] = make(chan struct{})
	}
	s.mu.Unlock()
	s.log.Info("waiting for running processes to re-register", "processes", len(survivors), "timeout", s.cfg.HeartbeatTimeout)
	time.AfterFunc(s.cfg.HeartbeatTimeout, func() {
		for _, p := range survivors {
			key := liveKey(p.App, p.PID)
			s.mu.Lock()
			ch, waiting := s.adopting[key]
			delete(s.adopting, key)
			s.mu.Unlock()
			if waiting {
				s.log.Warn("process did not re-register, marking failed", "app", p.App, "pid", p.PID)
				s.setStatus(context.Background(), p.App, p.PID, store.StatusFailed, "", nil)
				close(ch)
			}
		}
	})
	return nil
}
