// Package process is the praas process runtime: the controller that runs
// inside every cloud process. It serves the data plane, runs invocations
// concurrently under a concurrency limit (each on the goroutine that read it
// until it waits or runs long, see inline.go), keeps the process state in
// memory, swaps it to storage, and registers with and reports to the
// control plane.
//
// Images use it through the root package praas (Register, Serve).
package process

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/proclog"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/storeurl"
	"github.com/praas-dev/praas/wire"
)

// Config configures a runtime. Backends pass it through the environment
// (see ConfigFromEnv).
type Config struct {
	App, PID string
	// Generation is the activation this start of the process is (its
	// fencing token): the control plane refuses reports and snapshots of
	// older generations.
	Generation uint64
	// Token is the process's own credential, signed by the control plane
	// (token.Claims: App, PID "*", Sub this pid, Gen this generation, Ops
	// invoke|send|internal). It authenticates the runtime to the internal
	// API; heartbeat replies renew it before it expires. Required with a
	// control plane.
	Token string
	// PeerToken is what the runtime presents to peer processes on the data
	// plane: the claims of Token without internal, so a peer cannot replay
	// it to the control plane. Empty: Token is presented.
	PeerToken string
	// Verifier checks the tokens that clients, peers and the control plane
	// present on the data plane (the control plane's public key). Required.
	Verifier *token.Verifier
	// ControlPlane is the control plane's base URL; empty runs standalone
	// (no registration, no reports), which tests use.
	ControlPlane string
	// OtherControlPlanes are the URLs of other replicas, to fail over to
	// before the first heartbeat reply names them.
	OtherControlPlanes []string
	// Listen is the data-plane address (default 127.0.0.1:0).
	Listen string
	// Advertise is the host announced to the control plane when Listen's
	// host is unspecified (0.0.0.0 or empty).
	Advertise string
	// MaxConcurrency bounds invocations running at once; more wait (default 256).
	MaxConcurrency int
	// MaxPayload bounds an invocation input or message (default 64 MiB).
	MaxPayload int
	// MaxMailbox and MaxMailboxBytes bound the unread messages in the
	// mailbox and their data (defaults DefaultMaxMailbox and
	// DefaultMaxMailboxBytes): a message past either is refused with
	// errs.ErrResourceExhausted. Messages the control plane relays are
	// queued regardless (see acceptMessage).
	MaxMailbox      int
	MaxMailboxBytes int64
	// MaxStateBytes bounds the state's keys and values together (default
	// DefaultMaxStateBytes): a SetState or UpdateState past it fails with
	// errs.ErrResourceExhausted and changes nothing.
	MaxStateBytes int64
	// MaxInflight bounds the data-plane invocations a process has taken and
	// not finished, running or waiting for a slot (default
	// DefaultMaxInflight); more are refused unrun with
	// errs.ErrResourceExhausted.
	MaxInflight int
	// MaxConnInflight and MaxConnInflightBytes bound one connection's
	// invocations read and not yet answered, and the bytes of their input
	// and output (defaults DefaultMaxConnInflight, DefaultMaxConnInflightBytes):
	// at either, the connection is not read until answers are written, and
	// TCP pushes back on the client. Nothing is refused.
	MaxConnInflight      int
	MaxConnInflightBytes int64
	// WriteTimeout is how long a data-plane client may leave an answer
	// unread before its connection is closed (default DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Heartbeat is the reporting period (default 1s).
	Heartbeat time.Duration
	// DrainTimeout bounds how long a shutdown waits for running invocations (default 30s).
	DrainTimeout time.Duration
	// OrphanTimeout is how long the runtime keeps serving while the control
	// plane is unreachable before it swaps itself out and exits (default 5m).
	OrphanTimeout time.Duration
	// Swap is where snapshots go when the runtime runs without a control
	// plane (tests, standalone use); nil runs without swapping (state is
	// lost at exit). With a control plane it must be nil: the runtime holds
	// no store credentials and reaches its own snapshots, and only those,
	// through access the control plane grants per snapshot (see swap.go).
	Swap store.Swap
	// RestoreKey, if set, is the snapshot to load before serving.
	RestoreKey string
	// CheckpointInterval, if positive, writes a snapshot that often while
	// anything changed, bounding what a crash loses.
	CheckpointInterval time.Duration
	Logger             *slog.Logger
	// Logs, if set, receives the process's captured output (see
	// CaptureOutput); the runtime ships its lines to the control plane.
	Logs *proclog.Ring
	// TLS, if set, serves the data plane over TLS with its certificate
	// (issued by the control plane from the data-plane CA).
	TLS *tls.Config
	// PeerTLS, if set, dials peers' data planes over TLS, trusting its
	// RootCAs (the data-plane CA).
	PeerTLS *tls.Config
	// ControlPlaneTLS, if set, is the TLS client configuration of calls to
	// https:// control planes (trusting the CA that signed their certificates).
	ControlPlaneTLS *tls.Config
	// NoMetrics turns the invocation metrics off (see metrics.go): nothing
	// is counted on the invocation path and reports carry none.
	NoMetrics bool
	// TracerProvider, if set, traces invocations and messages (see
	// internal/tracing); nil turns tracing off, at no cost.
	TracerProvider trace.TracerProvider
	// ownsTracing says ConfigFromEnv made TracerProvider: Run flushes and
	// shuts it down when it returns.
	ownsTracing bool
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.MaxConcurrency <= 0 {
		c.MaxConcurrency = 256
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = wire.DefaultMaxPayload
	}
	if c.MaxMailbox <= 0 {
		c.MaxMailbox = DefaultMaxMailbox
	}
	if c.MaxMailboxBytes <= 0 {
		c.MaxMailboxBytes = DefaultMaxMailboxBytes
	}
	if c.MaxStateBytes <= 0 {
		c.MaxStateBytes = DefaultMaxStateBytes
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxConnInflight <= 0 {
		c.MaxConnInflight = DefaultMaxConnInflight
	}
	if c.MaxConnInflightBytes <= 0 {
		c.MaxConnInflightBytes = DefaultMaxConnInflightBytes
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.OrphanTimeout <= 0 {
		c.OrphanTimeout = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot run.
func (c *Config) Validate() error {
	if c.App == "" || c.PID == "" {
		return errors.New("process runtime: app and pid are required")
	}
	if c.Verifier == nil {
		return errors.New("process runtime: a token verifier (the control plane's public key) is required")
	}
	if c.Token == "" && c.ControlPlane != "" {
		return errors.New("process runtime: with a control plane, the process's token is required")
	}
	if c.Swap != nil && c.ControlPlane != "" {
		return errors.New("process runtime: with a control plane, snapshots go through it: no swap store")
	}
	if c.RestoreKey != "" && c.Swap == nil && c.ControlPlane == "" {
		return errors.New("process runtime: restore needs a swap store or a control plane")
	}
	return nil
}

// ConfigFromEnv reads the configuration a backend passed in the environment.
func ConfigFromEnv() (Config, error) {
	c := Config{
		App:                os.Getenv(cpapi.EnvApp),
		PID:                os.Getenv(cpapi.EnvPID),
		Token:              os.Getenv(cpapi.EnvToken),
		PeerToken:          os.Getenv(cpapi.EnvPeerToken),
		ControlPlane:       os.Getenv(cpapi.EnvControlPlane),
		OtherControlPlanes: strings.FieldsFunc(os.Getenv(cpapi.EnvControlPlanes), func(r rune) bool { return r == ',' }),
		Listen:             os.Getenv(cpapi.EnvListen),
		Advertise:          os.Getenv(cpapi.EnvAdvertise),
	}
	var err error
	if v := os.Getenv(cpapi.EnvPublicKey); v != "" {
		if c.Verifier, err = token.DecodeVerifier(v); err != nil {
			return c, fmt.Errorf("%s: %w", cpapi.EnvPublicKey, err)
		}
	}
	if v := os.Getenv(cpapi.EnvGeneration); v != "" {
		if c.Generation, err = strconv.ParseUint(v, 10, 64); err != nil {
			return c, fmt.Errorf("%s: %w", cpapi.EnvGeneration, err)
		}
	}
	for _, e := range []struct {
		name  string
		parse func(string) error
	}{
		{cpapi.EnvMaxConcurrency, intVar(&c.MaxConcurrency)},
		{cpapi.EnvMaxPayload, intVar(&c.MaxPayload)},
		{cpapi.EnvMaxMailbox, intVar(&c.MaxMailbox)},
		{cpapi.EnvMaxMailboxBytes, int64Var(&c.MaxMailboxBytes)},
		{cpapi.EnvMaxState, int64Var(&c.MaxStateBytes)},
		{cpapi.EnvMaxInflight, intVar(&c.MaxInflight)},
		{cpapi.EnvMaxConnInflight, intVar(&c.MaxConnInflight)},
		{cpapi.EnvMaxConnInflightBytes, int64Var(&c.MaxConnInflightBytes)},
		{cpapi.EnvWriteTimeout, durationVar(&c.WriteTimeout)},
		{cpapi.EnvHeartbeat, durationVar(&c.Heartbeat)},
		{cpapi.EnvOrphanTimeout, durationVar(&c.OrphanTimeout)},
		{cpapi.EnvCheckpoint, durationVar(&c.CheckpointInterval)},
	} {
		if v := os.Getenv(e.name); v != "" {
			if err := e.parse(v); err != nil {
				return c, fmt.Errorf("%s: %w", e.name, err)
			}
		}
	}
	c.RestoreKey = os.Getenv(cpapi.EnvRestore)
	if v := os.Getenv(cpapi.EnvMetrics); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("%s: %w", cpapi.EnvMetrics, err)
		}
		c.NoMetrics = !on
	}
	if err := tlsFromEnv(&c); err != nil {
		return c, err
	}
	if err := tracingFromEnv(&c); err != nil {
		return c, err
	}
	if v := os.Getenv(cpapi.EnvSwap); v != "" {
		if c.ControlPlane != "" {
			return c, fmt.Errorf("%s is for a runtime without a control plane: with %s, snapshots go through the control plane", cpapi.EnvSwap, cpapi.EnvControlPlane)
		}
		if c.Swap, err = storeurl.OpenSwap(context.Background(), v, ""); err != nil {
			return c, fmt.Errorf("%s: %w", cpapi.EnvSwap, err)
		}
	}
	return c, c.Validate()
}

// tracingFromEnv makes the OTLP tracer provider the control plane asked
// for (cpapi.EnvOTLPEndpoint), if it did.
func tracingFromEnv(c *Config) error {
	tc, err := tracing.ProcessConfigFromEnv()
	if err != nil || !tc.Enabled() {
		return err
	}
	tp, err := tracing.NewProvider(tc, tracing.ServiceProcess,
		attribute.String(tracing.KeyApp, c.App),
		attribute.String(tracing.KeyPID, c.PID),
		attribute.Int64(tracing.KeyGeneration, int64(c.Generation)),
		attribute.String("service.instance.id", c.App+"/"+c.PID+"/"+strconv.FormatUint(c.Generation, 10)))
	if err != nil {
		return err
	}
	c.TracerProvider, c.ownsTracing = tp, true
	return nil
}

func intVar(p *int) func(string) error {
	return func(v string) (err error) { *p, err = strconv.Atoi(v); return err }
}

func int64Var(p *int64) func(string) error {
	return func(v string) (err error) { *p, err = strconv.ParseInt(v, 10, 64); return err }
}

func durationVar(p *time.Duration) func(string) error {
	return func(v string) (err error) { *p, err = time.ParseDuration(v); return err }
}

// Limit defaults: see Config.
const (
	DefaultMaxMailbox           = 100000
	DefaultMaxMailboxBytes      = 1 << 30
	DefaultMaxStateBytes        = 4 << 30
	DefaultMaxInflight          = 4096
	DefaultMaxConnInflight      = 1024
	DefaultMaxConnInflightBytes = 64 << 20
	DefaultWriteTimeout         = 10 * time.Second
)

// Runtime is one running process.
type Runtime struct {
	cfg      Config
	image    *Image
	log      *slog.Logger
	tracer   *tracing.Tracer // nil: tracing off
	proc     *Process
	state    *state
	mailbox  *mailbox
	triggers *triggers
	members  membership
	peers    peers

	sem      chan struct{}
	watchdog watchdog
	ln       net.Listener
	addr     string
	ready    chan struct{}
	// admitMu makes "not draining, so count it in inflight" atomic against
	// drain setting draining and then waiting for inflight.
	admitMu  sync.Mutex
	draining atomic.Bool
	inflight sync.WaitGroup
	admitted atomic.Int64 // data-plane invocations admitted and not yet run, for MaxInflight

	connsMu sync.Mutex
	conns   map[*serverConn]struct{}

	// usage, reported to the control plane
	invocations atomic.Uint64
	busyNanos   atomic.Uint64
	bytesIn     atomic.Uint64
	bytesOut    atomic.Uint64
	running     atomic.Int64
	lastActive  atomic.Int64 // unix nanos of the last data-plane activity

	// cp is how the runtime reaches the control plane: the replica that
	// owns it, and the others to try when that one stops answering.
	cp cpLink
	// http are the clients of the control plane; cert is the data
	// plane's certificate with TLS (see tls.go).
	http cpClients
	cert atomic.Pointer[tls.Certificate]
	// creds are the runtime's own tokens, renewed by heartbeat replies
	// (see credentials.go).
	creds atomic.Pointer[credentials]
	// snapSeq numbers the snapshots this generation writes (see cpapi.SnapshotKey).
	snapSeq atomic.Uint64
	// orphanPut is the control plane's latest pre-issued PUT of this
	// generation's orphan key (stores that presign URLs only), for a final
	// snapshot once no control plane answers.
	orphanPut atomic.Pointer[cpapi.SnapshotAccess]

	// mutations counts changes to durable state, so checkpoints skip idle periods.
	mutations atomic.Uint64

	metrics runtimeMetrics
	// restoredBytes is the size of the snapshot restored at start (set
	// before serving), reported at registration.
	restoredBytes int64
	// logMu orders shipments of log lines; logSent is the sequence number
	// in cfg.Logs of the first line not shipped yet (see logs.go).
	logMu   sync.Mutex
	logSent uint64
	// loggers are the SDK's loggers, by function (see Process.Logger).
	loggers sync.Map
}

// New prepares a runtime; Run starts it.
func New(cfg Config, im *Image) (*Runtime, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rt := &Runtime{
		cfg:      cfg,
		image:    im,
		log:      cfg.Logger.With("app", cfg.App, "pid", cfg.PID),
		state:    newState(cfg.MaxStateBytes),
		mailbox:  newMailbox(),
		triggers: newTriggers(),
		sem:      make(chan struct{}, cfg.MaxConcurrency),
		ready:    make(chan struct{}),
		conns:    make(map[*serverConn]struct{}),
		tracer:   tracing.New(cfg.TracerProvider),
	}
	rt.proc = &Process{rt: rt}
	rt.metrics.off = cfg.NoMetrics
	rt.members.init()
	rt.watchdog.init(rt)
	rt.peers.conns = make(map[string]*client.DataConn)
	rt.cp.init(cfg.ControlPlane)
	rt.http = newCPClients(cfg.ControlPlaneTLS)
	rt.cp.learn(cfg.OtherControlPlanes)
	rt.creds.Store(&credentials{own: cfg.Token, peer: cmp.Or(cfg.PeerToken, cfg.Token)})
	rt.lastActive.Store(time.Now().UnixNano())
	return rt, nil
}

// Process returns the handle functions receive.
func (rt *Runtime) Process() *Process { return rt.proc }

// Ready is closed once the data plane listens.
func (rt *Runtime) Ready() <-chan struct{} { return rt.ready }

// Addr is the data-plane address; valid after Ready.
func (rt *Runtime) Addr() string { return rt.addr }

// Run serves the data plane and reports to the control plane until ctx ends,
// then drains: clients are told to go away, running invocations finish
// (within DrainTimeout), and Run returns.
func (rt *Runtime) Run(ctx context.Context) error {
	if rt.cfg.ownsTracing {
		defer func() {
			if err := tracing.Shutdown(rt.cfg.TracerProvider); err != nil {
				rt.log.Warn("flush spans", "err", err)
			}
		}()
	}
	if rt.cfg.RestoreKey != "" {
		if err := rt.restore(ctx, rt.cfg.RestoreKey); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", rt.cfg.Listen)
	if err != nil {
		return fmt.Errorf("data plane listen: %w", err)
	}
	rt.addr = advertised(ln.Addr().(*net.TCPAddr), rt.cfg.Advertise)
	if rt.cfg.TLS != nil {
		// Each connection's handshake runs in its own goroutine, on its
		// first read (the hello, under the handshake deadline).
		ln = rt.listenTLS(ln)
	}
	rt.ln = ln
	close(rt.ready)
	rt.log.Info("data plane listening", "addr", rt.addr)

	// The watchdog outlives ctx: draining needs it to hand off readers.
	watchCtx, stopWatchdog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatchdog()
	go rt.watchdog.run(watchCtx)
	// The background loops also end when the control plane retires us.
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		// Invocations get a context that lasts through the drain: a
		// shutdown lets running invocations finish rather than cancel them.
		rt.acceptLoop(watchCtx)
	}()

	var reporter chan error
	if rt.cfg.ControlPlane != "" {
		reporter = make(chan error, 1)
		go func() { reporter <- rt.report(loopCtx) }()
		rt.members.setStart(func() { go rt.watchMembers(loopCtx) }) // at the first want
	}
	logsDone := make(chan struct{})
	if rt.cfg.ControlPlane != "" && rt.cfg.Logs != nil {
		go func() { defer close(logsDone); rt.shipLogs(loopCtx) }()
	} else {
		close(logsDone)
	}
	checkpointDone := make(chan struct{})
	if rt.swaps() && rt.cfg.CheckpointInterval > 0 {
		go func() { defer close(checkpointDone); rt.checkpointLoop(loopCtx) }()
	} else {
		close(checkpointDone)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-reporter:
		// The control plane told us we are gone (deleted or replaced), or
		// stayed away too long.
	}
	stopLoops()
	drained := rt.drain()
	stopWatchdog()
	ln.Close()
	<-acceptDone
	<-checkpointDone
	<-logsDone
	if errors.Is(runErr, errRetired) {
		rt.log.Info("retired by the control plane")
		return nil
	}
	orphaned := errors.Is(runErr, errOrphaned)
	if orphaned {
		rt.log.Warn("swapping out on our own", "err", runErr)
		runErr = nil
	}
	if runErr == nil && rt.swaps() && !drained {
		// Invocations still run and may change state: a snapshot now could
		// miss their changes. Leave the previous snapshot as the last word;
		// the control plane marks the process failed.
		return fmt.Errorf("swap out: invocations still running after %s; no final snapshot", rt.cfg.DrainTimeout)
	}
	if runErr == nil && rt.swaps() {
		// Swap out: everything has drained, so this snapshot is the last word.
		swapCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
		defer cancel()
		// An orphan cannot report its snapshot; a control plane that comes
		// back finds it under the generation's orphan key.
		if err := rt.saveSnapshot(swapCtx, true, !orphaned); err != nil {
			return fmt.Errorf("swap out: %w", err)
		}
	}
	return runErr
}

func advertised(a *net.TCPAddr, host string) string {
	if a.IP.IsUnspecified() {
		if host == "" {
			host = "127.0.0.1"
		}
		return net.JoinHostPort(host, strconv.Itoa(a.Port))
	}
	return a.String()
}

// drain stops new work, tells clients to go away and waits for running
// invocations. It reports whether they all finished within DrainTimeout.
func (rt *Runtime) drain() bool {
	rt.admitMu.Lock()
	rt.draining.Store(true)
	rt.admitMu.Unlock()
	for _, c := range rt.connections() {
		go c.goAway("process is shutting down") // a socket write: not under connsMu, not waited for
	}
	drained := true
	done := make(chan struct{})
	go func() { rt.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(rt.cfg.DrainTimeout):
		rt.log.Warn("drain timeout: invocations still running", "running", rt.running.Load())
		drained = false
	}
	// Clients close their side once they have every answer. Until then the
	// connections stay open and refuse new requests unrun; closing with
	// unread requests would reset the connection and lose their refusals.
	deadline := time.Now().Add(goAwayGrace)
	for time.Now().Before(deadline) {
		rt.connsMu.Lock()
		open := len(rt.conns)
		rt.connsMu.Unlock()
		if open == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for _, c := range rt.connections() {
		c.close()
	}
	rt.peers.closeAll()
	return drained
}

// connections returns the open data-plane connections.
func (rt *Runtime) connections() []*serverConn {
	rt.connsMu.Lock()
	defer rt.connsMu.Unlock()
	conns := make([]*serverConn, 0, len(rt.conns))
	for c := range rt.conns {
		conns = append(conns, c)
	}
	return conns
}

// goAwayGrace bounds how long a leaving process waits for its clients to
// close their connections after the go-away.
const goAwayGrace = 2 * time.Second

func (rt *Runtime) usage() store.Usage {
	return store.Usage{
		Invocations: rt.invocations.Load(),
		BusyNanos:   rt.busyNanos.Load(),
		BytesIn:     rt.bytesIn.Load(),
		BytesOut:    rt.bytesOut.Load(),
		// Integrated at report time: the state charges nothing per
		// invocation, only a clock read per write that changes its size.
		StateByteSeconds: rt.state.byteSeconds(),
	}
}

// idleFor is how long no invocation has run or arrived.
func (rt *Runtime) idleFor() time.Duration {
	if rt.running.Load() > 0 {
		return 0
	}
	return time.Since(time.Unix(0, rt.lastActive.Load()))
}
