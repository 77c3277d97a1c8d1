package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Report is everything a run found.
type Report struct {
	Quick    bool
	Started  time.Time
	Took     time.Duration
	Env      []string // lines describing the machine and versions
	EndLoad  string
	Sections []*Section
	Measures []Measure
}

// target is one of the targets, checked against a named measure.
type target struct {
	measure string
	what    string
	field   string // "ratio" or "median"
	le      bool   // the value must be <= limit (else >= limit)
	limit   float64
	unit    string
}

// targets lists the named measures and what they must reach.
var targets = []target{
	{"dataplane_invoke_1KiB_vs_tcp", "data-plane invoke, 1 KiB, vs TCP echo", "ratio", true, 1.10, "us"},
	{"dataplane_invoke_1MiB_vs_tcp", "data-plane invoke, 1 MiB, vs TCP echo", "ratio", true, 1.03, "us"},
	{"dataplane_invoke_16MiB_vs_tcp", "data-plane invoke, 16 MiB, vs TCP echo", "ratio", true, 1.03, "us"},
	{"controlplane_invoke_1KiB_vs_http", "control-plane invoke, 1 KiB, vs net/http echo", "ratio", true, 2, "us"},
	{"dataplane_invoke_1KiB_vs_controlplane", "data plane vs control plane, 1 KiB (≥ 3× faster)", "ratio", true, 1.0 / 3, "us"},
	{"local_invoke", "local invoke, median µs", "median", true, 5, "us"},
	{"remote_invoke_1KiB_vs_dataplane", "remote (process-to-process) invoke, 1 KiB, vs data-plane invoke", "ratio", true, 1.10, "us"},
	{"throughput_128_inflight_vs_tcp", "throughput, 128 in flight, vs pipelined TCP echo (ours / theirs)", "ratio", false, 0.5, "ops/s"},
	{"message_1KiB_vs_redis", "message A→B, 1 KiB, vs Redis SET+GET", "ratio", true, 0.5, "us"},
	{"message_1KiB_vs_s3", "message A→B, 1 KiB, vs S3 PUT+GET", "ratio", true, 0.1, "us"},
	{"reduction_small_vs_redis", "reduction, 1 KiB input, vs state in Redis (≥ 3× faster)", "ratio", true, 1.0 / 3, "us"},
	{"reduction_small_vs_s3", "reduction, 1 KiB input, vs state in S3 (≥ 20× faster)", "ratio", true, 1.0 / 20, "us"},
	{"swapout_100MiB_vs_raw", "swap-out of 100 MiB to the file store vs dd conv=fsync", "ratio", true, 1.25, "ms"},
	{"swapin_100MiB_vs_raw", "swap-in of 100 MiB from the file store vs dd read", "ratio", true, 1.25, "ms"},
	{"cold_start", "process create → first result, median ms", "median", true, 30, "ms"},
	{"python_invoke_1KiB_vs_go", "Python no-op invoke, 1 KiB, vs the Go one (the worker hop)", "ratio", true, 1.3, "us"},
	{"dataplane_invoke_1KiB_metrics_on_vs_off", "data-plane invoke, 1 KiB, process metrics on vs off", "ratio", true, 1.02, "us"},
	{"python_invoke_1MiB_vs_go", "Python no-op invoke, 1 MiB, vs the Go one (the worker hop)", "ratio", true, 1.2, "us"},
}

// fillMissing adds an unavailable measure for every named one a run lacks.
func (r *Report) fillMissing() {
	have := map[string]bool{}
	for _, m := range r.Measures {
		have[m.Name] = true
	}
	for _, t := range targets {
		if !have[t.measure] {
			why := "not measured in this run"
			for _, s := range r.Sections {
				if s.Failed != "" && sectionOf(t.measure) == s.Num {
					why = "experiment failed: " + firstLine(s.Failed)
				}
			}
			r.Measures = append(r.Measures, unavailable(t.measure, t.unit, why))
		}
	}
}

