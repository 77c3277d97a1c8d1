package controlplane

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/memory"
)

// harness is one control plane on an in-memory metadata store, a fake
// backend and an in-memory swap store.
type harness struct {
	t    *testing.T
	s    *Server
	meta store.Metadata
	be   *fakeBackend
	swap *memSwap
	app  store.App
}

func newHarness(t *testing.T, meta store.Metadata, opts ...func(*Config)) *harness {
	t.Helper()
	if meta == nil {
		meta = memory.New()
	}
	h := &harness{t: t, meta: meta, swap: newMemSwap()}
	h.be = newFakeBackend(t, h.swap)
	cfg := Config{Metadata: meta, Swap: h.swap, Backend: h.be, SigningKey: testSigningKey,
		ReplicaID: "me", LeaseTTL: 600 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond,
		StartTimeout: 5 * time.Second, StopTimeout: 2 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	h.app = store.App{Name: "app", Image: "builtin", Secret: "secret", CreatedAt: time.Now()}
	if err := meta.CreateApp(context.Background(), h.app); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "replica lease", func() bool { return s.holdsLease() })
	return h
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) create(pid string) {
	h.t.Helper()
	_, err := h.meta.CreateProcess(context.Background(), store.Process{App: "app", PID: pid, Status: store.StatusAllocating})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) activate(pid string) (*live, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return h.s.activeProcess(ctx, h.app, pid)
}

func (h *harness) mustActivate(pid string) *live {
	h.t.Helper()
	l, err := h.activate(pid)
	if err != nil {
		h.t.Fatalf("activate %s: %v", pid, err)
	}
	return l
}

func (h *harness) record(pid string) store.Process {
	h.t.Helper()
	p, err := h.meta.GetProcess(context.Background(), "app", pid)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) waitStatus(pid, status string) store.Process {
	h.t.Helper()
	var p store.Process
	waitUntil(h.t, pid+" "+status, func() bool { p = h.record(pid); return p.Status == status })
	return p
}

