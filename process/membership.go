package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
type membership struct {
	mu      sync.Mutex
	cur     Membership
	changed chan struct{} // closed and replaced on every update
	stale   map[string]bool
}

func (m *membership) init() {
	m.changed = make(chan struct{})
	m.stale = make(map[string]bool)
}

func (m *membership) get() (Membership, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur, m.changed
}

func (m *membership) set(v Membership) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v.Epoch < m.cur.Epoch {
		return
	}
	m.cur = v
	clear(m.stale)
	close(m.changed)
	m.changed = make(chan struct{})
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
	m, ok := rt.members.lookup(pid)
	if !ok || m.Status != store.StatusActive {
		if rt.cfg.ControlPlane == "" {
			return Member{}, fmt.Errorf("%w: no process %q in app %s", errs.ErrNotFound, pid, rt.cfg.App)
		}
		fresh, err := rt.fetchMembers(ctx, 0)
		if err != nil {
			return Member{}, fmt.Errorf("%w: membership: %w", errs.ErrUnavailable, err)
		}
		rt.members.set(fresh)
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

// fetchMembers asks for the membership once its epoch exceeds after (at
// once for after 0, else within membersPoll at the latest).
func (rt *Runtime) fetchMembers(ctx context.Context, after uint64) (Membership, error) {
	q := url.Values{"app": {rt.cfg.App}, "pid": {rt.cfg.PID}, "epoch": {strconv.FormatUint(after, 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		rt.cp.url()+cpapi.PathMembers+"?"+q.Encode(), nil)
	if err != nil {
		return Membership{}, err
	}
	rt.authorize(req)
	resp, err := rt.http.poll.Do(req)
	if err != nil {
		return Membership{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Membership{}, fmt.Errorf("control plane members: %s", resp.Status)
	}
	var m Membership
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

// watchMembers keeps the membership current until ctx ends.
func (rt *Runtime) watchMembers(ctx context.Context) {
	for ctx.Err() == nil {
		cur, _ := rt.members.get()
		m, err := rt.fetchMembers(ctx, cur.Epoch)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(rt.cfg.Heartbeat):
			}
			continue
		}
		rt.members.set(m)
	}
}
