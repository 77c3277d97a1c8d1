// Command driver runs the parameter-server reduction of examples/reduction
// against a praas control plane: it creates the app with the reduction
// image, one server process and the worker processes, then runs the rounds:
// in each it invokes train on every worker over the data plane, waits until
// the server's model reflects the round, and finally prints the model's
// checksum and the timings.
//
//	go build -o /tmp/reduction ./examples/reduction
//	go run ./examples/reduction/driver -image /tmp/reduction -workers 4 -rounds 10
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "driver:", err)
		}
		os.Exit(1)
	}
}

type options struct {
	endpoint string
	app      string
	image    string
	server   string
	workers  int
	rounds   int
	timeout  time.Duration
	reset    bool
	cleanup  bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("driver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := os.Getenv("PRAAS_ENDPOINT")
	if endpoint == "" {
		endpoint = client.DefaultEndpoint
	}
	fs.StringVar(&o.endpoint, "endpoint", endpoint, "control plane URL (default $PRAAS_ENDPOINT)")
	fs.StringVar(&o.app, "app", "reduction", "application to create")
	fs.StringVar(&o.image, "image", "", "path of the built reduction image (required)")
	fs.StringVar(&o.server, "server", "ps", "pid of the parameter-server process")
	fs.IntVar(&o.workers, "workers", 4, "worker processes; must equal the image's REDUCTION_WORKERS")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds to run")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	fs.BoolVar(&o.reset, "reset", false, "delete an existing app of the same name first")
	fs.BoolVar(&o.cleanup, "cleanup", false, "delete the app at the end")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.image == "" {
		return o, errors.New("-image is required: build the image with go build ./examples/reduction")
	}
	abs, err := filepath.Abs(o.image)
	if err != nil {
		return o, err
	}
	o.image = abs
	if o.workers < 1 || o.rounds < 1 {
		return o, errors.New("-workers and -rounds must be positive")
	}
	return o, nil
}

// model is what the server's model function answers.
type model struct {
	Rounds    int       `json:"rounds"`
	LastRound uint64    `json:"last_round"`
	Model     []float64 `json:"model"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c := client.New(o.endpoint)
	defer c.Close()

	start := time.Now()
	if err := setup(ctx, c, o); err != nil {
		return err
	}
	setupTime := time.Since(start)
	fmt.Fprintf(stdout, "app %s: server %s, %d workers, ready in %s\n", o.app, o.server, o.workers, setupTime.Round(time.Millisecond))

	var (
		m     model
		total time.Duration
		worst time.Duration
	)
	for r := 1; r <= o.rounds; r++ {
		t0 := time.Now()
		if err := trainRound(ctx, c, o, r); err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		if m, err = waitModel(ctx, c, o, r); err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		d := time.Since(t0)
		total += d
		worst = max(worst, d)
		fmt.Fprintf(stdout, "round %d: %s\n", r, d.Round(time.Microsecond))
	}
	fmt.Fprintf(stdout, "rounds: %d, mean %s, slowest %s, total %s\n", o.rounds,
		(total / time.Duration(o.rounds)).Round(time.Microsecond), worst.Round(time.Microsecond), total.Round(time.Microsecond))
	fmt.Fprintf(stdout, "model: %d values, sum %g, checksum %016x\n", len(m.Model), sum(m.Model), checksum(m.Model))

	if o.cleanup {
		if err := c.DeleteApp(ctx, o.app); err != nil {
			return fmt.Errorf("delete app: %w", err)
		}
	} else {
		fmt.Fprintf(stdout, "inspect it with: praas invoke %s model --pid %s\n", o.app, o.server)
	}
	return nil
}

func workerPID(i int) string { return "w" + strconv.Itoa(i) }

// setup creates the app and its processes and checks that the image was
// started for as many workers as we run.
func setup(ctx context.Context, c *client.Client, o options) error {
	if o.reset {
		if err := c.DeleteApp(ctx, o.app); err != nil && !errors.Is(err, errs.ErrNotFound) {
			return fmt.Errorf("delete app %s: %w", o.app, err)
		}
	}
	if _, err := c.CreateApp(ctx, o.app, o.image); err != nil {
		if errors.Is(err, errs.ErrAlreadyExists) {
			return fmt.Errorf("app %s exists: use -reset to replace it or -app to pick another name", o.app)
		}
		return fmt.Errorf("create app: %w", err)
	}
	pids := []string{o.server}
	for i := 1; i <= o.workers; i++ {
		pids = append(pids, workerPID(i))
	}
	if err := forEach(pids, func(pid string) error {
		_, err := c.CreateProcess(ctx, o.app, pid)
		return err
	}); err != nil {
		return fmt.Errorf("create processes: %w", err)
	}
	out, err := c.Invoke(ctx, o.app, o.server, "config", nil)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var cfg struct {
		Workers int `json:"workers"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if cfg.Workers != o.workers {
		return fmt.Errorf("the image runs with REDUCTION_WORKERS=%d but -workers is %d: set the variable where the control plane starts", cfg.Workers, o.workers)
	}
	return nil
}

// trainRound invokes train on every worker at once, over the data plane.
func trainRound(ctx context.Context, c *client.Client, o options, round int) error {
	var pids []string
	for i := 1; i <= o.workers; i++ {
		pids = append(pids, workerPID(i))
	}
	input := []byte(strconv.Itoa(round) + " " + o.server)
	return forEach(pids, func(pid string) error {
		if _, err := c.Invoke(ctx, o.app, pid, "train", input); err != nil {
			return fmt.Errorf("train on %s: %w", pid, err)
		}
		return nil
	})
}

// waitModel polls the server until its model includes round.
func waitModel(ctx context.Context, c *client.Client, o options, round int) (model, error) {
	wait := 100 * time.Microsecond
	for {
		out, err := c.Invoke(ctx, o.app, o.server, "model", nil)
		if err != nil {
			return model{}, fmt.Errorf("model: %w", err)
		}
		var m model
		if err := json.Unmarshal(out, &m); err != nil {
			return model{}, fmt.Errorf("model: %w", err)
		}
		if m.Rounds >= round {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("the model has %d of %d rounds: %w", m.Rounds, round, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

func forEach(items []string, fn func(string) error) error {
	errc := make(chan error, len(items))
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- fn(it)
		}()
	}
	wg.Wait()
	close(errc)
	var all []error
	for err := range errc {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func sum(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s
}

// checksum is FNV-1a over the model's values as little-endian float64.
func checksum(v []float64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, x := range v {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(x))
		h.Write(b[:])
	}
	return h.Sum64()
}
