package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/store"
)

// processView is a process as the API shows it. Token is a data-plane
// token for the process (invoke and send, an hour), given while it is active.
type processView struct {
	store.Process
	Token string `json:"token,omitempty"`
	// StateBytes, MailboxMessages and MailboxBytes are gauges of the running
	// process from its latest heartbeat, given by the replica that owns it
	// (and only when processes report metrics).
	StateBytes      *int64 `json:"state_bytes,omitempty"`
	MailboxMessages *int64 `json:"mailbox_messages,omitempty"`
	MailboxBytes    *int64 `json:"mailbox_bytes,omitempty"`
}

func (s *Server) viewProcess(app store.App, p store.Process) processView {
	v := processView{Process: p}
	if l := s.lookupLive(p.App, p.PID); l != nil {
		l.mu.Lock()
		v.Usage = l.usage // fresher than the record, which is saved every few seconds
		rep := l.report
		l.mu.Unlock()
		if rep != nil && p.Status == store.StatusActive { // reports are not changed once kept
			v.StateBytes, v.MailboxMessages, v.MailboxBytes = &rep.StateBytes, &rep.MailboxMessages, &rep.MailboxBytes
		}
	}
	if p.Status == store.StatusActive {
		v.Token = s.clientToken(app.Name, p.PID)
	}
	return v
}

func (s *Server) createProcess(w http.ResponseWriter, r *http.Request) {
	app, ok := s.app(w, r)
	if !ok {
		return
	}
	var req struct {
		PID string `json:"pid"`
		// Resources, if given, replace the app's for this process; they
		// are kept from its creation on.
		Resources store.Resources `json:"resources"`
	}
	if err := readJSON(r, &req, true); err != nil {
		writeError(w, s.log, err)
		return
	}
	if err := req.Resources.Validate(); err != nil {
		writeError(w, s.log, err)
		return
	}
	if req.PID == "" {
		req.PID = "p-" + randomHex(4)
	}
	if err := names.PID(req.PID); err != nil {
		writeError(w, s.log, err)
		return
	}
	if err := s.checkProcessQuota(r.Context(), app.Name, req.PID); err != nil {
		writeError(w, s.log, err)
		return
	}
	status := http.StatusCreated
	now := time.Now().UTC()
	_, err := s.cfg.Metadata.CreateProcess(r.Context(), store.Process{
		App: app.Name, PID: req.PID, Status: store.StatusAllocating, Resources: req.Resources, CreatedAt: now, UpdatedAt: now,
	})
	if errors.Is(err, errs.ErrAlreadyExists) {
		// An existing pid that is not running is brought back; a running one is a conflict.
		rec, gerr := s.cfg.Metadata.GetProcess(r.Context(), app.Name, req.PID)
		if gerr == nil && s.lookupLive(app.Name, req.PID) == nil &&
			(rec.Status == store.StatusSwapped || rec.Status == store.StatusFailed) {
			err, status = nil, http.StatusOK
		} else {
			err = fmt.Errorf("%w: process %s/%s already exists", errs.ErrAlreadyExists, app.Name, req.PID)
		}
	}
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	if status == http.StatusCreated {
		s.emit(Event{Type: EventProcessCreated, App: app.Name, PID: req.PID, Status: store.StatusAllocating})
	}
	if _, err := s.pick(r.Context(), app, req.PID); err != nil {
		writeError(w, s.log, err)
		return
	}
	rec, err := s.cfg.Metadata.GetProcess(r.Context(), app.Name, req.PID)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	writeJSON(w, status, s.viewProcess(app, rec))
}

func (s *Server) listProcesses(w http.ResponseWriter, r *http.Request) {
	app, ok := s.app(w, r)
	if !ok {
		return
	}
	procs, err := s.cfg.Metadata.ListProcesses(r.Context(), app.Name)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	views := make([]processView, 0, len(procs))
	for _, p := range procs {
		views = append(views, s.viewProcess(app, p))
	}
	writeJSON(w, http.StatusOK, map[string]any{"processes": views})
}

// process loads the app and process named in the path, answering 404 itself.
func (s *Server) process(w http.ResponseWriter, r *http.Request) (store.App, store.Process, bool) {
	app, ok := s.app(w, r)
	if !ok {
		return app, store.Process{}, false
	}
	p, err := s.cfg.Metadata.GetProcess(r.Context(), app.Name, r.PathValue("pid"))
	if err != nil {
		writeError(w, s.log, err)
		return app, p, false
	}
	return app, p, true
}

func (s *Server) getProcess(w http.ResponseWriter, r *http.Request) {
	if app, p, ok := s.process(w, r); ok {
		writeJSON(w, http.StatusOK, s.viewProcess(app, p))
	}
}

