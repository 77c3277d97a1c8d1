package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/tracing"
)

// errRetired is returned by report when the control plane no longer wants
// this instance (the process was deleted or started elsewhere).
var errRetired = errors.New("retired by the control plane")

var httpClient = &http.Client{Timeout: 10 * time.Second}

// report registers with the control plane, then sends heartbeats with usage
// until ctx ends. When the replica it reports to stops answering it tries the
// others it knows of, so a replica that takes the process over (or a
// restarted control plane) finds it again.
func (rt *Runtime) report(ctx context.Context) error {
	reg := cpapi.Register{App: rt.cfg.App, PID: rt.cfg.PID, Generation: rt.cfg.Generation, Address: rt.addr,
		RestoredBytes: rt.restoredBytes}
	registered := false
	lastContact := time.Now()
	tick := time.NewTicker(rt.cfg.Heartbeat)
	defer tick.Stop()
	interval := rt.cfg.Heartbeat
	for {
		var err error
		var reply cpapi.HeartbeatReply
		if !registered {
			err = rt.post(ctx, cpapi.PathRegister, reg, &reply)
			registered = err == nil && reply.Owner == ""
			if registered {
				rt.log.Debug("registered with the control plane", "url", rt.cp.url())
			}
		} else {
			hb := cpapi.Heartbeat{App: rt.cfg.App, PID: rt.cfg.PID, Generation: rt.cfg.Generation,
				Usage: rt.usage(), IdleNanos: int64(rt.idleFor()), OrphanNanos: int64(rt.orphanWindow()),
				CertNotAfter: rt.certNotAfter(), Metrics: rt.metricsReport()}
			err = rt.post(ctx, cpapi.PathHeartbeat, hb, &reply)
			if errors.Is(err, errUnknownInstance) {
				registered = false // the control plane lost us: register again now
				continue
			}
		}
		if errors.Is(err, errRetired) {
			return err
		}
		if err == nil {
			lastContact = time.Now()
			rt.cp.learn(reply.Replicas)
			rt.renewCredentials(reply.Token, reply.PeerToken)
			rt.renewCert(reply.TLSCert, reply.TLSKey)
			if reply.Orphan != nil {
				rt.orphanPut.Store(reply.Orphan)
			}
			if d := max(rt.cfg.Heartbeat, time.Duration(reply.IntervalNanos)); d != interval {
				interval = d
				tick.Reset(d)
			}
			if reply.Owner != "" && rt.cp.follow(reply.Owner) {
				// Another replica owns us: register there at once.
				registered = false
				continue
			}
		} else if ctx.Err() == nil {
			rt.log.Debug("control plane unreachable", "url", rt.cp.url(), "err", err)
			rt.cp.failover()
			registered = false // the next replica may not know us yet
			if time.Since(lastContact) > rt.cfg.OrphanTimeout {
				return fmt.Errorf("%w for %s", errOrphaned, rt.cfg.OrphanTimeout)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// reportSnapshot tells the control plane about a snapshot, trying every
// replica it knows until one answers or ctx ends: until the record names
// the snapshot, no later start restores it.
func (rt *Runtime) reportSnapshot(ctx context.Context, rep cpapi.Snapshot) error {
	backoff := 50 * time.Millisecond
	for {
		err := rt.post(ctx, cpapi.PathSnapshot, rep, nil)
		var apiErr *cpError
		if err == nil || errors.Is(err, errRetired) || errors.As(err, &apiErr) || ctx.Err() != nil {
			return err
		}
		rt.log.Debug("report snapshot: control plane unreachable", "url", rt.cp.url(), "err", err)
		rt.cp.failover()
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// cpError is an answer of the control plane that refused a report.
type cpError struct{ err error }

func (e *cpError) Error() string { return e.err.Error() }
func (e *cpError) Unwrap() error { return e.err }

// cpLink is the runtime's view of the control plane: the replica it reports
// to, and every replica it has heard of to try when that one goes away.
type cpLink struct {
	mu      sync.Mutex
	current string
	known   []string
}

func (l *cpLink) init(url string) {
	l.current = strings.TrimRight(url, "/")
	if l.current != "" {
		l.known = []string{l.current}
	}
}

func (l *cpLink) url() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.current
}

// follow switches to url and reports whether it differs from the current one.
func (l *cpLink) follow(url string) bool {
	url = strings.TrimRight(url, "/")
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addLocked(url)
	if url == l.current {
		return false
	}
	l.current = url
	return true
}

// learn adds replica URLs to try on failure.
func (l *cpLink) learn(urls []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range urls {
		l.addLocked(strings.TrimRight(u, "/"))
	}
}

func (l *cpLink) addLocked(url string) {
	if url != "" && !slices.Contains(l.known, url) {
		l.known = append(l.known, url)
	}
}

// failover moves to the next known replica.
func (l *cpLink) failover() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.known) < 2 {
		return
	}
	i := slices.Index(l.known, l.current)
	l.current = l.known[(i+1)%len(l.known)]
}

var errUnknownInstance = errors.New("unknown to the control plane")

// errOrphaned ends a runtime whose control plane stayed away: it swaps
// itself out, so a control plane that comes back restores it.
var errOrphaned = errors.New("control plane unreachable")

func (rt *Runtime) post(ctx context.Context, path string, body, reply any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return rt.do(ctx, path, "application/json", b, reply)
}

// postRaw posts raw bytes to the internal API.
func (rt *Runtime) postRaw(ctx context.Context, path string, data []byte) error {
	return rt.do(ctx, path, "application/octet-stream", data, nil)
}

// authorize adds the runtime's credentials for the internal API to req.
func (rt *Runtime) authorize(req *http.Request) {
	req.Header.Set("Authorization", "Bearer "+rt.ownToken())
}

func (rt *Runtime) do(ctx context.Context, path, contentType string, b []byte, reply any) error {
	return rt.doWith(ctx, rt.http.report, path, contentType, b, reply)
}

// doWith posts b to the internal API with hc and decodes the reply: JSON
// into reply, or the raw body if reply is a *[]byte.
func (rt *Runtime) doWith(ctx context.Context, hc *http.Client, path, contentType string, b []byte, reply any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rt.cp.url()+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	rt.authorize(req)
	if rt.tracer != nil {
		tracing.Inject(ctx, req.Header)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil
	case http.StatusOK:
		if out, ok := reply.(*[]byte); ok {
			*out, err = io.ReadAll(io.LimitReader(resp.Body, int64(rt.cfg.MaxPayload)+1))
			if err == nil && len(*out) > rt.cfg.MaxPayload {
				err = fmt.Errorf("%w: a result over %d bytes", errs.ErrTooLarge, rt.cfg.MaxPayload)
			}
			return err
		}
		if reply != nil {
			return json.NewDecoder(resp.Body).Decode(reply)
		}
		return nil
	case http.StatusGone:
		return errRetired
	}
	var body struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case json.Unmarshal(raw, &body) == nil && body.Error != "":
		return &cpError{errs.New(errs.ParseCode(body.Code), body.Error)}
	case resp.StatusCode == http.StatusNotFound:
		return errUnknownInstance // a bare 404: register again
	default:
		return fmt.Errorf("control plane %s: %s: %s", path, resp.Status, bytes.TrimSpace(raw))
	}
}

// controlMessage handles a message of the control plane to the runtime
// itself (the connection's token allowed relaying).
func (rt *Runtime) controlMessage(key string, data []byte) error {
	switch key {
	case cpapi.KeyControlPlane:
		urls := strings.Fields(string(data))
		if len(urls) == 0 {
			return fmt.Errorf("%w: %s without a URL", errs.ErrInvalidArgument, key)
		}
		rt.cp.learn(urls[1:])
		if rt.cp.follow(urls[0]) {
			rt.log.Info("reporting to another control-plane replica", "url", urls[0])
		}
		return nil
	}
	return fmt.Errorf("%w: unknown control message %q", errs.ErrInvalidArgument, key)
}
