package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/praas-dev/praas/bench/internal/stats"
	"github.com/praas-dev/praas/bench/internal/wireval"
	"github.com/praas-dev/praas/client"
)

// swapStore is a control plane whose swap store is one kind.
type swapStore struct {
	name  string // "file" or "S3"
	c     *client.Client
	data  string // the control plane's data directory (process logs are under logs/)
	avail error  // nil while swapping works
}

// expSwap is experiment 6: swap-out and swap-in of process state to the
// file store and the S3 store, against writing and reading the same bytes
// with dd and with one S3 PUT/GET.
func expSwap(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 6, Title: "Swapping", Plot: "6-swap.svg"}
	sec.Text = []string{
		"As in the later paper's Table 4: a process of the benchmark image fills its state with S MiB of random data (1 MiB values), " +
			"then is swapped out (`POST /v1/apps/{app}/processes/{pid}/swap`, timed until the process is `swapped`) and swapped in " +
			"(`POST /v1/apps/{app}/processes` with its pid, timed until it is `active`); after each swap-in the state's size and CRC are " +
			"checked. Two control planes run: `praas up` with the default file store under its data directory, and `praas up --swap s3://...` " +
			"on the S3 server.",
		"Baselines, on the same file system and server: `dd if=/dev/zero of=F bs=1M count=S conv=fsync` (write) and " +
			"`dd if=F of=/dev/null bs=1M` (read, from the page cache as a fresh snapshot is), and one S3 PUT and GET of an S-MiB object " +
			"with minio-go using the praas S3 store's part size (16 MiB) and threads (4).",
		"Repetitions are limited by time at the large sizes (see n); each repetition runs every variant once. A swap-out includes draining " +
			"the process and its exit; a swap-in includes starting a new OS process (see experiment 8) and its registration. The rows " +
			"\"of which\" give the time the process itself logged for writing or restoring the snapshot, the part that compares with the raw I/O. " +
			"`dd` reads into one reused buffer; **read into a new process** (`bench/cmd/baseline read-fresh`: start a Go program that reads the " +
			"same file into new 1 MiB slices) shows what putting that many bytes into a fresh process's memory costs at the least: its page " +
			"faults dominate.",
	}
	sizes := []int{1, 10, 100, 200}
	budget, minReps, maxReps := 150*time.Second, 20, 100
	if e.Quick {
		sizes, budget, minReps, maxReps = []int{1, 100}, 6*time.Second, 2, 5
	}
	stores := []*swapStore{{name: "file", c: e.C, data: e.CP.Data}}
	if e.S3 != nil {
		cp, err := e.startControlPlane(ctx, "cp-s3", "--swap", e.S3URL+"&prefix=bench-swap/")
		if err != nil {
			stores = append(stores, &swapStore{name: "S3", avail: err})
		} else {
			c := client.New(cp.Endpoint, client.WithToken(cp.Token))
			defer c.Close()
			s := &swapStore{name: "S3", c: c, data: cp.Data}
			if _, err := c.CreateApp(ctx, "img", e.Image); err != nil {
				s.avail = err
			}
			stores = append(stores, s)
		}
	} else {
		stores = append(stores, &swapStore{name: "S3", avail: e.S3Err})
	}
	ddFile := filepath.Join(e.CP.Data, "dd-bench")
	defer os.Remove(ddFile)

	var measures []Measure
	tbl := Table{Head: []string{"state", "operation", "median ms", "99% CI of median", "p99 ms", "ratio to raw", "n"}}
	plotNames := []string{"swap-out, file", "dd write (fsync)", "swap-in, file", "dd read", "read into a new process",
		"swap-out, S3", "S3 PUT", "swap-in, S3", "S3 GET"}
	plot := make([]series, len(plotNames))
	for i, n := range plotNames {
		plot[i].name = n
	}
	for _, mib := range sizes {
		size := mib << 20
		label := sizeLabel(size)
		pid := "swap-" + strconv.Itoa(mib)
		digests := map[string][]byte{}
		for _, st := range stores {
			if st.avail != nil {
				continue
			}
			d, err := fillState(ctx, st.c, pid, size)
			if err != nil {
				return sec, measures, fmt.Errorf("%s store: fill %s: %w", st.name, label, err)
			}
			digests[st.name] = d
		}
		buf := randomBytes(size)
		var getBuf []byte
		s3Key := "bench/raw/" + label
		ops := []op{
			{"dd write (fsync)", timed(func(ctx context.Context) error {
				return exec.CommandContext(ctx, "dd", "if=/dev/zero", "of="+ddFile, "bs=1M", "count="+strconv.Itoa(mib), "conv=fsync", "status=none").Run()
			})},
			{"dd read", timed(func(ctx context.Context) error {
				return exec.CommandContext(ctx, "dd", "if="+ddFile, "of=/dev/null", "bs=1M", "status=none").Run()
			})},
			{"read into a new process", timed(func(ctx context.Context) error {
				return exec.CommandContext(ctx, e.Baseline, "read-fresh", ddFile).Run()
			})},
		}
		if e.S3 != nil {
			ops = append(ops,
				op{"S3 PUT", timed(func(ctx context.Context) error {
					return e.S3.PutStream(ctx, s3Key, bytes.NewReader(buf), int64(size))
				})},
				op{"S3 GET", timed(func(ctx context.Context) error {
					var err error
					getBuf, err = e.S3.Get(ctx, s3Key, getBuf)
					if err == nil && len(getBuf) != size {
						err = fmt.Errorf("GET returned %d bytes", len(getBuf))
					}
					return err
				})})
		}
		samples := Samples{}
		var opErr error
		// A round runs the raw operations, then swaps each store's process
		// out and in (the two cannot be reordered).
		round := func(measured bool) {
			for _, o := range ops {
				d, err := o.run(ctx)
				if err != nil && opErr == nil {
					opErr = fmt.Errorf("%s: %w", o.name, err)
				}
				if err == nil && measured {
					samples.add(o.name, ms(d))
				}
			}
			for _, st := range stores {
				if st.avail != nil {
					continue
				}
				out, in, err := swapRound(ctx, st.c, pid, digests[st.name])
				if err != nil {
					st.avail = err
					e.logf("exp 6 swapping to the %s store is not available: %v", st.name, err)
					continue
				}
				if measured {
					samples.add("swap-out, "+st.name, ms(out))
					samples.add("swap-in, "+st.name, ms(in))
				}
			}
		}
		t0 := time.Now()
		round(false) // warm-up, and the time of one round
		reps := min(maxReps, max(minReps, int(budget/max(time.Since(t0), time.Millisecond))))
		for i := 0; i < reps && ctx.Err() == nil && opErr == nil; i++ {
			round(true)
		}
		if opErr != nil {
			return sec, measures, opErr
		}
		if e.S3 != nil {
			_ = e.S3.Delete(ctx, s3Key)
		}

		raw := map[string]statsSummary{}
		for _, n := range []string{"dd write (fsync)", "dd read", "S3 PUT", "S3 GET", "read into a new process"} {
			raw[n] = samples.sum(n)
		}
		measures = append(measures,
			measure("dd_write_"+label, "ms", raw["dd write (fsync)"]),
			measure("dd_read_"+label, "ms", raw["dd read"]),
			measure("s3_put_"+label, "ms", raw["S3 PUT"]),
			measure("s3_get_"+label, "ms", raw["S3 GET"]),
			measure("read_fresh_process_"+label, "ms", raw["read into a new process"]))
		type row struct{ name, op, base, measure, baseMeasure string }
		rows := []row{
			{"file", "swap-out", "dd write (fsync)", "swapout_" + label + "_vs_raw", "dd_write_" + label},
			{"file", "swap-in", "dd read", "swapin_" + label + "_vs_raw", "dd_read_" + label},
			{"S3", "swap-out", "S3 PUT", "swapout_" + label + "_s3_vs_put", "s3_put_" + label},
			{"S3", "swap-in", "S3 GET", "swapin_" + label + "_s3_vs_get", "s3_get_" + label},
		}
		for _, r := range rows {
			var st *swapStore
			for _, s := range stores {
				if s.name == r.name {
					st = s
				}
			}
			b := raw[r.base]
			tbl.add(fmt.Sprintf("%d MiB", mib), r.base, fmtVal(b.Median), fmtCI(b), fmtVal(b.P99), "(raw)", fmt.Sprint(b.N))
			if r.op == "swap-in" && r.name == "file" {
				f := raw["read into a new process"]
				tbl.add(fmt.Sprintf("%d MiB", mib), "read into a new process", fmtVal(f.Median), fmtCI(f), fmtVal(f.P99),
					fmtRatio(f.Median/b.Median), fmt.Sprint(f.N))
			}
			if st.avail != nil {
				m := unavailable(r.measure, "ms", "swapping to the "+r.name+" store: "+firstLine(st.avail.Error()))
				m.Baseline, m.BaselineOf = num(b.Median), r.baseMeasure
				measures = append(measures, m)
				tbl.add(fmt.Sprintf("%d MiB", mib), r.op+", "+r.name+" store", "not available", "", "", "", "")
				continue
			}
			v := samples.sum(r.op + ", " + r.name)
			measures = append(measures, versus(r.measure, "ms", v, r.baseMeasure, b))
			tbl.add(fmt.Sprintf("%d MiB", mib), r.op+", "+r.name+" store", fmtVal(v.Median), fmtCI(v), fmtVal(v.P99), fmtRatio(v.Median/b.Median), fmt.Sprint(v.N))
			// What the process itself logged: the snapshot write of a
			// swap-out, the restore of a swap-in (the first, warm-up, round
			// left out).
			written, restored := inProcessTimes(filepath.Join(st.data, "logs", "img", pid+".out"))
			inner, what := written, "snapshot write"
			if r.op == "swap-in" {
				inner, what = restored, "snapshot restore"
			}
			if len(inner) > 1 {
				is := stats.Summarize(inner[1:])
				name := strings.ReplaceAll(r.measure, "_vs_raw", "") + "_in_process"
				if r.name == "S3" {
					name = "swap" + strings.TrimPrefix(r.op, "swap-") + "_" + label + "_s3_in_process"
				}
				measures = append(measures, measure(name, "ms", is))
				tbl.add(fmt.Sprintf("%d MiB", mib), "… of which "+what+" (process log)", fmtVal(is.Median), fmtCI(is), fmtVal(is.P99),
					fmtRatio(is.Median/b.Median), fmt.Sprint(is.N))
			}
		}
		for i, n := range plotNames {
			plot[i].add(float64(mib), samples.sum(n))
		}
		e.logf("exp 6 %-6s %d rounds in %s", label, reps, time.Since(t0).Round(time.Millisecond))
	}
	sec.Tables = append(sec.Tables, tbl)
	for _, st := range stores {
		if st.avail != nil {
			sec.Notes = append(sec.Notes, fmt.Sprintf("Swapping to the %s store was **not available** in this run: `%s`. "+
				"The raw baselines were measured; the swap rows fill in once the control plane swaps.", st.name, firstLine(st.avail.Error())))
		}
	}
	return sec, measures, linePlot(e.plotPath(sec.Plot), "Swap vs raw I/O (median, 99% CI)", "state", "time [ms]", mibLabel, plot)
}

