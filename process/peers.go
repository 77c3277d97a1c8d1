package process

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/wire"
)

// peers holds one data-plane connection per peer process, reused and
// multiplexed by every invocation that talks to that peer.
type peers struct {
	mu    sync.Mutex
	conns map[string]*client.DataConn
}

func (p *peers) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid, dc := range p.conns {
		dc.Close()
		delete(p.conns, pid)
	}
}

// peer returns a usable connection to process pid.
func (rt *Runtime) peer(ctx context.Context, pid string) (*client.DataConn, error) {
	rt.peers.mu.Lock()
	dc := rt.peers.conns[pid]
	rt.peers.mu.Unlock()
	if dc != nil && dc.Usable() {
		return dc, nil
	}
	m, err := rt.member(ctx, pid)
	if err != nil {
		return nil, err
	}
	// The peer token says who we are: the peer takes the source of our
	// messages from it.
	dc, err = client.Dial(ctx, m.Address, rt.peerToken(),
		client.DialOptions{Source: rt.cfg.PID, MaxPayload: rt.cfg.MaxPayload, TLS: rt.cfg.PeerTLS, TracerProvider: rt.cfg.TracerProvider})
	if err != nil {
		// Nothing was sent: the peer may be leaving; the caller retries
		// with fresh membership or through the control plane.
		return nil, fmt.Errorf("%w: %w", client.ErrNotSent, err)
	}
	rt.peers.mu.Lock()
	defer rt.peers.mu.Unlock()
	// An unusable old connection closes itself once its calls are answered.
	if old := rt.peers.conns[pid]; old != nil && old.Usable() {
		dc.Close()
		return old, nil
	}
	rt.peers.conns[pid] = dc
	return dc, nil
}

// checkDest validates a destination pid of Send or Invoke.
func (rt *Runtime) checkDest(dest string) error {
	if dest == "" || dest == Any {
		return fmt.Errorf("%w: a destination pid is required", errs.ErrInvalidArgument)
	}
	if strings.Contains(dest, "/") {
		return fmt.Errorf("%w: %q: processes can only reach processes of their own application", errs.ErrPermissionDenied, dest)
	}
	return nil
}

// toPeer runs op on a connection to dest; if dest went away before op was
// sent (it is swapping or restarting), it learns the new membership and
// tries once more.
func (rt *Runtime) toPeer(ctx context.Context, dest string, op func(*client.DataConn) error) error {
	if err := rt.checkDest(dest); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		dc, err := rt.peer(ctx, dest)
		if err == nil {
			err = op(dc)
		}
		if attempt > 0 || !errors.Is(err, client.ErrNotSent) {
			return err
		}
		rt.members.invalidate(dest)
	}
}

// notActive reports a call that never reached its peer because the peer is
// swapped out, failed, starting or leaving: the control plane takes over,
// bringing it back (and queueing messages). An error the peer's function
// returned never qualifies, so nothing runs twice.
func notActive(err error) bool {
	return errors.Is(err, errPeerNotActive) || errors.Is(err, client.ErrNotSent)
}

func (rt *Runtime) remoteInvoke(ctx context.Context, dest, function string, input []byte) (out []byte, err error) {
	err = rt.toPeer(ctx, dest, func(dc *client.DataConn) (err error) {
		// No hand-off of the caller's connection here: a peer usually
		// answers within a network round trip, and one that takes long is
		// noticed by the watchdog.
		out, err = dc.Invoke(ctx, function, input)
		return err
	})
	if notActive(err) && rt.cfg.ControlPlane != "" {
		// The control plane brings dest back and runs it there.
		q := url.Values{"app": {rt.cfg.App}, "pid": {dest}, "function": {function}}
		out = nil
		if rt.tracer != nil {
			var span trace.Span
			ctx, span = rt.tracer.StartInvoke(ctx, trace.SpanKindClient, rt.cfg.App, dest, function)
			defer func() { tracing.End(span, err) }()
		}
		// A request written whole may have run (the control plane reads the
		// whole body before it invokes): without an answer its outcome is
		// unknown. The control plane retries calls that did not run itself.
		var wrote atomic.Bool
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(i.Err == nil) },
		})
		err = rt.doWith(tctx, rt.http.invoke, cpapi.PathInvoke+"?"+q.Encode(), "application/octet-stream", input, &out)
		if err != nil && errs.CodeOf(err) == errs.Unknown {
			sentinel := errs.ErrUnavailable
			if wrote.Load() {
				sentinel = errs.ErrOutcomeUnknown
			}
			err = fmt.Errorf("%w: invoke %s through the control plane: %w", sentinel, dest, err)
		}
	}
	return out, err
}

// invokeClient carries invocations through the control plane: the caller's
// context bounds them, as long as the function runs.
var invokeClient = &http.Client{}

func (rt *Runtime) send(ctx context.Context, dest, key string, data []byte) (err error) {
	if err := checkKey(key); err != nil {
		return err
	}
	if dest == Self || dest == rt.cfg.PID {
		if rt.tracer != nil {
			var span trace.Span
			ctx, span = rt.tracer.StartSend(ctx, trace.SpanKindProducer, rt.cfg.PID, key)
			defer func() { tracing.End(span, err) }()
		}
		run, err := rt.deliver(Message{Src: rt.cfg.PID, Key: key, Data: data}, true, 0)
		if err != nil {
			return err
		}
		if run != nil {
			// Its own goroutine, not tied to the caller's connection reader.
			go run(context.WithValue(context.WithoutCancel(ctx), readerKey{}, (*reader)(nil)))
		}
		return nil
	}
	err = rt.toPeer(ctx, dest, func(dc *client.DataConn) error {
		return dc.Send(ctx, rt.cfg.PID, key, data) // acknowledged within a round trip
	})
	if notActive(err) && rt.cfg.ControlPlane != "" {
		// The control plane queues it durably in dest's backup queue, from
		// the sender our credential names.
		if rt.tracer != nil {
			var span trace.Span
			ctx, span = rt.tracer.StartSend(ctx, trace.SpanKindProducer, dest, key)
			defer func() { tracing.End(span, err) }()
		}
		q := url.Values{"app": {rt.cfg.App}, "dest": {dest}, "key": {key}}
		return rt.postRaw(ctx, cpapi.PathMessages+"?"+q.Encode(), data)
	}
	return err
}

func checkKey(key string) error {
	if key == "" || len(key) > 4096 {
		return fmt.Errorf("%w: a message key must be 1 to 4096 bytes", errs.ErrInvalidArgument)
	}
	return nil
}

// acceptMessage takes a message that arrived over the data plane, its
// source already set from the sender's token; it returns the invocation the
// message triggers, if any, for the caller to run. relayed says the
// sender's token allows relaying (the control plane's). Messages it
// delivers from the backup queue (m.Queued > 0) bypass the mailbox limits:
// they were acknowledged to their senders, and must not be refused; those
// it relays live (REST sends to an active process) are limited like any
// other. A queue sequence from any other sender is ignored.
func (rt *Runtime) acceptMessage(m wire.Message, data []byte, relayed bool) (func(context.Context), error) {
	if !relayed {
		m.Queued = 0
	}
	if err := checkKey(m.Key); err != nil {
		return nil, err
	}
	rt.admitMu.Lock()
	defer rt.admitMu.Unlock()
	if rt.draining.Load() {
		return nil, fmt.Errorf("%w: process %s is shutting down", errs.ErrUnavailable, rt.cfg.PID)
	}
	return rt.deliver(Message{Src: m.Source, Key: m.Key, Data: data}, m.Queued == 0, m.Queued)
}
