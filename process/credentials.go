package process

import (
	"fmt"
	"time"

	"github.com/praas-dev/praas/internal/token"
)

// credentials are the runtime's own tokens. The control plane signs them
// with a lifetime (an hour) and sends fresh ones in heartbeat replies, so a
// token that leaks stops working and a running process never holds an
// expired one while it reaches the control plane.
type credentials struct {
	own  string // the process's credential: the internal API
	peer string // presented to peer processes on the data plane
}

// ownToken authenticates the runtime to the internal API.
func (rt *Runtime) ownToken() string { return rt.creds.Load().own }

// peerToken is what the runtime presents when it dials a peer.
func (rt *Runtime) peerToken() string { return rt.creds.Load().peer }

// renewCredentials switches to the tokens of a heartbeat reply, if there
// are any and they are this process's (a confused control plane cannot
// make the runtime speak as another process).
func (rt *Runtime) renewCredentials(own, peer string) {
	if own == "" {
		return
	}
	if err := rt.checkOwn(own, token.OpInternal); err != nil {
		rt.log.Warn("control plane sent a credential that is not ours; keeping the old one", "err", err)
		return
	}
	if peer == "" {
		peer = own
	} else if err := rt.checkOwn(peer, 0); err != nil {
		rt.log.Warn("control plane sent a peer token that is not ours; keeping the old one", "err", err)
		return
	}
	rt.creds.Store(&credentials{own: own, peer: peer})
}

// checkOwn verifies that tok is a valid token of this process with ops.
func (rt *Runtime) checkOwn(tok string, ops token.Ops) error {
	c, err := rt.cfg.Verifier.Verify(tok, time.Now())
	if err != nil {
		return err
	}
	if c.App != rt.cfg.App || c.Sub != rt.cfg.PID || c.Gen != rt.cfg.Generation || !c.Ops.Has(ops) {
		return fmt.Errorf("token of %s/%s generation %d with %s, not of %s/%s generation %d with %s",
			c.App, c.Sub, c.Gen, c.Ops, rt.cfg.App, rt.cfg.PID, rt.cfg.Generation, ops)
	}
	return nil
}
