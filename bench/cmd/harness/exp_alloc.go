package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/bench/internal/stats"
	"github.com/praas-dev/praas/client"
)

// expAlloc is experiment 8: time from process creation to the first
// result, fresh and from a swapped state; memory of idle processes.
func expAlloc(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 8, Title: "Process allocation", Plot: "8-allocation.svg"}
	reps, idle := e.reps(100, 15), e.reps(100, 16)
	sec.Text = []string{
		"- **fresh**: `POST /v1/apps/{app}/processes` with a new pid (the control plane starts an OS process with the local backend, " +
			"which registers; the call returns once it is active), then dialing its data plane and invoking `echo`: the time until the " +
			"result is back. The builtin image (the `praas` binary) is used; each process is deleted afterwards (untimed).\n" +
			"- **swap-in**: the same for a process that was created, invoked once and swapped out (`POST .../swap`): creating it again swaps it in.\n" +
			fmt.Sprintf("- **idle processes**: %d processes are created and left idle; their memory is read from /proc (PSS counts shared pages "+
				"once per sharer; RSS counts them fully), and the machine's MemAvailable is read before and after, which includes what the kernel "+
				"and the control plane spend per process.", idle),
	}
	c := e.C
	var ms []Measure
	tbl := Table{Head: []string{"measure", "median", "99% CI of median", "p99", "n"}}

	// Fresh processes.
	var fresh []float64
	for i := 0; i < reps+2; i++ {
		pid := fmt.Sprintf("cold-%d", i)
		d, err := firstResult(ctx, c, pid)
		if err != nil {
			return sec, ms, err
		}
		if i >= 2 {
			fresh = append(fresh, ms64(d))
		}
		if err := c.DeleteProcess(ctx, "demo", pid); err != nil {
			return sec, ms, err
		}
	}
	fs := stats.Summarize(fresh)
	ms = append(ms, measure("cold_start", "ms", fs))
	tbl.add("fresh process → first result", fmtVal(fs.Median)+" ms", fmtCI(fs), fmtVal(fs.P99)+" ms", fmt.Sprint(fs.N))
	e.logf("exp 8 cold start %s ms", fmtVal(fs.Median))

	// Swapped processes.
	var swapped []float64
	var swapErr error
	for i := 0; i < reps+2 && swapErr == nil; i++ {
		pid := fmt.Sprintf("warm-%d", i)
		if _, err := firstResult(ctx, c, pid); err != nil {
			return sec, ms, err
		}
		if _, err := c.SwapProcess(ctx, "demo", pid); err != nil {
			swapErr = err
		} else if d, err := firstResult(ctx, c, pid); err != nil {
			swapErr = err
		} else if i >= 2 {
			swapped = append(swapped, ms64(d))
		}
		_ = c.DeleteProcess(ctx, "demo", pid)
	}
	if swapErr != nil {
		ms = append(ms, unavailable("swapin_start", "ms", firstLine(swapErr.Error())))
		tbl.add("swapped process → first result", "not available: "+firstLine(swapErr.Error()), "", "", "")
	} else {
		ss := stats.Summarize(swapped)
		ms = append(ms, versus("swapin_start_vs_cold_start", "ms", ss, "cold_start", fs))
		tbl.add("swapped process → first result", fmtVal(ss.Median)+" ms", fmtCI(ss), fmtVal(ss.P99)+" ms", fmt.Sprint(ss.N))
	}

	// Idle processes.
	before := memInfo()["MemAvailable"]
	cpBefore := rssOf(e.CP.PID())
	pids := make([]string, idle)
	var handles []int
	for i := range pids {
		pids[i] = fmt.Sprintf("idle-%d", i)
		p, err := c.CreateProcess(ctx, "demo", pids[i])
		if err != nil {
			return sec, ms, err
		}
		if h, err := strconv.Atoi(p.Handle); err == nil {
			handles = append(handles, h)
		}
	}
	if len(handles) != idle {
		handles = childrenOf(e.CP.PID())
	}
	time.Sleep(2 * time.Second) // let them settle: first heartbeats, GC
	after := memInfo()["MemAvailable"]
	var pss, rss []float64
	for _, h := range handles {
		m := smapsRollup(h)
		if m["Pss"] > 0 {
			pss = append(pss, float64(m["Pss"])/(1<<20))
			rss = append(rss, float64(m["Rss"])/(1<<20))
		}
	}
	cpGrowth := float64(rssOf(e.CP.PID())-cpBefore) / (1 << 20) / float64(idle)
	perAvail := float64(before-after) / (1 << 20) / float64(idle)
	ps, rs := stats.Summarize(pss), stats.Summarize(rss)
	ms = append(ms, measure("idle_process_pss", "MiB", ps), measure("idle_process_rss", "MiB", rs))
	tbl.add("idle process PSS", fmtVal(ps.Median)+" MiB", fmtCI(ps), fmtVal(ps.P99)+" MiB", fmt.Sprint(ps.N))
	tbl.add("idle process RSS", fmtVal(rs.Median)+" MiB", fmtCI(rs), fmtVal(rs.P99)+" MiB", fmt.Sprint(rs.N))
	if perAvail > 0 {
		tbl.add("MemAvailable drop per process", fmtVal(perAvail)+" MiB", "", "", "1")
	} else {
		tbl.add("MemAvailable drop per process", "not measurable in this run (other activity freed memory meanwhile)", "", "", "")
	}
	tbl.add("control-plane RSS growth per process", fmtVal(cpGrowth)+" MiB", "", "", "1")
	perProc := max(perAvail, ps.Median+max(cpGrowth, 0))
	fit := float64(before) / (1 << 20) / perProc
	v := float64(int(fit))
	ms = append(ms, Measure{Name: "idle_processes_per_machine", Unit: "processes", Median: num(v), N: 1})
	sec.Notes = append(sec.Notes, fmt.Sprintf("At %s MiB per idle process (the larger of the MemAvailable drop and PSS plus the control plane's growth), "+
		"the %s GiB this machine had available would hold about **%d** idle processes by memory alone (other limits, such as ports or file descriptors, were not reached here: %d were started).",
		fmtVal(perProc), fmtVal(float64(before)/(1<<30)), int(fit), idle))
	e.logf("exp 8 idle process PSS %s MiB, RSS %s MiB, MemAvailable drop %s MiB per process", fmtVal(ps.Median), fmtVal(rs.Median), fmtVal(perAvail))

	// Delete them, a few at a time.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, pid := range pids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = c.DeleteProcess(ctx, "demo", pid)
		}()
	}
	wg.Wait()
	sec.Tables = append(sec.Tables, tbl)
	plots := []series{cdf("fresh process", fresh)}
	if swapErr == nil {
		plots = append(plots, cdf("swapped-out process", swapped))
	}
	return sec, ms, linePlot(e.plotPath(sec.Plot), "Process allocation: time to first result (CDF)", "time to first result [ms]", "fraction of repetitions", nil, plots)
}

