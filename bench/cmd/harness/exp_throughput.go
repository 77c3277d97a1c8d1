package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/praas-dev/praas/client"
)

// loadConfig is one throughput configuration: conns connections with
// perConn invocations in flight on each.
type loadConfig struct {
	name          string
	conns, inflow int
}

// expThroughput is experiment 3: no-op invocations per second with many in
// flight, against a pipelined TCP echo with as many in flight.
func expThroughput(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 3, Title: "Throughput", Plot: "3-throughput.svg"}
	window := 100 * time.Millisecond
	windows, chunks := 100, 4
	if e.Quick {
		window, windows, chunks = 50*time.Millisecond, 20, 2
	}
	sec.Text = []string{
		fmt.Sprintf("No-op invocations (`echo` of the builtin image, 1-byte input) per second, from the harness over the data plane "+
			"with N invocations in flight: N goroutines each invoking in a loop on one shared `client.DataConn` (which multiplexes and "+
			"pipelines them), and the same spread over 8 connections. The baseline is the TCP echo server, pipelined with N frames in flight "+
			"per connection (one writer, one reader goroutine per connection). A sample is the rate over a %s window; "+
			"%d windows per configuration, taken in %d alternating blocks of praas and TCP after a warm-up.", window, windows, chunks),
	}
	dcs := make([]*client.DataConn, 8)
	for i := range dcs {
		var err error
		if dcs[i], err = dataConn(ctx, e.C, "demo", "throughput"); err != nil {
			return sec, nil, err
		}
		defer dcs[i].Close()
	}
	configs := []loadConfig{{"1 in flight", 1, 1}, {"16 in flight", 1, 16}, {"128 in flight", 1, 128}, {"8 connections × 16", 8, 16}}
	payload := []byte{'x'}
	samples := Samples{}
	for _, cfg := range configs {
		for c := 0; c < chunks; c++ {
			n := windows / chunks
			v, err := praasLoad(ctx, dcs[:cfg.conns], cfg.inflow, payload, window, n)
			if err != nil {
				return sec, nil, fmt.Errorf("%s: %w", cfg.name, err)
			}
			samples["praas "+cfg.name] = append(samples["praas "+cfg.name], v...)
			v, err = tcpLoad(e.TCPEcho.Addr, cfg.conns, cfg.inflow, payload, window, n)
			if err != nil {
				return sec, nil, fmt.Errorf("TCP %s: %w", cfg.name, err)
			}
			samples["tcp "+cfg.name] = append(samples["tcp "+cfg.name], v...)
		}
	}
	var ms []Measure
	tbl := Table{Head: []string{"configuration", "praas invocations/s", "99% CI", "TCP echo round trips/s", "99% CI", "praas / TCP", "n"}}
	names := []string{"throughput_1_inflight", "throughput_16_inflight", "throughput_128_inflight", "throughput_8conns_16_inflight"}
	var cats []string
	bars := []barGroup{{name: "praas data plane"}, {name: "pipelined TCP echo"}}
	for i, cfg := range configs {
		p, t := samples.sum("praas "+cfg.name), samples.sum("tcp "+cfg.name)
		ms = append(ms, measure("tcp_"+names[i][len("throughput_"):], "ops/s", t),
			versus(names[i]+"_vs_tcp", "ops/s", p, "tcp_"+names[i][len("throughput_"):], t))
		tbl.add(cfg.name, fmtVal(p.Median), fmtCI(p), fmtVal(t.Median), fmtCI(t), fmtRatio(p.Median/t.Median), fmt.Sprint(p.N))
		cats = append(cats, cfg.name)
		bars[0].values = append(bars[0].values, p.Median)
		bars[1].values = append(bars[1].values, t.Median)
		e.logf("exp 3 %-20s praas %s/s, TCP %s/s", cfg.name, fmtVal(p.Median), fmtVal(t.Median))
	}
	sec.Tables = append(sec.Tables, tbl)
	sec.Notes = append(sec.Notes, "Here the ratio is praas / TCP: above 1 would be faster than the baseline. The p99 of a rate is not shown (a low rate is the bad tail).")
	return sec, ms, barPlot(e.plotPath(sec.Plot), "Throughput of no-op invocations (median)", "operations / s", cats, bars, false)
}

// rateWindows counts completions in done over n windows after a warm-up of
// two windows and returns the rates in operations per second.
func rateWindows(ctx context.Context, done *atomic.Int64, window time.Duration, n int) []float64 {
	time.Sleep(2 * window)
	out := make([]float64, 0, n)
	last, lastT := done.Load(), time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		time.Sleep(window)
		now, nowT := done.Load(), time.Now()
		out = append(out, float64(now-last)/nowT.Sub(lastT).Seconds())
		last, lastT = now, nowT
	}
	return out
}

func praasLoad(ctx context.Context, dcs []*client.DataConn, inflight int, payload []byte, window time.Duration, n int) ([]float64, error) {
	var done atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for _, dc := range dcs {
		for j := 0; j < inflight; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					out, err := dc.Invoke(ctx, "echo", payload)
					if err != nil {
						if ctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
							cancel()
						}
						return
					}
					if len(out) != len(payload) {
						firstErr.CompareAndSwap(nil, fmt.Errorf("echo returned %d bytes", len(out)))
						cancel()
						return
					}
					done.Add(1)
				}
			}()
		}
	}
	rates := rateWindows(ctx, &done, window, n)
	cancel()
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return nil, err
	}
	return rates, nil
}

func tcpLoad(addr string, conns, inflight int, payload []byte, window time.Duration, n int) ([]float64, error) {
	var done atomic.Int64
	stop := make(chan struct{})
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		t, err := dialTCPEcho(addr)
		if err != nil {
			close(stop)
			return nil, err
		}
		go func() { errs <- t.pipeline(payload, inflight, &done, stop) }()
	}
	rates := rateWindows(context.Background(), &done, window, n)
	close(stop)
	var err error
	for i := 0; i < conns; i++ {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return rates, err
}
