package controlplane

import (
	"context"
	"errors"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// defaultStrayGrace is Config.StrayGrace's default: long enough that a
// process retiring itself after its heartbeat was refused, or one being
// stopped as its pid is deleted, is not mistaken for a stray.
const defaultStrayGrace = 30 * time.Second

// strays are the backend processes that no record stands for, by handle
// ID, with when each was first seen so. Only the lease loop uses it.
type strays map[string]time.Time

// reapStrays kills what the backend runs that no process record stands
// for: a process of a deleted app or pid, or an older generation of one
// that runs again. Such a process normally retires itself when its next
// heartbeat is refused; this covers those that cannot, such as a pod that
// never started its runtime (its image does not pull) or one whose record
// went while no control plane was there. A process must look stray in two
// sweeps grace apart before it is killed.
func (s *Server) reapStrays(ctx context.Context, seen strays, grace time.Duration) {
	hs, err := s.cfg.Backend.List(ctx)
	if err != nil {
		s.log.Warn("list backend processes", "err", err)
		return
	}
	byApp := make(map[string][]backend.Handle)
	for _, h := range hs {
		byApp[h.App] = append(byApp[h.App], h)
	}
	now := time.Now()
	still := make(map[string]bool)
	for app, handles := range byApp {
		procs, err := s.cfg.Metadata.ListProcesses(ctx, app)
		if err != nil && !errors.Is(err, errs.ErrNotFound) {
			s.log.Warn("list processes for strays", "app", app, "err", err)
			continue
		}
		records := make(map[string]store.Process, len(procs))
		for _, p := range procs {
			records[p.PID] = p
		}
		for _, h := range handles {
			rec, ok := records[h.PID]
			if ok && h.Generation >= rec.Generation {
				continue
			}
			still[h.ID] = true
			first, known := seen[h.ID]
			if !known {
				seen[h.ID] = now
				continue
			}
			if now.Sub(first) < grace {
				continue
			}
			why := "no record"
			if ok {
				why = "an older generation"
			}
			s.log.Warn("killing a stray process", "app", h.App, "pid", h.PID, "generation", h.Generation, "id", h.ID, "reason", why)
			if err := s.cfg.Backend.Kill(ctx, h); err != nil {
				s.log.Warn("kill stray process", "app", h.App, "pid", h.PID, "id", h.ID, "err", err)
				continue
			}
			delete(seen, h.ID)
		}
	}
	for id := range seen {
		if !still[id] {
			delete(seen, id)
		}
	}
}
