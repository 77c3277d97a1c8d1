package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/store"
)

// deliverMessage puts a message into a process's mailbox. An active
// process gets it over the data plane, whichever replica owns it; for one
// that is swapped out (or failed, or starting) it is appended durably to the
// backup queue and the process is brought back, which delivers the queue in
// order. It returns once the message is in the mailbox or durably queued.
func (s *Server) deliverMessage(ctx context.Context, app store.App, pid, src, key string, data []byte) error {
	lock := s.backupLock(app.Name, pid)
	backoff := time.Millisecond
	for ctx.Err() == nil {
		lock.Lock()
		dc, err := s.directConn(ctx, app, pid)
		if err != nil {
			lock.Unlock()
			return err
		}
		if dc == nil {
			st, err := s.checkBackupRoom(ctx, app.Name, pid, len(data))
			if err == nil {
				_, err = s.cfg.Metadata.AppendBackup(ctx, app.Name, pid, store.Message{Src: src, Key: key, Data: data})
			}
			if err == nil {
				s.metrics.queued(app.Name, pid, st.Messages+1, st.Bytes+int64(len(data)))
			}
			lock.Unlock()
			if err != nil {
				return fmt.Errorf("queue message for %s/%s: %w", app.Name, pid, err)
			}
			// A message brings the process back, and makes sure its owner
			// delivers the queue if it went active meanwhile.
			s.goBackground(func(ctx context.Context) { s.swapIn(ctx, app, pid) })
			return nil
		}
		lock.Unlock()
		err = dc.Send(ctx, src, key, data)
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

// Defaults of Config.MaxBackupQueue and MaxBackupQueueBytes: those of a
// mailbox, into which the queue is delivered.
const (
	DefaultMaxBackupQueue      = 100000
	DefaultMaxBackupQueueBytes = 1 << 30
)

// checkBackupRoom refuses (ResourceExhausted) a message of size bytes that
// would take the backup queue of app/pid past its limits. The caller holds
// the process's backup lock, which orders this replica's appends; another
// replica's may slip between the check and the append.
func (s *Server) checkBackupRoom(ctx context.Context, app, pid string, size int) (store.QueueStats, error) {
	st, err := s.cfg.Metadata.BackupStats(ctx, app, pid)
	if err != nil {
		return st, err
	}
	if st.Messages >= s.cfg.MaxBackupQueue || st.Bytes+int64(size) > s.cfg.MaxBackupQueueBytes {
		return st, fmt.Errorf("%w: the backup queue of %s/%s holds %d messages of %d bytes (limits %d messages, %d bytes: praas up --max-backup-queue, --max-backup-queue-bytes); try again once it is delivered",
			errs.ErrResourceExhausted, app, pid, st.Messages, st.Bytes, s.cfg.MaxBackupQueue, s.cfg.MaxBackupQueueBytes)
	}
	return st, nil
}

// directConn returns a data-plane connection to app/pid if messages may go
// to it directly: it runs here with its backup queue delivered, or its record
// says another replica runs it actively. nil means: queue it.
func (s *Server) directConn(ctx context.Context, app store.App, pid string) (*client.DataConn, error) {
	if l := s.lookupLive(app.Name, pid); l != nil {
		if !l.direct || l.isStopping() {
			return nil, nil
		}
		return s.dataConn(ctx, l)
	}
	rec, err := s.cfg.Metadata.GetProcess(ctx, app.Name, pid)
	if err != nil {
		return nil, err
	}
	if rec.Status != store.StatusActive || rec.Address == "" || rec.Owner == s.id {
		return nil, nil
	}
	dc, err := s.peerConn(ctx, rec.Address, app.Name, pid)
	if err != nil {
		return nil, nil // gone meanwhile: queue
	}
	return dc, nil
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

// swapIn brings a process back in the background (a message arrived for
// it), unless the control plane is shutting down: then the message waits in
// the backup queue for the next start. If another replica owns the process
// and it is active by now, that replica is asked to deliver its queue: it
// may have delivered it just before this message was appended.
func (s *Server) swapIn(ctx context.Context, app store.App, pid string) {
	if s.shuttingDown() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout+s.cfg.StopTimeout)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		l, err := s.activeProcess(ctx, app, pid)
		if err == nil {
			// It runs here. Its queue was delivered when it started, unless
			// that failed for a process adopted as it ran (or it went to
			// the queue since): then it takes no direct messages, and
			// nothing but this would ever deliver what queues up.
			if err := s.deliverBackup(ctx, l); err != nil {
				s.log.Warn("deliver backup queue", "app", app.Name, "pid", pid, "err", err)
			}
			return
		}
		var peer *errOwnedByPeer
		if !errors.As(err, &peer) {
			s.log.Warn("swap in for queued message", "app", app.Name, "pid", pid, "err", err)
			return
		}
		if peer.rec.Status == store.StatusActive {
			if err := s.askFlush(ctx, app, peer.owner, pid); err != nil {
				s.log.Warn("ask owner to deliver backup queue", "app", app.Name, "pid", pid, "owner", peer.owner.ID, "err", err)
			}
			return
		}
		// Starting or leaving at its owner: look again shortly.
		select {
		case <-ctx.Done():
			s.log.Warn("swap in for queued message", "app", app.Name, "pid", pid, "err", ctx.Err())
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// deliverBackup sends the backup queue of a process this replica runs, in
// order and pipelined on one connection, and switches it to direct delivery.
// Each message carries its queue sequence; the process drops one whose
// sequence it has consumed already (its snapshots record the highest), so
// a delivery that starts over (a crash of this replica or of the process,
// a start timeout) makes nothing received twice. The queue is not trimmed
// here but as snapshots holding its messages are recorded (snapshotReport):
// a process that crashes before its next snapshot gets them again from the
// one it restores.
func (s *Server) deliverBackup(ctx context.Context, l *live) error {
	lock := s.backupLock(l.app, l.pid)
	lock.Lock()
	defer lock.Unlock()
	msgs, err := s.cfg.Metadata.ListBackup(ctx, l.app, l.pid)
	if err != nil {
		return err
	}
	if len(msgs) > 0 {
		dc, err := s.dataConn(ctx, l)
		if err != nil {
			return err
		}
		// Frames on one connection are taken in order; the window bounds
		// what is in flight.
		calls := make([]*client.Call, 0, backupWindow)
		var last uint64 // the last message sent
		sent := 0
		wait := func() error {
			for _, c := range calls {
				if _, err := c.Wait(ctx); err != nil {
					return fmt.Errorf("deliver backup queue of %s/%s: %w", l.app, l.pid, err)
				}
			}
			calls = calls[:0]
			l.delivered = last
			return nil
		}
		for _, m := range msgs {
			if m.Seq <= l.delivered {
				continue // this generation has it
			}
			c, err := dc.GoSendQueued(m.Src, m.Key, m.Seq, m.Data)
			if err != nil {
				return fmt.Errorf("deliver backup queue of %s/%s: %w", l.app, l.pid, err)
			}
			last = m.Seq
			sent++
			if calls = append(calls, c); len(calls) == backupWindow {
				if err := wait(); err != nil {
					return err
				}
			}
		}
		if len(calls) > 0 {
			if err := wait(); err != nil {
				return err
			}
		}
		s.log.Info("backup queue delivered", "app", l.app, "pid", l.pid, "messages", sent)
	}
	s.metrics.delivered(l.app, l.pid)
	l.direct = true
	return nil
}

// backupWindow is how many queued messages are in flight at once at
// delivery, and how many at most are sent again after a crash mid-delivery.
const backupWindow = 64

// flushBackup is called by a replica that queued a message for a process
// this replica owns and that was already active: deliver the queue again.
// It takes a replica token for the process.
func (s *Server) flushBackup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := s.authReplica(r, q.Get("app"), q.Get("pid")); err != nil {
		writeError(w, s.log, err)
		return
	}
	l := s.lookupLive(q.Get("app"), q.Get("pid"))
	if l == nil || !isReady(l) {
		w.WriteHeader(http.StatusNoContent) // not running here: its next start delivers the queue
		return
	}
	if err := s.deliverBackup(r.Context(), l); err != nil {
		writeError(w, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// askFlush asks the owner replica to deliver pid's backup queue.
func (s *Server) askFlush(ctx context.Context, app store.App, owner store.Replica, pid string) error {
	q := url.Values{"app": {app.Name}, "pid": {pid}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(owner.URL, "/")+cpapi.PathFlush+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.replicaToken(app.Name, pid))
	resp, err := s.replicaHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("owner %s: flush: %s", owner.ID, resp.Status)
	}
	return nil
}

// internalMessage takes a message a process sends to a peer that is not
// active: ?app=&dest=&key=, the raw body is the data. The source is the
// sender the credential names (a src parameter is ignored).
func (s *Server) internalMessage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	claims, err := s.authAppProcess(r, q.Get("app"))
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	app, err := s.cfg.Metadata.GetApp(r.Context(), claims.App)
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
	if err := names.Key(q.Get("key")); err != nil {
		writeError(w, s.log, err)
		return
	}
	ctx, end := s.startSendSpan(r, dest, q.Get("key"))
	err = s.deliverMessage(ctx, app, dest, claims.Sub, q.Get("key"), data)
	end(err)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// snapshotReport records a snapshot a process wrote, if the process is the
// record's current generation; a report of an older generation is refused
// (410) and its snapshot deleted: it must never be restored. The snapshot
// the record named before is deleted once the record names the new one.
func (s *Server) snapshotReport(w http.ResponseWriter, r *http.Request) {
	var rep cpapi.Snapshot
	if err := readJSON(r, &rep, false); err != nil {
		writeError(w, s.log, err)
		return
	}
	l := s.lookupLive(rep.App, rep.PID)
	isLive := l != nil && l.gen == rep.Generation
	if isLive {
		if !s.authLive(w, r, l) {
			return
		}
	} else if _, ok := s.authApp(w, r, rep.App, rep.PID, rep.Generation); !ok {
		return
	}
	gen, seq, ok := cpapi.ParseSnapshotKey(rep.App, rep.PID, rep.Key)
	if !ok || gen != rep.Generation {
		writeError(w, s.log, fmt.Errorf("%w: snapshot key %q is not one of %s/%s generation %d", errs.ErrInvalidArgument, rep.Key, rep.App, rep.PID, rep.Generation))
		return
	}
	if isLive && rep.Usage != nil {
		// The final report's usage is the generation's total: taken now,
		// before the process exits, it is in the record when that ends
		// swapped (endRecord writes l.usage), heartbeat or not.
		l.mu.Lock()
		l.reportUsage(*rep.Usage)
		l.mu.Unlock()
	}
	var previous string
	_, err := s.updateRecord(r.Context(), rep.App, rep.PID, func(p *store.Process) error {
		if p.Generation != rep.Generation {
			return errTakenMeanwhile
		}
		if pg, ps, ok := cpapi.ParseSnapshotKey(rep.App, rep.PID, p.Snapshot); ok && pg == gen && ps >= seq {
			return errSnapshotOutdated
		}
		previous = p.Snapshot
		p.Snapshot, p.SnapshotBytes = rep.Key, rep.Bytes
		if isLive && p.Owner == s.id {
			l.mu.Lock()
			p.Usage = p.Usage.Max(l.usage)
			l.mu.Unlock()
		}
		p.UpdatedAt = time.Now()
		return nil
	})
	switch {
	case errors.Is(err, errSnapshotOutdated):
		// A newer snapshot of the same generation is recorded already.
	case errors.Is(err, errTakenMeanwhile), errors.Is(err, errs.ErrNotFound):
		s.log.Warn("snapshot of an old generation refused", "app", rep.App, "pid", rep.PID, "generation", rep.Generation, "key", rep.Key)
		s.deleteSnapshot(r.Context(), rep.Key)
		w.WriteHeader(http.StatusGone)
		return
	case err != nil:
		writeError(w, s.log, err)
		return
	default:
		if previous != "" && previous != rep.Key {
			s.deleteSnapshot(r.Context(), previous)
		}
		if rep.Queued > 0 {
			// The record names a snapshot that holds every queued message
			// up to rep.Queued: they are never needed again.
			if err := s.cfg.Metadata.TrimBackup(r.Context(), rep.App, rep.PID, rep.Queued); err != nil {
				s.log.Warn("trim backup queue", "app", rep.App, "pid", rep.PID, "upTo", rep.Queued, "err", err)
			}
		}
	}
	if isLive {
		l.keepReport(rep.Metrics) // the final report's are the generation's totals
	}
	if rep.Final && isLive {
		l.mu.Lock()
		l.swapped = true
		l.finalBytes = rep.Bytes
		l.mu.Unlock()
	}
	w.WriteHeader(http.StatusOK)
}

var errSnapshotOutdated = errors.New("a newer snapshot is recorded")

func (s *Server) deleteSnapshot(ctx context.Context, key string) {
	if s.cfg.Swap == nil || key == "" {
		return
	}
	if err := s.cfg.Swap.Delete(context.WithoutCancel(ctx), key); err != nil {
		s.log.Warn("delete snapshot", "key", key, "err", err)
	}
}
