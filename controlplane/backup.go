package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
)

// deliverMessage puts a message into a process's mailbox. A running process
// gets it over the data plane; for one that is swapped out (or failed, or
// starting) it is appended durably to the backup queue and the process is
// brought back, which delivers the queue in order. It returns once the
// message is in the mailbox or durably queued.
func (s *Server) deliverMessage(ctx context.Context, app store.App, pid, src, key string, data []byte) error {
	lock := s.backupLock(app.Name, pid)
	backoff := time.Millisecond
	for ctx.Err() == nil {
		lock.Lock()
		l := s.lookupLive(app.Name, pid)
		if l == nil || !l.direct || l.isStopping() {
			_, err := s.cfg.Metadata.AppendBackup(ctx, app.Name, pid, store.Message{Src: src, Key: key, Data: data})
			lock.Unlock()
			if err != nil {
				return fmt.Errorf("queue message for %s/%s: %w", app.Name, pid, err)
			}
			go s.swapIn(app, pid) // a message brings the process back
			return nil
		}
		lock.Unlock()
		dc, err := l.dataConn(ctx)
		if err == nil {
			err = dc.Send(ctx, src, key, data)
		}
		if !errors.Is(err, client.ErrNotSent) {
			return err
		}
		// It began to leave (or crashed) before the message went out: queue
		// it instead once that is known.
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
	return fmt.Errorf("%w: message for %s/%s: %w", errs.ErrUnavailable, app.Name, pid, ctx.Err())
}

// backupLock returns the lock that orders the backup queue of app/pid.
func (s *Server) backupLock(app, pid string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.backupLocks[liveKey(app, pid)]
	if !ok {
		l = &sync.Mutex{}
		s.backupLocks[liveKey(app, pid)] = l
	}
	return l
}

// swapIn brings a process back in the background (a message arrived for it),
// unless the control plane is shutting down: then the message waits in the
// backup queue for the next start.
func (s *Server) swapIn(app store.App, pid string) {
	if s.shuttingDown() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StartTimeout+s.cfg.StopTimeout)
	defer cancel()
	if _, err := s.activeProcess(ctx, app, pid); err != nil {
		s.log.Warn("swap in for queued message", "app", app.Name, "pid", pid, "err", err)
	}
}

// deliverBackup sends the backup queue of a process that just registered, in
// order, and switches it to direct delivery.
func (s *Server) deliverBackup(ctx context.Context, l *live) error {
	lock := s.backupLock(l.app, l.pid)
	lock.Lock()
	defer lock.Unlock()
	msgs, err := s.cfg.Metadata.ListBackup(ctx, l.app, l.pid)
	if err != nil {
		return err
	}
	if len(msgs) > 0 {
		dc, err := l.dataConn(ctx)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if err := dc.Send(ctx, m.Src, m.Key, m.Data); err != nil {
				return fmt.Errorf("deliver backup queue of %s/%s: %w", l.app, l.pid, err)
			}
		}
		if err := s.cfg.Metadata.TrimBackup(ctx, l.app, l.pid, msgs[len(msgs)-1].Seq); err != nil {
			return err
		}
		s.log.Info("backup queue delivered", "app", l.app, "pid", l.pid, "messages", len(msgs))
	}
	l.direct = true
	return nil
}

// internalMessage takes a message a process sends to a peer that is not
// active: ?app=&src=&dest=&key=, the raw body is the data.
func (s *Server) internalMessage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	app, err := s.authProcess(r, q.Get("app"))
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	dest := q.Get("dest")
	if _, err := s.cfg.Metadata.GetProcess(r.Context(), app.Name, dest); err != nil {
		writeError(w, s.log, err)
		return
	}
	data, err := s.readPayload(r)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	if err := s.deliverMessage(r.Context(), app, dest, q.Get("src"), q.Get("key"), data); err != nil {
		writeError(w, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// snapshotReport records a snapshot a process wrote.
func (s *Server) snapshotReport(w http.ResponseWriter, r *http.Request) {
	var rep cpapi.Snapshot
	if _, ok := s.processReport(w, r, &rep, func() string { return rep.App }); !ok {
		return
	}
	l := s.lookupLive(rep.App, rep.PID)
	if l == nil || l.instance != rep.Instance {
		w.WriteHeader(http.StatusGone)
		return
	}
	rec, err := s.cfg.Metadata.GetProcess(r.Context(), rep.App, rep.PID)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	if rec.Snapshot != rep.Key { // the key never changes: one write per process
		rec.Snapshot = rep.Key
		rec.UpdatedAt = time.Now()
		if err := s.cfg.Metadata.PutProcess(r.Context(), rec); err != nil {
			writeError(w, s.log, err)
			return
		}
	}
	if rep.Final {
		l.mu.Lock()
		l.swapped = true
		l.mu.Unlock()
	}
	w.WriteHeader(http.StatusOK)
}
