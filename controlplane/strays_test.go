package controlplane

import (
	"context"
	"testing"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/store"
)

// A backend process that no record stands for (its pid was deleted) or
// that is an older generation of its pid is killed once it has looked
// stray for the grace; a process of its record's generation is not.
func TestReapStrays(t *testing.T) {
	h := newHarness(t, nil, func(c *Config) { c.StrayGrace = time.Hour }) // the lease loop's sweeps kill nothing
	ctx := context.Background()
	h.be.mu.Lock()
	h.be.stuck = true
	h.be.mu.Unlock()
	start := func(pid string, gen uint64) backend.Handle {
		t.Helper()
		hd, err := h.be.Start(ctx, backend.Spec{App: "app", PID: pid, Generation: gen})
		if err != nil {
			t.Fatal(err)
		}
		return hd
	}
	for _, p := range []store.Process{
		{App: "app", PID: "current", Status: store.StatusActive, Generation: 3},
		{App: "app", PID: "replaced", Status: store.StatusActive, Generation: 5},
	} {
		if _, err := h.meta.CreateProcess(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	ghost := start("ghost", 1)
	old := start("replaced", 4)
	current := start("current", 3)

	seen := make(strays)
	h.s.reapStrays(ctx, seen, time.Hour)
	h.s.reapStrays(ctx, seen, time.Hour)
	if n := len(running(t, h)); n != 3 {
		t.Fatalf("%d processes run before the grace ended, want 3", n)
	}
	h.s.reapStrays(ctx, seen, 0)
	got := running(t, h)
	if len(got) != 1 || got[0] != current {
		t.Fatalf("running after the grace: %v; want only %v (killed: %v and %v)", got, current, ghost, old)
	}
	if len(seen) != 0 {
		t.Fatalf("strays still remembered: %v", seen)
	}
}

func running(t *testing.T, h *harness) []backend.Handle {
	t.Helper()
	hs, err := h.be.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return hs
}
