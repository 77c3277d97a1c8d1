package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// Membership changes are coalesced: after the replica published an app's
// membership, it waits membersSpacing per process waiting in a long poll
// (at least membersMinSpacing, at most membersMaxSpacing) before it reads
// the next one, and every epoch bumped meanwhile goes out in that one
// publication. Each publication wakes every waiting runtime, so this bounds
// the answers a replica sends per second (about 1/membersSpacing) whatever
// the rate of changes and the number of processes: creating N processes
// costs O(N) in membership traffic, not O(N²). A change is seen by the
// app's processes within membersMaxSpacing plus a round trip.
const (
	membersSpacing    = 2 * time.Millisecond
	membersMinSpacing = 50 * time.Millisecond
	membersMaxSpacing = time.Second
)

// errShuttingDown answers membership polls once shutdown has begun.
var errShuttingDown = fmt.Errorf("%w: the control plane is shutting down", errs.ErrUnavailable)

// membersHistory is how many of an app's recent publications a replica
// keeps to answer long polls with deltas.
const membersHistory = 16

// appWatch is one app's membership as this replica knows it: computed once
// per publication and handed to every long poll, not read again by each.
type appWatch struct {
	mu sync.Mutex
	// view names this appWatch's sequence of publications in deltas.
	view  string
	epoch uint64 // the newest epoch known; may be ahead of m while it is read
	m     cpapi.Membership
	body  []byte // m whole, as JSON (a cpapi.MembersUpdate naming view)
	// hist holds the last publications, oldest first (the last is m), and
	// deltas the delta bodies from one of their epochs to m, made on demand.
	hist     []published
	deltas   map[uint64][]byte
	at       time.Time     // when m was published
	changed  chan struct{} // closed when m changes
	waiters  int           // long polls waiting on changed
	fetching bool
}

// published is a membership as one publication had it.
type published struct {
	epoch uint64
	byPID map[string]cpapi.Member
}