// sectionOf maps a named measure to its experiment.
func sectionOf(name string) int {
	switch {
	case strings.HasPrefix(name, "dataplane_invoke_1KiB_metrics"):
		return 11
	case strings.HasPrefix(name, "dataplane_invoke"), strings.HasPrefix(name, "controlplane_invoke"):
		return 1
	case strings.HasPrefix(name, "local_invoke"), strings.HasPrefix(name, "remote_invoke"):
		return 2
	case strings.HasPrefix(name, "throughput"):
		return 3
	case strings.HasPrefix(name, "message"):
		return 4
	case strings.HasPrefix(name, "reduction"):
		return 5
	case strings.HasPrefix(name, "swap"):
		return 6
	case strings.HasPrefix(name, "cold_start"):
		return 8
	}
	return 0
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func (r *Report) find(name string) (Measure, bool) {
	for _, m := range r.Measures {
		if m.Name == name {
			return m, true
		}
	}
	return Measure{}, false
}

// check evaluates a target: the value shown, and "met", "missed" or "n/a".
func (r *Report) check(t target) (string, string) {
	m, ok := r.find(t.measure)
	if !ok || m.Unavailable != "" {
		why := "not measured"
		if ok {
			why = m.Unavailable
		}
		return "not available: " + why, "n/a"
	}
	v := m.Ratio
	shown := ""
	if t.field == "median" {
		v = m.Median
	}
	if v == nil {
		return "–", "n/a"
	}
	if t.field == "median" {
		shown = fmtVal(*v) + " " + unitLabel(m.Unit)
	} else {
		shown = fmtRatio(*v)
	}
	ok = *v >= t.limit
	if t.le {
		ok = *v <= t.limit
	}
	if ok {
		return shown, "met"
	}
	return shown, "missed"
}

func (t target) limitText() string {
	op := "≥"
	if t.le {
		op = "≤"
	}
	if t.field == "median" {
		return fmt.Sprintf("%s %s %s", op, fmtVal(t.limit), unitLabel(t.unit))
	}
	return fmt.Sprintf("%s %s", op, fmtRatio(t.limit))
}

func unitLabel(u string) string {
	if u == "us" {
		return "µs"
	}
	return u
}

func (r *Report) printTargets(w io.Writer) {
	fmt.Fprintln(w, "\ntargets:")
	for _, t := range targets {
		v, st := r.check(t)
		fmt.Fprintf(w, "  %-6s %-40s %-14s (target %s)\n", st, t.measure, v, t.limitText())
	}
}

// describeEnv lists the machine and the versions used.
func describeEnv(ctx context.Context, e *Env) []string {
	var out []string
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				out = append(out, "CPU: "+strings.TrimSpace(v)+fmt.Sprintf(", %d cores", runtime.NumCPU()))
				break
			}
		}
		f.Close()
	}
	if mem := memInfo()["MemTotal"]; mem > 0 {
		out = append(out, fmt.Sprintf("memory: %.1f GiB", float64(mem)/(1<<30)))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		out = append(out, "Linux "+strings.TrimSpace(string(b)))
	}
	out = append(out, "Go: "+runtime.Version())
	if la := loadAvg(); la != "" {
		out = append(out, "load average (1, 5, 15 min) when the run started: "+la+" — other work on the machine adds noise")
	}
	if rev, err := exec.CommandContext(ctx, "git", "-C", e.Root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		s := "praas commit: " + strings.TrimSpace(string(rev))
		if st, err := exec.CommandContext(ctx, "git", "-C", e.Root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			s += " (with uncommitted changes)"
		}
		out = append(out, s)
	}
	if e.Redis != nil {
		if info, err := e.Redis.Info(ctx, "server").Result(); err == nil {
			for _, l := range strings.Split(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
					out = append(out, "Redis: "+v+" (persistence off for the runs: appendonly no)")
				}
			}
		}
	} else {
		out = append(out, "Redis: not available: "+e.RedisErr.Error())
	}
	if e.S3 != nil {
		out = append(out, "S3: versitygw (posix backend) started by scripts/test-servers.sh, on loopback")
	} else {
		out = append(out, "S3: not available: "+e.S3Err.Error())
	}
	return out
}

// memInfo reads /proc/meminfo in bytes.
func memInfo() map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var k string
		var v int64
		line := strings.Replace(sc.Text(), ":", " ", 1)
		if n, _ := fmt.Sscanf(line, "%s %d", &k, &v); n == 2 {
			out[k] = v << 10
		}
	}
	return out
}

