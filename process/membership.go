package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
)

// Member is one process of the application as its peers see it.
type Member = cpapi.Member

// Membership is the application's processes at an epoch; the epoch grows
// with every change (a process created, deleted, swapped, failed).
type Membership = cpapi.Membership

// membership is the runtime's view of its application, kept current by a
// long poll on the control plane.
//
// The long poll starts only once something wants the membership: a
// function calls Members or WaitMembers, or looks up a peer. Each change
// wakes every process that follows the membership, so a thousand processes
// that never look at it (most serverless functions) would otherwise cost
// the host a thousand wake-ups per change.
type membership struct {
	mu      sync.Mutex
	cur     Membership
	view    string        // the control plane's view cur came from, for deltas
	changed chan struct{} // closed and replaced on every update
	stale   map[string]bool
	// first is closed at the first answer; wanted says the membership was
	// asked for, and start (until called) starts the long poll.
	first     chan struct{}
	firstOnce sync.Once
	wanted    bool
	start     func()
}

func (m *membership) init() {
	m.changed = make(chan struct{})
	m.stale = make(map[string]bool)
	m.first = make(chan struct{})
}

// want starts following the membership if that has not begun, and returns
// a channel closed once the first answer is in.
func (m *membership) want() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wanted = true
	if m.start != nil {
		m.start()
		m.start = nil
	}
	return m.first
}

// setStart hands over how to start following the membership (start must
// not block): at once if it was wanted already, else at the first want.
func (m *membership) setStart(start func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wanted {
		start()
		return
	}
	m.start = start
}

// membersFirstWait bounds how long Members waits for the first answer of
// the control plane, the first time a function asks.
const membersFirstWait = 2 * time.Second

// awaitMembers starts following the membership if needed and waits (up to
// membersFirstWait) until it is known.
func (rt *Runtime) awaitMembers() {
	first := rt.members.want()
	if rt.cfg.ControlPlane == "" {
		return
	}
	t := time.NewTimer(membersFirstWait)
	defer t.Stop()
	select {
	case <-first:
	case <-t.C:
	}
}

func (m *membership) get() (Membership, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur, m.changed
}

// position is the epoch and view to ask the control plane for news from.
func (m *membership) position() (uint64, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur.Epoch, m.view
}

// update applies what the control plane answered: a whole membership, or a
// delta from the epoch and view held now. It reports false for a delta
// from anything else, which is not applied (the next poll asks for the
// whole membership).
func (m *membership) update(u cpapi.MembersUpdate) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u.Since != 0 {
		if u.Since != m.cur.Epoch || u.View != m.view || u.View == "" {
			return false
		}
		if u.Epoch == m.cur.Epoch {
			return true // nothing new: a long poll that timed out
		}
		u.Members = applyDelta(m.cur.Members, u.Members, u.Removed)
	}
	if u.Epoch < m.cur.Epoch {
		return true
	}
	m.cur, m.view = u.Membership, u.View
	m.firstOnce.Do(func() { close(m.first) })
	clear(m.stale)
	close(m.changed)
	m.changed = make(chan struct{})
	return true
}

// applyDelta returns the members of cur with changed put in (replacing
// those of the same pid, or added) and the pids in removed left out,
// sorted by pid as the control plane lists them. cur is not modified: its
// slice may have been handed out.
func applyDelta(cur, changed []Member, removed []string) []Member {
	if len(changed) == 0 && len(removed) == 0 {
		return cur
	}
	byPID := make(map[string]Member, len(changed))
	for _, mem := range changed {
		byPID[mem.PID] = mem
	}
	gone := make(map[string]bool, len(removed))
	for _, pid := range removed {
		gone[pid] = true
	}
	out := make([]Member, 0, len(cur)+len(changed)-len(removed))
	for _, mem := range cur {
		if gone[mem.PID] {
			continue
		}
		if c, ok := byPID[mem.PID]; ok {
			mem = c
			delete(byPID, mem.PID)
		}
		out = append(out, mem)
	}
	for _, mem := range changed {
		if _, added := byPID[mem.PID]; added {
			out = append(out, mem)
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.PID, b.PID) })
	return out
}