// fillState creates process pid of app img and fills its state with size
// bytes; it returns the state's digest.
func fillState(ctx context.Context, c *client.Client, pid string, size int) ([]byte, error) {
	dc, err := dataConn(ctx, c, "img", pid)
	if err != nil {
		return nil, err
	}
	defer dc.Close()
	return dc.Invoke(ctx, "fill-state", wireval.U64(nil, uint64(size)))
}

// swapRound swaps pid out and back in, timing both, and checks the state.
func swapRound(ctx context.Context, c *client.Client, pid string, digest []byte) (out, in time.Duration, err error) {
	start := time.Now()
	if _, err := c.SwapProcess(ctx, "img", pid); err != nil {
		return 0, 0, err
	}
	if err := waitStatus(ctx, c, pid, "swapped"); err != nil {
		return 0, 0, err
	}
	out = time.Since(start)
	start = time.Now()
	if _, err := c.CreateProcess(ctx, "img", pid); err != nil {
		return 0, 0, fmt.Errorf("swap-in: %w", err)
	}
	if err := waitStatus(ctx, c, pid, "active"); err != nil {
		return 0, 0, err
	}
	in = time.Since(start)
	dc, err := dataConn(ctx, c, "img", pid)
	if err != nil {
		return 0, 0, err
	}
	defer dc.Close()
	got, err := dc.Invoke(ctx, "state-digest", nil)
	if err != nil {
		return 0, 0, err
	}
	if !bytes.Equal(got, digest) {
		return 0, 0, fmt.Errorf("state after swap-in differs from the state swapped out")
	}
	return out, in, nil
}

// waitStatus polls until pid has status (at once if it has it already).
func waitStatus(ctx context.Context, c *client.Client, pid, status string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		p, err := c.GetProcess(ctx, "img", pid)
		if err != nil {
			return err
		}
		if p.Status == status {
			return nil
		}
		if p.Status == "failed" || time.Now().After(deadline) {
			return fmt.Errorf("process %s is %s, waiting for %s", pid, p.Status, status)
		}
		time.Sleep(time.Millisecond)
	}
}

// inProcessTimes reads the durations a process logged for its snapshot
// writes and restores ("snapshot written ... took=D", "snapshot restored ...
// took=D"), in ms.
func inProcessTimes(logPath string) (written, restored []float64) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		_, after, ok := strings.Cut(line, " took=")
		if !ok {
			continue
		}
		d, err := time.ParseDuration(strings.Fields(after + " ")[0])
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line, "snapshot written"):
			written = append(written, ms(d))
		case strings.Contains(line, "snapshot restored"):
			restored = append(restored, ms(d))
		}
	}
	return written, restored
}
