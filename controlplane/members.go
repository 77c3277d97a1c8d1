package controlplane

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/praas-dev/praas/internal/cpapi"
)

// membersPoll bounds how long a membership long poll is held.
const membersPoll = 20 * time.Second

// epochChanged returns a channel closed at the app's next epoch change made
// by this control plane.
func (s *Server) epochChanged(app string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.epochWatch[app]
	if !ok {
		ch = make(chan struct{})
		s.epochWatch[app] = ch
	}
	return ch
}

func (s *Server) notifyEpoch(app string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.epochWatch[app]; ok {
		close(ch)
		delete(s.epochWatch, app)
	}
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

// members answers a runtime's long poll: the membership as soon as its
// epoch exceeds ?epoch=, or the current one after membersPoll.
func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	app := q.Get("app")
	if _, err := s.authProcess(r, app); err != nil {
		writeError(w, s.log, err)
		return
	}
	after, _ := strconv.ParseUint(q.Get("epoch"), 10, 64)
	timeout := time.NewTimer(membersPoll)
	defer timeout.Stop()
	for {
		changed := s.epochChanged(app)
		m, err := s.membership(r.Context(), app)
		if err != nil {
			writeError(w, s.log, err)
			return
		}
		if m.Epoch > after || after == 0 {
			writeJSON(w, http.StatusOK, m)
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			writeJSON(w, http.StatusOK, m)
			return
		case <-r.Context().Done():
			return
		case <-s.stopping:
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
}
