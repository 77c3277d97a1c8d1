package controlplane

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/store"
)

func usageHarness(t *testing.T, opts ...func(*Config)) *harness {
	return newHarness(t, nil, append([]func(*Config){func(c *Config) {
		c.NoAuth = true
		c.UsageBucket = time.Second
	}}, opts...)...)
}

// getUsage asks GET /v1/apps/{app}/usage with query q and decodes the
// answer into out (an error body if the status is not 200).
func (h *harness) getUsage(app string, q url.Values, out any) int {
	h.t.Helper()
	resp, err := http.Get(h.s.cfg.URL + "/v1/apps/" + app + "/usage?" + q.Encode())
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		h.t.Fatalf("usage answer (%s): %v", resp.Status, err)
	}
	return resp.StatusCode
}

func (h *harness) buckets(pid string) (sum store.Usage, n int) {
	h.t.Helper()
	bs, err := h.meta.ListUsage(context.Background(), "app", pid, time.Time{}, time.Now().Add(time.Hour))
	if err != nil {
		h.t.Fatal(err)
	}
	for _, b := range bs {
		sum = sum.Add(b.Usage)
	}
	return sum, len(bs)
}

// Every write of a record that adds usage adds the same to the buckets.
func TestUsageBucketsFollowRecords(t *testing.T) {
	h := usageHarness(t)
	ctx := context.Background()
	h.create("p1")
	report := func(u store.Usage) {
		t.Helper()
		if _, err := h.s.updateRecord(ctx, "app", "p1", func(p *store.Process) error { p.Usage = u; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	first := store.Usage{Invocations: 3, BusyNanos: 5e6, BytesIn: 30, BytesOut: 60, StateByteSeconds: 1000}
	report(first)
	report(first) // no change, nothing added
	second := first.Add(store.Usage{Invocations: 2, BytesIn: 7, StateByteSeconds: 500})
	report(second)
	if sum, _ := h.buckets("p1"); sum != second {
		t.Fatalf("buckets add up to %+v, the record has %+v", sum, second)
	}
}

// A swap period ends in the record and in the buckets it lasted, spread in
// proportion and adding up to the record's; a long one in a bounded number
// of slices, within the retention.
func TestSwapPeriodSpreadOverBuckets(t *testing.T) {
	for _, tc := range []struct {
		name       string
		swapped    time.Duration // how long ago the period began
		retention  time.Duration
		minBuckets int
		wantBS     float64 // byte-seconds, about
	}{
		{"short", 10 * time.Second, time.Hour, 10, 10 * 1000},
		{"long", 2000 * time.Second, time.Hour, maxSwapSlices / 2, 2000 * 1000},
		{"past the retention", 2000 * time.Second, 100 * time.Second, 2, 99 * 1000}, // its whole buckets
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := usageHarness(t, func(c *Config) { c.UsageRetention = tc.retention })
			ctx := context.Background()
			_, err := h.meta.CreateProcess(ctx, store.Process{App: "app", PID: "p1", Status: store.StatusSwapped,
				Snapshot: "k", SnapshotBytes: 1000, SwappedAt: time.Now().Add(-tc.swapped)})
			if err != nil {
				t.Fatal(err)
			}
			// The period under way shows in a window, computed.
			var during client.AppUsage
			q := url.Values{"since": {time.Now().Add(-time.Hour).Format(time.RFC3339)}}
			if code := h.getUsage("app", q, &during); code != http.StatusOK {
				t.Fatalf("usage: %d", code)
			}
			rec, err := h.s.updateRecord(ctx, "app", "p1", func(p *store.Process) error { p.Status = store.StatusAllocating; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if !rec.SwappedAt.IsZero() || float64(rec.Usage.SwapByteSeconds) < 1000*tc.swapped.Seconds() {
				t.Fatalf("record after the swap-in: %+v", rec)
			}
			sum, n := h.buckets("p1")
			if float64(sum.SwapByteSeconds) < tc.wantBS-1 || float64(sum.SwapByteSeconds) > tc.wantBS+1000 {
				t.Fatalf("buckets hold %d swap byte-seconds, want about %v", sum.SwapByteSeconds, tc.wantBS)
			}
			if tc.retention > tc.swapped && sum.SwapByteSeconds != rec.Usage.SwapByteSeconds {
				t.Fatalf("buckets hold %d swap byte-seconds, the record %d", sum.SwapByteSeconds, rec.Usage.SwapByteSeconds)
			}
			if n < tc.minBuckets || n > maxSwapSlices+1 {
				t.Fatalf("the period went into %d buckets, want %d to %d", n, tc.minBuckets, maxSwapSlices+1)
			}
			if got := float64(during.Totals.SwapByteSeconds); tc.retention > tc.swapped && (got < tc.wantBS-1000 || got > tc.wantBS+1000) {
				t.Fatalf("a window while swapped: %v swap byte-seconds, want about %v", got, tc.wantBS)
			}
			if during.Totals.SwapBytesHeld != 1000 {
				t.Fatalf("a window while swapped: %d swap bytes held, want 1000", during.Totals.SwapBytesHeld)
			}
		})
	}
}

// Buckets past the retention go once a new bucket is written.
func TestUsageRetention(t *testing.T) {
	h := usageHarness(t, func(c *Config) { c.UsageRetention = time.Minute })
	ctx := context.Background()
	if err := h.meta.AddUsage(ctx, "gone", "p1", time.Now().Add(-time.Hour), store.Usage{Invocations: 1}); err != nil {
		t.Fatal(err)
	}
	h.s.addBucket(ctx, "app", "p1", time.Now(), store.Usage{Invocations: 1})
	waitUntil(t, "old usage pruned", func() bool {
		bs, err := h.meta.ListUsage(ctx, "gone", "", time.Time{}, time.Now())
		return err == nil && len(bs) == 0
	})
	if sum, _ := h.buckets("p1"); sum.Invocations != 1 {
		t.Fatalf("the current bucket went too: %+v", sum)
	}
}

func TestUsageRoute(t *testing.T) {
	h := usageHarness(t)
	ctx := context.Background()
	h.create("p1")
	if _, err := h.s.updateRecord(ctx, "app", "p1", func(p *store.Process) error {
		p.Usage = store.Usage{Invocations: 4, BusyNanos: 2e9, BytesIn: 40, BytesOut: 80, StateByteSeconds: 3 << 30}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var u client.AppUsage
	if code := h.getUsage("app", nil, &u); code != http.StatusOK {
		t.Fatalf("totals: %d", code)
	}
	want := client.UsageFigures{Invocations: 4, ComputeNanos: 2e9, ComputeSeconds: 2, BytesIn: 40, BytesOut: 80,
		StateByteSeconds: 3 << 30, StateGiBSeconds: 3}
	if u.Windowed || u.Totals != want || len(u.Processes) != 1 || u.Processes[0].UsageFigures != want {
		t.Fatalf("totals: %+v, want %+v", u, want)
	}

	// A window is widened to whole buckets.
	now := time.Now().UTC()
	q := url.Values{"since": {now.Add(-1500 * time.Millisecond).Format(time.RFC3339Nano)}, "until": {now.Add(time.Minute).Format(time.RFC3339Nano)}, "pid": {"p1"}}
	if code := h.getUsage("app", q, &u); code != http.StatusOK {
		t.Fatalf("window: %d", code)
	}
	if !u.Windowed || u.Totals != want || !u.Since.Equal(now.Add(-1500*time.Millisecond).Truncate(time.Second)) || u.BucketSeconds != 1 {
		t.Fatalf("window: %+v", u)
	}

	// Deleted, the app's usage stays readable in windows.
	if err := h.meta.DeleteApp(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	q.Del("pid")
	if code := h.getUsage("app", q, &u); code != http.StatusOK || u.Totals.Invocations != 4 || u.Processes[0].Status != "deleted" {
		t.Fatalf("a window of a deleted app: %d %+v", code, u)
	}

	var e struct{ Error, Code string }
	for _, tc := range []struct {
		name, app string
		q         url.Values
		status    int
		code      string
	}{
		{"bad since", "app", url.Values{"since": {"yesterday"}}, http.StatusBadRequest, "invalid_argument"},
		{"bad until", "app", url.Values{"until": {"2026-13-01T00:00:00Z"}}, http.StatusBadRequest, "invalid_argument"},
		{"since after until", "app", url.Values{"since": {"2026-01-02T00:00:00Z"}, "until": {"2026-01-01T00:00:00Z"}}, http.StatusBadRequest, "invalid_argument"},
		{"totals of a deleted app", "app", nil, http.StatusNotFound, "not_found"},
		{"absent app", "nope", url.Values{"since": {"2026-01-01T00:00:00Z"}}, http.StatusNotFound, "not_found"},
		{"absent pid", "app", url.Values{"since": {"2020-01-01T00:00:00Z"}, "pid": {"p9"}}, http.StatusNotFound, "not_found"},
	} {
		e.Code = ""
		if code := h.getUsage(tc.app, tc.q, &e); code != tc.status || e.Code != tc.code {
			t.Errorf("%s: %d %+v, want %d %s", tc.name, code, e, tc.status, tc.code)
		}
	}
}
