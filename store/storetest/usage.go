package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/praas-dev/praas/store"
)

// minute returns the start of the i-th one-minute bucket after t0's minute.
func minute(i int) time.Time { return t0.Truncate(time.Minute).Add(time.Duration(i) * time.Minute) }

func usageOf(n uint64) store.Usage {
	return store.Usage{Invocations: n, BusyNanos: n * 1e6, BytesIn: n * 10, BytesOut: n * 20,
		StateByteSeconds: n << 33, SwapByteSeconds: n * 3}
}

func listUsage(t *testing.T, ctx context.Context, m store.Metadata, what, app, pid string, since, until time.Time, want ...store.UsageBucket) {
	t.Helper()
	got, err := m.ListUsage(ctx, app, pid, since, until)
	must(t, "ListUsage "+what, err)
	diff(t, "ListUsage "+what, got, want)
}

func testUsageAddList(t *testing.T, ctx context.Context, m store.Metadata) {
	listUsage(t, ctx, m, "on empty store", "web", "", minute(-10), minute(10))
	// Names with the separators the stores use in their keys.
	const odd = "p:1/x"
	adds := []struct {
		app, pid string
		at       int
		n        uint64
	}{
		{"web", "p2", 0, 1}, {"web", odd, 0, 2}, {"web", "p2", 0, 4}, // p2's first bucket gets two adds
		{"web", "p2", 1, 8}, {"web", odd, 3, 16},
		{"api", "p2", 0, 32}, // another app's, same pid and bucket
	}
	for _, a := range adds {
		must(t, "AddUsage", m.AddUsage(ctx, a.app, a.pid, minute(a.at), usageOf(a.n)))
	}
	all := []store.UsageBucket{
		{PID: "p2", Start: minute(0), Usage: usageOf(1 + 4)}, // "p2" < "p:1/x"
		{PID: odd, Start: minute(0), Usage: usageOf(2)},
		{PID: "p2", Start: minute(1), Usage: usageOf(8)},
		{PID: odd, Start: minute(3), Usage: usageOf(16)},
	}
	listUsage(t, ctx, m, "whole app", "web", "", minute(-10), minute(10), all...)
	listUsage(t, ctx, m, "since is inclusive, until exclusive", "web", "", minute(1), minute(3), all[2])
	listUsage(t, ctx, m, "a window inside a bucket", "web", "", minute(0).Add(time.Second), minute(1))
	listUsage(t, ctx, m, "one pid", "web", odd, minute(-10), minute(10), all[1], all[3])
	listUsage(t, ctx, m, "other app", "api", "", minute(-10), minute(10),
		store.UsageBucket{PID: "p2", Start: minute(0), Usage: usageOf(32)})
	listUsage(t, ctx, m, "absent app", "nope", "", minute(-10), minute(10))
	listUsage(t, ctx, m, "from the zero time", "web", "p2", time.Time{}, minute(10), all[0], all[2])
}

func testUsageOutlivesDelete(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	createProcess(t, ctx, m, newProcess("web", "p1"))
	must(t, "AddUsage", m.AddUsage(ctx, "web", "p1", minute(0), usageOf(3)))
	must(t, "DeleteProcess", m.DeleteProcess(ctx, "web", "p1"))
	want := store.UsageBucket{PID: "p1", Start: minute(0), Usage: usageOf(3)}
	listUsage(t, ctx, m, "after DeleteProcess", "web", "", minute(0), minute(1), want)
	must(t, "DeleteApp", m.DeleteApp(ctx, "web"))
	listUsage(t, ctx, m, "after DeleteApp", "web", "", minute(0), minute(1), want)
	// An app created again under the name sees the old usage: usage is by name.
	must(t, "CreateApp again", m.CreateApp(ctx, newApp("web")))
	must(t, "AddUsage", m.AddUsage(ctx, "web", "p1", minute(0), usageOf(1)))
	want.Usage = usageOf(4)
	listUsage(t, ctx, m, "after CreateApp again", "web", "", minute(0), minute(1), want)
}

func testUsagePrune(t *testing.T, ctx context.Context, m store.Metadata) {
	for i := range 5 {
		must(t, "AddUsage web", m.AddUsage(ctx, "web", "p1", minute(i), usageOf(uint64(i+1))))
	}
	must(t, "AddUsage api", m.AddUsage(ctx, "api", "p1", minute(1), usageOf(9)))
	must(t, "PruneUsage from the zero time", m.PruneUsage(ctx, time.Time{}))
	must(t, "PruneUsage", m.PruneUsage(ctx, minute(3)))
	listUsage(t, ctx, m, "web after prune", "web", "", minute(-10), minute(10),
		store.UsageBucket{PID: "p1", Start: minute(3), Usage: usageOf(4)},
		store.UsageBucket{PID: "p1", Start: minute(4), Usage: usageOf(5)})
	listUsage(t, ctx, m, "api after prune", "api", "", minute(-10), minute(10))
	// A pruned app takes usage again.
	must(t, "AddUsage api again", m.AddUsage(ctx, "api", "p1", minute(5), usageOf(1)))
	listUsage(t, ctx, m, "api after a new add", "api", "", minute(-10), minute(10),
		store.UsageBucket{PID: "p1", Start: minute(5), Usage: usageOf(1)})
	must(t, "PruneUsage everything", m.PruneUsage(ctx, minute(100)))
	listUsage(t, ctx, m, "web after pruning everything", "web", "", minute(-10), minute(100))
}

// testUsageConcurrent checks that adds to one bucket from several writers
// (replicas) are not lost.
func testUsageConcurrent(t *testing.T, ctx context.Context, m store.Metadata) {
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if err := m.AddUsage(ctx, "web", "p1", minute(0), usageOf(1)); err != nil {
					t.Errorf("AddUsage: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	listUsage(t, ctx, m, "after concurrent adds", "web", "", minute(0), minute(1),
		store.UsageBucket{PID: "p1", Start: minute(0), Usage: usageOf(workers * each)})
}

func (s *metadataSuite) testUsagePersistence(t *testing.T, ctx context.Context) {
	m := s.open(t)
	must(t, "AddUsage", m.AddUsage(ctx, "web", "p1", minute(0), usageOf(2)))
	must(t, "Close", m.Close())
	m = s.reopen(t, m)
	t.Cleanup(func() { m.Close() })
	must(t, "AddUsage after reopen", m.AddUsage(ctx, "web", "p1", minute(0), usageOf(3)))
	listUsage(t, ctx, m, "after reopen", "web", "", minute(0), minute(1),
		store.UsageBucket{PID: "p1", Start: minute(0), Usage: usageOf(5)})
}
