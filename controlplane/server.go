// Package controlplane is the praas control plane: the REST API for
// applications, processes and invocations, the registry of processes kept in
// a metadata store, placement of processes on a backend, liveness, and the
// internal API through which process runtimes register and report.
//
// It is not on the data path: clients learn a process's data-plane address
// and token from it and then talk to the process directly.
//
// Several replicas may share one metadata store. Each active process has one
// owner replica (see lease.go); any replica serves any request.
package controlplane

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/wire"
)

// Config configures a control plane.
type Config struct {
	Metadata store.Metadata
	// Swap is the swap store. Processes reach their own snapshots in it
	// only through the control plane (snapshots.go); nil runs without
	// swapping.
	Swap    store.Swap
	Backend backend.Backend
	Logger  *slog.Logger
	// URL is where process runtimes and other replicas reach this replica;
	// Run fills it from the listener when empty.
	URL string
	// ReplicaID names this replica in the metadata store (default: random).
	// A replica that restarts with the same id takes its processes back at
	// once instead of after the lease expires.
	ReplicaID string
	// NoAuth turns authentication of the REST API off: every caller is an
	// admin. For tests and trusted networks only.
	NoAuth bool
	// SigningKey signs the tokens the control plane issues: processes'
	// credentials, data-plane tokens for clients and itself (see tokens.go).
	// Required; replicas sharing a metadata store must share it.
	SigningKey ed25519.PrivateKey
	// LeaseTTL is how long this replica's lease on its processes lasts
	// without a renewal (default 10s); it renews every LeaseTTL/3. Another
	// replica takes the processes over once it has expired.
	LeaseTTL time.Duration
	// StartTimeout bounds how long a process may take to register (default 30s).
	StartTimeout time.Duration
	// HeartbeatTimeout is how long a process may stay silent before it is
	// marked failed (default 5s).
	HeartbeatTimeout time.Duration
	// StopTimeout bounds a graceful stop before the process is killed (default 30s).
	StopTimeout time.Duration
	// MaxPayload bounds invocation inputs on the REST API (default 64 MiB).
	MaxPayload int64
	// StrayGrace is how long a process the backend runs with no record,
	// or of an older generation than its record's, may live before it is
	// killed (default 30 s); see reapStrays.
	StrayGrace time.Duration
	// MaxRequestBytes bounds the payload bytes of the invocations and
	// messages being served at once (default 4 × MaxPayload); a request past
	// it is refused with 429 resource_exhausted.
	MaxRequestBytes int64
	// MaxProcesses bounds the processes of one application, whatever their
	// status (default DefaultMaxProcessesPerApp). Creating one more is
	// refused with errs.ResourceExhausted (HTTP 429). Replicas count from
	// the metadata store: concurrent creations may overshoot by a few.
	MaxProcesses int
	// MaxBackupQueue and MaxBackupQueueBytes bound the backup queue of one
	// process: its messages and the bytes of their data (defaults
	// DefaultMaxBackupQueue, DefaultMaxBackupQueueBytes). A message past
	// either is refused with errs.ResourceExhausted (HTTP 429). The queue
	// is measured in the metadata store before the append: senders racing
	// on several replicas may overshoot by a message each.
	MaxBackupQueue      int
	MaxBackupQueueBytes int64
	// ProcessEnv is added to every process's environment (e.g. PRAAS_MAX_CONCURRENCY).
	ProcessEnv []string
	// IdleTimeout, if positive, swaps out a process whose data plane has
	// been idle that long (the scale-down policy).
	IdleTimeout time.Duration
	// LogDir keeps the logs of the processes that report to this replica
	// (LogDir/APP/PID.log, see logs.go); empty keeps only the latest lines
	// in memory.
	LogDir string
	// MaxLogBytes is the size at which a process's log file is rotated
	// (default DefaultMaxLogBytes); one rotated file is kept.
	MaxLogBytes int64
	// TLS, if set, serves the API over HTTPS and has processes serve their
	// data plane over TLS (see tls.go); nil keeps both plain.
	TLS *TLSConfig
	// UsageBucket is the width of the time buckets usage is kept in, the
	// granularity of usage windows (default DefaultUsageBucket; whole
	// seconds). Replicas sharing a store must agree on it.
	UsageBucket time.Duration
	// UsageRetention is how long usage buckets are kept (default
	// DefaultUsageRetention); older ones are deleted as new ones are
	// written.
	UsageRetention time.Duration
	// MetricsPublic serves GET /metrics without authentication; otherwise
	// a scrape needs an admin key, as the rest of the API (see metrics.go).
	MetricsPublic bool
	// TracerProvider, if set, traces invocations and messages through this
	// replica (see tracing.go); nil turns tracing off. Processes get their
	// own tracing configuration through ProcessEnv.
	TracerProvider trace.TracerProvider
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
	if c.StrayGrace <= 0 {
		c.StrayGrace = defaultStrayGrace
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 4 * c.MaxPayload
	}
	if c.MaxProcesses <= 0 {
		c.MaxProcesses = DefaultMaxProcessesPerApp
	}
	if c.MaxBackupQueue <= 0 {
		c.MaxBackupQueue = DefaultMaxBackupQueue
	}
	if c.MaxBackupQueueBytes <= 0 {
		c.MaxBackupQueueBytes = DefaultMaxBackupQueueBytes
	}
	if c.MaxLogBytes <= 0 {
		c.MaxLogBytes = DefaultMaxLogBytes
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.ReplicaID == "" {
		c.ReplicaID = "cp-" + randomHex(6)
	}
	if c.UsageBucket <= 0 {
		c.UsageBucket = DefaultUsageBucket
	}
	if c.UsageRetention <= 0 {
		c.UsageRetention = DefaultUsageRetention
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
	if len(c.SigningKey) != ed25519.PrivateKeySize {
		return errors.New("control plane: an Ed25519 signing key is required")
	}
	if c.UsageBucket%time.Second != 0 {
		return fmt.Errorf("control plane: the usage bucket width (%v) must be whole seconds", c.UsageBucket)
	}
	if c.UsageRetention < c.UsageBucket {
		return fmt.Errorf("control plane: usage retention (%v) is shorter than a usage bucket (%v)", c.UsageRetention, c.UsageBucket)
	}
	return nil
}

// Server is a control plane.
//
// Lock order: a process's backup lock (backup.go), then metrics.mu
// (metrics.go), then Server.mu, then a live's mu, then an appWatch's mu.
// The event log's mu is a leaf: nothing is taken under it. No lock is held
// across a store call or network I/O except the backup lock, which orders
// a process's backup queue.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	// routeList holds the patterns registered on mux (see Routes).
	routeList []string
	id        string

	tracer *tracing.Tracer // nil: tracing off

	mu   sync.Mutex
	live map[string]*live // app/pid → running process this replica owns; see lifecycle.go
	rr   uint64           // cursor spreading invocations without a pid
	// backupLocks (under mu) order, per process, backup-queue appends
	// against the delivery of the queue at swap-in, so no message is
	// stranded in between.
	backupLocks map[string]*sync.Mutex
	// watches (under mu) hold each app's membership, computed once per epoch.
	watches map[string]*appWatch
	// peers (under mu) are data-plane connections to processes other
	// replicas own, by address and process.
	peers map[string]*client.DataConn

	// replicaHTTP calls other replicas; dataTLS, if set, dials processes
	// over TLS (see tls.go).
	replicaHTTP *http.Client
	dataTLS     *tls.Config

	keys   keyCache  // API keys recently verified; see auth.go
	tokens *issuer   // signs and verifies tokens; see tokens.go
	events *eventLog // recent events; see events.go

	// leaseUntil is when this replica's lease ends unless renewed (unix
	// nanos); past it, the replica acts for no process. See lease.go.
	leaseUntil atomic.Int64
	replicas   replicaView
	started    time.Time

	stopping chan struct{} // closed when shutdown starts: ends long polls
	payloads byteBudget    // payload bytes of requests being served (see budgeted)
	logs     *logStore     // process logs received here (see logs.go)
	// bg owns every goroutine the server starts: Run cancels bgCtx and waits
	// for them before it returns.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	// prunedAt is the start of the usage bucket (unix nanos) in which this
	// replica last pruned usage past its retention (see usage.go).
	prunedAt atomic.Int64

	metrics *serverMetrics // see metrics.go
}

// New returns a control plane; serve it with Run.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("replica", cfg.ReplicaID), id: cfg.ReplicaID,
		live: make(map[string]*live), backupLocks: make(map[string]*sync.Mutex),
		watches: make(map[string]*appWatch), peers: make(map[string]*client.DataConn),
		keys:     keyCache{byID: make(map[string]cachedKey)},
		tokens:   newIssuer(cfg.SigningKey),
		events:   newEventLog(),
		payloads: byteBudget{max: cfg.MaxRequestBytes},
		logs:     newLogStore(cfg.LogDir, cfg.MaxLogBytes),
		stopping: make(chan struct{}),
		tracer:   tracing.New(cfg.TracerProvider)}
	if err := s.initTLS(); err != nil {
		return nil, err
	}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	s.metrics = newServerMetrics(s)
	s.routes()
	return s, nil
}