// invalidate marks what we know of pid as outdated (it went away).
func (m *membership) invalidate(pid string) {
	m.mu.Lock()
	m.stale[pid] = true
	m.mu.Unlock()
}

func (m *membership) lookup(pid string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stale[pid] {
		return Member{}, false
	}
	for _, mem := range m.cur.Members {
		if mem.PID == pid {
			return mem, true
		}
	}
	return Member{}, false
}

// member returns the current record of pid, asking the control plane when
// the local view does not know it or knows it as not active.
func (rt *Runtime) member(ctx context.Context, pid string) (Member, error) {
	rt.members.want()
	m, ok := rt.members.lookup(pid)
	if !ok || m.Status != store.StatusActive {
		if rt.cfg.ControlPlane == "" {
			return Member{}, fmt.Errorf("%w: no process %q in app %s", errs.ErrNotFound, pid, rt.cfg.App)
		}
		fresh, err := rt.fetchMembers(ctx)
		if err != nil {
			return Member{}, fmt.Errorf("%w: membership: %w", errs.ErrUnavailable, err)
		}
		rt.members.update(fresh)
		m, ok = rt.members.lookup(pid)
	}
	if !ok {
		return Member{}, fmt.Errorf("%w: no process %q in app %s", errs.ErrNotFound, pid, rt.cfg.App)
	}
	if m.Status != store.StatusActive || m.Address == "" {
		return Member{}, fmt.Errorf("%w: %w: process %q is %s", errPeerNotActive, errs.ErrFailedPrecondition, pid, m.Status)
	}
	return m, nil
}

// errPeerNotActive marks a peer that is swapped out, failed or starting, as
// the membership says: nothing was sent to it.
var errPeerNotActive = errors.New("not active")

// membersPoll is how long the control plane holds a membership long poll.
const membersPoll = 20 * time.Second

var pollClient = &http.Client{Timeout: membersPoll + 10*time.Second}

// fetchMembers asks for the whole membership as the control plane knows it
// now, read again if it knows of a newer epoch than it has read.
func (rt *Runtime) fetchMembers(ctx context.Context) (cpapi.MembersUpdate, error) {
	return rt.pollMembers(ctx, url.Values{"epoch": {"0"}, cpapi.QueryFresh: {"1"}})
}

// pollMembers asks for the membership with the query q (besides app and
// pid): see cpapi.QueryDelta and the other parameters.
func (rt *Runtime) pollMembers(ctx context.Context, q url.Values) (cpapi.MembersUpdate, error) {
	q.Set("app", rt.cfg.App)
	q.Set("pid", rt.cfg.PID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		rt.cp.url()+cpapi.PathMembers+"?"+q.Encode(), nil)
	if err != nil {
		return cpapi.MembersUpdate{}, err
	}
	rt.authorize(req)
	resp, err := rt.http.poll.Do(req)
	if err != nil {
		return cpapi.MembersUpdate{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cpapi.MembersUpdate{}, fmt.Errorf("control plane members: %s", resp.Status)
	}
	var u cpapi.MembersUpdate
	return u, json.NewDecoder(resp.Body).Decode(&u)
}

// watchMembers keeps the membership current until ctx ends: a long poll
// that takes deltas from the epoch it holds. Its first poll is answered at
// once from what the control plane has published, not read for it.
func (rt *Runtime) watchMembers(ctx context.Context) {
	whole := false
	for ctx.Err() == nil {
		epoch, view := rt.members.position()
		q := url.Values{"epoch": {strconv.FormatUint(epoch, 10)}, cpapi.QueryDelta: {"1"}}
		if !whole && view != "" {
			q.Set(cpapi.QueryView, view)
		}
		u, err := rt.pollMembers(ctx, q)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(rt.cfg.Heartbeat):
			}
			continue
		}
		// A delta from another position (the view changed meanwhile by
		// a fetch) is dropped: the next poll asks for the whole list.
		whole = !rt.members.update(u)
	}
}
