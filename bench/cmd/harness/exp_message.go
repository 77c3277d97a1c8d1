package main

import (
	"context"
	"fmt"
	"time"

	"github.com/praas-dev/praas/bench/internal/wireval"
	"github.com/praas-dev/praas/client"
)

// callTimed invokes a timing function of the benchmark image and returns
// the first duration it reports.
func callTimed(dc *client.DataConn, function string, arg []byte) func(ctx context.Context) (time.Duration, error) {
	return func(ctx context.Context) (time.Duration, error) {
		out, err := dc.Invoke(ctx, function, arg)
		if err != nil {
			return 0, err
		}
		ds, err := wireval.Durations(out)
		if err != nil {
			return 0, err
		}
		return ds[0], nil
	}
}

func half(f func(ctx context.Context) (time.Duration, error)) func(ctx context.Context) (time.Duration, error) {
	return func(ctx context.Context) (time.Duration, error) {
		d, err := f(ctx)
		return d / 2, err
	}
}

// expMessage is experiment 4: one message from a function in process A to
// a function in process B, against the same exchange through Redis and S3.
func expMessage(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 4, Title: "Communication between functions", Plot: "4-message.svg"}
	sec.Text = []string{
		"As in the later paper's Fig. 8: one message between functions in two processes of an app, timed inside process A by the " +
			"benchmark image. All variants are interleaved.",
		"- **praas message**: A `Send`s the payload to B under key `pong`, which triggers B's function `pong`; it `Send`s the data back " +
			"under `reply`, which A `Recv`s. One message is the round trip / 2.\n" +
			"- **Redis SET+GET**: the sender SETs the payload under a key, the receiver GETs it (on its own connection): the time of both, " +
			"a lower bound of a message through Redis, since the receiver is not told when to read.\n" +
			"- **Redis LPUSH/BRPOP**: A LPUSHes to a request list that a function in B waits on with BRPOP; B LPUSHes the data to a reply " +
			"list that A waits on with BRPOP. One message is the round trip / 2.\n" +
			"- **S3 PUT+GET**: the sender PUTs the payload as an object, the receiver GETs it (minio-go, one request each): the time of both.",
		"Redis keeps data in memory only for these runs (`appendonly no`), as process state does; with the test servers' default " +
			"(`appendfsync always`) every write would wait for the disk. The S3 server is versitygw with its posix backend on local disk.",
	}
	if e.Redis == nil || e.S3 == nil {
		return sec, nil, fmt.Errorf("redis or S3 missing: %v %v", e.RedisErr, e.S3Err)
	}
	a, err := e.storeConn(ctx, "img", "msg-a")
	if err != nil {
		return sec, nil, err
	}
	defer a.Close()
	b, err := e.storeConn(ctx, "img", "msg-b")
	if err != nil {
		return sec, nil, err
	}
	defer b.Close()
	e.Redis.Del(ctx, "bench:queue:req", "bench:queue:rep")

	sizes := payloadSizes
	if e.Quick {
		sizes = []int{1, 1 << 10, 64 << 10, 1 << 20}
	}
	var ms []Measure
	tbl := Table{Head: []string{"payload", "channel", "median µs", "99% CI of median", "p99 µs", "praas / channel", "n"}}
	names := []string{"praas message", "Redis SET+GET", "Redis LPUSH/BRPOP", "S3 PUT+GET"}
	plot := make([]series, len(names))
	for i, n := range names {
		plot[i].name = n
	}
	for _, size := range sizes {
		label := sizeLabel(size)
		payload := randomBytes(size)
		withDest := append(wireval.Str8(nil, "msg-b"), payload...)
		warm, reps := e.repsFor(size)
		// B answers the LPUSH/BRPOP requests of this size's rounds.
		pong, err := b.Go("redis-pong-loop", wireval.U32(nil, uint32(reps+warm)))
		if err != nil {
			return sec, ms, err
		}
		ops := []op{
			{names[0], half(callTimed(a, "msg-ping", withDest))},
			{names[1], callTimed(a, "redis-setget", payload)},
			{names[2], half(callTimed(a, "redis-ping", payload))},
			{names[3], callTimed(a, "s3-putget", payload)},
		}
		start := time.Now()
		s, errs := interleave(ctx, warm, reps, ops)
		if errs[names[2]] != nil {
			e.Redis.Del(ctx, "bench:queue:req", "bench:queue:rep")
		} else if _, err := pong.Wait(ctx); err != nil {
			errs["pong"] = fmt.Errorf("redis-pong-loop: %w", err)
		}
		if err := firstErr(errs); err != nil {
			return sec, ms, err
		}
		pr, rs, rl, s3 := s.sum(names[0]), s.sum(names[1]), s.sum(names[2]), s.sum(names[3])
		ms = append(ms,
			measure("redis_setget_"+label, "us", rs),
			measure("redis_list_"+label, "us", rl),
			measure("s3_putget_"+label, "us", s3),
			versus("message_"+label+"_vs_redis", "us", pr, "redis_setget_"+label, rs),
			versus("message_"+label+"_vs_redis_list", "us", pr, "redis_list_"+label, rl),
			versus("message_"+label+"_vs_s3", "us", pr, "s3_putget_"+label, s3))
		for i, v := range []statsSummary{pr, rs, rl, s3} {
			ratio := "(praas)"
			if i > 0 {
				ratio = fmtRatio(pr.Median / v.Median)
			}
			tbl.add(prettySize(size), names[i], fmtVal(v.Median), fmtCI(v), fmtVal(v.P99), ratio, fmt.Sprint(v.N))
			plot[i].add(float64(size), v)
		}
		e.logf("exp 4 %-6s praas %s µs, redis %s / %s µs, S3 %s µs [%s]", label, fmtVal(pr.Median), fmtVal(rs.Median),
			fmtVal(rl.Median), fmtVal(s3.Median), time.Since(start).Round(time.Millisecond))
	}
	sec.Tables = append(sec.Tables, tbl)
	sec.Notes = append(sec.Notes, "`message_1KiB_vs_redis` compares with Redis SET+GET, `message_1KiB_vs_redis_list` with LPUSH/BRPOP, `message_1KiB_vs_s3` with S3 PUT+GET.")
	return sec, ms, linePlot(e.plotPath(sec.Plot), "One message between two functions (median, 99% CI)", "payload", "latency [µs]", byteLabel, plot)
}
