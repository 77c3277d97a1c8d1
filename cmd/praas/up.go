package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/praas-dev/praas"
	"github.com/praas-dev/praas/backend"
	kubebackend "github.com/praas-dev/praas/backend/kubernetes"
	"github.com/praas-dev/praas/backend/local"
	"github.com/praas-dev/praas/builtin"
	"github.com/praas-dev/praas/controlplane"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/tlsca"
	tokens "github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/process"
	"github.com/praas-dev/praas/store/storeurl"
)

// upConfig holds the flags of `praas up`.
type upConfig struct {
	listen          string
	data            string
	backend         string
	metadata        string
	swap            string
	logLevel        string
	maxConcurrency  int
	maxPayload      int
	maxProcesses    int
	maxMailbox      int
	maxMailboxBytes int64
	maxBackup       int
	maxBackupBytes  int64
	maxRequestBytes int64
	maxLogBytes     int64
	// limits of each process, passed in its environment (see process.Config)
	maxState             int64
	maxInflight          int
	maxConnInflight      int
	maxConnInflightBytes int64
	writeTimeout         time.Duration
	heartbeatTimeout     time.Duration
	startTimeout         time.Duration
	stopTimeout          time.Duration
	idleTimeout          time.Duration
	usageBucket          time.Duration
	usageRetention       time.Duration
	checkpoint           time.Duration
	replicaID            string
	leaseTTL             time.Duration
	url                  string
	runDir               string
	isolation            string
	isolationUIDs        string
	orphanTimeout        time.Duration
	adminKey             string
	signingKey           string
	noAuth               bool
	metrics              bool
	metricsPublic        bool
	tlsCert              string
	tlsKey               string
	tlsCA                string
	tlsCAKey             string
	tlsCertTTL           time.Duration
	// --backend kubernetes
	kubeconfig  string
	namespace   string
	praasImage  string
	processPort int
	podCPU      string
	podMemory   string
	// tracing
	otlpEndpoint     string
	traceSampleRatio float64
}

