package storetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// The revision tests check the compare-and-set of UpdateApp and
// UpdateProcess. The concurrent ones fail on a store that writes without
// comparing: lost increments, or more than one winner of a race.

func testAppRevision(t *testing.T, ctx context.Context, m store.Metadata) {
	app := newApp("web")
	app.Revision = 42 // must be ignored
	app.Epoch = 5
	must(t, "CreateApp", m.CreateApp(ctx, app))
	got, err := m.GetApp(ctx, "web")
	must(t, "GetApp", err)
	if got.Revision != 1 {
		t.Fatalf("revision after CreateApp = %d, want 1", got.Revision)
	}

	next := got
	next.Image = "img:v2"
	next.Secret = "rotated"
	next.Epoch = 999 // not written: BumpEpoch owns it
	stored, err := m.UpdateApp(ctx, next)
	must(t, "UpdateApp", err)
	want := next
	want.Epoch, want.Revision = 5, 2
	diff(t, "UpdateApp result", stored, want)
	got, err = m.GetApp(ctx, "web")
	must(t, "GetApp after UpdateApp", err)
	diff(t, "GetApp after UpdateApp", got, want)

	for _, rev := range []uint64{0, 1, 3, 99} {
		stale := want
		stale.Revision = rev
		stale.Image = "img:stale"
		_, err := m.UpdateApp(ctx, stale)
		wantErr(t, fmt.Sprintf("UpdateApp with revision %d", rev), err, errs.ErrFailedPrecondition)
	}
	got, err = m.GetApp(ctx, "web")
	must(t, "GetApp after stale UpdateApp", err)
	diff(t, "app after stale UpdateApp", got, want)

	_, err = m.UpdateApp(ctx, newApp("nope"))
	wantErr(t, "UpdateApp of absent app", err, errs.ErrNotFound)
	_, err = m.GetApp(ctx, "nope")
	wantErr(t, "GetApp after UpdateApp of absent app", err, errs.ErrNotFound)

	// BumpEpoch is a write of the app too: an update read before it is stale.
	epoch, err := m.BumpEpoch(ctx, "web")
	must(t, "BumpEpoch", err)
	_, err = m.UpdateApp(ctx, want)
	wantErr(t, "UpdateApp read before BumpEpoch", err, errs.ErrFailedPrecondition)
	want.Epoch, want.Revision = epoch, 3
	got, err = m.GetApp(ctx, "web")
	must(t, "GetApp after BumpEpoch", err)
	diff(t, "app after BumpEpoch", got, want)
	got.Image = "img:v3"
	stored, err = m.UpdateApp(ctx, got)
	must(t, "UpdateApp after BumpEpoch", err)
	want.Image, want.Revision = "img:v3", 4
	diff(t, "UpdateApp after BumpEpoch", stored, want)
	apps, err := m.ListApps(ctx)
	must(t, "ListApps", err)
	diff(t, "ListApps", apps, []store.App{want})
}

func testProcessRevision(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	p := newProcess("web", "p1")
	p.Revision = 42 // must be ignored
	created := createProcess(t, ctx, m, p)

	next := created
	next.Status = store.StatusSwapped
	next.Address = ""
	next.Snapshot = "web/p1/2"
	next.Usage.BytesOut += 100
	next.UpdatedAt = t0.Add(time.Hour)
	next.Generation++
	next.Owner = ""
	stored, err := m.UpdateProcess(ctx, next)
	must(t, "UpdateProcess", err)
	want := next
	want.Revision = 2
	diff(t, "UpdateProcess result", stored, want)
	got, err := m.GetProcess(ctx, "web", "p1")
	must(t, "GetProcess after UpdateProcess", err)
	diff(t, "GetProcess after UpdateProcess", got, want)

	for _, rev := range []uint64{0, 1, 3, 99} {
		stale := want
		stale.Revision = rev
		stale.Status = store.StatusFailed
		_, err := m.UpdateProcess(ctx, stale)
		wantErr(t, fmt.Sprintf("UpdateProcess with revision %d", rev), err, errs.ErrFailedPrecondition)
	}
	procs, err := m.ListProcesses(ctx, "web")
	must(t, "ListProcesses after stale UpdateProcess", err)
	diff(t, "processes after stale UpdateProcess", procs, []store.Process{want})

	_, err = m.UpdateProcess(ctx, newProcess("web", "p2"))
	wantErr(t, "UpdateProcess of absent process", err, errs.ErrNotFound)
	_, err = m.UpdateProcess(ctx, newProcess("nope", "p1"))
	wantErr(t, "UpdateProcess in absent app", err, errs.ErrNotFound)
	_, err = m.GetProcess(ctx, "web", "p2")
	wantErr(t, "GetProcess after UpdateProcess of absent process", err, errs.ErrNotFound)

	// A recreated process starts again at revision 1.
	must(t, "DeleteProcess", m.DeleteProcess(ctx, "web", "p1"))
	createProcess(t, ctx, m, newProcess("web", "p1"))
	_, err = m.UpdateProcess(ctx, want)
	wantErr(t, "UpdateProcess with the deleted process's revision", err, errs.ErrFailedPrecondition)
}

