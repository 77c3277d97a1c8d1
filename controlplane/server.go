// Package controlplane is the praas control plane: the REST API for
// applications, processes and invocations, the registry of processes kept in
// a metadata store, placement of processes on a backend, liveness, and the
// internal API through which process runtimes register and report.
//
// It is not on the data path: clients learn a process's data-plane address
// and token from it and then talk to the process directly.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/wire"
)

// Config configures a control plane.
type Config struct {
	Metadata store.Metadata
	// Swap is the swap store, and SwapURL its URL as processes open it
	// (they write and read their snapshots themselves).
	Swap    store.Swap
	SwapURL string
	Backend Backend
	Logger  *slog.Logger
	// URL is where process runtimes reach the control plane; Run fills it
	// from the listener when empty.
	URL string
	// StartTimeout bounds how long a process may take to register (default 30s).
	StartTimeout time.Duration
	// HeartbeatTimeout is how long a process may stay silent before it is
	// marked failed (default 5s).
	HeartbeatTimeout time.Duration
	// StopTimeout bounds a graceful stop before the process is killed (default 30s).
	StopTimeout time.Duration
	// MaxPayload bounds invocation inputs on the REST API (default 64 MiB).
	MaxPayload int64
	// ProcessEnv is added to every process's environment (e.g. PRAAS_MAX_CONCURRENCY).
	ProcessEnv []string
	// IdleTimeout, if positive, swaps out a process whose data plane has
	// been idle that long (the scale-down policy).
	IdleTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = 5 * time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 30 * time.Second
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = wire.DefaultMaxPayload
	}
}

// Validate reports a configuration that cannot run.
func (c *Config) Validate() error {
	if c.Metadata == nil {
		return errors.New("control plane: a metadata store is required")
	}
	if c.Backend == nil {
		return errors.New("control plane: a backend is required")
	}
	return nil
}

// Server is a control plane.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux

	mu         sync.Mutex
	live       map[string]*live         // app/pid → running process; see lifecycle.go
	rr         uint64                   // cursor spreading invocations without a pid
	epochWatch map[string]chan struct{} // app → closed at its next epoch change

	stopping chan struct{} // closed when shutdown starts: ends long polls

	// backupLocks (under mu) order, per process, backup-queue appends
	// against the delivery of the queue at swap-in, so no message is
	// stranded in between.
	backupLocks map[string]*sync.Mutex

	// adopting (under mu) holds processes an earlier control plane left
	// running: until they re-register or HeartbeatTimeout passes, nothing
	// starts them anew. Each channel is closed when its wait is over.
	adopting map[string]chan struct{}
}

// New returns a control plane; serve it with Run.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, live: make(map[string]*live),
		epochWatch: make(map[string]chan struct{}), stopping: make(chan struct{}),
		backupLocks: make(map[string]*sync.Mutex), adopting: make(map[string]chan struct{})}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("POST /v1/apps", s.createApp)
	m.HandleFunc("GET /v1/apps", s.listApps)
	m.HandleFunc("GET /v1/apps/{app}", s.getApp)
	m.HandleFunc("DELETE /v1/apps/{app}", s.deleteApp)
	m.HandleFunc("POST /v1/apps/{app}/processes", s.createProcess)
	m.HandleFunc("GET /v1/apps/{app}/processes", s.listProcesses)
	m.HandleFunc("GET /v1/apps/{app}/processes/{pid}", s.getProcess)
	m.HandleFunc("DELETE /v1/apps/{app}/processes/{pid}", s.deleteProcess)
	m.HandleFunc("POST /v1/apps/{app}/processes/{pid}/swap", s.swapProcess)
	m.HandleFunc("POST /v1/apps/{app}/processes/{pid}/messages/{key}", s.sendMessage)
	m.HandleFunc("POST /v1/apps/{app}/invoke/{function}", s.invoke)
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	s.internalRoutes(m)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no route %s %s", r.Method, r.URL.Path), "code": "not_found"})
	})
	s.mux = m
}

// gate answers 503 to the public API once shutdown has begun; the internal
// API stays open so processes can report their final snapshots.
func (s *Server) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.shuttingDown() && !strings.HasPrefix(r.URL.Path, "/internal/") {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the control plane is shutting down", "code": "unavailable"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Handler is the HTTP handler of the REST and internal APIs.
func (s *Server) Handler() http.Handler { return s.mux }

// Run serves on ln until ctx ends, then shuts down gracefully: the API stops,
// every running process is stopped (it drains and swaps where configured),
// and their records are written before Run returns.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	if s.cfg.URL == "" {
		s.cfg.URL = "http://" + ln.Addr().String()
	}
	if err := s.awaitSurvivors(ctx); err != nil {
		return err
	}
	srv := &http.Server{Handler: s.gate(s.mux), ReadHeaderTimeout: 10 * time.Second}
	sweepCtx, stopSweep := context.WithCancel(ctx)
	defer stopSweep()
	go s.sweep(sweepCtx)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	// Refuse new work, swap every process out (they still reach the internal
	// API to report their snapshots), then stop serving.
	close(s.stopping)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.StopTimeout+5*time.Second)
	defer cancel()
	s.stopAll(shutdownCtx)
	_ = srv.Shutdown(shutdownCtx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