// TestLifecycle walks the transitions of a process's life cycle:
// allocating → active → swapping → swapped → active, failed, deleted.
func TestLifecycle(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"create activates with generation 1", func(t *testing.T, h *harness) {
			h.create("p")
			h.mustActivate("p")
			p := h.waitStatus("p", store.StatusActive)
			if p.Owner != "me" || p.Generation != 1 || p.Handle == "" || p.Address == "" {
				t.Fatalf("record %+v: want owner me, generation 1, a handle and an address", p)
			}
		}},
		{"swap out records the final snapshot and releases the lease", func(t *testing.T, h *harness) {
			h.create("p")
			l := h.mustActivate("p")
			if err := h.s.swapOut(context.Background(), l); err != nil {
				t.Fatal(err)
			}
			p := h.record("p")
			if p.Status != store.StatusSwapped || p.Owner != "" || p.Snapshot != cpapi.SnapshotKey("app", "p", 1, 1) {
				t.Fatalf("record %+v: want swapped, no owner, generation 1's snapshot", p)
			}
		}},
		{"swap in restores the recorded snapshot as the next generation", func(t *testing.T, h *harness) {
			h.create("p")
			if err := h.s.swapOut(context.Background(), h.mustActivate("p")); err != nil {
				t.Fatal(err)
			}
			h.mustActivate("p")
			p := h.waitStatus("p", store.StatusActive)
			spec := h.be.lastStart()
			if p.Generation != 2 || spec.Generation != 2 {
				t.Fatalf("generation: record %d, spec %d, want 2", p.Generation, spec.Generation)
			}
			if got := envOf(spec.Env, cpapi.EnvRestore); got != cpapi.SnapshotKey("app", "p", 1, 1) {
				t.Fatalf("restore key %q", got)
			}
		}},
		{"a newer snapshot replaces and deletes the older one", func(t *testing.T, h *harness) {
			h.create("p")
			if err := h.s.swapOut(context.Background(), h.mustActivate("p")); err != nil {
				t.Fatal(err)
			}
			if err := h.s.swapOut(context.Background(), h.mustActivate("p")); err != nil {
				t.Fatal(err)
			}
			if h.swap.has(cpapi.SnapshotKey("app", "p", 1, 1)) || !h.swap.has(cpapi.SnapshotKey("app", "p", 2, 1)) {
				t.Fatal("generation 1's snapshot should be gone and generation 2's kept")
			}
		}},
		{"a crash marks the process failed", func(t *testing.T, h *harness) {
			h.create("p")
			l := h.mustActivate("p")
			fp := h.be.proc(l.backendHandle())
			fp.killOnce.Do(func() { close(fp.kill) })
			p := h.waitStatus("p", store.StatusFailed)
			if p.Owner != "" || p.Address != "" {
				t.Fatalf("failed record %+v keeps an owner or address", p)
			}
			if h.s.lookupLive("app", "p") != nil {
				t.Fatal("a failed process is still live")
			}
		}},
		{"a silent process is killed and marked failed", func(t *testing.T, h *harness) {
			h.create("p")
			l := h.mustActivate("p")
			fp := h.be.proc(l.backendHandle())
			fp.silentOnce.Do(func() { close(fp.silent) })
			h.waitStatus("p", store.StatusFailed)
			waitUntil(t, "fake process killed", func() bool { return len(h.be.running("app", "p")) == 0 })
		}},
		{"a process that exits before it registers fails its start", func(t *testing.T, h *harness) {
			h.create("p")
			h.be.mu.Lock()
			h.be.noStart = true
			h.be.mu.Unlock()
			if _, err := h.activate("p"); errs.CodeOf(err) != errs.Unavailable {
				t.Fatalf("activate: %v, want unavailable", err)
			}
			if p := h.record("p"); p.Status != store.StatusFailed {
				t.Fatalf("status %s, want failed", p.Status)
			}
		}},
		{"a swap-out without a final snapshot ends failed", func(t *testing.T, h *harness) {
			h.create("p")
			l := h.mustActivate("p")
			h.be.proc(l.backendHandle()).noSnapshot = true
			if err := h.s.swapOut(context.Background(), l); err == nil {
				t.Fatal("swap out without a snapshot succeeded")
			}
			if p := h.record("p"); p.Status != store.StatusFailed {
				t.Fatalf("status %s, want failed", p.Status)
			}
		}},
		{"failed comes back as the next generation", func(t *testing.T, h *harness) {
			h.create("p")
			l := h.mustActivate("p")
			h.s.kill(context.Background(), l)
			h.s.endRecord(context.Background(), l, store.StatusFailed)
			h.mustActivate("p")
			if p := h.waitStatus("p", store.StatusActive); p.Generation != 2 {
				t.Fatalf("generation %d, want 2", p.Generation)
			}
		}},
		{"delete kills the process and removes record and snapshot", func(t *testing.T, h *harness) {
			h.create("p")
			if err := h.s.swapOut(context.Background(), h.mustActivate("p")); err != nil {
				t.Fatal(err)
			}
			h.mustActivate("p")
			if err := h.s.removeProcess(context.Background(), h.record("p")); err != nil {
				t.Fatal(err)
			}
			if _, err := h.meta.GetProcess(context.Background(), "app", "p"); !errors.Is(err, errs.ErrNotFound) {
				t.Fatalf("record after delete: %v", err)
			}
			if len(h.be.running("app", "p")) != 0 || h.swap.has(cpapi.SnapshotKey("app", "p", 1, 1)) {
				t.Fatal("process or snapshot left after delete")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newHarness(t, nil)) })
	}
}

