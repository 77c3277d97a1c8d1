package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress shows what a long command is doing on one line of stderr,
// redrawn in place: a spinner, a message ("created 37/100") and the time
// elapsed. Only when stderr is a terminal: redirected, it writes nothing,
// so logs and pipes see only results and errors.
type progress struct {
	w     io.Writer // nil when off
	start time.Time

	mu   sync.Mutex
	msg  string
	drew bool // a line is on screen, to clear

	stop chan struct{}
	done chan struct{}
}

// progressTick is how often the line is redrawn.
const progressTick = 100 * time.Millisecond

// progress starts a progress line with msg; end it with end.
func (c *cli) progress(msg string) *progress {
	p := &progress{start: time.Now(), msg: msg}
	if !c.isTerminal(c.stderr) {
		return p
	}
	p.w, p.stop, p.done = c.stderr, make(chan struct{}), make(chan struct{})
	go p.run()
	return p
}

func (p *progress) run() {
	defer close(p.done)
	t := time.NewTicker(progressTick)
	defer t.Stop()
	spinner := `|/-\`
	for i := 0; ; i++ {
		p.mu.Lock()
		fmt.Fprintf(p.w, "\r\033[K%c %s (%s)", spinner[i%len(spinner)], p.msg, time.Since(p.start).Round(100*time.Millisecond))
		p.drew = true
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// set replaces the message; the next redraw shows it.
func (p *progress) set(format string, args ...any) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	p.msg = fmt.Sprintf(format, args...)
	p.mu.Unlock()
}

// end stops redrawing, clears the line and returns the time elapsed since
// the start.
func (p *progress) end() time.Duration {
	if p.w != nil {
		close(p.stop)
		<-p.done
		if p.drew {
			fmt.Fprint(p.w, "\r\033[K")
		}
	}
	return time.Since(p.start)
}
