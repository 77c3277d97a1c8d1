package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/praas-dev/praas/client"
)

// expPython is experiment 9: functions in Python (a worker hop from the
// runtime) against the same functions in Go, in one process of an app of
// the Python image bench/image/python/bench.py (whose runtime also serves
// the builtin Go functions), interleaved.
func expPython(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 9, Title: "Python functions against Go"}
	sec.Text = []string{
		"An app of the Python image `bench/image/python/bench.py`: its processes run the Python functions on a pool of Python workers " +
			"(docs/workers.md) and the builtin Go functions in the runtime itself, so both are measured in the same process over the same data-plane connection, interleaved:",
		"- **invoke**: `py-echo` against the builtin `echo` (the no-op of experiment 1), `client.DataConn.InvokeInto`;\n" +
			"- **state**: `py-state-set` then `py-state-get` (one state call each) against `state-set` then `state-get`: two invocations;\n" +
			"- **send/recv between processes**: `py-send` in p1 to p2 then `py-recv` in p2, against the builtin `send` and `recv`: two invocations and a message;\n" +
			"- **state call**: `py-state-loop` of 100 set/get pairs, less a `py-echo` of 1 B, per pair.",
		"Latency in µs as the client sees it.",
	}
	module := filepath.Join(e.Root, "bench", "image", "python", "bench.py")
	if _, err := e.C.CreateApp(ctx, "py", "python:"+module); err != nil {
		return sec, nil, fmt.Errorf("create app: %w", err)
	}
	p1, err := dataConn(ctx, e.C, "py", "p1")
	if err != nil {
		return sec, nil, err
	}
	defer p1.Close()
	p2, err := dataConn(ctx, e.C, "py", "p2")
	if err != nil {
		return sec, nil, err
	}
	defer p2.Close()

	tbl := Table{Head: []string{"what", "Go median µs", "Python median µs", "99% CI of Python median", "ratio", "n"}}
	var ms []Measure
	row := func(name, label string, gS, pS statsSummary) {
		tbl.add(label, fmtVal(gS.Median), fmtVal(pS.Median), fmtCI(pS), fmtRatio(pS.Median/gS.Median), fmt.Sprint(pS.N))
		ms = append(ms, measure("go_"+name, "us", gS), versus("python_"+name+"_vs_go", "us", pS, "go_"+name, gS))
	}
	for _, size := range []int{1, 1 << 10, 1 << 20} {
		payload := randomBytes(size)
		result := make([]byte, size)
		inv := func(fn string) func(ctx context.Context) (time.Duration, error) {
			return timed(func(ctx context.Context) error {
				out, err := p1.InvokeInto(ctx, fn, payload, result)
				if err == nil && len(out) != size {
					err = fmt.Errorf("%s returned %d bytes", fn, len(out))
				}
				return err
			})
		}
		warm, reps := e.repsFor(size)
		s, errs := interleave(ctx, warm, reps, []op{{"go", inv("echo")}, {"python", inv("py-echo")}})
		if err := firstErr(errs); err != nil {
			return sec, ms, err
		}
		label := sizeLabel(size)
		row("invoke_"+label, "invoke "+prettySize(size), s.sum("go"), s.sum("python"))
		e.logf("exp 9 invoke %-6s go %s µs, python %s µs", label, fmtVal(s.sum("go").Median), fmtVal(s.sum("python").Median))
	}

	pair := func(dc1, dc2 *client.DataConn, f1, in1, f2, in2 string) func(ctx context.Context) (time.Duration, error) {
		return timed(func(ctx context.Context) error {
			if _, err := dc1.Invoke(ctx, f1, []byte(in1)); err != nil {
				return err
			}
			_, err := dc2.Invoke(ctx, f2, []byte(in2))
			return err
		})
	}
	warm, reps := e.repsFor(1)
	s, errs := interleave(ctx, warm, reps, []op{
		{"go-state", pair(p1, p1, "state-set", "k=0123456789abcdef", "state-get", "k")},
		{"py-state", pair(p1, p1, "py-state-set", "k=0123456789abcdef", "py-state-get", "k")},
		{"go-msg", pair(p1, p2, "send", "p2 gk hello", "recv", "p1 gk 5000")},
		{"py-msg", pair(p1, p2, "py-send", "p2 pk hello", "py-recv", "p1 pk 5000")},
	})
	if err := firstErr(errs); err != nil {
		return sec, ms, err
	}
	row("state_set_get", "state set + get (2 invocations)", s.sum("go-state"), s.sum("py-state"))
	row("send_recv", "send + recv, p1 → p2 (2 invocations)", s.sum("go-msg"), s.sum("py-msg"))

	const per = 100
	loop := timed(func(ctx context.Context) error {
		_, err := p1.Invoke(ctx, "py-state-loop", []byte(strconv.Itoa(per)))
		return err
	})
	echo1 := timed(func(ctx context.Context) error {
		_, err := p1.Invoke(ctx, "py-echo", []byte{1})
		return err
	})
	s, errs = interleave(ctx, warm/10+1, reps/10+1, []op{{"loop", loop}, {"echo", echo1}})
	if err := firstErr(errs); err != nil {
		return sec, ms, err
	}
	perPair := (s.sum("loop").Median - s.sum("echo").Median) / per
	ms = append(ms, Measure{Name: "python_state_call_pair", Unit: "us", Median: num(perPair), N: s.sum("loop").N})
	tbl.add("one state set + get call pair inside a Python function", "", fmtVal(perPair), "", "", fmt.Sprint(s.sum("loop").N))
	sec.Tables = append(sec.Tables, tbl)
	return sec, ms, nil
}
