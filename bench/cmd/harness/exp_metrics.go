package main

import (
	"context"
	"fmt"
	"time"

	"github.com/praas-dev/praas/client"
)

// expMetrics is experiment 11: what the processes' invocation metrics cost
// on the data-plane hot path, the 1 KiB invoke of a process that counts
// (praas up, metrics on by default) against one of a control plane started
// with --metrics=false; both control planes are started for it.
func expMetrics(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 11, Title: "Cost of metrics"}
	sec.Text = []string{
		"The 1 KiB no-op data-plane invoke (`echo`, `client.DataConn.InvokeInto`) of a process that counts its invocations for " +
			"Prometheus (the default, see docs/observability.md) against the same invoke of a process of a control plane " +
			"started with `praas up --metrics=false`, whose runtimes count nothing. Both control planes are started for this experiment " +
			"(the main one has run the other experiments' processes by then), and the two invokes are interleaved, one connection each.",
	}
	// Both control planes are started here, alike but for the flag: the
	// main one has run the other experiments' processes by now, which
	// would weigh on one side only.
	conn := func(name, pid string, flags ...string) (*client.DataConn, error) {
		cp, err := e.startControlPlane(ctx, name, flags...)
		if err != nil {
			return nil, err
		}
		c := client.New(cp.Endpoint, client.WithToken(cp.Token))
		if _, err := c.CreateApp(ctx, "demo", ""); err != nil {
			return nil, fmt.Errorf("create app on %s: %w", name, err)
		}
		return dataConn(ctx, c, "demo", pid)
	}
	dcOn, err := conn("cp-metrics", "metrics-on")
	if err != nil {
		return sec, nil, err
	}
	defer dcOn.Close()
	dcOff, err := conn("cp-nometrics", "metrics-off", "--metrics=false")
	if err != nil {
		return sec, nil, err
	}
	defer dcOff.Close()

	const size = 1 << 10
	payload := randomBytes(size)
	result := make([]byte, size)
	invoke := func(dc *client.DataConn) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			out, err := dc.InvokeInto(ctx, "echo", payload, result)
			if err == nil && len(out) != size {
				err = fmt.Errorf("echo returned %d bytes", len(out))
			}
			return err
		}
	}
	ops := []op{{"metrics on", timed(invoke(dcOn))}, {"metrics off", timed(invoke(dcOff))}}
	start := time.Now()
	s, errs := interleave(ctx, e.reps(500, 50), e.reps(20000, 500), ops)
	if err := firstErr(errs); err != nil {
		return sec, nil, err
	}
	on, offS := s.sum("metrics on"), s.sum("metrics off")
	ms := []Measure{
		measure("dataplane_invoke_1KiB_metrics_off", "us", offS),
		versus("dataplane_invoke_1KiB_metrics_on_vs_off", "us", on, "dataplane_invoke_1KiB_metrics_off", offS),
	}
	tbl := Table{Head: []string{"payload", "process metrics", "median µs", "99% CI of median", "p99 µs", "ratio to off", "n"}}
	tbl.add("1 KiB", "off", fmtVal(offS.Median), fmtCI(offS), fmtVal(offS.P99), "(reference)", fmt.Sprint(offS.N))
	tbl.add("1 KiB", "on", fmtVal(on.Median), fmtCI(on), fmtVal(on.P99), fmtRatio(on.Median/offS.Median), fmt.Sprint(on.N))
	sec.Tables = append(sec.Tables, tbl)
	e.logf("exp 11 1KiB data plane, metrics on %s µs, off %s µs [%s]", fmtVal(on.Median), fmtVal(offS.Median), time.Since(start).Round(time.Millisecond))
	return sec, ms, nil
}
