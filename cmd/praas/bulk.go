package main

import (
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/praas-dev/praas/client"
)

// printCreated is the human view of a process just created.
func printCreated(w io.Writer, p client.Process) {
	fmt.Fprintf(w, "process %s/%s %s at %s\n", p.App, p.PID, p.Status, orDash(p.Address))
}

// createProcesses creates count processes of app, parallel at a time, named
// prefix1..prefixN (or by the control plane if prefix is empty), showing
// "created 37/100" on a terminal. After the first failure it starts no
// more; it prints those created, in order, and returns the failure.
func (c *cli) createProcesses(app, prefix string, count, parallel int, opts []client.CreateOption) error {
	cl := c.client()
	// failed stops the feeding of pids; creations under way finish, as a
	// creation cut short might still happen.
	failed := make(chan struct{})
	prog := c.progress(fmt.Sprintf("created 0/%d", count))

	var (
		mu       sync.Mutex
		created  = make([]*client.Process, count)
		done     int
		firstErr error
	)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(parallel, count) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				pid := ""
				if prefix != "" {
					pid = prefix + strconv.Itoa(i+1)
				}
				p, err := cl.CreateProcess(c.ctx, app, pid, opts...)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
						close(failed)
					}
				} else {
					created[i] = &p
					done++
					prog.set("created %d/%d", done, count)
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range count {
		select {
		case <-failed: // before a worker that is free takes one more
			break feed
		default:
		}
		select {
		case next <- i:
		case <-failed:
			break feed
		case <-c.ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	prog.end()

	procs := make([]client.Process, 0, done)
	for _, p := range created {
		if p != nil {
			procs = append(procs, *p)
		}
	}
	if err := c.print(procs, func(w io.Writer) {
		for _, p := range procs {
			printCreated(w, p)
		}
	}); err != nil {
		return err
	}
	if firstErr == nil && c.ctx.Err() != nil {
		firstErr = c.ctx.Err()
	}
	if firstErr != nil {
		return fmt.Errorf("%d of %d processes created: %w", len(procs), count, firstErr)
	}
	return nil
}