func ms64(d time.Duration) float64 { return ms(d) }

// firstResult creates (or brings back) pid of the demo app and returns the
// time until an invocation over its data plane has returned.
func firstResult(ctx context.Context, c *client.Client, pid string) (time.Duration, error) {
	start := time.Now()
	p, err := c.CreateProcess(ctx, "demo", pid)
	if err != nil {
		return 0, err
	}
	dc, err := client.Dial(ctx, p.Address, p.Token, client.DialOptions{})
	if err != nil {
		return 0, err
	}
	defer dc.Close()
	out, err := dc.Invoke(ctx, "echo", []byte("x"))
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if string(out) != "x" {
		return 0, fmt.Errorf("echo returned %q", out)
	}
	return d, nil
}

// smapsRollup reads /proc/PID/smaps_rollup in bytes.
func smapsRollup(pid int) map[string]int64 {
	out := map[string]int64{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 2 && fields[1] == "kB" {
			n, _ := strconv.ParseInt(fields[0], 10, 64)
			out[k] = n << 10
		}
	}
	return out
}

func rssOf(pid int) int64 { return smapsRollup(pid)["Rss"] }

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command may contain spaces: fields after the last ')'.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// cdf is the empirical distribution of vs as a series (x value, y fraction).
func cdf(name string, vs []float64) series {
	s := slices.Clone(vs)
	slices.Sort(s)
	out := series{name: name}
	for i, v := range s {
		f := float64(i+1) / float64(len(s))
		out.add(v, stats.Summary{Median: f, CILow: f, CIHigh: f})
	}
	return out
}