func (s *Server) deleteProcess(w http.ResponseWriter, r *http.Request) {
	_, p, ok := s.process(w, r)
	if !ok {
		return
	}
	if err := s.removeProcess(r.Context(), p); err != nil {
		if !s.forward(w, r, err) {
			writeError(w, s.log, err)
		}
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// removeProcess stops a process if it runs and deletes its record and
// snapshot. A process another replica owns is that replica's to remove:
// *errOwnedByPeer.
func (s *Server) removeProcess(ctx context.Context, p store.Process) error {
	l := s.lookupLive(p.App, p.PID)
	if l == nil && p.Owner != "" && p.Owner != s.id {
		switch own, owner := s.ownerOf(ctx, p); own {
		case ownedByPeer:
			return &errOwnedByPeer{rec: p, owner: owner}
		case ownerGone:
			// Nobody acts for it: end whatever of it still runs here.
			running, err := s.runningHandles(ctx)
			if err != nil {
				return err
			}
			for _, h := range running {
				if h.App == p.App && h.PID == p.PID {
					_ = s.cfg.Backend.Kill(ctx, h)
				}
			}
		}
	}
	// Its usage stays in the buckets: what the record had not yet got
	// (the live usage of the last few seconds, a swap period under way)
	// goes there now.
	final := p
	final.Usage = s.freshUsage(p)
	final.Status = "deleted"
	trackSwap(&final, time.Now())
	if l != nil {
		s.kill(ctx, l)
	}
	err := s.cfg.Metadata.DeleteProcess(ctx, p.App, p.PID)
	if err != nil && !errors.Is(err, errs.ErrNotFound) {
		return err
	}
	if err == nil {
		s.addUsage(ctx, p, final)
	}
	s.deleteSnapshot(ctx, p.Snapshot)
	s.mu.Lock()
	delete(s.backupLocks, liveKey(p.App, p.PID))
	s.mu.Unlock()
	s.bumpEpoch(ctx, p.App)
	s.log.Info("process deleted", "app", p.App, "pid", p.PID)
	s.emit(Event{Type: EventProcessDeleted, App: p.App, PID: p.PID, Generation: p.Generation})
	return nil
}

// swapProcess swaps a process out and answers once its snapshot is stored.
// Swapping a swapped process is a no-op. A process another replica owns is
// swapped by that replica: the request is forwarded there.
func (s *Server) swapProcess(w http.ResponseWriter, r *http.Request) {
	app, p, ok := s.process(w, r)
	if !ok {
		return
	}
	if l := s.lookupLive(app.Name, p.PID); l != nil {
		select {
		case <-l.ready:
		case <-r.Context().Done():
			return
		}
		if err := s.swapOut(context.WithoutCancel(r.Context()), l); err != nil {
			writeError(w, s.log, err)
			return
		}
	} else if p.Status != store.StatusSwapped {
		own, owner := s.ownerOf(r.Context(), p)
		if own == ownedByPeer {
			s.forward(w, r, &errOwnedByPeer{rec: p, owner: owner})
			return
		}
		if p.Status == store.StatusActive {
			// Running, but not registered here yet: this control plane
			// restarted (or is taking its owner's processes over), and the
			// process re-registers within a heartbeat or is marked failed.
			writeError(w, s.log, fmt.Errorf("%w: process %s/%s is active but has not registered with this control plane yet; try again shortly", errs.ErrUnavailable, app.Name, p.PID))
			return
		}
		writeError(w, s.log, fmt.Errorf("%w: process %s/%s is %s, not active", errs.ErrFailedPrecondition, app.Name, p.PID, p.Status))
		return
	}
	p, err := s.cfg.Metadata.GetProcess(r.Context(), app.Name, p.PID)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, s.viewProcess(app, p))
}

// sendMessage puts the raw body into a process's mailbox (or its trigger)
// under key, with an empty source: a message from outside the app.
func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) {
	app, p, ok := s.process(w, r)
	if !ok {
		return
	}
	if err := names.Key(r.PathValue("key")); err != nil {
		writeError(w, s.log, err)
		return
	}
	ctx, end := s.startSendSpan(r, p.PID, r.PathValue("key"))
	data, err := s.readPayload(r)
	if err != nil {
		end(err)
		writeError(w, s.log, err)
		return
	}
	err = s.deliverMessage(ctx, app, p.PID, "", r.PathValue("key"), data)
	s.metrics.restMessages.WithLabelValues(app.Name, outcome(err)).Inc()
	end(err)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// DefaultMaxProcessesPerApp is Config.MaxProcesses's default.
const DefaultMaxProcessesPerApp = 1000

// checkProcessQuota refuses a new process pid of app once app has
// MaxProcesses; an existing pid (brought back) is not new.
func (s *Server) checkProcessQuota(ctx context.Context, app, pid string) error {
	procs, err := s.cfg.Metadata.ListProcesses(ctx, app)
	if err != nil || len(procs) < s.cfg.MaxProcesses {
		return err
	}
	for _, p := range procs {
		if p.PID == pid {
			return nil
		}
	}
	return fmt.Errorf("%w: application %s has %d processes, the limit (praas up --max-processes-per-app); delete some first", errs.ErrResourceExhausted, app, len(procs))
}
