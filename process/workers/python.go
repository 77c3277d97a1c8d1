package workers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/praas-dev/praas/process"
	pysdk "github.com/praas-dev/praas/sdk/python"
)

// Python is how a process runs a Python image.
type Python struct {
	// Module is the absolute path of the module that registers the
	// functions (praas.function).
	Module string
	// Interpreter is the python3 to run (default: /usr/bin/python3 if it
	// exists, else python3 from PATH).
	Interpreter string
	// Workers is the pool size (default GOMAXPROCS, at least 2).
	Workers int
	// Output, if set, receives the workers' stdout and stderr (default:
	// the process's own stdout and stderr).
	Output io.Writer
	Logger *slog.Logger
	// NoSharedMemory sends large inputs and results through the workers'
	// sockets instead of shared memory (for comparison).
	NoSharedMemory bool
}

// DefaultInterpreter is the Python a worker runs unless told otherwise.
func DefaultInterpreter() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	if p, err := exec.LookPath("python3"); err == nil {
		return p
	}
	return "python3"
}

// StartPython extracts the embedded SDK, starts a pool of Python workers
// for py.Module and returns it with a cleanup that closes the pool and
// removes the SDK copy.
func StartPython(py Python, app, pid string) (*Pool, func(), error) {
	if !filepath.IsAbs(py.Module) {
		return nil, nil, fmt.Errorf("python module %q: not an absolute path", py.Module)
	}
	sdk, err := pysdk.Extract("")
	if err != nil {
		return nil, nil, fmt.Errorf("python sdk: %w", err)
	}
	interp := py.Interpreter
	if interp == "" {
		interp = DefaultInterpreter()
	}
	env := []string{"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"}
	pythonPath := sdk
	for _, kv := range os.Environ() {
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "PYTHONPATH":
			if v != "" {
				pythonPath += string(os.PathListSeparator) + v
			}
		case "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PRAAS_WORKER_FD":
		default:
			env = append(env, kv)
		}
	}
	env = append(env, "PYTHONPATH="+pythonPath)
	pool, err := Start(Config{
		Command: []string{interp, "-m", "praas.worker", py.Module},
		Env:     env,
		Size:    py.Workers,
		App:     app,
		PID:     pid,
		Output:  py.Output,
		Logger:  py.Logger,
		NoShm:   py.NoSharedMemory,
	})
	if err != nil {
		os.RemoveAll(sdk)
		return nil, nil, err
	}
	return pool, func() { pool.Close(); os.RemoveAll(sdk) }, nil
}

// ServePython runs the process the backend started (configuration from
// the environment, as praas.ServeImage) with the functions of a Python
// module, plus those of extra not named alike (the praas binary passes its
// builtin Go functions, so one app can mix both), until ctx ends.
func ServePython(ctx context.Context, py Python, extra *process.Image) error {
	cfg, err := process.ConfigFromEnv()
	if err != nil {
		return err
	}
	// Before the workers start: they inherit the captured stdout and stderr.
	out := process.CaptureOutput(&cfg)
	rt, err := servePython(ctx, cfg, py, extra)
	out.Close(ctx, rt)
	return err
}

// servePython runs the runtime of ServePython; its pool of workers has
// ended when it returns.
func servePython(ctx context.Context, cfg process.Config, py Python, extra *process.Image) (*process.Runtime, error) {
	pool, cleanup, err := StartPython(py, cfg.App, cfg.PID)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	im := process.NewImage()
	pool.Register(im)
	if extra != nil {
		AddMissing(im, extra)
	}
	rt, err := process.New(cfg, im)
	if err != nil {
		return nil, err
	}
	return rt, rt.Run(ctx)
}

// AddMissing registers in im every function of from that im lacks, with
// its options.
func AddMissing(im, from *process.Image) {
	for _, name := range from.Functions() {
		if _, ok := im.Lookup(name); ok {
			continue
		}
		f, _ := from.Lookup(name)
		im.Register(name, f.Handler, func(g *process.Function) {
			g.Trigger, g.N, g.BorrowsInput = f.Trigger, f.N, f.BorrowsInput
		})
	}
}