// ID is the replica id.
func (s *Server) ID() string { return s.id }

// goBackground runs fn on a goroutine that Run waits for; fn must return
// soon after ctx ends.
func (s *Server) goBackground(fn func(ctx context.Context)) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		fn(s.bgCtx)
	}()
}

// routeMux is the server's ServeMux, remembering every pattern registered
// on it: Routes lists them, and a test checks them against the OpenAPI
// description, docs/openapi.yaml. Register every route through it.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

// Handle registers h for pattern and records the pattern.
func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.ServeMux.Handle(pattern, h)
	m.patterns = append(m.patterns, pattern)
}

// HandleFunc registers h for pattern and records the pattern.
func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.ServeMux.HandleFunc(pattern, h)
	m.patterns = append(m.patterns, pattern)
}

// Routes returns the patterns the server serves ("GET /v1/apps/{app}", as
// http.ServeMux spells them), sorted. The catch-all "/", which answers 404
// to what is no route, is not one.
func (s *Server) Routes() []string {
	var routes []string
	for _, p := range s.routeList {
		if p != "/" {
			routes = append(routes, p)
		}
	}
	slices.Sort(routes)
	return routes
}

func (s *Server) routes() {
	m := &routeMux{ServeMux: http.NewServeMux()}
	m.HandleFunc("POST /v1/apps", s.authed(adminOnly, s.createApp))
	m.HandleFunc("GET /v1/apps", s.authed(anyCaller, s.listApps))
	m.HandleFunc("GET /v1/apps/{app}", s.authed(ofApp, s.getApp))
	m.HandleFunc("DELETE /v1/apps/{app}", s.authed(ofApp, s.deleteApp))
	m.HandleFunc("POST /v1/apps/{app}/processes", s.authed(ofApp, s.createProcess))
	m.HandleFunc("GET /v1/apps/{app}/processes", s.authed(ofApp, s.listProcesses))
	m.HandleFunc("GET /v1/apps/{app}/processes/{pid}", s.authed(ofApp, s.getProcess))
	m.HandleFunc("DELETE /v1/apps/{app}/processes/{pid}", s.authed(ofApp, s.deleteProcess))
	m.HandleFunc("POST /v1/apps/{app}/processes/{pid}/swap", s.authed(ofApp, s.swapProcess))
	m.HandleFunc("GET /v1/apps/{app}/processes/{pid}/logs", s.authed(ofApp, s.processLogs))
	m.HandleFunc("POST /v1/apps/{app}/processes/{pid}/messages/{key}", s.authed(ofApp, s.budgeted(s.sendMessage)))
	m.HandleFunc("POST /v1/apps/{app}/invoke/{function}", s.authed(ofApp, s.budgeted(s.invoke)))
	m.HandleFunc("GET /v1/apps/{app}/usage", s.authed(ofApp, s.getUsage))
	m.HandleFunc("POST /v1/apps/{app}/keys", s.authed(ofApp, s.createKey))
	m.HandleFunc("GET /v1/apps/{app}/keys", s.authed(ofApp, s.listKeys))
	m.HandleFunc("DELETE /v1/apps/{app}/keys/{id}", s.authed(ofApp, s.revokeKey))
	m.HandleFunc("POST /v1/apps/{app}/keys/{id}/rotate", s.authed(ofApp, s.rotateKey))
	m.HandleFunc("POST /v1/keys", s.authed(adminOnly, s.createKey))
	m.HandleFunc("GET /v1/keys", s.authed(adminOnly, s.listKeys))
	m.HandleFunc("DELETE /v1/keys/{id}", s.authed(adminOnly, s.revokeKey))
	m.HandleFunc("POST /v1/keys/{id}/rotate", s.authed(adminOnly, s.rotateKey))
	m.HandleFunc("GET /v1/ca", s.authed(anyCaller, s.getCA))
	if s.cfg.MetricsPublic {
		m.Handle("GET /metrics", s.serveMetrics())
	} else {
		m.HandleFunc("GET /metrics", s.authed(adminOnly, s.serveMetrics().ServeHTTP))
	}
	m.HandleFunc("GET /v1/events", s.authed(anyCaller, s.listEvents))
	m.HandleFunc("GET /v1/status", s.authed(anyCaller, s.getStatus))
	s.uiRoutes(m)
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	s.internalRoutes(m)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no route %s %s", r.Method, r.URL.Path), "code": "not_found"})
	})
	s.mux, s.routeList = m.ServeMux, m.patterns
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
// every process this replica owns is swapped out, its lease is released, and
// every background goroutine has ended before Run returns.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	defer s.bg.Wait()
	defer s.bgCancel()
	scheme := "http"
	if s.cfg.TLS != nil {
		ln, scheme = tls.NewListener(ln, s.serverTLS()), "https"
	}
	if s.cfg.URL == "" {
		s.cfg.URL = scheme + "://" + ln.Addr().String()
	}
	s.started = time.Now()
	if err := s.renewLease(ctx); err != nil {
		return fmt.Errorf("control plane: take the replica lease: %w", err)
	}
	if err := s.refreshReplicas(ctx); err != nil {
		return err
	}
	srv := &http.Server{Handler: s.gate(s.mux), ReadHeaderTimeout: 10 * time.Second}
	// Processes this replica owned before a restart (same id) are taken
	// back at once, while it serves and renews its lease: a generation
	// caught mid-start or mid-swap is stopped gracefully, and its final
	// snapshot goes through this replica's API (taking them back before
	// serving left it unreachable and lease-less for the stop timeout).
	// Those of replicas gone for good are taken over by the lease loop.
	s.goBackground(func(ctx context.Context) {
		if err := s.takeOverOwn(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("take back processes at start", "err", err)
		}
	})
	s.goBackground(s.leaseLoop)
	s.goBackground(s.sweep)
	s.goBackground(s.watchEpochs)
	s.goBackground(s.evictLogs)

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
	startCtx, cancelStart := context.WithTimeout(context.Background(), s.cfg.StopTimeout+5*time.Second)
	s.stopAll(startCtx) // each swap-out has StopTimeout of its own
	cancelStart()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.StopTimeout+5*time.Second)
	defer cancel()
	s.closePeers()
	_ = srv.Shutdown(shutdownCtx)
	s.bgCancel()
	s.bg.Wait()
	// Nothing is owned any more: let other replicas act at once.
	if derr := s.cfg.Metadata.DeleteReplica(shutdownCtx, s.id); derr != nil {
		s.log.Warn("release replica lease", "err", derr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
