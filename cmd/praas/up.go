package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/praas-dev/praas"
	"github.com/praas-dev/praas/backend/local"
	"github.com/praas-dev/praas/builtin"
	"github.com/praas-dev/praas/controlplane"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store/storeurl"
)

// upConfig holds the flags of `praas up`.
type upConfig struct {
	listen           string
	data             string
	backend          string
	metadata         string
	swap             string
	logLevel         string
	maxConcurrency   int
	maxPayload       int
	heartbeatTimeout time.Duration
	stopTimeout      time.Duration
	idleTimeout      time.Duration
	checkpoint       time.Duration
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
	f.StringVar(&cfg.backend, "backend", "local", "where processes run: local")
	f.StringVar(&cfg.metadata, "metadata", "", "metadata store URL: bolt:///path.db or redis://host:port/db (default: embedded, under --data)")
	f.StringVar(&cfg.swap, "swap", "", "swap store URL: file:///dir or s3://bucket?endpoint=host:port (default: files under --data)")
	f.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	f.IntVar(&cfg.maxConcurrency, "max-concurrency", 256, "invocations a process runs at once; more wait")
	f.IntVar(&cfg.maxPayload, "max-payload", 64<<20, "largest invocation input or message, in bytes")
	f.DurationVar(&cfg.heartbeatTimeout, "heartbeat-timeout", 5*time.Second, "silence after which a process is marked failed")
	f.DurationVar(&cfg.stopTimeout, "stop-timeout", 60*time.Second, "how long a process may take to drain and swap out before it is killed")
	f.DurationVar(&cfg.idleTimeout, "idle-timeout", 0, "swap out a process whose data plane was idle this long (0: never)")
	f.DurationVar(&cfg.checkpoint, "checkpoint-interval", 0, "write a snapshot of every changed process this often, bounding what a crash loses (0: only at swap-out)")
	return cmd
}

func (c *cli) up(cfg upConfig) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
	if cfg.backend != "local" {
		return fmt.Errorf("--backend %q: only local is available", cfg.backend)
	}
	if cfg.maxConcurrency <= 0 || cfg.maxPayload <= 0 {
		return fmt.Errorf("--max-concurrency and --max-payload must be positive")
	}
	if cfg.idleTimeout < 0 || cfg.checkpoint < 0 {
		return fmt.Errorf("--idle-timeout and --checkpoint-interval must not be negative")
	}
	data, err := filepath.Abs(cfg.data)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return fmt.Errorf("--data: %w", err)
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

	var cp *controlplane.Server
	backend, err := local.New(local.Config{
		LogDir: filepath.Join(data, "logs"),
		OnExit: func(handle string) { cp.ProcessExited(handle) },
		Logger: log,
	})
	if err != nil {
		return err
	}
	cp, err = controlplane.New(controlplane.Config{
		Metadata:         meta,
		Swap:             swap,
		SwapURL:          swapURL,
		IdleTimeout:      cfg.idleTimeout,
		Backend:          backend,
		Logger:           log,
		HeartbeatTimeout: cfg.heartbeatTimeout,
		StopTimeout:      cfg.stopTimeout,
		MaxPayload:       int64(cfg.maxPayload),
		ProcessEnv: []string{
			cpapi.EnvMaxConcurrency + "=" + strconv.Itoa(cfg.maxConcurrency),
			cpapi.EnvMaxPayload + "=" + strconv.Itoa(cfg.maxPayload),
			cpapi.EnvCheckpoint + "=" + cfg.checkpoint.String(),
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	fmt.Fprintf(c.stdout, "praas control plane listening on http://%s (data in %s)\n", ln.Addr(), data)
	log.Info("control plane up", "listen", ln.Addr().String(), "data", data, "backend", cfg.backend)
	err = cp.Run(c.ctx, ln)
	log.Info("control plane stopped")
	return err
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
