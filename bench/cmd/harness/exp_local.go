package main

import (
	"context"
	"fmt"
	"time"

	"github.com/praas-dev/praas/bench/internal/stats"
	"github.com/praas-dev/praas/bench/internal/wireval"
	"github.com/praas-dev/praas/client"
)

// expLocalRemote is experiment 2: a function invoking another in the same
// process, and a function invoking one in another process, against the
// data-plane invoke of the same function from a client.
func expLocalRemote(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 2, Title: "Local and remote invocation", Plot: "2-local-remote.svg"}
	sec.Text = []string{
		"- **local invoke**: a function calls `p.Invoke(ctx, praas.Self, \"echo\", input)`: the callee runs in the caller's goroutine, no network, no copy. " +
			"Each call is timed inside the process (function `local-bench` of the benchmark image), 100 calls per harness request.\n" +
			"- **remote invoke**: a function in process A calls `p.Invoke(ctx, \"B\", \"echo\", payload)` on process B of the same app, over the " +
			"runtimes' own data-plane connection; timed inside A (function `remote-call`).\n" +
			"- **data-plane invoke** (the reference of the remote invoke): the harness invokes `echo` in B over its data-plane connection, " +
			"interleaved with the remote invokes.",
	}
	a, err := dataConn(ctx, e.C, "img", "inv-a")
	if err != nil {
		return sec, nil, err
	}
	defer a.Close()
	b, err := dataConn(ctx, e.C, "img", "inv-b")
	if err != nil {
		return sec, nil, err
	}
	defer b.Close()

	var ms []Measure
	tbl := Table{Head: []string{"payload", "path", "median µs", "99% CI of median", "p99 µs", "ratio", "n"}}
	plot := []series{{name: "local invoke"}, {name: "remote invoke (A→B)"}, {name: "data-plane invoke (client→B)"}}
	for _, size := range payloadSizes {
		label := sizeLabel(size)
		// Local: batches of 100 timed calls.
		batches := e.reps(20, 3)
		var local []float64
		for i := 0; i < batches+1; i++ {
			out, err := a.Invoke(ctx, "local-bench", wireval.U32(wireval.U32(nil, 100), uint32(size)))
			if err != nil {
				return sec, ms, fmt.Errorf("local-bench: %w", err)
			}
			ds, err := wireval.Durations(out)
			if err != nil {
				return sec, ms, err
			}
			if i == 0 {
				continue // warm-up
			}
			for _, d := range ds {
				local = append(local, us(d))
			}
		}
		localS := stats.Summarize(local)

		payload := randomBytes(size)
		remoteArg := append(wireval.Str8(nil, "inv-b"), payload...)
		ops := []op{
			{"remote", func(ctx context.Context) (time.Duration, error) {
				out, err := a.Invoke(ctx, "remote-call", remoteArg)
				if err != nil {
					return 0, err
				}
				ds, err := wireval.Durations(out)
				if err != nil {
					return 0, err
				}
				return ds[0], nil
			}},
			{"dataplane", timed(func(ctx context.Context) error { return invokeEcho(ctx, b, payload) })},
		}
		warm, reps := e.repsFor(size)
		s, errs := interleave(ctx, warm, reps, ops)
		if err := firstErr(errs); err != nil {
			return sec, ms, err
		}
		remS, dpS := s.sum("remote"), s.sum("dataplane")
		name := "local_invoke_" + label
		if size == 1<<10 {
			name = "local_invoke"
		}
		ms = append(ms,
			measure(name, "us", localS),
			measure("dataplane_invoke_"+label+"_from_client", "us", dpS),
			versus("remote_invoke_"+label+"_vs_dataplane", "us", remS, "dataplane_invoke_"+label+"_from_client", dpS))
		tbl.add(prettySize(size), "local invoke", fmtVal(localS.Median), fmtCI(localS), fmtVal(localS.P99), "", fmt.Sprint(localS.N))
		tbl.add(prettySize(size), "remote invoke", fmtVal(remS.Median), fmtCI(remS), fmtVal(remS.P99), fmtRatio(remS.Median/dpS.Median)+" of data plane", fmt.Sprint(remS.N))
		tbl.add(prettySize(size), "data-plane invoke", fmtVal(dpS.Median), fmtCI(dpS), fmtVal(dpS.P99), "(reference)", fmt.Sprint(dpS.N))
		plot[0].add(float64(size), localS)
		plot[1].add(float64(size), remS)
		plot[2].add(float64(size), dpS)
		e.logf("exp 2 %-6s local %s µs, remote %s µs, data plane %s µs", label, fmtVal(localS.Median), fmtVal(remS.Median), fmtVal(dpS.Median))
	}
	sec.Tables = append(sec.Tables, tbl)
	sec.Notes = append(sec.Notes, "`local_invoke` in the results is the 1 KiB row; a local invoke does not copy its input, so its time does not depend on the size.")
	return sec, ms, linePlot(e.plotPath(sec.Plot), "Local and remote invocation (median, 99% CI)", "payload", "latency [µs]", byteLabel, plot)
}

func invokeEcho(ctx context.Context, dc *client.DataConn, payload []byte) error {
	out, err := dc.Invoke(ctx, "echo", payload)
	if err == nil && len(out) != len(payload) {
		err = fmt.Errorf("echo returned %d bytes, want %d", len(out), len(payload))
	}
	return err
}