func envOf(env []string, key string) string {
	for _, kv := range env {
		if len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '=' {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// TestOwnership covers what a replica does with a process another replica
// owns, or owned: leave it to a live owner, take it over from a dead one,
// refuse whatever an older generation reports.
func TestOwnership(t *testing.T) {
	ctx := context.Background()
	putPeer := func(t *testing.T, h *harness, expires time.Time) {
		t.Helper()
		if err := h.meta.PutReplica(ctx, store.Replica{ID: "peer", URL: "http://127.0.0.1:1", Expires: expires}); err != nil {
			t.Fatal(err)
		}
		if err := h.s.refreshReplicas(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ownedBy := func(t *testing.T, h *harness, pid, owner, status string, gen uint64) {
		t.Helper()
		if _, err := store.UpdateProcess(ctx, h.meta, "app", pid, func(p *store.Process) error {
			p.Owner, p.Status, p.Generation, p.Address = owner, status, gen, "127.0.0.1:1"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("a live peer's process is left to it", func(t *testing.T) {
		h := newHarness(t, nil)
		putPeer(t, h, time.Now().Add(time.Hour))
		h.create("p")
		ownedBy(t, h, "p", "peer", store.StatusActive, 3)
		_, err := h.activate("p")
		var peer *errOwnedByPeer
		if !errors.As(err, &peer) || peer.owner.ID != "peer" {
			t.Fatalf("activate: %v, want owned by peer", err)
		}
		if h.be.startCount() != 0 {
			t.Fatal("started a process a live peer owns")
		}
	})
	t.Run("a dead peer's running process is adopted as it is", func(t *testing.T) {
		h := newHarness(t, nil)
		putPeer(t, h, time.Now().Add(-time.Second))
		h.create("p")
		// The process of generation 1 runs (the fake backend lists it).
		h.mustActivate("p")
		l := h.s.lookupLive("app", "p")
		h.s.forget(l)
		ownedBy(t, h, "p", "peer", store.StatusActive, 1)
		starts := h.be.startCount()
		h.mustActivate("p")
		p := h.record("p")
		if p.Owner != "me" || p.Generation != 1 || h.be.startCount() != starts {
			t.Fatalf("record %+v after %d new starts: want adopted by me at generation 1, no start", p, h.be.startCount()-starts)
		}
	})
	t.Run("a dead peer's vanished process comes back as the next generation", func(t *testing.T) {
		h := newHarness(t, nil)
		putPeer(t, h, time.Now().Add(-time.Second))
		h.create("p")
		ownedBy(t, h, "p", "peer", store.StatusActive, 4)
		h.mustActivate("p")
		if p := h.waitStatus("p", store.StatusActive); p.Owner != "me" || p.Generation != 5 {
			t.Fatalf("record %+v: want mine at generation 5", p)
		}
	})
	t.Run("the lease loop takes over an expired peer's processes", func(t *testing.T) {
		h := newHarness(t, nil)
		h.create("p")
		putPeer(t, h, time.Now().Add(-time.Second))
		ownedBy(t, h, "p", "peer", store.StatusActive, 2)
		p := h.waitStatus("p", store.StatusFailed)
		if p.Owner != "" {
			t.Fatalf("owner %q after takeover of a vanished process", p.Owner)
		}
		waitUntil(t, "dead replica record removed", func() bool {
			rs, _ := h.meta.ListReplicas(ctx)
			for _, r := range rs {
				if r.ID == "peer" {
					return false
				}
			}
			return true
		})
	})
	t.Run("reports of an older generation are refused", func(t *testing.T) {
		h := newHarness(t, nil)
		h.create("p")
		h.mustActivate("p")
		p := h.record("p")
		stale := cpapi.SnapshotKey("app", "p", p.Generation-1, 7)
		if err := h.swap.Put(ctx, stale, bytes.NewReader(nil), 0); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			path string
			body any
		}{
			{cpapi.PathHeartbeat, cpapi.Heartbeat{App: "app", PID: "p", Generation: p.Generation - 1}},
			{cpapi.PathRegister, cpapi.Register{App: "app", PID: "p", Generation: p.Generation - 1, Address: "127.0.0.1:2"}},
			{cpapi.PathSnapshot, cpapi.Snapshot{App: "app", PID: "p", Generation: p.Generation - 1, Key: stale, Final: true}},
		} {
			// The stale generation's own credential: valid, but its
			// reports are no longer taken.
			own, _ := h.s.processTokens("app", "p", p.Generation-1)
			if code := postInternal(t, h, tc.path, own, tc.body); code != http.StatusGone {
				t.Errorf("%s of an older generation: %d, want 410", tc.path, code)
			}
		}
		if h.swap.has(stale) {
			t.Error("the refused snapshot was kept")
		}
		if got := h.record("p"); got.Snapshot == stale || got.Address == "127.0.0.1:2" {
			t.Errorf("record took a stale report: %+v", got)
		}
	})
	t.Run("a replica that cannot renew its lease stops acting but kills nothing", func(t *testing.T) {
		failing := &failingReplicas{Metadata: memory.New()}
		h := newHarness(t, failing)
		h.create("p")
		h.mustActivate("p")
		failing.fail.Store(true)
		waitUntil(t, "live processes dropped", func() bool { return h.s.lookupLive("app", "p") == nil })
		if len(h.be.running("app", "p")) != 1 {
			t.Fatal("the process was stopped")
		}
		if _, err := h.activate("p"); errs.CodeOf(err) != errs.Unavailable {
			t.Fatalf("activate without a lease: %v, want unavailable", err)
		}
	})
}

// testSigningKey signs the tokens of every control plane in these tests.
var testSigningKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func postInternal(t *testing.T, h *harness, path, tok string, body any) int {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, h.s.cfg.URL+path, bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// failingReplicas fails PutReplica once fail is set.
type failingReplicas struct {
	store.Metadata
	fail atomic.Bool
}

func (f *failingReplicas) PutReplica(ctx context.Context, r store.Replica) error {
	if f.fail.Load() {
		return errors.New("store unreachable")
	}
	return f.Metadata.PutReplica(ctx, r)
}
