package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
)

// scaleFull is the number of processes the scale test runs when asked for
// by name (-run Scale, as .ci/run does in a step of its own): the default
// processes-per-app limit.
const scaleFull = 1000

// scaleQuick is the number it runs otherwise, so that `go test ./...` stays
// quick (a quarter of it with -short); PRAAS_SCALE_PROCESSES overrides both.
const scaleQuick = 100

// scaleWorkers is how many requests the test keeps in flight at once.
const scaleWorkers = 16

// scaleCount is how many processes TestScale runs, and why.
func scaleCount(t *testing.T) int {
	if s := os.Getenv("PRAAS_SCALE_PROCESSES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("PRAAS_SCALE_PROCESSES=%q: want a positive number", s)
		}
		return n
	}
	if testing.Short() {
		return scaleQuick / 4
	}
	if f := flag.Lookup("test.run"); f != nil && strings.Contains(f.Value.String(), "Scale") {
		return scaleFull
	}
	return scaleQuick
}

// TestScale creates many processes in one application of one `praas up`,
// invokes each once, swaps each out and back in, and stops the control
// plane gracefully: every process must end swapped with its state. It logs
// the time each phase took and the memory an idle process costs; it asserts
// no times (the machine it runs on is shared), only outcomes.
func TestScale(t *testing.T) {
	n := scaleCount(t)
	raiseFileLimit(t, n)
	data := t.TempDir()
	// A long lease, heartbeat and orphan timeout (the tests' default is
	// 20 s): on a small machine that other tests share, a starved control
	// plane must not lose its processes; failure detection is tested
	// elsewhere. PRAAS_SCALE_FLAGS adds flags (e.g. --isolation none).
	flags := []string{"--log-level", "info", "--lease-ttl", "60s", "--heartbeat-timeout", "60s", "--orphan-timeout", "5m"}
	cp := startControlPlane(t, data, append(flags, strings.Fields(os.Getenv("PRAAS_SCALE_FLAGS"))...)...)
	c := client.New(cp.endpoint, client.WithToken(token()))
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if _, err := c.CreateApp(ctx, "scale", ""); err != nil {
		t.Fatal(err)
	}
	pids := make([]string, n)
	for i := range pids {
		pids[i] = fmt.Sprintf("p%04d", i)
	}
	cpRSS0 := memOf(cp.cmd.Process.Pid).rss
	var report []string
	phase := func(name string, fn func(i int, pid string) error) {
		t.Helper()
		start := time.Now()
		var done atomic.Int64
		var tenths []string // time at each tenth, to show whether the rate holds
		var mu sync.Mutex
		err := forEach(ctx, pids, func(i int, pid string) error {
			if err := fn(i, pid); err != nil {
				return fmt.Errorf("%s %s: %w", name, pid, err)
			}
			if d := int(done.Add(1)); n >= 10 && d*10/n != (d-1)*10/n {
				mu.Lock()
				tenths = append(tenths, time.Since(start).Round(10*time.Millisecond).String())
				mu.Unlock()
			}
			return nil
		})
		took := time.Since(start)
		line := fmt.Sprintf("%-12s %4d processes in %8s (%6.2f ms each)", name, n, took.Round(time.Millisecond), float64(took.Microseconds())/1000/float64(n))
		report = append(report, line)
		t.Logf("%s; at each tenth: %s", line, strings.Join(tenths, " "))
		if err != nil {
			t.Fatalf("%v\ncontrol plane log:\n%s", err, tail(cp.stderr.String(), 40))
		}
	}

	phase("create", func(_ int, pid string) error {
		_, err := c.CreateProcess(ctx, "scale", pid)
		return err
	})
	phase("invoke", func(_ int, pid string) error {
		return expectOutput(c.Invoke(ctx, "scale", pid, "counter", nil))("1")
	})
	// Idle memory: every process has run one invocation and waits.
	rt, count := runtimeMem(t, data)
	cpRSS := memOf(cp.cmd.Process.Pid).rss
	mem := fmt.Sprintf("idle memory: runtime RSS %d KiB per process, of which %d KiB its own (anonymous), the rest the binary's pages that all share (mean of %d); control plane RSS %d KiB with %d processes, %d KiB before them (%.1f KiB per process)",
		rt.rss, rt.anon, count, cpRSS, n, cpRSS0, float64(cpRSS-cpRSS0)/float64(n))
	report = append(report, mem)
	if count != n {
		t.Errorf("%d runtime processes run, want %d", count, n)
	}

	phase("swap out", func(_ int, pid string) error {
		p, err := c.SwapProcess(ctx, "scale", pid)
		if err == nil && p.Status != "swapped" {
			err = fmt.Errorf("status %s after swap, want swapped", p.Status)
		}
		return err
	})
	phase("swap in", func(_ int, pid string) error {
		return expectOutput(c.Invoke(ctx, "scale", pid, "counter", nil))("2")
	})

	start := time.Now()
	if err := cp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-cp.exited:
		if err != nil {
			t.Errorf("control plane exit: %v\n%s", err, tail(cp.stderr.String(), 40))
		}
	case <-time.After(10 * time.Minute):
		cp.cmd.Process.Kill()
		t.Fatalf("control plane did not stop within 10 minutes of SIGTERM\n%s", tail(cp.stderr.String(), 40))
	}
	took := time.Since(start)
	report = append(report, fmt.Sprintf("%-12s %4d processes in %8s (SIGTERM to exit)", "stop", n, took.Round(time.Millisecond)))
	if t.Failed() {
		t.FailNow()
	}
	if strings.Contains(cp.stderr.String(), "swap out at shutdown") {
		t.Errorf("a process failed to swap out at shutdown:\n%s", grepLines(cp.stderr.String(), "swap out at shutdown", 10))
	}
	// Every process ended swapped, and comes back with its state.
	cp2 := startControlPlane(t, data, flags...)
	c2 := client.New(cp2.endpoint, client.WithToken(token()))
	defer c2.Close()
	procs, err := c2.ListProcesses(ctx, "scale")
	if err != nil {
		t.Fatal(err)
	}
	notSwapped := 0
	for _, p := range procs {
		if p.Status != "swapped" {
			notSwapped++
			if notSwapped <= 5 {
				t.Errorf("after the graceful stop %s is %s, want swapped", p.PID, p.Status)
			}
		}
	}
	if len(procs) != n || notSwapped > 0 {
		t.Fatalf("after the graceful stop: %d processes listed (want %d), %d not swapped", len(procs), n, notSwapped)
	}
	for _, pid := range []string{pids[0], pids[n/2], pids[n-1]} {
		if err := expectOutput(c2.Invoke(ctx, "scale", pid, "counter", nil))("3"); err != nil {
			t.Fatalf("%s after restart: %v", pid, err)
		}
	}
	t.Logf("scale, %d processes, one app, one machine (%d requests in flight):\n%s", n, scaleWorkers, strings.Join(report, "\n"))
}

