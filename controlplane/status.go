package controlplane

import (
	"context"
	"errors"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// statusTimeout bounds each store check of GET /v1/status: a store that
// does not answer within it is reported unhealthy rather than hanging the
// answer.
const statusTimeout = 2 * time.Second

// statusView is the platform at a glance (GET /v1/status).
type statusView struct {
	Version  string          `json:"version"`
	Replica  string          `json:"replica"` // the replica that answered
	Replicas []replicaStatus `json:"replicas"`
	Apps     int             `json:"apps"`
	// Processes counts the processes by status; Total is their sum.
	Processes      map[string]int `json:"processes"`
	TotalProcesses int            `json:"total_processes"`
	Metadata       storeHealth    `json:"metadata_store"`
	Swap           storeHealth    `json:"swap_store"`
}

type replicaStatus struct {
	ID      string    `json:"id"`
	URL     string    `json:"url"`
	Live    bool      `json:"live"`
	Started time.Time `json:"started"`
	Expires time.Time `json:"expires"`
}

// storeHealth is the outcome of one cheap read of a store.
type storeHealth struct {
	// Configured is false for a control plane that runs without a swap store.
	Configured bool   `json:"configured"`
	Healthy    bool   `json:"healthy"`
	LatencyNS  int64  `json:"latency_ns"`
	Error      string `json:"error,omitempty"`
}

// healthProbeKey is a swap-store key that never holds a snapshot: reading
// it is the swap store's health check (not found is the healthy answer).
const healthProbeKey = "health/probe"

// getStatus answers statusView. An app's key sees the counts of its own
// app only. The counts read every process record of every app the caller
// may see: O(processes) store reads per call, fine for an operator's look
// but not for a tight poll of a large platform.
func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	v := statusView{Version: buildVersion(), Replica: s.id, Processes: map[string]int{}}
	var wg sync.WaitGroup
	var replicas []store.Replica
	wg.Add(1)
	go func() {
		defer wg.Done()
		v.Metadata, replicas = s.checkMetadata(r.Context())
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		v.Swap = s.checkSwap(r.Context())
	}()
	wg.Wait()
	now := time.Now()
	v.Replicas = make([]replicaStatus, 0, len(replicas))
	for _, rep := range replicas {
		v.Replicas = append(v.Replicas, replicaStatus{ID: rep.ID, URL: rep.URL, Live: rep.Live(now), Started: rep.Started, Expires: rep.Expires})
	}
	if v.Metadata.Healthy {
		if err := s.countProcesses(r.Context(), callerOf(r), &v); err != nil {
			writeError(w, s.log, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, v)
}

// checkMetadata reads the replica records, which the status shows anyway.
func (s *Server) checkMetadata(ctx context.Context) (storeHealth, []store.Replica) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	start := time.Now()
	replicas, err := s.cfg.Metadata.ListReplicas(ctx)
	return health(start, err), replicas
}

// checkSwap reads a key that is never there.
func (s *Server) checkSwap(ctx context.Context) storeHealth {
	if s.cfg.Swap == nil {
		return storeHealth{Healthy: true}
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	start := time.Now()
	rc, err := s.cfg.Swap.Get(ctx, healthProbeKey)
	if err == nil {
		rc.Close()
	}
	if errors.Is(err, errs.ErrNotFound) {
		err = nil
	}
	return health(start, err)
}

func health(start time.Time, err error) storeHealth {
	h := storeHealth{Configured: true, Healthy: err == nil, LatencyNS: int64(time.Since(start))}
	if err != nil {
		h.Error = err.Error()
	}
	return h
}

// countProcesses fills the app and process counts of what c may see.
func (s *Server) countProcesses(ctx context.Context, c caller, v *statusView) error {
	apps, err := s.cfg.Metadata.ListApps(ctx)
	if err != nil {
		return err
	}
	for _, a := range apps {
		if !c.may(a.Name) {
			continue
		}
		v.Apps++
		procs, err := s.cfg.Metadata.ListProcesses(ctx, a.Name)
		if errors.Is(err, errs.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return err
		}
		for _, p := range procs {
			v.Processes[p.Status]++
		}
		v.TotalProcesses += len(procs)
	}
	return nil
}

// buildVersion is the version of the module this binary was built from,
// with its VCS revision when the build recorded one.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	for _, st := range bi.Settings {
		if st.Key == "vcs.revision" && len(st.Value) >= 12 {
			v += " " + st.Value[:12]
		}
	}
	return v + " " + bi.GoVersion
}
