// Command harness runs the praas benchmarks: every experiment of
// docs/benchmarks.md against a real `praas up` with real OS processes, the
// baselines in the same run, and writes the page, the plots and
// bench/results/latest.json. bench/run starts the servers it needs and runs it.
//
//	harness [--quick] [--strict] [--only 1,2,...] [--out DIR] [--page FILE]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

// experiment runs one experiment; it returns its section and measures even
// when it fails part way.
type experiment struct {
	num int
	run func(ctx context.Context, e *Env) (*Section, []Measure, error)
}

var experiments = []experiment{
	{1, expInvoke},
	{2, expLocalRemote},
	{3, expThroughput},
	{4, expMessage},
	{5, expReduce},
	{6, expSwap},
	{7, expPeers},
	{8, expAlloc},
	{9, expPython},
	{10, expKube},
	{11, expMetrics},
}

func run(ctx context.Context, args []string, log io.Writer) error {
	fs := flag.NewFlagSet("harness", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke run: fewer repetitions and sizes, under 3 minutes")
	strict := fs.Bool("strict", false, "exit with an error (after writing the page) if an experiment failed; one that reports itself not available has not failed")
	only := fs.String("only", "", "comma-separated experiment numbers to run (default: all)")
	out := fs.String("out", "", "results directory (default: bench/results, or bench/results/partial with --only)")
	page := fs.String("page", "", "page to write (default: docs/benchmarks.md, or benchmarks.md in the results directory with --only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := findRoot(wd)
	if err != nil {
		return err
	}
	var selected []int
	for _, f := range strings.Split(*only, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > len(experiments) {
			return fmt.Errorf("--only: bad experiment %q", f)
		}
		selected = append(selected, n)
	}
	// A partial run does not replace the page and results of a whole one.
	if *out == "" {
		*out = filepath.Join(root, "bench", "results")
		if len(selected) > 0 {
			*out = filepath.Join(root, "bench", "results", "partial")
		}
	}
	if *page == "" {
		*page = filepath.Join(root, "docs", "benchmarks.md")
		if len(selected) > 0 {
			*page = filepath.Join(*out, "benchmarks.md")
		}
	}
	tmp, err := os.MkdirTemp("", "praas-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	e := &Env{Quick: *quick, Root: root, Tmp: tmp, Log: log, PlotDir: filepath.Join(*out, "plots")}
	if err := os.MkdirAll(e.PlotDir, 0o755); err != nil {
		return err
	}
	defer e.Close()
	started := time.Now()
	if err := e.setup(ctx); err != nil {
		return err
	}
	rep := &Report{Quick: *quick, Started: started, Env: describeEnv(ctx, e)}
	var failed []string
	for _, x := range experiments {
		if len(selected) > 0 && !slices.Contains(selected, x.num) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		sec, ms, err := runExperiment(ctx, e, x)
		if sec == nil {
			sec = &Section{Num: x.num}
		}
		sec.Took = time.Since(t0)
		if err != nil {
			sec.Failed = err.Error()
			failed = append(failed, strconv.Itoa(x.num))
			e.logf("experiment %d failed: %v", x.num, err)
		}
		rep.Sections = append(rep.Sections, sec)
		rep.Measures = append(rep.Measures, ms...)
	}
	rep.Took = time.Since(started)
	rep.EndLoad = loadAvg()
	rep.fillMissing()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w (nothing written)", err)
	}
	if err := writeJSON(filepath.Join(*out, "latest.json"), rep.Measures); err != nil {
		return err
	}
	if err := os.WriteFile(*page, []byte(rep.markdown(relPath(filepath.Dir(*page), e.PlotDir))), 0o644); err != nil {
		return err
	}
	e.logf("wrote %s and %s in %s", *page, filepath.Join(*out, "latest.json"), rep.Took.Round(time.Second))
	rep.printTargets(log)
	if *strict && len(failed) > 0 {
		return fmt.Errorf("--strict: experiments %s failed", strings.Join(failed, ", "))
	}
	return nil
}

// runExperiment runs x, turning a panic into an error so that one broken
// experiment does not lose the others.
func runExperiment(ctx context.Context, e *Env, x experiment) (sec *Section, ms []Measure, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	e.logf("experiment %d", x.num)
	return x.run(ctx, e)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func relPath(from, to string) string {
	r, err := filepath.Rel(from, to)
	if err != nil {
		return to
	}
	return filepath.ToSlash(r)
}
