package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
)

// membersPoll bounds how long a membership long poll is held.
const membersPoll = 20 * time.Second

// epochPoll is how often a replica reads the epochs of apps that have
// processes waiting in a long poll, to learn of changes other replicas made.
const epochPoll = 250 * time.Millisecond

// appWatch is one app's membership as this replica knows it: computed once
// per epoch and handed to every long poll, not read again by each.
type appWatch struct {
	mu       sync.Mutex
	epoch    uint64 // the newest epoch known; may be ahead of m while it is read
	m        cpapi.Membership
	body     []byte        // m as JSON
	changed  chan struct{} // closed when m changes
	waiters  int           // long polls waiting on changed
	fetching bool
}

func (s *Server) watch(app string) *appWatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.watches[app]
	if !ok {
		w = &appWatch{changed: make(chan struct{})}
		s.watches[app] = w
	}
	return w
}

// knownEpoch is the newest epoch of app this replica knows of, without a
// store read (0 if none yet).
func (s *Server) knownEpoch(app string) uint64 {
	w := s.watch(app)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.epoch
}

// epochChanged records that app reached epoch and recomputes its membership
// in the background if someone waits for it.
func (s *Server) epochChanged(app string, epoch uint64) {
	w := s.watch(app)
	w.mu.Lock()
	if epoch <= w.epoch {
		w.mu.Unlock()
		return
	}
	w.epoch = epoch
	refresh := w.waiters > 0 && !w.fetching
	if refresh {
		w.fetching = true
	}
	w.mu.Unlock()
	if refresh {
		s.goBackground(func(ctx context.Context) { s.refreshMembership(ctx, app, w) })
	}
}

// refreshMembership reads the app's processes once and publishes them,
// again until what it read is the newest epoch known.
func (s *Server) refreshMembership(ctx context.Context, app string, w *appWatch) {
	defer func() {
		w.mu.Lock()
		w.fetching = false
		w.mu.Unlock()
	}()
	for ctx.Err() == nil {
		done, err := s.readMembership(ctx, app, w)
		if err != nil {
			if !errors.Is(err, errs.ErrNotFound) && ctx.Err() == nil {
				s.log.Warn("read membership", "app", app, "err", err)
			}
			return
		}
		if done {
			return
		}
	}
}

// readMembership reads the membership once and publishes it if it is newer
// than what w holds; done reports whether w is now at the newest known epoch.
func (s *Server) readMembership(ctx context.Context, app string, w *appWatch) (done bool, err error) {
	m, err := s.membership(ctx, app)
	if err != nil {
		return false, err
	}
	body, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if m.Epoch > w.m.Epoch || w.body == nil {
		w.m, w.body = m, body
		close(w.changed)
		w.changed = make(chan struct{})
	}
	w.epoch = max(w.epoch, m.Epoch)
	return w.m.Epoch >= w.epoch, nil
}

// membership reads the app's processes at its current epoch.
func (s *Server) membership(ctx context.Context, app string) (cpapi.Membership, error) {
	a, err := s.cfg.Metadata.GetApp(ctx, app)
	if err != nil {
		return cpapi.Membership{}, err
	}
	procs, err := s.cfg.Metadata.ListProcesses(ctx, app)
	if err != nil {
		return cpapi.Membership{}, err
	}
	m := cpapi.Membership{Epoch: a.Epoch, Members: make([]cpapi.Member, 0, len(procs))}
	for _, p := range procs {
		m.Members = append(m.Members, cpapi.Member{PID: p.PID, Status: p.Status, Address: p.Address})
	}
	return m, nil
}

// watchEpochs reads the epochs of apps with waiting long polls, so changes
// made by other replicas reach them within epochPoll.
func (s *Server) watchEpochs(ctx context.Context) {
	t := time.NewTicker(epochPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		var apps []string
		for app, w := range s.watches {
			w.mu.Lock()
			if w.waiters > 0 {
				apps = append(apps, app)
			}
			w.mu.Unlock()
		}
		s.mu.Unlock()
		for _, app := range apps {
			a, err := s.cfg.Metadata.GetApp(ctx, app)
			if err == nil {
				s.epochChanged(app, a.Epoch)
			}
		}
	}
}

// members answers a runtime's long poll: the membership as soon as its
// epoch exceeds ?epoch=, or the current one after membersPoll.
func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	app := q.Get("app")
	// Any process of the app may watch its membership. From memory: no
	// store read per poll.
	if _, err := s.authAppProcess(r, app); err != nil {
		writeError(w, s.log, err)
		return
	}
	after, _ := strconv.ParseUint(q.Get("epoch"), 10, 64)
	aw := s.watch(app)
	aw.mu.Lock()
	aw.waiters++
	aw.mu.Unlock()
	defer func() {
		aw.mu.Lock()
		aw.waiters--
		aw.mu.Unlock()
	}()
	timeout := time.NewTimer(membersPoll)
	defer timeout.Stop()
	for {
		aw.mu.Lock()
		body, epoch, changed := aw.body, aw.m.Epoch, aw.changed
		stale := body == nil || (after == 0 && epoch < aw.epoch)
		aw.mu.Unlock()
		if stale {
			// Nothing cached yet (or a first call that must be current): read now.
			if _, err := s.readMembership(r.Context(), app, aw); err != nil {
				writeError(w, s.log, err)
				return
			}
			aw.mu.Lock()
			body, epoch, changed = aw.body, aw.m.Epoch, aw.changed
			aw.mu.Unlock()
		}
		if epoch > after || after == 0 {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			after = 0
		case <-r.Context().Done():
			return
		case <-s.stopping:
			after = 0
		}
	}
}