// forEach runs fn for every pid on scaleWorkers goroutines and returns the
// first error; it stops handing out work after one.
func forEach(ctx context.Context, pids []string, fn func(i int, pid string) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range scaleWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pids) || ctx.Err() != nil {
					return
				}
				if err := fn(i, pids[i]); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(len(pids)))
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func expectOutput(out []byte, err error) func(want string) error {
	return func(want string) error {
		if err != nil {
			return err
		}
		if string(out) != want {
			return fmt.Errorf("output %q, want %q", out, want)
		}
		return nil
	}
}

// raiseFileLimit makes sure this test, and the control plane it starts
// (which inherits the limit), may hold a few descriptors per process: the
// control plane keeps a long poll, a heartbeat connection and a data-plane
// connection to each, the test a data-plane connection. Go raises the soft
// limit to the hard one at start; a hard limit too low fails the test with
// the reason rather than in the middle.
func raiseFileLimit(t *testing.T, n int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	need := uint64(4*n + 256)
	if lim.Cur < need && lim.Max >= need {
		lim.Cur = need
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < need {
		t.Fatalf("open files limited to %d (hard %d); %d processes need about %d: raise ulimit -n or set PRAAS_SCALE_PROCESSES lower", lim.Cur, lim.Max, n, need)
	}
}

// procMem is a process's resident memory in KiB: all of it, and the
// anonymous part (its heap and stacks, not pages of files it maps).
type procMem struct{ rss, anon int64 }

// runtimeMem returns the mean memory of the runtime processes the local
// backend under data runs (from its run records).
func runtimeMem(t *testing.T, data string) (mean procMem, count int) {
	t.Helper()
	recs, err := filepath.Glob(filepath.Join(data, "run", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum procMem
	for _, f := range recs {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var r struct {
			OSPID int `json:"os_pid"`
		}
		if json.Unmarshal(raw, &r) != nil {
			continue
		}
		if m := memOf(r.OSPID); m.rss > 0 {
			sum.rss += m.rss
			sum.anon += m.anon
			count++
		}
	}
	if count == 0 {
		return procMem{}, 0
	}
	return procMem{sum.rss / int64(count), sum.anon / int64(count)}, count
}

// memOf reads VmRSS and RssAnon of a process (zero if unknown).
func memOf(pid int) procMem {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}
	}
	var m procMem
	for _, line := range strings.Split(string(raw), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		switch name {
		case "VmRSS":
			m.rss = kib
		case "RssAnon":
			m.anon = kib
		}
	}
	return m
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

func grepLines(s, sub string, limit int) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) && len(out) < limit {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