func (s *Server) watch(app string) *appWatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.watches[app]
	if !ok {
		w = &appWatch{changed: make(chan struct{}), view: randomHex(6)}
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

// epochChanged records that app reached epoch and has its membership read
// again in the background if someone waits for it.
func (s *Server) epochChanged(app string, epoch uint64) {
	w := s.watch(app)
	w.mu.Lock()
	if epoch <= w.epoch {
		w.mu.Unlock()
		return
	}
	w.epoch = epoch
	refresh := w.needsRefresh()
	w.mu.Unlock()
	if refresh {
		s.goBackground(func(ctx context.Context) { s.refreshMembership(ctx, app, w) })
	}
}

// needsRefresh reports whether a refresh should start now (and marks it
// started): someone waits, the published membership is behind the newest
// known epoch, and no refresh runs. w.mu is held.
func (w *appWatch) needsRefresh() bool {
	if w.waiters == 0 || w.fetching || w.body == nil || w.m.Epoch >= w.epoch {
		return false
	}
	w.fetching = true
	return true
}

// spacing is how long after a publication the next may be read. w.mu is held.
func (w *appWatch) spacing() time.Duration {
	return min(membersMaxSpacing, max(membersMinSpacing, time.Duration(w.waiters)*membersSpacing))
}

// refreshMembership reads the app's processes and publishes them, spaced
// as the constants above say, until what it read is the newest epoch known.
func (s *Server) refreshMembership(ctx context.Context, app string, w *appWatch) {
	defer func() {
		w.mu.Lock()
		w.fetching = false
		w.mu.Unlock()
	}()
	for ctx.Err() == nil {
		w.mu.Lock()
		wait := time.Until(w.at.Add(w.spacing()))
		w.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
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
	body, err := json.Marshal(cpapi.MembersUpdate{Membership: m, View: w.view})
	if err != nil {
		return false, err
	}
	byPID := make(map[string]cpapi.Member, len(m.Members))
	for _, mem := range m.Members {
		byPID[mem.PID] = mem
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if m.Epoch > w.m.Epoch || w.body == nil {
		w.m, w.body, w.at = m, body, time.Now()
		if n := len(w.hist); n > 0 && w.hist[n-1].epoch == m.Epoch {
			w.hist = w.hist[:n-1] // the same epoch read again (first body): keep the newer
		}
		w.hist = append(w.hist, published{epoch: m.Epoch, byPID: byPID})
		if len(w.hist) > membersHistory {
			w.hist = append(w.hist[:0], w.hist[1:]...)
		}
		clear(w.deltas)
		close(w.changed)
		w.changed = make(chan struct{})
	}
	w.epoch = max(w.epoch, m.Epoch)
	return w.m.Epoch >= w.epoch, nil
}

// answer is the body for a runtime that knows epoch after of view and takes
// deltas (delta) or not: a delta from after to w.m when w still has the
// publication at after, else the whole membership. w.mu is held.
func (w *appWatch) answer(after uint64, view string, delta bool) []byte {
	if !delta || view != w.view || after == 0 || after > w.m.Epoch {
		return w.body
	}
	if b, ok := w.deltas[after]; ok {
		return b
	}
	var from map[string]cpapi.Member
	for _, h := range w.hist {
		if h.epoch == after {
			from = h.byPID
		}
	}
	if from == nil {
		return w.body
	}
	u := cpapi.MembersUpdate{Membership: cpapi.Membership{Epoch: w.m.Epoch, Members: []cpapi.Member{}}, View: w.view, Since: after}
	seen := 0
	for _, mem := range w.m.Members {
		old, ok := from[mem.PID]
		if ok {
			seen++
		}
		if !ok || old != mem {
			u.Members = append(u.Members, mem)
		}
	}
	if seen < len(from) {
		now := w.hist[len(w.hist)-1].byPID
		for pid := range from {
			if _, ok := now[pid]; !ok {
				u.Removed = append(u.Removed, pid)
			}
		}
	}
	b, err := json.Marshal(u)
	if err != nil || len(b) >= len(w.body) {
		b = w.body
	}
	if w.deltas == nil {
		w.deltas = make(map[uint64][]byte)
	}
	w.deltas[after] = b
	return b
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

// members answers a runtime's long poll: the membership (or, with
// cpapi.QueryDelta, what changed in it) as soon as its epoch exceeds
// ?epoch=, or the current one after membersPoll. A runtime that holds no
// membership yet (epoch=0 without a view) is answered from the published
// membership once that is at the newest epoch known; with cpapi.QueryFresh
// (and from runtimes that know no deltas) it is read again at once if not.
func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	app := q.Get("app")
	// Any process of the app may watch its membership. From memory: no
	// store read per poll.
	if _, err := s.authAppProcess(r, app); err != nil {
		writeError(w, s.log, err)
		return
	}
	if s.shuttingDown() {
		// Every process is being swapped out: no more news for them, and
		// an answer at once would only bring the poll straight back.
		writeError(w, s.log, errShuttingDown)
		return
	}
	after, _ := strconv.ParseUint(q.Get("epoch"), 10, 64)
	delta := q.Get(cpapi.QueryDelta) == "1"
	view := q.Get(cpapi.QueryView)
	known := after > 0 || (delta && view != "") // the caller holds the membership at after
	fresh := q.Get(cpapi.QueryFresh) == "1" || (!known && !delta)
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
	woke := false
	for {
		aw.mu.Lock()
		stale := aw.body == nil || (fresh && aw.m.Epoch < aw.epoch)
		var body []byte
		if !stale && ((known && aw.m.Epoch > after) || (!known && (woke || aw.m.Epoch >= aw.epoch))) {
			body = aw.answer(after, view, delta)
		}
		refresh := body == nil && !stale && aw.needsRefresh()
		changed := aw.changed
		aw.mu.Unlock()
		if body != nil {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
			return
		}
		if refresh {
			s.goBackground(func(ctx context.Context) { s.refreshMembership(ctx, app, aw) })
		}
		if stale {
			// Nothing published yet, or a caller that must be current: read now.
			if _, err := s.readMembership(r.Context(), app, aw); err != nil {
				writeError(w, s.log, err)
				return
			}
			fresh = false
			continue
		}
		select {
		case <-changed:
			woke = true
		case <-timeout.C:
			s.answerNow(w, aw, after, view, delta)
			return
		case <-r.Context().Done():
			return
		case <-s.stopping:
			s.answerNow(w, aw, after, view, delta)
			return
		}
	}
}

// answerNow ends a long poll with what is published: for a runtime at the
// published epoch that takes deltas, an empty delta.
func (s *Server) answerNow(w http.ResponseWriter, aw *appWatch, after uint64, view string, delta bool) {
	aw.mu.Lock()
	body := aw.answer(after, view, delta)
	aw.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}