func (r *Report) markdown(plotDir string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Benchmarks\n\n")
	p("This page is written by `bench/run` (the harness in `bench/cmd/harness`); do not edit it by hand.\n")
	p("It measures praas the way it runs: a real `praas up` control plane (built from this tree, ")
	p("data in a temporary directory, listening on loopback) starting real OS processes with the local backend; ")
	p("clients use the Go client (`client`). Baselines run in the same run, on the same machine, interleaved with praas where practical.\n\n")
	p("```\nbench/run            # full run: every experiment, at least 100 repetitions per measure (under 30 minutes on 2 cores)\n")
	p("bench/run --quick    # smoke run: fewer repetitions and sizes, under 3 minutes\nbench/run --only 1,4 # some experiments, written to bench/results/partial/\n```\n\n")
	p("`bench/run` starts Redis and the S3-compatible server (`scripts/test-servers.sh`) and the test Kubernetes API server of experiment 10 ")
	p("(`scripts/kube-test-apiserver.sh`), installs the npm packages of experiment 7 ")
	p("into `bench/peers/node_modules`, runs the harness and stops the servers. Besides this page it writes ")
	p("`bench/results/latest.json` and one plot per experiment in `bench/results/plots/`.\n\n")
	mode := "full"
	if r.Quick {
		mode = "**quick** (smoke run: fewer repetitions, wider confidence intervals; do not quote these numbers)"
	}
	p("## Last run\n\n")
	p("- date: %s, mode: %s, took %s\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"), mode, r.Took.Round(time.Second))
	for _, l := range r.Env {
		p("- %s\n", l)
	}
	if r.EndLoad != "" {
		p("- load average when it ended: %s\n", r.EndLoad)
	}
	p("\n## Targets\n\n")
	p("| target | measure | result | goal | status |\n|---|---|---|---|---|\n")
	for _, t := range targets {
		v, st := r.check(t)
		icon := map[string]string{"met": "met", "missed": "**missed**", "n/a": "not available"}[st]
		p("| %s | `%s` | %s | %s | %s |\n", t.what, t.measure, v, t.limitText(), icon)
	}
	p("\nRatios are ours / theirs: below 1 is faster for latencies and times; for throughput, above 1 is more.\n\n")
	p("## Method\n\n")
	p("- Every measure reports the **median**, the **99th percentile** (nearest rank) and the **99%% confidence interval of the median** ")
	p("by the order-statistic (binomial) method, which assumes nothing about the distribution: for n samples it is ")
	p("[x(j), x(n+1−j)] with the largest j such that P(j ≤ B ≤ n−j) ≥ 0.99 for B ~ Binomial(n, ½). ")
	p("With 100 samples that is [x(37), x(64)]. Ratios are ratios of medians.\n")
	p("- A full run takes at least 100 repetitions per measure after unmeasured warm-up rounds, except where a section says otherwise ")
	p("(large swap sizes, whose repetitions are limited by time). A quick run takes fewer; its intervals are wider and may be missing (n < 8).\n")
	p("- Latency experiments interleave praas and its baselines: each repetition runs every variant once, starting at a different one each time.\n")
	p("- Times are taken where the operation starts: by the harness for client calls, and inside the process (by a function of the ")
	p("benchmark image, `bench/image`) for what a function does, such as a remote invoke, a message or a Redis round trip.\n")
	p("- Everything runs on one machine over loopback; absolute numbers depend on it (see Last run), ratios much less.\n\n")
	for _, s := range r.Sections {
		p("## %d. %s\n\n", s.Num, s.Title)
		for _, t := range s.Text {
			p("%s\n\n", t)
		}
		if s.Failed != "" {
			p("**This experiment did not complete:** `%s`\n\n", strings.ReplaceAll(firstLine(s.Failed), "`", "'"))
		}
		for _, t := range s.Tables {
			if t.Title != "" {
				p("%s\n\n", t.Title)
			}
			p("| %s |\n|%s\n", strings.Join(t.Head, " | "), strings.Repeat("---|", len(t.Head)))
			for _, row := range t.Rows {
				p("| %s |\n", strings.Join(row, " | "))
			}
			p("\n")
		}
		for _, n := range s.Notes {
			p("%s\n\n", n)
		}
		if s.Plot != "" {
			p("![%s](%s/%s)\n\n", s.Title, plotDir, s.Plot)
		}
		p("<sub>Took %s.</sub>\n\n", s.Took.Round(time.Second))
	}
	p("## Results file\n\n")
	p("`bench/results/latest.json` is a list of measures: `name`, `unit` (`us`, `ms`, `ops/s`, `MiB`, ...), `median`, `p99`, ")
	p("`ci99_median` (the interval above), `n`, and where a measure has a baseline, `baseline` (the baseline's median), ")
	p("`baseline_of` (its name) and `ratio` (median / baseline). A measure that could not be taken has null numbers and says why in `unavailable`. ")
	p("The names in the targets table above are stable.\n\n")
	p("## Micro-benchmarks\n\n")
	p("Hot paths have Go benchmarks with allocation counts: frame encode and decode (`wire`), mailbox put/get, state get/set and ")
	p("local invoke (`process`), and a data-plane round trip (`client`). Compare two versions with `benchstat`:\n\n")
	p("```\ngo test -run '^$' -bench . -benchmem -count 10 ./wire ./process ./client > new.txt\nbenchstat old.txt new.txt\n```\n")
	return b.String()
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], ", ")
}
