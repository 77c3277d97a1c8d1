package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/praas-dev/praas/bench/internal/wireval"
)

// expReduce is experiment 5: a reduction into a vector of int64 kept in
// process state, in Redis or in S3.
func expReduce(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 5, Title: "Reduction with state", Plot: "5-reduction.svg"}
	sec.Text = []string{
		"As in the later paper's Fig. 10: a function adds its input, a vector of int64, into a vector of the same length that persists " +
			"across invocations. The harness invokes it N times over the data plane, one at a time, and times each invocation; the three " +
			"variants are the same function with the vector kept",
		"- in **process state** (`UpdateState`: the addition happens in place, in memory),\n" +
			"- in **Redis** (GET, add, SET per invocation; Redis without persistence, as in experiment 4),\n" +
			"- in **S3** (GET, add, PUT of one object per invocation).",
		"Every variant's final vector is read back and checked against the expected sum. `small` is a 1 KiB input (128 int64).",
	}
	if e.Redis == nil || e.S3 == nil {
		return sec, nil, fmt.Errorf("redis or S3 missing: %v %v", e.RedisErr, e.S3Err)
	}
	dc, err := e.storeConn(ctx, "img", "reduce")
	if err != nil {
		return sec, nil, err
	}
	defer dc.Close()
	sizes := []int{1 << 10, 64 << 10, 1 << 20, 16 << 20}
	if e.Quick {
		sizes = []int{1 << 10, 64 << 10}
	}
	run := fmt.Sprint(time.Now().UnixNano())
	var ms []Measure
	tbl := Table{Head: []string{"input", "state in", "median µs / invocation", "99% CI of median", "p99 µs", "total for N, ms", "speedup of praas", "n"}}
	names := []string{"process state", "Redis", "S3"}
	funcs := []string{"reduce-state", "reduce-redis", "reduce-s3"}
	stores := []string{"state", "redis", "s3"}
	plot := make([]series, len(names))
	for i, n := range names {
		plot[i].name = n
	}
	for _, size := range sizes {
		label := sizeLabel(size)
		if size == 1<<10 {
			label = "small"
		}
		key := label + "-" + run
		vec := make([]byte, size)
		for i := 0; i < size; i += 8 {
			binary.LittleEndian.PutUint64(vec[i:], uint64(i/8+1))
		}
		arg := append(wireval.Str8(nil, key), vec...)
		warm, reps := e.repsFor(size)
		ops := make([]op, len(names))
		for i := range names {
			f := funcs[i]
			ops[i] = op{names[i], timed(func(ctx context.Context) error {
				_, err := dc.Invoke(ctx, f, arg)
				return err
			})}
		}
		start := time.Now()
		s, errs := interleave(ctx, warm, reps, ops)
		if err := firstErr(errs); err != nil {
			return sec, ms, err
		}
		// Check the sums: every variant ran warm+reps times.
		want := make([]byte, size)
		for i := 0; i < size; i += 8 {
			binary.LittleEndian.PutUint64(want[i:], uint64(i/8+1)*uint64(warm+reps))
		}
		for i, st := range stores {
			got, err := dc.Invoke(ctx, "reduce-get", []byte(st+" "+key))
			if err != nil {
				return sec, ms, fmt.Errorf("read back the %s vector: %w", names[i], err)
			}
			if !bytes.Equal(got, want) {
				return sec, ms, fmt.Errorf("the %s vector of %s holds a wrong sum", names[i], label)
			}
		}
		e.Redis.Del(ctx, "bench:vec:"+key)
		_ = e.S3.Delete(ctx, "bench/vec/"+key)

		st, rd, s3 := s.sum(names[0]), s.sum(names[1]), s.sum(names[2])
		ms = append(ms,
			measure("reduction_"+label+"_redis", "us", rd),
			measure("reduction_"+label+"_s3", "us", s3),
			versus("reduction_"+label+"_vs_redis", "us", st, "reduction_"+label+"_redis", rd),
			versus("reduction_"+label+"_vs_s3", "us", st, "reduction_"+label+"_s3", s3))
		for i, v := range []statsSummary{st, rd, s3} {
			speed := "(praas)"
			if i > 0 {
				speed = fmt.Sprintf("%.1f×", v.Median/st.Median)
			}
			total := 0.0
			for _, x := range s[names[i]] {
				total += x
			}
			tbl.add(prettySize(size)+map[bool]string{true: " (small)"}[size == 1<<10], names[i], fmtVal(v.Median), fmtCI(v), fmtVal(v.P99),
				fmtVal(total/1000), speed, fmt.Sprint(v.N))
			plot[i].add(float64(size), v)
		}
		e.logf("exp 5 %-6s state %s µs, redis %s µs, S3 %s µs [%s]", label, fmtVal(st.Median), fmtVal(rd.Median), fmtVal(s3.Median),
			time.Since(start).Round(time.Millisecond))
	}
	sec.Tables = append(sec.Tables, tbl)
	sec.Notes = append(sec.Notes, "Speedup is the other variant's median over praas's; the measures' ratio is its inverse (praas / other).")
	return sec, ms, linePlot(e.plotPath(sec.Plot), "Reduction: time per invocation (median, 99% CI)", "input", "latency [µs]", byteLabel, plot)
}
