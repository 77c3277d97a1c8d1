package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/procmetrics"
	"github.com/praas-dev/praas/store"
)

// fakeBackend runs fake processes: goroutines that speak the runtime's side
// of the internal API (register, heartbeats, snapshot reports) but serve no
// data plane. The lifecycle tests steer them: crash one, silence it, make it
// leave without a snapshot.
type fakeBackend struct {
	t    *testing.T
	swap store.Swap

	mu      sync.Mutex
	next    int
	procs   map[string]*fakeProc // by handle id
	starts  []backend.Spec
	kills   int
	noStart bool // Start's process exits before it registers
	// metrics, if set, is the metrics report a process of a generation
	// sends in its heartbeats and final snapshot report.
	metrics func(gen uint64) *procmetrics.Report
	stuck   bool // Start's process never runs its runtime (a pod whose image does not pull) until killed
}

type fakeProc struct {
	h      backend.Handle
	env    map[string]string
	stop   chan struct{} // closed by Stop: swap out
	kill   chan struct{} // closed by Kill or crash: end without a snapshot
	done   chan struct{} // closed when the process ended
	silent chan struct{} // closed to stop heartbeats while running on

	once, killOnce, silentOnce sync.Once
	// noSnapshot makes a stopped process leave without writing one.
	noSnapshot bool
}

func newFakeBackend(t *testing.T, swap store.Swap) *fakeBackend {
	return &fakeBackend{t: t, swap: swap, procs: make(map[string]*fakeProc)}
}

func (b *fakeBackend) CheckImage(_ context.Context, image string) (string, error) {
	if image == "" || image == backend.BuiltinImage {
		return backend.BuiltinImage, nil
	}
	return "", fmt.Errorf("%w: fake backend runs only %q", errs.ErrInvalidArgument, backend.BuiltinImage)
}

func (b *fakeBackend) Start(_ context.Context, spec backend.Spec) (backend.Handle, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	h := backend.Handle{ID: "fake-" + strconv.Itoa(b.next), App: spec.App, PID: spec.PID, Generation: spec.Generation}
	p := &fakeProc{h: h, env: make(map[string]string), stop: make(chan struct{}), kill: make(chan struct{}),
		done: make(chan struct{}), silent: make(chan struct{})}
	for _, kv := range append(append([]string{}, spec.Env...), spec.Secrets...) {
		k, v, _ := strings.Cut(kv, "=")
		p.env[k] = v
	}
	b.procs[h.ID] = p
	b.starts = append(b.starts, spec)
	if b.noStart {
		close(p.done)
		return h, nil
	}
	if b.stuck {
		go func() { <-p.kill; close(p.done) }()
		return h, nil
	}
	go p.run(b)
	return h, nil
}

// run is the fake runtime: register, beat, and on stop write and report a
// final snapshot.
func (p *fakeProc) run(b *fakeBackend) {
	defer close(p.done)
	gen, _ := strconv.ParseUint(p.env[cpapi.EnvGeneration], 10, 64)
	post := func(path string, body any) int {
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, p.env[cpapi.EnvControlPlane]+path, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+p.env[cpapi.EnvToken])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	app, pid := p.env[cpapi.EnvApp], p.env[cpapi.EnvPID]
	if post(cpapi.PathRegister, cpapi.Register{App: app, PID: pid, Generation: gen, Address: "127.0.0.1:1"}) != http.StatusOK {
		return
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.kill:
			return
		case <-p.stop:
			if p.noSnapshot {
				return
			}
			key := cpapi.SnapshotKey(app, pid, gen, 1)
			data := "state of " + key
			if err := p.putSnapshot(app, pid, gen, 1, data); err != nil {
				b.t.Errorf("fake process: write snapshot: %v", err)
				return
			}
			post(cpapi.PathSnapshot, cpapi.Snapshot{App: app, PID: pid, Generation: gen, Key: key, Bytes: int64(len(data)), Final: true, Metrics: b.report(gen)})
			return
		case <-tick.C:
			select {
			case <-p.silent:
				continue
			default:
			}
			if post(cpapi.PathHeartbeat, cpapi.Heartbeat{App: app, PID: pid, Generation: gen, Metrics: b.report(gen)}) == http.StatusGone {
				return
			}
		}
	}
}

// report is what the fake process of generation gen reports; nil without
// b.metrics.
func (b *fakeBackend) report(gen uint64) *procmetrics.Report {
	b.mu.Lock()
	f := b.metrics
	b.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(gen)
}

func (b *fakeBackend) proc(h backend.Handle) *fakeProc {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.procs[h.ID]
}

func (b *fakeBackend) Wait(ctx context.Context, h backend.Handle) (backend.Exit, error) {
	p := b.proc(h)
	if p == nil {
		return backend.Exit{Code: -1, Reason: "unknown"}, nil
	}
	select {
	case <-p.done:
		return backend.Exit{Code: 0, Reason: "ended"}, nil
	case <-ctx.Done():
		return backend.Exit{}, ctx.Err()
	}
}

func (b *fakeBackend) Stop(ctx context.Context, h backend.Handle) error {
	p := b.proc(h)
	if p == nil {
		return nil
	}
	p.once.Do(func() { close(p.stop) })
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return b.Kill(context.Background(), h)
	}
}

func (b *fakeBackend) Kill(_ context.Context, h backend.Handle) error {
	p := b.proc(h)
	if p == nil {
		return nil
	}
	b.mu.Lock()
	b.kills++
	b.mu.Unlock()
	p.killOnce.Do(func() { close(p.kill) })
	<-p.done
	return nil
}

func (b *fakeBackend) List(context.Context) ([]backend.Handle, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var hs []backend.Handle
	for _, p := range b.procs {
		select {
		case <-p.done:
		default:
			hs = append(hs, p.h)
		}
	}
	return hs, nil
}

// running returns the fake processes of app/pid that have not ended.
func (b *fakeBackend) running(app, pid string) []*fakeProc {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ps []*fakeProc
	for _, p := range b.procs {
		select {
		case <-p.done:
		default:
			if p.h.App == app && p.h.PID == pid {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

func (b *fakeBackend) startCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.starts)
}

func (b *fakeBackend) lastStart() backend.Spec {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.starts[len(b.starts)-1]
}

// memSwap is an in-memory store.Swap.
type memSwap struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func newMemSwap() *memSwap { return &memSwap{objs: make(map[string][]byte)} }

func (m *memSwap) Put(_ context.Context, key string, r io.Reader, _ int64) error {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = buf.Bytes()
	return nil
}

func (m *memSwap) has(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.objs[key]
	return ok
}

func (m *memSwap) Get(_ context.Context, key string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	if !ok {
		return nil, fmt.Errorf("snapshot %q: %w", key, errs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memSwap) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	return nil
}

func (m *memSwap) Close() error { return nil }