func (c *cli) upCmd() *cobra.Command {
	var cfg upConfig
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the control plane",
		Long: `Run the praas control plane with its REST API on --listen. With no flags it
needs nothing but this binary: metadata in an embedded store under --data,
snapshots as files under --data, processes as local OS processes.
SIGINT or SIGTERM shut it down gracefully: every process is stopped first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.up(cfg) },
	}
	f := cmd.Flags()
	f.StringVar(&cfg.listen, "listen", "127.0.0.1:8420", "address of the REST API")
	f.StringVar(&cfg.data, "data", "./.praas", "directory for the embedded metadata store, snapshots and process logs")
	f.StringVar(&cfg.backend, "backend", "local", "where processes run: local (OS processes on this host) or kubernetes (a pod per process; see docs/kubernetes.md)")
	f.StringVar(&cfg.kubeconfig, "kubeconfig", "", "with --backend kubernetes: kubeconfig file of the cluster (default: in-cluster config in a pod, else $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&cfg.namespace, "namespace", "", "with --backend kubernetes: namespace of the process pods (default: this pod's namespace in a cluster, else praas)")
	f.StringVar(&cfg.praasImage, "praas-image", os.Getenv("PRAAS_IMAGE"), "with --backend kubernetes: container image of this praas binary, which runs apps of the builtin image (default $PRAAS_IMAGE)")
	f.IntVar(&cfg.processPort, "process-port", 0, "with --backend kubernetes: the data-plane port of a process in its pod (default 7420)")
	f.StringVar(&cfg.podCPU, "pod-cpu", "", "with --backend kubernetes: CPU request and limit of each process pod, e.g. 250m (default: none)")
	f.StringVar(&cfg.podMemory, "pod-memory", "", "with --backend kubernetes: memory request and limit of each process pod, e.g. 256Mi (default: none)")
	f.StringVar(&cfg.metadata, "metadata", "", "metadata store URL: bolt:///path.db or redis://host:port/db (default: embedded, under --data)")
	f.StringVar(&cfg.swap, "swap", "", "swap store URL: file:///dir or s3://bucket?endpoint=host:port (default: files under --data)")
	f.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	f.IntVar(&cfg.maxConcurrency, "max-concurrency", 256, "invocations a process runs at once; more wait")
	f.IntVar(&cfg.maxPayload, "max-payload", 64<<20, "largest invocation input or message, in bytes")
	f.IntVar(&cfg.maxMailbox, "max-mailbox", process.DefaultMaxMailbox, "unread messages a process holds; more are refused with resource_exhausted")
	f.Int64Var(&cfg.maxMailboxBytes, "max-mailbox-bytes", process.DefaultMaxMailboxBytes, "bytes of unread messages a process holds; more are refused with resource_exhausted")
	f.Int64Var(&cfg.maxState, "max-state-bytes", process.DefaultMaxStateBytes, "bytes of state (keys and values) a process holds; a change past it fails with resource_exhausted")
	f.IntVar(&cfg.maxInflight, "max-inflight", process.DefaultMaxInflight, "invocations a process has taken and not finished (running or waiting for a slot); more are refused with resource_exhausted")
	f.IntVar(&cfg.maxConnInflight, "max-conn-inflight", process.DefaultMaxConnInflight, "unanswered invocations of one data-plane connection; past it the process stops reading that connection until answers are written")
	f.Int64Var(&cfg.maxConnInflightBytes, "max-conn-inflight-bytes", process.DefaultMaxConnInflightBytes, "bytes of input and output of one connection's unanswered invocations; past it the process stops reading that connection")
	f.DurationVar(&cfg.writeTimeout, "write-timeout", process.DefaultWriteTimeout, "how long a data-plane client may leave an answer unread before its connection is closed")
	f.IntVar(&cfg.maxBackup, "max-backup-queue", controlplane.DefaultMaxBackupQueue, "messages queued for a process that is not active; more are refused with 429")
	f.Int64Var(&cfg.maxBackupBytes, "max-backup-queue-bytes", controlplane.DefaultMaxBackupQueueBytes, "bytes of messages queued for a process that is not active; more are refused with 429")
	f.Int64Var(&cfg.maxRequestBytes, "max-request-bytes", 0, "payload bytes of the REST invocations and messages served at once; more are refused with 429 (default 4 × --max-payload)")
	f.Int64Var(&cfg.maxLogBytes, "max-log-bytes", controlplane.DefaultMaxLogBytes, "size at which a process's log file (--data/logs/APP/PID.log) is rotated to PID.log.1; one rotated file is kept")
	f.IntVar(&cfg.maxProcesses, "max-processes-per-app", controlplane.DefaultMaxProcessesPerApp, "processes an application may have (any status); creating more is refused with 429")
	f.DurationVar(&cfg.heartbeatTimeout, "heartbeat-timeout", 5*time.Second, "silence after which a process is marked failed")
	f.DurationVar(&cfg.startTimeout, "start-timeout", 30*time.Second, "how long a process may take to start and register before it is marked failed")
	f.DurationVar(&cfg.stopTimeout, "stop-timeout", 60*time.Second, "how long a process may take to drain and swap out before it is killed")
	f.DurationVar(&cfg.idleTimeout, "idle-timeout", 0, "swap out a process whose data plane was idle this long (0: never)")
	f.DurationVar(&cfg.usageRetention, "usage-retention", controlplane.DefaultUsageRetention, "how long usage is kept in time buckets for `praas usage --since` windows; older buckets are deleted")
	f.DurationVar(&cfg.usageBucket, "usage-bucket", controlplane.DefaultUsageBucket, "width of the usage time buckets, the granularity of usage windows (whole seconds); replicas sharing a metadata store must agree")
	f.DurationVar(&cfg.checkpoint, "checkpoint-interval", 0, "write a snapshot of every changed process this often, bounding what a crash loses (0: only at swap-out)")
	f.StringVar(&cfg.replicaID, "replica-id", "", "this control plane's name among replicas sharing a metadata store (default: kept in --data, made up on first start)")
	f.DurationVar(&cfg.leaseTTL, "lease-ttl", 10*time.Second, "how long this replica's lease on its processes lasts unless renewed; others take them over after it expired")
	f.StringVar(&cfg.url, "url", "", "URL where processes and other replicas reach this control plane (default: http://LISTEN, https:// with --tls-cert)")
	f.DurationVar(&cfg.orphanTimeout, "orphan-timeout", envDuration(cpapi.EnvOrphanTimeout, 5*time.Minute), "how long a process keeps serving while no control plane answers before it swaps itself out (default from $"+cpapi.EnvOrphanTimeout+")")
	f.StringVar(&cfg.adminKey, "admin-key", os.Getenv("PRAAS_ADMIN_KEY"), "an admin API key (praas_ID_SECRET) to accept, stored hashed (default $PRAAS_ADMIN_KEY; without one, the first start makes one up and shows it once)")
	f.BoolVar(&cfg.metrics, "metrics", true, "processes count their invocations for GET /metrics (false: they count nothing, and /metrics has only the control plane's own series)")
	f.BoolVar(&cfg.metricsPublic, "metrics-public", false, "serve GET /metrics without an admin key, for a Prometheus on a trusted network")
	f.BoolVar(&cfg.noAuth, "no-auth", false, "serve the REST API without authentication: anyone who reaches it is an admin (trusted networks and tests only)")
	f.StringVar(&cfg.signingKey, "signing-key", "", "file of the Ed25519 key that signs process credentials and data-plane tokens, PEM or raw; made (mode 0600) on first start if absent. Replicas sharing a metadata store must share it (default: --data/signing.key)")
	f.StringVar(&cfg.tlsCert, "tls-cert", "", "PEM certificate (chain) of the REST and internal API: with --tls-key, both planes use TLS (see docs/security.md)")
	f.StringVar(&cfg.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&cfg.tlsCA, "tls-ca", "", "PEM file of the CA that signed --tls-cert (and the other replicas' certificates): processes and replicas trust it (default: the certificates of --tls-cert)")
	f.StringVar(&cfg.tlsCAKey, "tls-ca-key", "", "PEM file of the data-plane CA's private key and certificate, which issue each process's data-plane certificate; made (mode 0600) on first start if absent. Replicas must share it (default: --data/tls-ca.pem)")
	f.DurationVar(&cfg.tlsCertTTL, "tls-cert-ttl", controlplane.DefaultProcessCertTTL, "how long a process's data-plane certificate is valid")
	f.StringVar(&cfg.otlpEndpoint, "otlp-endpoint", "", "export OpenTelemetry traces of the control plane and its processes over OTLP/HTTP to this URL (http://collector:4318; a URL without a path gets /v1/traces); default $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else $OTEL_EXPORTER_OTLP_ENDPOINT, else no tracing")
	f.Float64Var(&cfg.traceSampleRatio, "trace-sample-ratio", 1, "with an OTLP endpoint: the fraction of traces started here that are sampled, 0 to 1 (traces a caller started follow the caller's decision)")
	f.StringVar(&cfg.runDir, "run-dir", "", "where the local backend records the processes it runs; replicas on one host share it (default: --data/run)")
	f.StringVar(&cfg.isolation, "isolation", "auto", "how processes of different apps are kept apart: namespaces (a uid per app, in bubblewrap), user (a uid per app), none, or auto (the strongest that works here); see docs/security.md")
	f.StringVar(&cfg.isolationUIDs, "isolation-uids", fmt.Sprintf("%d-%d", local.DefaultFirstUID, local.DefaultFirstUID+local.DefaultUIDs-1), "the uids (and gids) apps get with --isolation user or namespaces, one per app; installations on one host that do not share --run-dir need ranges that do not overlap")
	return cmd
}

func (c *cli) up(cfg upConfig) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
	if cfg.backend != "local" && cfg.backend != "kubernetes" {
		return fmt.Errorf("--backend %q: local or kubernetes", cfg.backend)
	}
	for _, l := range []struct {
		flag  string
		value int64
	}{
		{"max-concurrency", int64(cfg.maxConcurrency)}, {"max-payload", int64(cfg.maxPayload)},
		{"max-processes-per-app", int64(cfg.maxProcesses)}, {"max-mailbox", int64(cfg.maxMailbox)},
		{"max-mailbox-bytes", cfg.maxMailboxBytes}, {"max-backup-queue", int64(cfg.maxBackup)},
		{"max-backup-queue-bytes", cfg.maxBackupBytes}, {"max-state-bytes", cfg.maxState},
		{"max-inflight", int64(cfg.maxInflight)}, {"max-conn-inflight", int64(cfg.maxConnInflight)},
		{"max-conn-inflight-bytes", cfg.maxConnInflightBytes}, {"write-timeout", int64(cfg.writeTimeout)},
		{"max-log-bytes", cfg.maxLogBytes},
	} {
		if l.value <= 0 {
			return fmt.Errorf("--%s must be positive", l.flag)
		}
	}
	if cfg.orphanTimeout <= 0 {
		return fmt.Errorf("--orphan-timeout must be positive")
	}
	if cfg.usageBucket <= 0 || cfg.usageRetention <= 0 {
		return fmt.Errorf("--usage-bucket and --usage-retention must be positive")
	}
	if cfg.idleTimeout < 0 || cfg.checkpoint < 0 {
		return fmt.Errorf("--idle-timeout and --checkpoint-interval must not be negative")
	}
	data, err := filepath.Abs(cfg.data)
	if err != nil {
		return err
	}
	// The data directory holds the metadata, snapshots and keys: nobody
	// else, processes included, may read it.
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	if err := os.Chmod(data, 0o700); err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	tlsCfg, err := loadTLS(cfg, data)
	if err != nil {
		return err
	}
	meta, err := storeurl.OpenMetadata(c.ctx, cfg.metadata, data)
	if err != nil {
		return fmt.Errorf("metadata store: %w", err)
	}
	defer meta.Close()
	swapURL := cfg.swap
	if swapURL == "" || swapURL == "file://" {
		swapURL = "file://" + filepath.Join(data, "swap")
	}
	swap, err := storeurl.OpenSwap(c.ctx, swapURL, data)
	if err != nil {
		return fmt.Errorf("swap store: %w", err)
	}
	defer swap.Close()

	var be backend.Backend
	isolationDesc := ""
	if cfg.backend == "kubernetes" {
		kb, err := c.kubeBackend(cfg, log)
		if err != nil {
			return err
		}
		defer kb.Close()
		be, isolationDesc = kb, "a pod per process (Kubernetes)"
		if !strings.HasPrefix(swapURL, "s3://") {
			log.Warn("KUBERNETES: the swap store is not S3: snapshots are local to this replica, so other replicas cannot restore its processes and a lost volume loses their state; use --swap s3://...", "swap", swapURL)
		}
		if cfg.url == "" {
			log.Warn("KUBERNETES: no --url: process pods reach this control plane at the --listen address, which must then be reachable from them", "listen", cfg.listen)
		}
	} else {
		runDir := cfg.runDir
		if runDir == "" {
			runDir = filepath.Join(data, "run")
		}
		isolation, err := local.ParseIsolation(cfg.isolation)
		if err != nil {
			return fmt.Errorf("--isolation: %w", err)
		}
		firstUID, uids, err := local.ParseUIDRange(cfg.isolationUIDs)
		if err != nil {
			return fmt.Errorf("--isolation-uids: %w", err)
		}
		lb, err := local.New(local.Config{
			RunDir:    runDir,
			LogDir:    filepath.Join(data, "logs"),
			Logger:    log,
			Isolation: isolation,
			FirstUID:  firstUID,
			UIDs:      uids,
		})
		if err != nil {
			return err
		}
		be, isolationDesc = lb, lb.Isolation()
	}
	replicaID := cfg.replicaID
	if replicaID == "" {
		if replicaID, err = persistentReplicaID(data); err != nil {
			return err
		}
	}
	signingKeyPath := cfg.signingKey
	if signingKeyPath == "" {
		signingKeyPath = filepath.Join(data, "signing.key")
	}
	signingKey, err := tokens.LoadOrCreateKey(signingKeyPath)
	if err != nil {
		return fmt.Errorf("--signing-key: %w", err)
	}
	traceCfg, tp, err := upTracing(cfg, replicaID)
	if err != nil {
		return err
	}
	if tp != nil {
		defer func() {
			if err := tracing.Shutdown(tp); err != nil {
				log.Warn("flush spans", "err", err)
			}
		}()
		log.Info("tracing on", "otlp", traceCfg.Endpoint, "sample_ratio", traceCfg.SampleRatio)
	}
	var newAdminKey string
	if !cfg.noAuth {
		if newAdminKey, err = controlplane.EnsureAdminKey(c.ctx, meta, cfg.adminKey); err != nil {
			return fmt.Errorf("admin key: %w", err)
		}
	}
	cp, err := controlplane.New(controlplane.Config{
		TLS:                 tlsCfg,
		NoAuth:              cfg.noAuth,
		MetricsPublic:       cfg.metricsPublic,
		SigningKey:          signingKey,
		ReplicaID:           replicaID,
		LeaseTTL:            cfg.leaseTTL,
		URL:                 cfg.url,
		Metadata:            meta,
		Swap:                swap,
		IdleTimeout:         cfg.idleTimeout,
		UsageBucket:         cfg.usageBucket,
		UsageRetention:      cfg.usageRetention,
		Backend:             be,
		Logger:              log,
		HeartbeatTimeout:    cfg.heartbeatTimeout,
		StartTimeout:        cfg.startTimeout,
		StopTimeout:         cfg.stopTimeout,
		MaxPayload:          int64(cfg.maxPayload),
		MaxProcesses:        cfg.maxProcesses,
		MaxBackupQueue:      cfg.maxBackup,
		MaxBackupQueueBytes: cfg.maxBackupBytes,
		MaxRequestBytes:     cfg.maxRequestBytes,
		LogDir:              filepath.Join(data, "logs"),
		MaxLogBytes:         cfg.maxLogBytes,
		TracerProvider:      tp,
		ProcessEnv: append([]string{
			cpapi.EnvMaxConcurrency + "=" + strconv.Itoa(cfg.maxConcurrency),
			cpapi.EnvMaxPayload + "=" + strconv.Itoa(cfg.maxPayload),
			cpapi.EnvMaxMailbox + "=" + strconv.Itoa(cfg.maxMailbox),
			cpapi.EnvMaxMailboxBytes + "=" + strconv.FormatInt(cfg.maxMailboxBytes, 10),
			cpapi.EnvMaxState + "=" + strconv.FormatInt(cfg.maxState, 10),
			cpapi.EnvMaxInflight + "=" + strconv.Itoa(cfg.maxInflight),
			cpapi.EnvMaxConnInflight + "=" + strconv.Itoa(cfg.maxConnInflight),
			cpapi.EnvMaxConnInflightBytes + "=" + strconv.FormatInt(cfg.maxConnInflightBytes, 10),
			cpapi.EnvWriteTimeout + "=" + cfg.writeTimeout.String(),
			cpapi.EnvCheckpoint + "=" + cfg.checkpoint.String(),
			cpapi.EnvOrphanTimeout + "=" + cfg.orphanTimeout.String(),
			cpapi.EnvMetrics + "=" + strconv.FormatBool(cfg.metrics),
		}, traceCfg.ProcessEnv()...),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	fmt.Fprintf(c.stdout, "praas control plane listening on %s://%s (data in %s)\n", scheme, ln.Addr(), data)
	if newAdminKey != "" {
		c.showAdminKey(log, scheme+"://"+ln.Addr().String(), newAdminKey)
	}
	// On stderr: stdout's lines (address, first admin key) are read by scripts.
	fmt.Fprintf(c.stderr, "process isolation: %s\n", isolationDesc)
	if !isLoopback(ln.Addr()) {
		if cfg.noAuth {
			log.Warn("SECURITY: the REST API listens on a non-loopback address without authentication: anyone who reaches it controls every app", "listen", ln.Addr().String())
		}
		if tlsCfg == nil {
			log.Warn("SECURITY: the REST API listens on a non-loopback address without TLS: keys and data cross the network in the clear", "listen", ln.Addr().String())
		}
	}
	log.Info("control plane up", "listen", ln.Addr().String(), "data", data, "backend", cfg.backend, "replica", replicaID)
	err = cp.Run(c.ctx, ln)
	log.Info("control plane stopped")
	return err
}

// upTracing reads the tracing flags (or the standard OpenTelemetry
// environment) and returns the configuration and the control plane's
// tracer provider; the provider is nil when tracing is off.
func upTracing(cfg upConfig, replicaID string) (tracing.Config, trace.TracerProvider, error) {
	tc := tracing.Config{Endpoint: tracing.TracesURL(cfg.otlpEndpoint), SampleRatio: cfg.traceSampleRatio}
	if tc.Endpoint == "" {
		tc.Endpoint = tracing.EndpointFromEnv()
	}
	if err := tc.Validate(); err != nil {
		return tc, nil, fmt.Errorf("--otlp-endpoint, --trace-sample-ratio: %w", err)
	}
	if !tc.Enabled() {
		return tc, nil, nil
	}
	tp, err := tracing.NewProvider(tc, tracing.ServiceControlPlane, attribute.String("service.instance.id", replicaID))
	if err != nil {
		return tc, nil, err
	}
	return tc, tp, nil
}

// kubeBackend opens the Kubernetes backend of `praas up --backend kubernetes`.
func (c *cli) kubeBackend(cfg upConfig, log *slog.Logger) (*kubebackend.Backend, error) {
	var res backend.Resources
	if cfg.podCPU != "" {
		q, err := resource.ParseQuantity(cfg.podCPU)
		if err != nil || q.Sign() <= 0 {
			return nil, fmt.Errorf("--pod-cpu %q: a positive quantity such as 250m", cfg.podCPU)
		}
		res.MilliCPU = q.MilliValue()
	}
	if cfg.podMemory != "" {
		q, err := resource.ParseQuantity(cfg.podMemory)
		if err != nil || q.Sign() <= 0 {
			return nil, fmt.Errorf("--pod-memory %q: a positive quantity such as 256Mi", cfg.podMemory)
		}
		res.MemoryBytes = q.Value()
	}
	rc, err := kubebackend.RESTConfig(cfg.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ns := cfg.namespace
	if ns == "" {
		ns = "praas"
		if own, ok := kubebackend.InClusterNamespace(); ok {
			ns = own
		}
	}
	ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
	defer cancel()
	if cfg.praasImage == "" {
		// In a pod of the Deployment: the image this very pod runs.
		if self := os.Getenv("POD_NAME"); self != "" {
			if pod, err := client.CoreV1().Pods(ns).Get(ctx, self, metav1.GetOptions{}); err == nil && len(pod.Spec.Containers) > 0 {
				cfg.praasImage = pod.Spec.Containers[0].Image
			}
		}
	}
	if cfg.praasImage == "" {
		log.Warn("KUBERNETES: no --praas-image: apps of the builtin image cannot run; give the image of this praas binary")
	}
	b, err := kubebackend.New(ctx, kubebackend.Config{
		Client:           client,
		Namespace:        ns,
		BuiltinImage:     cfg.praasImage,
		Port:             cfg.processPort,
		DefaultResources: res,
		Labels:           map[string]string{"app.kubernetes.io/part-of": "praas", "app.kubernetes.io/component": "process"},
		Logger:           log,
	})
	if err != nil {
		return nil, err
	}
	log.Info("kubernetes backend", "api-server", rc.Host, "namespace", ns, "praas-image", cfg.praasImage)
	return b, nil
}

// runProcessCmd is the hidden entry the local backend starts for processes
// of the builtin image.
func (c *cli) runProcessCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "run-process",
		Short:  "Run a process of the builtin image (started by the control plane)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			return praas.ServeImage(c.ctx, builtin.Image())
		},
	}
}

// persistentReplicaID returns the replica id kept in the data directory,
// making one up on first start: a control plane that restarts over the same
// data takes its processes back at once instead of after its lease expired.
func persistentReplicaID(data string) (string, error) {
	path := filepath.Join(data, "replica-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := "cp-" + hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("--data: keep the replica id: %w", err)
	}
	return id, nil
}

// envDuration reads a duration default from the environment.
func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// showAdminKey shows the admin key made on the first start, once, and keeps
// it in the CLI's config file for this endpoint so the CLI picks it up.
func (c *cli) showAdminKey(log *slog.Logger, url, key string) {
	path, err := saveToken(url, key)
	if err != nil {
		log.Warn("could not keep the admin key for the CLI", "err", err)
		path = "nowhere (set PRAAS_TOKEN)"
	}
	fmt.Fprintf(c.stdout, "admin key, shown only now (kept for the CLI in %s):\n%s\n", path, key)
}

// isLoopback reports whether a listener is reachable from this host only.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// loadTLS reads the TLS flags of `praas up`: nil if TLS is off.
func loadTLS(cfg upConfig, data string) (*controlplane.TLSConfig, error) {
	if cfg.tlsCert == "" && cfg.tlsKey == "" {
		if cfg.tlsCA != "" || cfg.tlsCAKey != "" {
			return nil, fmt.Errorf("--tls-ca and --tls-ca-key need --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if cfg.tlsCert == "" || cfg.tlsKey == "" {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if cfg.tlsCertTTL <= 0 {
		return nil, fmt.Errorf("--tls-cert-ttl must be positive")
	}
	if strings.HasPrefix(cfg.url, "http://") {
		return nil, fmt.Errorf("--url %s: with --tls-cert the control plane serves https://", cfg.url)
	}
	cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
	}
	caFile := cmp.Or(cfg.tlsCA, cfg.tlsCert)
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	if _, err := tlsca.Pool(caPEM); err != nil {
		return nil, fmt.Errorf("--tls-ca %s: %w", caFile, err)
	}
	caKeyPath := cmp.Or(cfg.tlsCAKey, filepath.Join(data, "tls-ca.pem"))
	dataCA, err := tlsca.LoadOrCreate(caKeyPath)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca-key: %w", err)
	}
	return &controlplane.TLSConfig{Certificate: cert, CAPEM: caPEM, DataCA: dataCA, CertTTL: cfg.tlsCertTTL}, nil
}
