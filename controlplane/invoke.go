package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/store"
)

// invoke is the FaaS-compatible path: pick (or start) a process, forward the
// raw body over the data plane, answer the raw result. Headers tell the
// client where the process is, so it can skip the control plane next time.
func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	app, ok := s.app(w, r)
	if !ok {
		return
	}
	function := r.PathValue("function")
	if err := names.Function(function); err != nil {
		writeError(w, s.log, err)
		return
	}
	if pid := r.URL.Query().Get("pid"); pid != "" {
		if err := names.PID(pid); err != nil {
			writeError(w, s.log, err)
			return
		}
	}
	pid := r.URL.Query().Get("pid")
	ctx := r.Context()
	var err error
	if s.tracer != nil {
		// The caller's trace (traceparent header: a client, or a process
		// invoking a peer that is not active) goes on here.
		var span trace.Span
		ctx, span = s.tracer.StartInvoke(tracing.Extract(ctx, r.Header), trace.SpanKindServer, app.Name, pid, function)
		defer func() { tracing.End(span, err) }()
	}
	input, err := s.readPayload(r)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	began := time.Now()
	defer func() {
		s.metrics.restInvocations.WithLabelValues(app.Name, outcome(err)).Inc()
		s.metrics.restLatency.WithLabelValues(app.Name).Observe(time.Since(began).Seconds())
	}()
	var out []byte
	var t target
	// A process that goes away between the pick and the call (swap,
	// shutdown) refuses the call without running it: pick again, as long as
	// the caller waits.
	backoff := time.Millisecond
	for {
		t, err = s.pick(ctx, app, pid)
		if err == nil {
			out, err = t.conn.Invoke(ctx, function, input)
		}
		if !errors.Is(err, client.ErrNotSent) || ctx.Err() != nil {
			break
		}
		pid = t.pid
		// Give a process that crashed time to be noticed rather than spin.
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(client.HeaderPID, t.pid)
	h.Set(client.HeaderAddress, t.addr)
	h.Set(client.HeaderToken, s.clientToken(app.Name, t.pid))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// target is an active process to invoke, and the connection to it.
type target struct {
	pid, addr string
	conn      *client.DataConn
}

func (s *Server) readPayload(r *http.Request) ([]byte, error) {
	if r.ContentLength > s.cfg.MaxPayload {
		return nil, fmt.Errorf("%w: payload of %d bytes, limit %d", errs.ErrTooLarge, r.ContentLength, s.cfg.MaxPayload)
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		// A declared length is a hint, not a promise: grow up front only so
		// far, so a short body cannot make the server allocate the limit.
		buf.Grow(int(min(r.ContentLength, 1<<20)))
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, s.cfg.MaxPayload+1)); err != nil {
		return nil, fmt.Errorf("%w: read body: %v", errs.ErrInvalidArgument, err)
	}
	if int64(buf.Len()) > s.cfg.MaxPayload {
		return nil, fmt.Errorf("%w: payload over %d bytes", errs.ErrTooLarge, s.cfg.MaxPayload)
	}
	return buf.Bytes(), nil
}

// pick returns the process to run an invocation: pid if given (started or
// brought back if needed, here or by the replica that owns it), else an
// active process of the app this replica runs, in turn, else a new one.
func (s *Server) pick(ctx context.Context, app store.App, pid string) (target, error) {
	if pid == "" {
		if l := s.nextActive(app.Name); l != nil {
			return s.localTarget(ctx, l)
		}
		pid = "p-" + randomHex(4)
		if err := s.checkProcessQuota(ctx, app.Name, pid); err != nil {
			return target{}, err
		}
		now := time.Now().UTC()
		if _, err := s.cfg.Metadata.CreateProcess(ctx, store.Process{App: app.Name, PID: pid,
			Status: store.StatusAllocating, CreatedAt: now, UpdatedAt: now}); err != nil {
			return target{pid: pid}, err
		}
		s.emit(Event{Type: EventProcessCreated, App: app.Name, PID: pid, Status: store.StatusAllocating})
	}
	if l := s.lookupLive(app.Name, pid); l != nil && isReady(l) && !l.isStopping() {
		return s.localTarget(ctx, l)
	}
	backoff := 5 * time.Millisecond
	for {
		l, err := s.activeProcess(ctx, app, pid)
		if err == nil {
			return s.localTarget(ctx, l)
		}
		var peer *errOwnedByPeer
		if !errors.As(err, &peer) {
			return target{pid: pid}, err
		}
		if rec := peer.rec; rec.Status == store.StatusActive && rec.Address != "" {
			dc, err := s.peerConn(ctx, rec.Address, app.Name, pid)
			return target{pid: pid, addr: rec.Address, conn: dc}, err
		}
		// Its owner is starting it or swapping it out: look again shortly.
		select {
		case <-ctx.Done():
			return target{pid: pid}, fmt.Errorf("%w: process %s/%s is %s at replica %s: %w", errs.ErrUnavailable, app.Name, pid, peer.rec.Status, peer.owner.ID, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

func (s *Server) localTarget(ctx context.Context, l *live) (target, error) {
	dc, err := s.dataConn(ctx, l)
	return target{pid: l.pid, addr: l.address(), conn: dc}, err
}

func isReady(l *live) bool {
	select {
	case <-l.ready:
		return l.startErr == nil
	default:
		return false
	}
}

// nextActive returns the app's running processes in turn.
func (s *Server) nextActive(app string) *live {
	s.mu.Lock()
	defer s.mu.Unlock()
	var active []*live
	for _, l := range s.live {
		if l.app == app && isReady(l) {
			l.mu.Lock()
			stopping := l.stopping
			l.mu.Unlock()
			if !stopping {
				active = append(active, l)
			}
		}
	}
	if len(active) == 0 {
		return nil
	}
	s.rr++
	return active[s.rr%uint64(len(active))]
}