// testUpdateProcessCounter counts through store.UpdateProcess from several
// goroutines at once: with a compare-and-set no increment is lost.
func testUpdateProcessCounter(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	start := createProcess(t, ctx, m, newProcess("web", "p1"))
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				_, err := store.UpdateProcess(ctx, m, "web", "p1", func(p *store.Process) error {
					p.Usage.Invocations++
					runtime.Gosched() // let other writers in between read and write
					return nil
				})
				if err != nil {
					t.Errorf("UpdateProcess: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, err := m.GetProcess(ctx, "web", "p1")
	must(t, "GetProcess", err)
	if want := start.Usage.Invocations + workers*each; got.Usage.Invocations != want {
		t.Errorf("after %d concurrent increments: invocations = %d, want %d (lost updates)",
			workers*each, got.Usage.Invocations, want)
	}
	if want := start.Revision + workers*each; got.Revision != want {
		t.Errorf("after %d concurrent updates: revision = %d, want %d", workers*each, got.Revision, want)
	}
}

// race runs try(i) for i in [0, n) in n goroutines released at once and
// returns their results.
func race[T any](n int, try func(i int) (T, error)) ([]T, []error) {
	vals, results := make([]T, n), make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			vals[i], results[i] = try(i)
		})
	}
	close(start)
	wg.Wait()
	return vals, results
}

// oneWinner returns the index of the only nil error, failing t unless there
// is exactly one and every other error wraps lost.
func oneWinner(t *testing.T, what string, results []error, lost error) int {
	t.Helper()
	var winners []int
	for i, err := range results {
		if err == nil {
			winners = append(winners, i)
		} else {
			wantErr(t, what+": loser", err, lost)
		}
	}
	if len(winners) != 1 {
		t.Errorf("%s: %d of %d won (%v), want exactly one", what, len(winners), len(results), winners)
		return -1
	}
	return winners[0]
}

func testUpdateProcessOneWins(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	base := createProcess(t, ctx, m, newProcess("web", "p1"))
	const n = 16
	stored, results := race(n, func(i int) (store.Process, error) {
		p := base
		p.Handle = fmt.Sprint("handle-", i)
		return m.UpdateProcess(ctx, p)
	})
	w := oneWinner(t, "concurrent UpdateProcess from one read", results, errs.ErrFailedPrecondition)
	if w < 0 {
		return
	}
	want := base
	want.Handle, want.Revision = fmt.Sprint("handle-", w), base.Revision+1
	diff(t, "winner's result", stored[w], want)
	got, err := m.GetProcess(ctx, "web", "p1")
	must(t, "GetProcess", err)
	diff(t, "stored process", got, want)
}

func testUpdateAppOneWins(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	base, err := m.GetApp(ctx, "web")
	must(t, "GetApp", err)
	const n = 16
	_, results := race(n, func(i int) (store.App, error) {
		app := base
		app.Image = fmt.Sprint("img:", i)
		return m.UpdateApp(ctx, app)
	})
	w := oneWinner(t, "concurrent UpdateApp from one read", results, errs.ErrFailedPrecondition)
	if w < 0 {
		return
	}
	got, err := m.GetApp(ctx, "web")
	must(t, "GetApp", err)
	want := base
	want.Image, want.Revision = fmt.Sprint("img:", w), base.Revision+1
	diff(t, "stored app", got, want)
}

// testLeaseOneWins takes a process's lease the way replicas do: claim it as
// owner with the next generation, the fencing token. However many replicas
// try at once, exactly one may hold each generation.
func testLeaseOneWins(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	base := createProcess(t, ctx, m, newProcess("web", "p1"))
	const n = 16
	owner := func(i int) string { return fmt.Sprint("cp-", i) }

	// All from the same read, straight through UpdateProcess.
	_, results := race(n, func(i int) (store.Process, error) {
		p := base
		p.Owner = owner(i)
		p.Generation++
		return m.UpdateProcess(ctx, p)
	})
	w := oneWinner(t, "lease from one read", results, errs.ErrFailedPrecondition)
	if w < 0 {
		return
	}
	got, err := m.GetProcess(ctx, "web", "p1")
	must(t, "GetProcess", err)
	if got.Owner != owner(w) || got.Generation != base.Generation+1 {
		t.Fatalf("after the race: owner %q generation %d, want %q %d",
			got.Owner, got.Generation, owner(w), base.Generation+1)
	}

	// Again through store.UpdateProcess, each claim refusing once somebody
	// else holds the generation after the one it saw: losers reread and
	// refuse instead of overwriting.
	seen := got.Generation
	errTaken := errors.New("lease taken")
	_, results = race(n, func(i int) (store.Process, error) {
		return store.UpdateProcess(ctx, m, "web", "p1", func(p *store.Process) error {
			if p.Generation != seen {
				return errTaken
			}
			p.Owner = owner(n + i)
			p.Generation++
			runtime.Gosched() // let other claims in between read and write
			return nil
		})
	})
	w = oneWinner(t, "lease through store.UpdateProcess", results, errTaken)
	if w < 0 {
		return
	}
	got, err = m.GetProcess(ctx, "web", "p1")
	must(t, "GetProcess", err)
	if got.Owner != owner(n+w) || got.Generation != seen+1 {
		t.Errorf("after the second race: owner %q generation %d, want %q %d",
			got.Owner, got.Generation, owner(n+w), seen+1)
	}
}
