package main

import (
	"context"
	"fmt"
	"time"
)

// op is one operation measured in a latency experiment; it returns the time
// it took (measured by itself, or by a function inside a process).
type op struct {
	name string
	run  func(ctx context.Context) (time.Duration, error)
}

// timed wraps f, timing it here.
func timed(f func(ctx context.Context) error) func(ctx context.Context) (time.Duration, error) {
	return func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		err := f(ctx)
		return time.Since(start), err
	}
}

// interleave runs warmup unmeasured rounds, then reps measured rounds; a
// round runs every op once, starting at a different op each round so that
// no op always follows the same one. Values are in microseconds. An op
// that fails is dropped from later rounds and its error is returned in errs.
func interleave(ctx context.Context, warmup, reps int, ops []op) (Samples, map[string]error) {
	out := Samples{}
	errs := map[string]error{}
	for r := 0; r < warmup+reps; r++ {
		for i := range ops {
			o := ops[(r+i)%len(ops)]
			if errs[o.name] != nil {
				continue
			}
			d, err := o.run(ctx)
			if err != nil {
				errs[o.name] = fmt.Errorf("%s: %w", o.name, err)
				continue
			}
			if r >= warmup {
				out.add(o.name, us(d))
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	return out, errs
}

// reps returns the number of repetitions for the mode.
func (e *Env) reps(full, quick int) int {
	if e.Quick {
		return quick
	}
	return full
}

// repsFor returns the warm-up rounds and measured repetitions for a payload
// size: small payloads are cheap, so they get many more repetitions, which
// narrows their confidence intervals on a noisy machine.
func (e *Env) repsFor(size int) (warm, reps int) {
	switch {
	case e.Quick && size <= 64<<10:
		return 10, 200
	case e.Quick && size <= 1<<20:
		return 3, 30
	case e.Quick:
		return 2, 10
	case size <= 64<<10:
		return 50, 1000
	case size <= 1<<20:
		return 10, 200
	}
	return 5, 100
}
