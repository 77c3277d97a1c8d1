package client

import (
	"context"
	"errors"
	"time"

	"github.com/praas-dev/praas/errs"
)

// Invoke runs function in process pid of app. The first call goes through
// the control plane, which tells where the process is; later calls go
// straight to the process over the data plane. When the process goes away
// (swap, restart) the call is re-routed through the control plane without
// the caller noticing. With pid "" the control plane picks a process.
//
// A call that did not run (errs.Unavailable: refused by a leaving process,
// or never sent) is tried again, through the control plane, a few times
// within ctx. A call whose answer never came (errs.OutcomeUnknown: the
// process died or the connection broke after it was sent) is not: it may
// have run, and only the caller knows whether running it twice is safe.
// A call refused unrun because the process is at a limit
// (errs.ResourceExhausted) fails at once, or is tried again for as long as
// WithWaitWhenFull allows.
func (c *Client) Invoke(ctx context.Context, app, pid, function string, input []byte) ([]byte, error) {
	var out []byte
	err := c.whileFull(ctx, func() (err error) {
		out, err = c.invoke(ctx, app, pid, function, input)
		return err
	})
	return out, err
}

func (c *Client) invoke(ctx context.Context, app, pid, function string, input []byte) ([]byte, error) {
	if pid != "" {
		if dc := c.cachedConn(app, pid); dc != nil {
			out, err := dc.Invoke(ctx, function, input)
			if !errors.Is(err, ErrNotSent) {
				return out, err
			}
			c.dropConn(app, pid, dc)
		}
	}
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		res, err := c.InvokeControlPlane(ctx, app, pid, function, input)
		if err == nil {
			if res.Address != "" && res.Token != "" {
				c.learn(ctx, app, res.PID, res.Address, res.Token)
			}
			return res.Output, nil
		}
		if errs.CodeOf(err) != errs.Unavailable || attempt == invokeAttempts {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// whileFull runs call, and runs it again while it is refused with
// errs.ResourceExhausted (a quota: a full mailbox, too many invocations in
// flight) and the client's WithWaitWhenFull allows: a refused call did not
// run, so trying again is safe. A payload over its size limit is not tried
// again.
func (c *Client) whileFull(ctx context.Context, call func() error) error {
	deadline := time.Now().Add(c.waitWhenFull)
	backoff := 10 * time.Millisecond
	for {
		err := call()
		if errs.CodeOf(err) != errs.ResourceExhausted || errors.Is(err, errs.ErrTooLarge) {
			return err
		}
		wait := min(backoff, time.Until(deadline))
		if wait <= 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// invokeAttempts bounds how often Invoke asks the control plane to run a
// call that did not run: about a second and a half of waiting in all.
const invokeAttempts = 5

// DataConn returns a data-plane connection to process pid of app, learning
// its address from the control plane if needed (which starts or swaps in the
// process if it is not active).
func (c *Client) DataConn(ctx context.Context, app, pid string) (*DataConn, error) {
	if dc := c.cachedConn(app, pid); dc != nil {
		return dc, nil
	}
	p, err := c.CreateProcess(ctx, app, pid)
	if err != nil && !errors.Is(err, errs.ErrAlreadyExists) {
		return nil, err
	}
	if err != nil || p.Token == "" {
		if p, err = c.GetProcess(ctx, app, pid); err != nil {
			return nil, err
		}
	}
	if p.Address == "" || p.Token == "" {
		return nil, errs.Errorf(errs.Unavailable, "process %s/%s is %s", app, pid, p.Status)
	}
	return c.dial(ctx, app, pid, p.Address, p.Token)
}

func connKey(app, pid string) string { return app + "/" + pid }

func (c *Client) cachedConn(app, pid string) *DataConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	dc := c.conns[connKey(app, pid)]
	if dc != nil && !dc.Usable() {
		// It closes itself once the calls in flight on it are answered.
		delete(c.conns, connKey(app, pid))
		return nil
	}
	return dc
}

func (c *Client) dropConn(app, pid string, dc *DataConn) {
	c.mu.Lock()
	if c.conns[connKey(app, pid)] == dc {
		delete(c.conns, connKey(app, pid))
	}
	c.mu.Unlock()
}

// learn dials the process so that the next call goes over the data plane.
// A failure is not an error: the control plane path still works.
func (c *Client) learn(ctx context.Context, app, pid, addr, token string) {
	if c.cachedConn(app, pid) != nil {
		return
	}
	_, _ = c.dial(ctx, app, pid, addr, token)
}

func (c *Client) dial(ctx context.Context, app, pid, addr, token string) (*DataConn, error) {
	tlsCfg, err := c.dataPlaneTLS(ctx)
	if err != nil {
		return nil, err
	}
	dc, err := Dial(ctx, addr, token, DialOptions{TLS: tlsCfg, TracerProvider: c.tp})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.conns[connKey(app, pid)]; old != nil && old.Usable() {
		dc.Close()
		return old, nil
	}
	c.conns[connKey(app, pid)] = dc
	return dc, nil
}
